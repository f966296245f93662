"""The settings of ``aiida-nmcml-engine md``: one declaration, read by the engine and by ``nmcml.md`` before submission.

Pure Python (no ASE, torch or AiiDA import), so the daemon can validate a builder's ``parameters`` without loading the
MD machinery, and the compute node validates ``input.json`` with the very same rules.

Why ranges: a negative temperature or friction gives NaN velocities and positions, and MACE's neighbour list then
never returns; a zero timestep runs forever without moving; ``steps: 'ten'`` failed deep in the loop. Why closest-key
hints: a misspelt ``temprature_K`` used to run at the default 300 K with exit 0.

Defaults: :data:`DEFAULTS` are the documented bare defaults of the engine; the protocol levels in
``workflows/protocols/md.yaml`` only list what they change, so a default lives in one place.
"""

from __future__ import annotations

from ..common.schema import Field, Section

ENSEMBLES = ('nvt_langevin', 'nvt_nose_hoover', 'nvt_bussi', 'npt', 'nve')
# Full-cell MTK is the NPT default: Li_x NMC changes c and a in opposite directions with x, and the tetrahedral-hop
# barrier follows the Li-slab spacing (c). An isotropic barostat keeps the starting c/a and so the wrong slab spacing.
BAROSTATS = ('full', 'isotropic')


def _max_temperature(value) -> str | None:
    return None if not isinstance(value, str) or value == 'auto' else "only 'auto' or a temperature in K"


def _trust_band(section) -> str | None:
    upper, lower = section.get('trust_upper'), section.get('trust_lower', 0.05)
    if upper is not None and lower is not None and upper < lower:
        return f'trust_upper ({upper}) is below trust_lower ({lower}): no frame could become a candidate'
    return None


# The one declaration of the MD settings: the engine validates input.json with it, the CalcJob validates
# ``parameters`` with it before submission, and its defaults are the documented bare defaults (md.yaml levels only
# override what they change). Bounds are physical: a negative temperature or friction, or a zero timestep, give
# NaN positions or a frozen run, never a result.
SCHEMA = Section(
    {
        'structure': Field(str, default='structure.extxyz', help='starting cell (extxyz) in the working directory'),
        'models': Field(list, default=None, nullable=True, items=(str, dict), help='member 0 drives the dynamics'),
        'ensemble': Field(str, default='nvt_langevin', choices=ENSEMBLES, help='integrator'),
        'barostat': Field(str, default='full', choices=BAROSTATS, help='npt only: full-cell or isotropic MTK'),
        'timestep_fs': Field(float, default=1.0, min=0.0, min_exclusive=True, max=10.0, unit='fs', help='timestep'),
        'temperature_K': Field(float, default=300.0, min=0.0, min_exclusive=True, max=1e4, unit='K', help='target'),
        'friction_per_fs': Field(float, default=0.01, min=0.0, unit='1/fs', help='Langevin friction'),
        'tdamp_fs': Field(float, default=None, nullable=True, min=0.0, min_exclusive=True, unit='fs',
                          help='Nose-Hoover / Bussi time constant; null = 100 timesteps'),
        'pressure_gpa': Field(float, default=0.0, unit='GPa', help='npt target pressure'),
        'pdamp_fs': Field(float, default=None, nullable=True, min=0.0, min_exclusive=True, unit='fs',
                          help='MTK barostat time constant; null = 1000 timesteps'),
        'steps': Field(int, default=1000, min=1, help='total target; a restart continues up to it'),
        'seed': Field(int, default=0, min=0, help='velocities and Langevin noise'),
        'trajectory_stride': Field(int, default=10, min=1, help='steps between trajectory frames'),
        'checkpoint_stride': Field(int, default=100, min=1, help='steps between checkpoints'),
        'restart_from': Field(str, default='auto', nullable=True,
                              help="'auto': continue from checkpoint.npz when present; a file name: that file must "
                                   'exist; null: always start fresh'),
        'init_velocities': Field(bool, default=True, help='Maxwell-Boltzmann at temperature_K on a fresh start'),
        'dtype': Field(str, default='float64', choices=('float32', 'float64'), help='precision of the driver model'),
        # The spread only flags frames for DFT: single precision is ample and about halves the monitoring cost.
        'committee_dtype': Field(str, default='float32', nullable=True, choices=('float32', 'float64'),
                                 help='precision of the monitoring members; null = dtype'),
        'device': Field(str, default='auto', help='auto, cpu or cuda'),
        'uncertainty': Section(
            {
                'stride': Field(int, default=10, min=1, help='committee evaluated every k steps'),
                'trust_lower': Field(float, default=0.05, min=0.0, unit='eV/Å', help='candidate band, lower end'),
                'trust_upper': Field(float, default=0.3, nullable=True, min=0.0, unit='eV/Å',
                                     help='candidate band, upper end; null = stop.hard_limit'),
                'max_candidates': Field(int, default=None, nullable=True, min=0, help='cap per run'),
                # 'members': each member a full model call (N calls per monitor step). 'shared_descriptor': member 0's
                # descriptor, every member's readouts, one batched backward pass (about one model call): a committee
                # that differs in readouts only; see engine/md_committee.py and docs/md.md for its calibration.
                'evaluation': Field(str, default='members', choices=('members', 'shared_descriptor'),
                                    help='how the monitor evaluates the committee'),
            },
            check=_trust_band,
        ),
        'stop': Section(
            {
                'hard_limit': Field(float, default=1.0, nullable=True, min=0.0, min_exclusive=True, unit='eV/Å',
                                    help='stop when the max force deviation exceeds it'),
                'min_distance': Field(float, default=0.7, nullable=True, min=0.0, unit='Å',
                                      help='stop when two atoms come closer'),
                'max_temperature': Field((float, str), default='auto', nullable=True, min=0.0, min_exclusive=True,
                                         check=_max_temperature, unit='K', help="'auto' = 3x temperature_K"),
            }
        ),
    }
)  # fmt: skip
DEFAULTS = SCHEMA.defaults()

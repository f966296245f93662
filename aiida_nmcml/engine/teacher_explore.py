"""Student-driven exploration for ``aiida-nmcml-engine label``: the student runs NPT MD, the teacher labels its frames.

Why (DAgger, "dataset aggregation"): a student trained only on the teacher's own configurations never saw the states
its own errors lead to. The distilled demo foundation let a 70-atom Li0.5NiO2 cell swell from 675 to 3655 Å^3 in
0.6 ps of NPT at 800 K (slabs with Li in the gaps) where CHGNet stays within 743-781 Å^3: its energy rose +3.5 to
+6.3 eV along that path against the teacher's +6.7 to +76 eV. Labelling the frames the *student* visits, and
retraining on them, teaches exactly that missing restoring force (by hand: the cell then stayed within 1.14-1.26x,
docs/foundation.md).

Each input frame seeds one anisotropic MTK NPT run (the engine's own integrator, centre of mass fixed) per
temperature. Every ``interval`` steps the current configuration is labelled by the teacher; the student's energy,
forces and the cell volume are recorded beside it. A run stops early once ``|V/V0 - 1|`` exceeds
``max_volume_change`` (that frame is labelled: it is the most informative one) or the student's forces are
non-finite. Frames the teacher gives absurd forces are dropped by the caller's ``max_force`` rule like any other.
"""

from __future__ import annotations

import numpy as np

from ..common.schema import Field, Section

EXPLORE_SCHEMA = Section(
    {
        'temperatures_K': Field(list, default=[], items=Field(float, min=1.0, max=3000.0), help='NPT temperatures'),
        'steps': Field(int, default=0, min=0, max=1_000_000, help='student NPT steps per seed frame and temperature'),
        'interval': Field(int, default=20, min=1, help='the teacher labels a frame every `interval` steps'),
        'timestep_fs': Field(float, default=2.0, min=0.1, max=5.0, unit='fs'),
        'tdamp_fs': Field(float, default=50.0, min=1.0, unit='fs'),
        'pdamp_fs': Field(float, default=200.0, min=10.0, unit='fs'),
        'barostat': Field(str, default='full', choices=('full', 'isotropic')),
        'max_volume_change': Field(
            float,
            default=0.3,
            min=0.01,
            max=10.0,
            help='a run stops once |V/V0 - 1| exceeds this (the student lets the cell run away)',
        ),
        'seed': Field(int, default=0, min=0),
    },
    help='student NPT MD whose frames the teacher labels (needs one model: the student)',
)


def explore_requested(explore: dict) -> bool:
    """Whether ``explore`` asks for any student MD (steps and temperatures); the engine, the calcjob and the work
    chain refuse such settings without a student, or a refinement without them."""
    return bool(explore.get('steps') and explore.get('temperatures_K'))


def student_explore(seed_frames, student, teacher, identity: dict, explore: dict) -> tuple[list, list]:
    """Labelled frames of the student's NPT runs and one record per run (volumes, stop reason, student errors).

    ``student`` and ``teacher`` are ASE calculators; ``identity`` the teacher's (frames record who labelled them).
    """
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

    from .md import make_dynamics
    from .teacher import label_atoms

    frames, runs = [], []
    if not explore['steps'] or not explore['temperatures_K']:
        return frames, runs
    rng = np.random.default_rng(explore['seed'])
    cfg = {
        'ensemble': 'npt',
        'barostat': explore['barostat'],
        'timestep_fs': explore['timestep_fs'],
        'tdamp_fs': explore['tdamp_fs'],
        'pdamp_fs': explore['pdamp_fs'],
        'pressure_gpa': 0.0,
    }
    for index, seed in enumerate(seed_frames):
        for temperature in explore['temperatures_K']:
            atoms = seed.copy()
            atoms.info = {}
            atoms.calc = student
            MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
            Stationary(atoms)
            dyn = make_dynamics(atoms, {**cfg, 'temperature_K': temperature}, rng)
            v0 = atoms.get_volume()
            run = {'seed_index': index, 'x_li': seed.info.get('x_li'), 'natoms': len(atoms),
                   'temperature_K': float(temperature), 'volume_0_A3': v0, 'volumes_A3': [], 'steps': 0,
                   'stopped': None, 'n_frames': 0}  # fmt: skip
            errors_e, errors_f = [], []
            while run['steps'] < explore['steps']:
                try:
                    dyn.run(explore['interval'])
                    student_forces = np.asarray(atoms.get_forces(), dtype=float)
                    student_energy = float(atoms.get_potential_energy())
                except Exception as exc:  # a student that explodes ends its run; the frames so far count
                    run['stopped'] = f'student failed: {type(exc).__name__}: {exc}'[:200]
                    break
                run['steps'] += explore['interval']
                volume = atoms.get_volume()
                run['volumes_A3'].append(volume)
                if not np.all(np.isfinite(student_forces)):
                    run['stopped'] = 'student forces not finite'
                    break
                frame = label_atoms(atoms, teacher, identity)
                frame.set_velocities(np.zeros((len(frame), 3)))
                frame.info.update(config_type='student_md', md_temperature_K=float(temperature), md_seed_index=index,
                                  explore_step=run['steps'], volume_ratio=volume / v0,
                                  student_energy=student_energy)  # fmt: skip
                if seed.info.get('x_li') is not None:
                    frame.info['x_li'] = seed.info['x_li']
                if np.all(np.isfinite(frame.arrays['REF_forces'])):
                    errors_e.append((student_energy - frame.info['REF_energy']) / len(atoms))
                    errors_f.append(student_forces - frame.arrays['REF_forces'])
                frames.append(frame)
                run['n_frames'] += 1
                if abs(volume / v0 - 1.0) > explore['max_volume_change']:
                    run['stopped'] = f'volume {volume / v0:.2f} x V0 (max_volume_change {explore["max_volume_change"]})'
                    break
            run['max_volume_ratio'] = max(run['volumes_A3'], default=v0) / v0
            run['min_volume_ratio'] = min(run['volumes_A3'], default=v0) / v0
            run['student_energy_rmse_meV_atom'] = 1000 * _rms(errors_e) if errors_e else None
            run['student_force_rmse_eV_A'] = _rms(np.concatenate(errors_f)) if errors_f else None
            runs.append(run)
    return frames, runs


def _rms(values) -> float:
    return float(np.sqrt(np.mean(np.square(values))))


def exploration_summary(runs: list) -> dict:
    """What the work chain decides on: did the student hold every cell, and how wrong was it on its own frames."""
    ratios = [r['max_volume_ratio'] for r in runs] + [r['min_volume_ratio'] for r in runs]
    energies = [r['student_energy_rmse_meV_atom'] for r in runs if r['student_energy_rmse_meV_atom'] is not None]
    forces = [r['student_force_rmse_eV_A'] for r in runs if r['student_force_rmse_eV_A'] is not None]
    return {
        'n_runs': len(runs),
        'n_stopped': sum(1 for r in runs if r['stopped']),
        'holds_cell': bool(runs) and not any(r['stopped'] for r in runs),
        'max_abs_volume_change': max((abs(v - 1.0) for v in ratios), default=0.0),
        # the RMS over runs of each run's RMSE (runs of one seed size: equal weight per run)
        'student_energy_rmse_meV_atom': _rms(energies) if energies else None,
        'student_force_rmse_eV_A': _rms(forces) if forces else None,
    }


#: LiNiO2-type cells too: the demo's DFT, diffusion and barriers use Ni-only cells, and the unrefined student ran away
#: in both (docs/foundation.md)
SEED_COMPOSITIONS = {'NMC811': None, 'LiNiO2': {'Ni': 1.0}}

SEEDS_SCHEMA = Section(
    {
        'x_li': Field(list, default=[1.0, 0.75, 0.5, 0.25], items=Field(float, min=0.0, max=1.0), min_length=1),
        'cell_atoms': Field(int, default=40, min=4, max=400, help='atoms per seed cell (40 = 10 TM: NMC811 exact)'),
        'compositions': Field(
            list,
            default=['NMC811', 'LiNiO2'],
            items=Field(str, choices=tuple(SEED_COMPOSITIONS)),
            min_length=1,
            help='transition-metal compositions of the seed cells',
        ),
        'seeds_per_x': Field(int, default=1, min=1, max=100),
        'seed': Field(int, default=0, min=0),
    },
    help='the cells the student explores from',
)


def exploration_seeds(parameters: dict) -> list:
    """Unperturbed NMC811 / LiNiO2-type cells across x (random TM order and vacancies, deterministic in ``seed``),
    sized like the cells the foundation will drive (the demo diffusion runs 40 atoms), not like the sampler's 12-24-atom
    frames."""
    import warnings

    from ..structures import build_nmc
    from .teacher import _clean

    parameters = SEEDS_SCHEMA.with_defaults(parameters)
    SEEDS_SCHEMA.check_value(parameters)
    rng = np.random.default_rng(parameters['seed'])
    seeds = []
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # rounded compositions are recorded in x_li/formula
        for name in parameters['compositions']:
            for x in parameters['x_li']:
                for _ in range(parameters['seeds_per_x']):
                    base = build_nmc(
                        parameters['cell_atoms'],
                        x_li=x,
                        composition=SEED_COMPOSITIONS[name],
                        seed=int(rng.integers(1 << 30)),
                        magnetic=False,
                    )
                    seeds.append(_clean(base, config_type='explore_seed', x_li=float(x), composition=name))
    return seeds

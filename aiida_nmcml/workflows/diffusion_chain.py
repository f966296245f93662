"""``nmcml.diffusion``: Li tracer diffusion D*(T, x) with intervals, Arrhenius Ea and D(300 K), from committee MD.

What it runs (docs/diffusion.md), all MD through ``nmcml.md.base`` (restarts, stop rules):

* a grid of Li contents x x temperatures (``temperatures_low_x_K`` for x <= ``low_x_threshold``) x ``n_replicas``
  independent replicas. Replica 0 of a content starts from the GA ground state when ``ground_states.<x key>`` is
  given, every other replica from a random ordering (``aiida_nmcml.structures``, its own seed); every run has its own
  velocity seed;
* per run: anisotropic (full-cell MTK) NPT equilibration, then NVT production (Bussi CSVR or Nose-Hoover chain; a
  Langevin production is refused) at the cell averaged over the last ``average_fraction`` of the NPT trajectory;
* per run, calcfunction ``inspect_run``: committee deviation against the trust band, TM migration into the Li layer,
  O-O contacts < 1.5 Å, the run's MSD curve. A flagged run (or one that a stop rule ended, or that failed) is left
  out of the fits and listed with its reasons in ``table`` -- never silently used;
* per (T, x): ``analyse_trajectories`` pools the in-domain replicas (D_xy, D_z, D_iso, D_sigma, Haven ratio);
  per x: ``arrhenius`` (posterior samples of Ea, ln D0, D(300 K));
* model uncertainty: one (T, x) repeated with committee member ``model_check.driver`` driving (same cell, seeds);
* size check: one (T, x) at a second cell size (``size_check.supercell``), compared within the error bar;
* ``compare_with_experiment``: MD tracer D*(300 K) against the chemical D~ of GITT (docs/references.md), raw and,
  where a thermodynamic factor is given, converted (D~ = D*/H_R x Theta), each labelled.

Inputs (stable names): ``code`` (aiida-nmcml-engine), ``models`` (committee, ``m0`` drives), ``parameters`` (Dict,
schema :data:`PARAMETERS`), ``ground_states`` (optional, StructureData keyed like ``x0_5000``), ``device``,
``options`` (metadata options of every MD job), ``clean_workdir``, ``group_label`` (non-db str: outputs are added to
the group ``<group_label>/diffusion``).

Outputs (stable link labels, read by the campaign and the report):

============================  ========================================================================================
``table``                     Dict: one row per (T, x): D_xy / D_iso / D_z (median, 95 % interval, cm^2/s), Haven ratio,
                              runs used and runs excluded with their reasons; per x the Arrhenius Ea and D(300 K); model
                              and size checks. ``runs``: every run's status and flags.
``points.<x>_<T>``            Dict ``result`` of analyse_trajectories per (T, x) (key e.g. ``x0_5000_T0900``)
``samples.<x>_<T>``           ArrayData: pooled MSD curves and D / Haven samples per (T, x)
``run_checks.<run>``          Dict: flags of each production run (key e.g. ``x0_5000_T0900_r0``)
``run_msd.<run>``             ArrayData: the MSD curve of each production run (lag_fs, msd_xy_A2, msd_z_A2)
``arrhenius.<x>``             Dict: Ea, D0, D(300 K) intervals, curvature check, per Li content with >= 2 temperatures
``arrhenius_posterior.<x>``   ArrayData: samples of Ea_eV, ln_D0, D_300K_cm2_s
``model_check``               Dict (optional): D with another driver vs the reference, next to the statistical interval
``size_check``                Dict (optional): D at two cell sizes, ratio interval, agree within the error bar or not
``experiment``                Dict: the comparison with experiment (raw tracer vs chemical; converted where Theta given)
============================  ========================================================================================

Exit codes (one table, docs/dev/exit_codes.md): 585 no (T, x) point could be analysed; 770 some points missing
(outputs for the rest attached).
"""

from __future__ import annotations

import math

from aiida import orm
from aiida.engine import ToContext, WorkChain
from aiida.orm.nodes.data.base import to_aiida_type

from ..common import exit_codes
from ..common.schema import Field, Section
from ..engine import md_config
from ..protocols import ProtocolMixin
from ..setup.computer import job_options
from . import diffusion as functions
from .md_base import MdBaseWorkChain

PRODUCTION_ENSEMBLES = ('nvt_bussi', 'nvt_nose_hoover', 'nve')
_MD_KEYS_FROM_CHAIN = ('structure', 'models', 'device', 'restart_from', 'temperature_K', 'seed')


def content_key(x_li: float) -> str:
    """``x_li`` as a link-label-safe key: 0.5 -> ``x0_5000`` (as in ``nmcml.search``)."""
    return 'x' + f'{x_li:.4f}'.replace('.', '_')


def temperature_key(temperature: float) -> str:
    return f'T{round(float(temperature)):04d}'


def point_key(x_li: float, temperature: float) -> str:
    return f'{content_key(x_li)}_{temperature_key(temperature)}'


def _md_errors(value, ensembles: tuple[str, ...], what: str) -> str | None:
    errors = md_config.SCHEMA.errors(value, what)
    fixed = [key for key in _MD_KEYS_FROM_CHAIN if key in value]
    if fixed:
        errors.append(f'{what}: {", ".join(fixed)} are set per run by nmcml.diffusion; remove them')
    ensemble = value.get('ensemble', md_config.DEFAULTS['ensemble'])
    if ensemble not in ensembles:
        why = (
            ' (Langevin friction changes hop rates; use nvt_bussi or nvt_nose_hoover)'
            if ensemble == 'nvt_langevin'
            else ''
        )
        errors.append(f'{what}.ensemble: {ensemble!r} is not allowed here{why}; allowed: {", ".join(ensembles)}')
    return '; '.join(errors) or None


def _equilibration(value) -> str | None:
    message = _md_errors(value, ('npt',), 'equilibration')
    if message is None and value.get('barostat', 'full') != 'full':
        return "equilibration.barostat: 'full' only (anisotropic NPT: c/a must relax with x)"
    return message


def _analysis(value) -> str | None:
    if 'temperature_K' in value:
        return 'analysis.temperature_K is set per (T, x) by nmcml.diffusion; remove it'
    return '; '.join(functions.PARAMETERS.errors(value, 'analysis')) or None


def _supercell(value) -> str | None:
    if isinstance(value, int):
        return None if value >= 4 else 'a number of atoms >= 4'
    ok = isinstance(value, list) and (
        (len(value) == 3 and all(isinstance(v, int) for v in value))
        or (len(value) == 3 and all(isinstance(r, list) and len(r) == 3 for r in value))
    )
    return None if ok else 'a number of atoms, 3 repeats or a 3x3 integer matrix on the primitive cell'


def _thermodynamic_factors(value) -> str | None:
    for key, theta in value.items():
        try:
            x = float(key)
        except (TypeError, ValueError):
            return f'key {key!r} is not a Li content (write it as a number, e.g. "0.5")'
        if not 0.0 <= x <= 1.0 or not isinstance(theta, (int, float)) or isinstance(theta, bool) or theta <= 0:
            return f'{key}: Theta must be > 0 for a Li content in [0, 1]'
    return None


def temperatures_for(params: dict, x_li: float) -> list[float]:
    """The temperatures of content ``x_li``: ``temperatures_low_x_K`` at x <= ``low_x_threshold`` when given."""
    low = params.get('temperatures_low_x_K')
    if low and x_li <= params['low_x_threshold'] + 1e-12:
        return [float(t) for t in low]
    return [float(t) for t in params['temperatures_K']]


def _check_point(params: dict, section: str) -> str | None:
    check = params.get(section) or {}
    if not check.get('enabled'):
        return None
    x_li, temperature = check_point(params, section)
    if content_key(x_li) not in {content_key(x) for x in params['li_contents']}:
        return f'{section}.x_li = {x_li} is not one of li_contents'
    if temperature_key(temperature) not in {temperature_key(t) for t in temperatures_for(params, x_li)}:
        return f'{section}.temperature_K = {temperature} is not a temperature of x = {x_li}'
    return None


def _cross_checks(params) -> str | None:
    params = PARAMETERS.with_defaults(params)
    contents = [float(x) for x in params['li_contents']]
    if len({content_key(x) for x in contents}) != len(contents):
        return 'li_contents holds duplicates'
    for x_li in contents:
        keys = [temperature_key(t) for t in temperatures_for(params, x_li)]
        if len(set(keys)) != len(keys):
            return f'the temperatures of x = {x_li} repeat (after rounding to 1 K)'
    for section in ('model_check', 'size_check'):
        message = _check_point(params, section)
        if message:
            return message
    if params['size_check']['enabled'] and params['size_check']['supercell'] is None:
        return 'size_check.supercell: give the second cell size'
    return None


TEMPERATURE = Field(float, min=0.0, min_exclusive=True, max=5000.0, unit='K')
PARAMETERS = Section(
    {
        'li_contents': Field(list, items=Field(float, min=0.0, max=1.0), min_length=1, help='Li per formula unit'),
        'temperatures_K': Field(list, items=TEMPERATURE, min_length=2, help='temperatures (x > low_x_threshold)'),
        'temperatures_low_x_K': Field(list, default=None, nullable=True, items=TEMPERATURE, min_length=2,
                                      help='temperatures at x <= low_x_threshold; null = temperatures_K'),
        'low_x_threshold': Field(float, default=0.4, min=0.0, max=1.0),
        'n_replicas': Field(int, default=3, min=1, max=100, help='independent replicas (orderings, velocities)'),
        'seed': Field(int, default=0, min=0, help='base of every ordering and velocity seed'),
        'lattice': Section(
            {
                'supercell': Field((int, list), default=1200, check=_supercell,
                                   help='atoms, repeats or 3x3 matrix (aiida_nmcml.structures.supercell_matrix)'),
                'composition': Field(dict, default=None, nullable=True, help='TM fractions; null = NMC811'),
                'antisite_fraction': Field(float, default=0.0, min=0.0, max=0.2),
            }
        ),
        'equilibration': Field(dict, default={'ensemble': 'npt'}, check=_equilibration,
                               help='engine MD settings of the NPT equilibration (ensemble npt, barostat full)'),
        'production': Field(dict, default={'ensemble': 'nvt_bussi'},
                            check=lambda v: _md_errors(v, PRODUCTION_ENSEMBLES, 'production'),
                            help='engine MD settings of the production (nvt_bussi, nvt_nose_hoover or nve)'),
        'average_fraction': Field(float, default=0.5, min=0.0, min_exclusive=True, max=1.0,
                                  help='last fraction of the NPT frames whose mean cell the production uses'),
        'analysis': Field(dict, default={}, check=_analysis, help='analyse_trajectories settings (no temperature_K)'),
        'checks': Section(
            {
                'trust_upper': Field(float, default=None, nullable=True, min=0.0, min_exclusive=True, unit='eV/Å',
                                     help="upper end of the trust band; null = production's uncertainty.trust_upper"),
                'max_fraction_above': Field(float, default=0.0, min=0.0, max=1.0,
                                            help='monitored frames allowed above trust_upper before a run is flagged'),
                'oo_min_distance': Field(float, default=1.5, min=0.0, unit='Å', help='O-O contact flag'),
                'migration_fraction': Field(float, default=0.5, min=0.0, min_exclusive=True, max=2.0,
                                            help='TM displacement along the normal, in TM-Li interlayer distances'),
                'frame_stride': Field(int, default=1, min=1, help='check every k-th frame'),
                'max_npt_volume_change': Field(float, default=0.15, min=0.0, min_exclusive=True,
                                               help='|mean NPT volume / start - 1| above which the run is left out'),
            }
        ),
        'model_check': Section(
            {
                'enabled': Field(bool, default=True),
                'driver': Field(int, default=1, min=1, help='index (sorted keys) of the member that drives'),
                'x_li': Field(float, default=None, nullable=True, min=0.0, max=1.0, help='null: the first content'),
                'temperature_K': Field(float, default=None, nullable=True, min=0.0, min_exclusive=True, unit='K',
                                       help='null: the highest temperature of that content'),
            }
        ),
        'size_check': Section(
            {
                'enabled': Field(bool, default=False),
                'supercell': Field((int, list), default=None, nullable=True, check=_supercell),
                'n_replicas': Field(int, default=1, min=1, max=20),
                'x_li': Field(float, default=None, nullable=True, min=0.0, max=1.0, help='null: the first content'),
                'temperature_K': Field(float, default=None, nullable=True, min=0.0, min_exclusive=True, unit='K',
                                       help='null: the highest temperature of that content'),
            }
        ),
        'thermodynamic_factors': Field(dict, default=None, nullable=True, check=_thermodynamic_factors,
                                       help='{"0.5": Theta} per Li content, for the converted comparison'),
    },
    check=_cross_checks,
)  # fmt: skip


def check_point(params: dict, section: str) -> tuple[float, float]:
    """(x, T) of the model or size check: defaults are the first content at its highest temperature (most hops)."""
    check = params.get(section) or {}
    x_li = float(check['x_li']) if check.get('x_li') is not None else float(params['li_contents'][0])
    temperature = check.get('temperature_K')
    if temperature is None:
        temperature = max(temperatures_for(params, x_li))
    return x_li, float(temperature)


def build_grid(params: dict, n_models: int = 1) -> dict:
    """Every run of the work chain, from the (validated) ``parameters``: plain dicts, ordered, keyed by run key.

    ``kind``: ``grid`` (NPT + NVT), ``model`` (production only, on the cell of ``source``, another driver), ``size``
    (NPT + NVT on the second cell). ``ordering``: the key of the starting structure (:func:`ordering_requests`).
    """
    params = PARAMETERS.with_defaults(params)
    base = int(params['seed'])
    runs: dict[str, dict] = {}
    counter = 0
    for x_li in params['li_contents']:
        for temperature in temperatures_for(params, float(x_li)):
            for replica in range(params['n_replicas']):
                counter += 1
                key = f'{point_key(x_li, temperature)}_r{replica}'
                runs[key] = {
                    'kind': 'grid',
                    'x_li': float(x_li),
                    'temperature_K': temperature,
                    'replica': replica,
                    'point': point_key(x_li, temperature),
                    'ordering': f'{content_key(x_li)}_r{replica}',
                    'seed': base + 2 * counter,
                }
    model = params['model_check']
    if model['enabled'] and n_models > 1:
        x_li, temperature = check_point(params, 'model_check')
        source = f'{point_key(x_li, temperature)}_r0'
        driver = min(int(model['driver']), n_models - 1)
        runs[f'{source}_driver{driver}'] = {**runs[source], 'kind': 'model', 'source': source, 'driver': driver}
    size = params['size_check']
    if size['enabled']:
        x_li, temperature = check_point(params, 'size_check')
        for replica in range(size['n_replicas']):
            counter += 1
            key = f'size_{point_key(x_li, temperature)}_r{replica}'
            runs[key] = {
                'kind': 'size',
                'x_li': x_li,
                'temperature_K': temperature,
                'replica': replica,
                'point': f'size_{point_key(x_li, temperature)}',
                'ordering': f'size_{content_key(x_li)}_r{replica}',
                'seed': base + 2 * counter,
            }
    return runs


def ordering_requests(params: dict, runs: dict, ground_states=()) -> dict:
    """The starting orderings the runs need: ``{ordering key: {supercell, x_li, seed} or {'ground_state': x key}}``.

    Replica 0 of a content uses the GA ground state when one is given for that content (``ground_states`` keys);
    all others a random ordering with its own seed. The size check uses random orderings of its own cell.
    """
    params = PARAMETERS.with_defaults(params)
    lattice = params['lattice']
    requests = {}
    for run in runs.values():
        if run['kind'] == 'model' or run['ordering'] in requests:
            continue
        x_key = content_key(run['x_li'])
        if run['kind'] == 'grid' and run['replica'] == 0 and x_key in ground_states:
            requests[run['ordering']] = {'ground_state': x_key}
            continue
        supercell = params['size_check']['supercell'] if run['kind'] == 'size' else lattice['supercell']
        requests[run['ordering']] = {
            'supercell': supercell,
            'x_li': run['x_li'],
            'composition': lattice['composition'],
            'antisite_fraction': lattice['antisite_fraction'],
            'seed': int(params['seed']) + 7919 * (len(requests) + 1),
        }
    return requests


def included_runs(runs: dict, checks: dict) -> dict[str, list[str]]:
    """Per point, the runs whose checks passed (``in_domain``), in order. A run without checks (failed) is left out."""
    points: dict[str, list[str]] = {}
    for key, run in runs.items():
        if run['kind'] == 'model':
            continue
        points.setdefault(run['point'], [])
        if checks.get(key, {}).get('in_domain'):
            points[run['point']].append(key)
    return points


def driver_order(models: dict, driver: int) -> dict:
    """The committee re-keyed so that member ``driver`` (by sorted key) becomes ``m0``, the one the engine drives with;
    the others follow in their order. Same members, another driver: the model-uncertainty repeat."""
    keys = sorted(models)
    order = [keys[driver]] + [k for k in keys if k != keys[driver]]
    return {f'm{i}': models[k] for i, k in enumerate(order)}


def validate_inputs(inputs, _):
    models = inputs.get('models') or {}
    if not models:
        return 'give at least one model in `models` (a committee of two or more for the uncertainty flags)'
    params = inputs['parameters'].get_dict()
    errors = PARAMETERS.errors(params, 'parameters')
    if errors:
        return '\n'.join(errors)
    params = PARAMETERS.with_defaults(params)
    contents = {content_key(float(x)) for x in params['li_contents']}
    unknown = sorted(set(inputs.get('ground_states') or {}) - contents)
    if unknown:
        return f'ground_states {unknown} match no Li content of parameters.li_contents ({sorted(contents)})'
    if inputs.get('ground_states'):
        # replicas are pooled per (T, x): a ground state on another cell would mix cell sizes (and finite-size
        # effects) into one D; nmcml.search's cell must be the diffusion lattice for its ground state to be used
        from ..structures import NmcLattice

        n_sites = NmcLattice.from_supercell(params['lattice']['supercell']).n_sites
        n_li_sites = n_sites // 4  # one Li site per LiMO2
        expected = {
            content_key(float(x)): n_sites - n_li_sites + math.floor(float(x) * n_li_sites + 0.5)
            for x in params['li_contents']
        }  # as aiida_nmcml.structures rounds the Li count
        for key, node in inputs['ground_states'].items():
            if len(node.sites) != expected[key]:
                return (
                    f'ground_states.{key} has {len(node.sites)} atoms but the lattice of parameters.lattice.supercell '
                    f'holds {expected[key]} at that Li content: give the GA result of the same cell'
                )
    if params['model_check']['enabled'] and len(models) > 1 and params['model_check']['driver'] >= len(models):
        return f'model_check.driver = {params["model_check"]["driver"]} but the committee has {len(models)} members'
    return None


class DiffusionWorkChain(ProtocolMixin, WorkChain):
    """Grid of (x, T, replica) MD runs -> flags -> D(T, x) with intervals -> Arrhenius Ea, D(300 K) per x."""

    _protocol_filename = 'diffusion.yaml'

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input('code', valid_type=orm.AbstractCode, help='The aiida-nmcml-engine code.')
        spec.input_namespace(
            'models', valid_type=orm.Data, dynamic=True, help='Committee (MaceModel); `m0` (first key) drives the MD.'
        )
        spec.input('parameters', valid_type=orm.Dict, serializer=to_aiida_type, help='See PARAMETERS (schema).')
        spec.input_namespace(
            'ground_states',
            valid_type=orm.StructureData,
            dynamic=True,
            required=False,
            help='GA ground state per Li content (key x0_5000 ...): replica 0 of that content starts from it.',
        )
        spec.input('device', valid_type=orm.Str, serializer=to_aiida_type, default=lambda: orm.Str('auto'))
        spec.input('options', valid_type=dict, non_db=True, required=False, help='metadata.options of every MD job.')
        spec.input('clean_workdir', valid_type=orm.Bool, serializer=to_aiida_type, default=lambda: orm.Bool(False))
        spec.input(
            'group_label', valid_type=str, non_db=True, required=False, help='Add outputs to `<group_label>/diffusion`.'
        )
        spec.inputs.validator = validate_inputs
        spec.outline(
            cls.setup,
            cls.run_equilibration,
            cls.inspect_equilibration,
            cls.run_production,
            cls.inspect_production,
            cls.analyse,
            cls.results,
        )
        spec.output('table', valid_type=orm.Dict, help='D(T, x) with intervals, runs used/excluded, Arrhenius, checks.')
        spec.output_namespace('points', valid_type=orm.Dict, dynamic=True, help='analyse_trajectories per (T, x).')
        spec.output_namespace('samples', valid_type=orm.ArrayData, dynamic=True, help='MSD and D samples per (T, x).')
        spec.output_namespace('run_checks', valid_type=orm.Dict, dynamic=True, help='Flags of each production run.')
        spec.output_namespace('run_msd', valid_type=orm.ArrayData, dynamic=True, help='MSD curve of each run.')
        spec.output_namespace('arrhenius', valid_type=orm.Dict, dynamic=True, help='Ea, D(300 K) per Li content.')
        spec.output_namespace(
            'arrhenius_posterior', valid_type=orm.ArrayData, dynamic=True, help='Ea, ln D0, D(300 K) samples per x.'
        )
        spec.output('model_check', valid_type=orm.Dict, required=False, help='D with another committee driver.')
        spec.output('size_check', valid_type=orm.Dict, required=False, help='D at two cell sizes.')
        spec.output('experiment', valid_type=orm.Dict, required=False, help='Comparison with experiment (labelled).')
        exit_codes.declare(spec, 'ERROR_NO_DIFFUSION_DATA', 'ERROR_DIFFUSION_INCOMPLETE')

    @classmethod
    def get_builder_from_protocol(cls, code, models, protocol=None, overrides=None, *, ground_states=None):
        """A builder from ``diffusion.yaml``; ``overrides`` in its layout, e.g. ``{'parameters': {'n_replicas': 5}}``.

        :param models: dict or list of MaceModel nodes (a list is keyed ``m0``, ``m1`` ...; ``m0`` drives).
        :param ground_states: optional ``{x key or x_li: StructureData}``, e.g. the ``candidates.<x>.rank_0``
            outputs of ``nmcml.search``.

        With ``device: cuda`` (moderate, precise) every MD job asks for a GPU: ``gpu_options`` in ``overrides``, else
        the computer template's ``gpu_directive``, else the protocol's generic ``--gres=gpu:1``.
        """
        inputs = cls.get_protocol_inputs(protocol, overrides)
        builder = cls.get_builder()
        builder.code = code
        builder.models = models if isinstance(models, dict) else {f'm{i}': m for i, m in enumerate(models)}
        builder.parameters = orm.Dict(inputs['parameters'])
        builder.device = orm.Str(inputs['device'])
        # a cuda job asks for a GPU as the computer's template says (or `gpu_options` / the protocol's generic form)
        builder.options = job_options(
            code,
            inputs.get('options', {}),
            gpu=str(inputs['device']).startswith('cuda'),
            default_gpu_options=cls.get_protocol_inputs(protocol)['gpu_options'],
            gpu_options=(overrides or {}).get('gpu_options'),
        )
        builder.clean_workdir = orm.Bool(bool(inputs.get('clean_workdir', False)))
        if ground_states:
            builder.ground_states = {
                key if isinstance(key, str) else content_key(float(key)): node for key, node in ground_states.items()
            }
        return builder

    # ------------------------------------------------------------------------------------------------------ steps
    def setup(self):
        """The grid (:func:`build_grid`) and its starting orderings, built by the ``build_orderings`` calcfunction."""
        self.ctx.params = PARAMETERS.with_defaults(self.inputs.parameters.get_dict())
        models = dict(self.inputs.models)
        self.ctx.runs = build_grid(self.ctx.params, n_models=len(models))
        if self.ctx.params['model_check']['enabled'] and len(models) < 2:
            self.report('model_check skipped: the committee has one member, so no other driver exists')
        ground_states = dict(self.inputs.get('ground_states', {}))
        requests = ordering_requests(self.ctx.params, self.ctx.runs, ground_states)
        built = functions.build_orderings(
            requests=orm.Dict(requests), **{f'gs_{k}': v for k, v in ground_states.items()}
        )
        self.ctx.orderings = {key: node.uuid for key, node in built.items()}
        grid = [r for r in self.ctx.runs.values() if r['kind'] == 'grid']
        self.report(
            f'{len(grid)} runs: {len(self.ctx.params["li_contents"])} Li contents x temperatures x '
            f'{self.ctx.params["n_replicas"]} replicas; {len(self.ctx.runs) - len(grid)} check runs; '
            f'ground states given for {sorted(ground_states) or "none"}'
        )
        self.ctx.status = {}  # run key -> why it dropped out (equilibration / production failure)

    def _md_inputs(self, run: dict, structure, settings: dict, seed: int, models: dict | None = None) -> dict:
        """Inputs of one ``nmcml.md`` (under ``nmcml.md.base``): the stage's settings at the run's T and seed."""
        parameters = {**settings, 'temperature_K': run['temperature_K'], 'seed': seed}
        options = {'max_wallclock_seconds': 86400, **(self.inputs.get('options') or {})}
        return {
            'code': self.inputs.code,
            'structure': structure,
            'models': models or dict(self.inputs.models),
            'parameters': orm.Dict(parameters),
            'device': self.inputs.device,
            'metadata': {'options': options},
        }

    def run_equilibration(self):
        """Every grid and size-check run: full-cell NPT at its temperature, submitted together."""
        futures = {}
        for key, run in self.ctx.runs.items():
            if run['kind'] == 'model':
                continue
            structure = orm.load_node(self.ctx.orderings[run['ordering']])
            inputs = self._md_inputs(run, structure, self.ctx.params['equilibration'], seed=run['seed'])
            futures[f'npt_{key}'] = self.submit(
                MdBaseWorkChain, md=inputs, clean_workdir=self.inputs.clean_workdir,
                metadata={'call_link_label': f'npt_{key}'},
            )  # fmt: skip
        self.report(f'submitted {len(futures)} NPT equilibrations')
        return ToContext(**futures)

    def inspect_equilibration(self):
        """A failed NPT drops its run (reported); the others get their production cell (``production_cell``)."""
        self.ctx.production_structures = {}
        fraction = orm.Float(self.ctx.params['average_fraction'])
        for key, run in self.ctx.runs.items():
            if run['kind'] == 'model':
                continue
            node = self.ctx[f'npt_{key}']
            if not node.is_finished_ok or 'trajectory' not in node.outputs:
                self.ctx.status[key] = f'NPT equilibration failed (exit {node.exit_status}: {node.exit_message})'
                self.report(f'run {key}: {self.ctx.status[key]}; left out')
                continue
            cell = functions.production_cell(trajectory=node.outputs.trajectory, fraction=fraction)
            change = cell.base.attributes.get('nmcml_npt_average')['volume_change']
            runaway = functions.npt_runaway(change, self.ctx.params['checks']['max_npt_volume_change'])
            if runaway:
                self.ctx.status[key] = runaway
                self.report(f'run {key}: {runaway}; left out')
                continue
            self.ctx.production_structures[key] = cell.uuid

    def run_production(self):
        """NVT (Bussi / Nose-Hoover) at the averaged cell; the model check reuses its source run's cell and seed."""
        futures = {}
        models = dict(self.inputs.models)
        for key, run in self.ctx.runs.items():
            source = run.get('source', key)
            if source not in self.ctx.production_structures:
                if run['kind'] == 'model':
                    self.ctx.status[key] = f'source run {source} has no production cell'
                continue
            structure = orm.load_node(self.ctx.production_structures[source])
            committee = driver_order(models, run['driver']) if run['kind'] == 'model' else models
            inputs = self._md_inputs(run, structure, self.ctx.params['production'], run['seed'] + 1, committee)
            futures[f'nvt_{key}'] = self.submit(
                MdBaseWorkChain, md=inputs, clean_workdir=self.inputs.clean_workdir,
                metadata={'call_link_label': f'nvt_{key}'},
            )  # fmt: skip
        self.report(f'submitted {len(futures)} NVT productions')
        return ToContext(**futures)

    def inspect_production(self):
        """Per production run: ``inspect_run`` (trust band, TM migration, O-O contacts, MSD curve); flags reported."""
        params = self.ctx.params
        checks_settings = dict(params['checks'])
        if checks_settings['trust_upper'] is None:
            unc = md_config.SCHEMA.with_defaults(params['production'])['uncertainty']
            checks_settings['trust_upper'] = unc['trust_upper'] if unc['trust_upper'] is not None else 1.0
        self.ctx.checks = {}
        for key in self.ctx.runs:
            label = f'nvt_{key}'
            if label not in self.ctx:
                continue
            node = self.ctx[label]
            if 'trajectory' not in node.outputs:
                self.ctx.status[key] = f'production failed without frames (exit {node.exit_status})'
                self.report(f'run {key}: {self.ctx.status[key]}; left out')
                continue
            settings = {**checks_settings, 'exit_status': node.exit_status, 'exit_message': node.exit_message or ''}
            kwargs = {'trajectory': node.outputs.trajectory, 'settings': orm.Dict(settings)}
            if 'uncertainty' in node.outputs:
                kwargs['uncertainty'] = node.outputs.uncertainty
            out = functions.inspect_run(**kwargs)
            self.out(f'run_checks.{key}', out['checks'])
            self.out(f'run_msd.{key}', out['msd'])
            flags = out['checks'].get_dict()
            self.ctx.checks[key] = flags
            if not flags['in_domain']:
                self.report(f'run {key} flagged and left out of the fits: {"; ".join(flags["reasons"])}')

    def analyse(self):
        """Per (T, x) the in-domain replicas pooled; per x the Arrhenius fit over the points it has."""
        params = self.ctx.params
        analysis = dict(params['analysis'])
        self.ctx.point_results, self.ctx.point_samples, self.ctx.missing = {}, {}, {}
        trajectories = {}
        for point, keys in included_runs(self.ctx.runs, self.ctx.checks).items():
            if not keys:
                self.ctx.missing[point] = 'no in-domain run'
                continue
            reps = {f'r_{key}': self.ctx[f'nvt_{key}'].outputs.trajectory for key in keys}
            reps = self._equal_length(point, reps)
            temperature = self.ctx.runs[keys[0]]['temperature_K']
            try:
                out = functions.analyse_trajectories(
                    parameters=orm.Dict({**analysis, 'temperature_K': temperature}), **reps
                )
            except Exception as exc:  # a too-short trajectory: reported per point, the others go on
                self.ctx.missing[point] = f'analysis failed: {exc}'
                self.report(f'point {point}: analysis failed: {exc}')
                continue
            self.ctx.point_results[point] = out['result'].uuid
            self.ctx.point_samples[point] = out['samples'].uuid
            trajectories[point] = reps
            if not point.startswith('size_'):
                self.out(f'points.{point}', out['result'])
                self.out(f'samples.{point}', out['samples'])
        for point, why in self.ctx.missing.items():
            self.report(f'point {point}: {why}')
        self.ctx.arrhenius = {}
        for x_li in params['li_contents']:
            x_key = content_key(float(x_li))
            samples = {
                point: orm.load_node(uuid)
                for point, uuid in self.ctx.point_samples.items()
                if point.startswith(f'{x_key}_')
            }
            if len(samples) < 2:
                self.report(f'x = {x_li}: {len(samples)} temperature(s) with data, no Arrhenius fit')
                continue
            fit = functions.arrhenius(**samples)
            self.out(f'arrhenius.{x_key}', fit['result'])
            self.out(f'arrhenius_posterior.{x_key}', fit['posterior'])
            self.ctx.arrhenius[x_key] = fit['result'].uuid
            ea = fit['result'].get_dict()['Ea_eV']
            self.report(f'x = {x_li}: Ea = {ea[0]:.3f} eV [{ea[1]:.3f}, {ea[2]:.3f}] from {len(samples)} temperatures')
        self._model_check(analysis)
        self._size_check()

    def _equal_length(self, point: str, reps: dict) -> dict:
        """Replicas must have as many frames to be pooled: a shorter one (a restart cut) trims the others, reported."""
        lengths = {key: functions.count_frames(node) for key, node in reps.items()}
        if len(set(lengths.values())) > 1:
            self.report(f'point {point}: replicas of unequal length {lengths}; pooled on the shortest')
            return {key: functions.trim_trajectory(node, orm.Int(min(lengths.values()))) for key, node in reps.items()}
        return reps

    def _model_check(self, analysis: dict):
        runs = {k: r for k, r in self.ctx.runs.items() if r['kind'] == 'model'}
        for key, run in runs.items():
            source = run['source']
            if not (self.ctx.checks.get(key, {}).get('in_domain') and self.ctx.checks.get(source, {}).get('in_domain')):
                self.report(f'model check {key}: it or its source run is not in domain; not compared')
                continue
            params = orm.Dict({**analysis, 'temperature_K': run['temperature_K']})
            reference = functions.analyse_trajectories(
                parameters=params, r0=self.ctx[f'nvt_{source}'].outputs.trajectory
            )
            other = functions.analyse_trajectories(parameters=params, r0=self.ctx[f'nvt_{key}'].outputs.trajectory)
            result = functions.compare_d(
                reference=reference['samples'], other=other['samples'],
                labels=orm.Dict({'reference': f'driver m0 ({source})', 'other': f'driver member {run["driver"]}',
                                 'kind': 'model'}),
            )  # fmt: skip
            self.out('model_check', result)
            self.ctx.model_check = result.uuid

    def _size_check(self):
        if not self.ctx.params['size_check']['enabled']:
            return
        x_li, temperature = check_point(self.ctx.params, 'size_check')
        small, large = point_key(x_li, temperature), f'size_{point_key(x_li, temperature)}'
        if small not in self.ctx.point_samples or large not in self.ctx.point_samples:
            self.report(f'size check: {small} or {large} has no analysed data; not compared')
            return
        result = functions.compare_d(
            reference=orm.load_node(self.ctx.point_samples[small]),
            other=orm.load_node(self.ctx.point_samples[large]),
            labels=orm.Dict({'reference': 'grid cell', 'other': 'size-check cell', 'kind': 'size'}),
        )
        self.out('size_check', result)
        self.ctx.size_check = result.uuid

    def results(self):
        """``table`` and ``experiment`` (calcfunctions over every result node), the group, the exit status."""
        kwargs = {f'point_{k}': orm.load_node(v) for k, v in self.ctx.point_results.items()}
        kwargs.update({f'arrhenius_{k}': orm.load_node(v) for k, v in self.ctx.arrhenius.items()})
        kwargs.update({f'run_{k}': self.outputs['run_checks'][k] for k in self.ctx.checks})
        for name in ('model_check', 'size_check'):
            if name in self.ctx:
                kwargs[name] = orm.load_node(self.ctx[name])
        runs = {key: {**run, 'dropped': self.ctx.status.get(key)} for key, run in self.ctx.runs.items()}
        kwargs['grid'] = orm.Dict({'runs': runs, 'missing': self.ctx.missing})
        table = functions.diffusion_table(**kwargs)
        self.out('table', table)
        experiment = functions.compare_with_experiment(
            table=table, settings=orm.Dict({'thermodynamic_factors': self.ctx.params['thermodynamic_factors']})
        )
        self.out('experiment', experiment)
        self._add_to_group()
        n_points = len({r['point'] for r in self.ctx.runs.values() if r['kind'] == 'grid'})
        missing = {p: why for p, why in self.ctx.missing.items() if not p.startswith('size_')}
        if len(missing) == n_points:
            return self.exit_codes.ERROR_NO_DIFFUSION_DATA.format(reasons=missing)
        if missing:
            return self.exit_codes.ERROR_DIFFUSION_INCOMPLETE.format(
                missing=len(missing), total=n_points, details=missing
            )
        return None

    def _add_to_group(self):
        label = self.inputs.get('group_label')
        if not label:
            return
        group, _ = orm.Group.collection.get_or_create(f'{label}/diffusion')
        nodes = []
        for value in self.outputs.values():
            nodes.extend(value.values() if isinstance(value, dict) else [value])
        group.add_nodes([n for n in nodes if isinstance(n, orm.Node)])
        self.report(f'{len(nodes)} outputs added to group {group.label}')

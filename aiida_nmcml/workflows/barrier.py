"""``nmcml.barrier``: Li migration barriers of chosen hops, model CI-NEB checked by DFT on the same path.

For every requested hop (oxygen-dumbbell hop ``odh`` into a single vacancy, tetrahedral-site hop ``tsh`` into a
divacancy) at a Li content ``x_li`` and a local transition-metal environment (``Ni``: Ni-rich, ``Mn``/``Co``: that TM
nearest the transition point, ``Ni_Li``: the hop nearest a Ni on the Li layer, ``any``: the first hop found):

1. ``build_hops`` (calcfunction, :func:`aiida_nmcml.hops.build_hop`) makes the end points (and the TSH guide ``via``)
   in a layered Li_x NMC supercell, with the builder's starting moments and sublattice labels;
2. one ``nmcml.neb`` per hop: the cell relaxed by the model at that x (``relax_cell``; the TSH barrier follows the
   Li slab spacing c), end points relaxed, IDPP path, NEB then climbing-image NEB; the whole committee evaluates the
   final images (barrier spread and per-image force deviation);
3. optional DFT check: one ``nmcml.label`` with every image of every hop as a single point. Every image starts from
   the *same* moments (those of the initial structure: the images carry them, ``image_structures``), and the Ni
   moments of each image are classed and compared with image 0's: an image whose pattern changes is flagged
   (science review 8.3: a jump of the charge localisation gives a fake barrier);
4. optional zero-shot universal potential (``nmcml.evaluate`` with ``universal_potential``, e.g. CHGNet) on the same
   images: un-fine-tuned models tend to underestimate barriers (docs/references.md: LiNiO2 ODH, MACE-MP-0 0.363 vs DFT
   0.451 eV). Where the potential is not installed (exit 230) the table says so and the work chain goes on;
5. ``barrier_table`` (calcfunction): per hop the model barrier, the DFT barrier on the model path, the zero-shot
   barrier, their differences, per-image energies relative to the initial image, committee spread and flags.

Optional (default off), for a subset of hops (``parameters.dft_neb.hops``): a full DFT CI-NEB with QE's neb.x
(aiida-quantumespresso's ``NebCalculation``, on the ``nmcml-neb`` code of ``aiida-nmcml setup``), started from the
model's converged images with the DFT settings of the single points (``dft_neb.settings``: same functional, U,
pseudopotentials, cutoffs, k-point distance, starting moments). Its barrier is DFT's own minimum-energy-path barrier;
the single points only give the DFT barrier of the model's path. Limitation: the NebCalculation builds its species
from chemical symbols, so every atom of an element starts from one moment; hops whose host needs several starting
moments per element (Ni2+/Ni3+ in NMC811) are refused before submission.

Outputs (stable link labels, read by the campaign report): ``table`` (Dict, one row per hop key), ``hops.<key>.images``
(TrajectoryData with energies), ``hops.<key>.transition_state``, ``hops.<key>.neb`` (the NEB summary Dict),
``labelled`` (TrainingSet of the DFT single points, ``info['label_key'] = '<key>__image_NN'``),
``zero_shot_predictions`` (ArrayData of nmcml.evaluate). With ``group_label`` C, the table, images, transition states
and labels are added to the group ``C/barriers``.
"""

from __future__ import annotations

import functools
import json

import numpy as np
from aiida import orm
from aiida.engine import ToContext, WorkChain, calcfunction, if_
from aiida.orm.nodes.data.base import to_aiida_type

from ..calculations.evaluate import EvaluateCalculation
from ..calculations.neb import NebCalculation
from ..common import exit_codes
from ..common.schema import Field, Section
from ..protocols import ProtocolMixin
from ..structures import kind_names
from .label import LabelWorkChain

HOP_KINDS = ('odh', 'tsh')
ENVIRONMENTS = ('any', 'Ni', 'Mn', 'Co', 'Ni_Li')
GROUP_SUFFIX = 'barriers'

HOP = Section(
    {
        'kind': Field(str, choices=HOP_KINDS, help='odh: single vacancy, O-O edge; tsh: divacancy, tetrahedral site'),
        'x_li': Field(float, default=1.0, min=0.0, max=1.0, help='Li content of the host before the hop vacancies'),
        'environment': Field(
            str,
            default='any',
            choices=ENVIRONMENTS,
            help='TM nearest the transition point (Ni-rich, Mn/Co adjacent), or Ni_Li: a Ni antisite nearby',
        ),
    }
)


def _check_hops(hops) -> str | None:
    errors = []
    for index, hop in enumerate(hops):
        if not isinstance(hop, dict):
            errors.append(f'parameters.hops[{index}]: a dict {{kind, x_li, environment}}, not {hop!r}')
            continue
        errors.extend(HOP.errors(hop, f'parameters.hops[{index}]'))
    if errors:
        return '; '.join(errors)
    keys = [hop_key(HOP.with_defaults(h)) for h in hops]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    return f'parameters.hops: the same hop twice: {duplicates}' if duplicates else None


def _check_supercell(value) -> str | None:
    if isinstance(value, int):
        return None if value >= 8 else 'parameters.supercell: at least 8 atoms'
    if len(value) != 3 or not all(isinstance(n, int) and n >= 1 for n in value):
        return 'parameters.supercell: a number of atoms, or three positive hexagonal repeats [n1, n2, n3]'
    return None


def _check_bounds(value) -> str | None:
    if len(value) != 2 or not 0 < value[0] < value[1]:
        return 'parameters.ni_moment_bounds: two increasing positive moments [Ni4+|Ni3+, Ni3+|Ni2+] in µB'
    return None


DFT_NEB = Section(
    {
        'hops': Field(
            list,
            default=[],
            items=str,
            help='hop keys (e.g. odh_any_x1_0000) for a full DFT CI-NEB with neb.x; empty (default): none',
        ),
        'nstep_path': Field(int, default=50, min=1, help='neb.x path optimisation steps'),
        'path_thr': Field(
            float,
            default=0.05,
            min=0.0,
            min_exclusive=True,
            max=5.0,
            unit='eV/Å',
            help='neb.x convergence: largest force perpendicular to the path',
        ),
        'ci_scheme': Field(str, default='auto', choices=('auto', 'no-CI'), help='auto: the highest image climbs'),
        'opt_scheme': Field(str, default='broyden', choices=('broyden', 'broyden2', 'quick-min', 'sd', 'langevin')),
    },
    help='optional DFT CI-NEB (QE neb.x) on a subset of hops, started from the model images',
)


PARAMETERS = Section(
    {
        'supercell': Field(
            (int, list),
            default=[5, 4, 1],
            check=_check_supercell,
            help='hexagonal repeats [n1, n2, n3] (5 4 1: 240 sites, 60 TM: exact NMC811) or a number of atoms',
        ),
        'composition': Field(dict, default={'Ni': 0.8, 'Mn': 0.1, 'Co': 0.1}, help='TM fractions'),
        'seed': Field(int, default=0, min=0, help='TM order and vacancies of the hosts'),
        'antisite_pairs': Field(int, default=1, min=1, help='Li/Ni exchanges in the host of Ni_Li hops'),
        'hops': Field(list, min_length=1, check=_check_hops, help='[{kind, x_li, environment}, ...]'),
        'ni_moment_bounds': Field(
            list, default=[0.5, 1.35], items=float, check=_check_bounds, unit='µB', help='Ni4+|Ni3+|Ni2+ classes'
        ),
        'dft_neb': DFT_NEB,
    }
)


def hop_key(hop: dict) -> str:
    """Link-label-safe key of one hop: ``odh_ni_x1_0000``, ``tsh_ni_li_x0_5000``."""
    x = f'{float(hop["x_li"]):.4f}'.replace('.', '_')
    return f'{hop["kind"]}_{hop["environment"].lower()}_x{x}'


def plan_hops(parameters: dict) -> dict:
    """Build every requested hop (no AiiDA): ``{key: aiida_nmcml.hops.Hop}``. Raises ValueError naming the hop."""
    from ..hops import build_hop, hexagonal_supercell
    from ..structures import NmcLattice, build_nmc

    params = PARAMETERS.with_defaults(parameters)
    supercell = params['supercell']
    matrix = supercell if isinstance(supercell, int) else hexagonal_supercell(*supercell)
    hosts: dict = {}
    hops = {}
    for hop in params['hops']:
        hop = HOP.with_defaults(hop)
        antisite = hop['environment'] == 'Ni_Li'
        host_key = (float(hop['x_li']), antisite)
        if host_key not in hosts:
            fraction = 0.0
            if antisite:
                n_li_sites = int(np.sum(NmcLattice.from_supercell(matrix).sublattice == 'li'))
                fraction = params['antisite_pairs'] / n_li_sites
            hosts[host_key] = build_nmc(
                matrix,
                x_li=float(hop['x_li']),
                composition=params['composition'],
                seed=params['seed'],
                antisite_fraction=fraction,
            )
        environment = None if hop['environment'] in ('any', 'Ni_Li') else hop['environment']
        try:
            hops[hop_key(hop)] = build_hop(
                hop['kind'], hosts[host_key], environment=environment, near_antisite=antisite
            )
        except ValueError as exc:
            raise ValueError(f'hop {hop_key(hop)}: {exc} (try another seed, x_li or environment)') from exc
    return hops


@calcfunction
def build_hops(parameters: orm.Dict):
    """End points (``<key>__initial``/``__final``), TSH guides (``<key>__via``) and ``hop_info`` of every hop."""
    from ..structures import to_structure_data

    outputs = {}
    info = {}
    for key, hop in plan_hops(parameters.get_dict()).items():
        outputs[f'{key}__initial'] = to_structure_data(hop.initial)
        outputs[f'{key}__final'] = to_structure_data(hop.final)
        if hop.via is not None:
            outputs[f'{key}__via'] = to_structure_data(hop.via)
        info[key] = {k: v for k, v in hop.info.items()}
    outputs['hop_info'] = orm.Dict(info)
    return outputs


@calcfunction
def images_to_frames(**structures):
    """The model's images of every hop as one TrainingSet (``info['image_key']``) for the zero-shot evaluation."""
    from ..data.trainingset import TrainingSet
    from ..structures import from_structure_data

    frames = []
    for key in sorted(structures):
        atoms = from_structure_data(structures[key])
        atoms.info = {'image_key': key}
        frames.append(atoms)
    return TrainingSet.from_frames(frames)


def dft_neb_inputs(code, settings: dict, structures: dict, params: dict, key: str) -> dict:
    """Inputs of aiida-quantumespresso's ``NebCalculation`` (neb.x) for one hop, from the model's images.

    The pw.x part (parameters, pseudopotentials, U, starting moments, resources, k-point distance) is what the
    single-point builder of ``nmcml.label`` makes for image 0 with the same ``settings``, so the DFT NEB and the DFT
    single points share one Hamiltonian (as aiida-quantumespresso's own NebBaseWorkChain does, ``calculation``
    stays as the pw.x protocol has it: neb.x drives the images; ``tstress`` is dropped, the cell is fixed). The
    images are the model's converged path, as many as the model used (``num_of_images``), so neb.x does not
    re-interpolate. ``params``: :data:`DFT_NEB` with defaults.
    """
    from aiida_quantumespresso.calculations.functions.create_kpoints_from_distance import (
        create_kpoints_from_distance,
    )

    from ..dft.adapter import get_adapter

    names = sorted(structures)
    first = structures[names[0]]
    pw = get_adapter(settings, 'qe').builder(code, first)
    pw_parameters = pw.pw.parameters.get_dict()
    pw_parameters['CONTROL'].pop('tstress', None)  # fixed cell: no stress needed along the path
    kpoints = create_kpoints_from_distance(
        first, orm.Float(pw.kpoints_distance.value), orm.Bool(False), metadata={'call_link_label': f'kpoints_{key}'}
    )
    path = {
        'string_method': 'neb',
        'restart_mode': 'from_scratch',
        'num_of_images': len(names),
        'nstep_path': params['nstep_path'],
        'path_thr': params['path_thr'],
        'CI_scheme': params['ci_scheme'],
        'opt_scheme': params['opt_scheme'],
    }
    return {
        'code': code,
        'images': neb_images_trajectory(**structures, metadata={'call_link_label': f'images_{key}'}),
        'parameters': orm.Dict({'PATH': path}),
        'pw': {'parameters': orm.Dict(pw_parameters), 'pseudos': dict(pw.pw.pseudos), 'kpoints': kpoints},
        'metadata': {'options': dict(pw.pw.metadata.options), 'call_link_label': f'dft_neb_{key}'},
    }


@calcfunction
def neb_images_trajectory(**structures):
    """The model's images (``image_NN``, path order) as the TrajectoryData that aiida-quantumespresso's NebCalculation
    takes; kinds are element symbols (validated: one starting moment per element)."""
    return orm.TrajectoryData([structures[name] for name in sorted(structures)])


def _split_key(key: str) -> tuple[str, int]:
    hop, image = key.rsplit('__image_', 1)
    return hop, int(image)


@calcfunction
def barrier_table(settings: orm.Dict, **kwargs):
    """One row per hop (see :mod:`aiida_nmcml.analysis.barriers`), from the NEB summaries (``neb__<key>``), the DFT
    frames (``labelled``), the zero-shot frames and predictions (``zero_shot_frames``/``zero_shot_predictions``) and
    the neb.x results (``dft_neb__<key>``: aiida-quantumespresso's NebCalculation ``output_parameters``).
    """
    from ..analysis.barriers import barrier_row

    settings = settings.get_dict()
    labelled = kwargs.pop('labelled', None)
    zero_frames = kwargs.pop('zero_shot_frames', None)
    zero_predictions = kwargs.pop('zero_shot_predictions', None)
    dft_nebs = {name[len('dft_neb__') :]: kwargs.pop(name) for name in list(kwargs) if name.startswith('dft_neb__')}
    dft: dict = {}
    moments: dict = {}
    if labelled is not None:
        for atoms in labelled.get_frames():
            hop, image = _split_key(str(atoms.info['label_key']))
            dft.setdefault(hop, {})[image] = float(atoms.info['REF_energy'])
            if 'REF_magmoms' in atoms.arrays:
                ni = np.array(atoms.get_chemical_symbols()) == 'Ni'
                moments.setdefault(hop, {})[image] = np.asarray(atoms.arrays['REF_magmoms'], dtype=float)[ni]
    zero: dict = {}
    if zero_frames is not None and zero_predictions is not None:
        energies = zero_predictions.get_array('energy')
        for atoms, energy in zip(zero_frames.get_frames(), energies, strict=True):
            hop, image = _split_key(str(atoms.info['image_key']))
            zero.setdefault(hop, {})[image] = float(energy)
    table = {}
    for name, params in sorted(kwargs.items()):
        key = name.removeprefix('neb__')
        row = barrier_row(
            params.get_dict(),
            dft_energies=dft.get(key, {}) if settings.get('dft') else None,
            ni_moments=moments.get(key),
            zero_shot_energies=zero.get(key, {}) if settings.get('zero_shot') else None,
            bounds=tuple(settings['ni_moment_bounds']),
            dft_neb=dft_nebs[key].get_dict() if key in dft_nebs else None,
        )
        row.update(settings['hop_info'].get(key, {}))
        row['hop'] = key
        if settings.get('zero_shot_unavailable'):
            row['zero_shot_note'] = settings['zero_shot_unavailable']
        table[key] = row
    for key, reason in settings.get('failed', {}).items():
        table[key] = {'hop': key, **settings['hop_info'].get(key, {}), 'failed': reason, 'flags': [reason]}
    return orm.Dict(table)


@functools.cache
def _plan_error(params_json: str) -> str | None:
    """Why the hops cannot be built, or None (cached: the port is validated on every builder assignment).

    Also refuses a DFT NEB (``dft_neb.hops``) of a hop that is not requested, or whose host needs several starting
    moments for one element: aiida-quantumespresso's NebCalculation makes its species from chemical symbols (its
    ``TrajectoryData`` images carry no kinds), so it cannot start Ni2+ and Ni3+ from different moments.
    """
    params = json.loads(params_json)
    try:
        hops = plan_hops(params)
    except ValueError as exc:
        return str(exc)
    for key in (params.get('dft_neb') or {}).get('hops', []):
        if key not in hops:
            return f'parameters.dft_neb.hops: {key!r} is not one of the requested hops {sorted(hops)}'
        atoms = hops[key].initial
        symbols = atoms.get_chemical_symbols()
        names = kind_names(symbols, atoms.get_initial_magnetic_moments())
        split = sorted({symbol for symbol, name in zip(symbols, names, strict=True) if symbol != name})
        if split:
            return (
                f'parameters.dft_neb.hops: hop {key} starts {", ".join(split)} from several moments (several kinds per '
                "element); neb.x through aiida-quantumespresso's NebCalculation takes one species per element, so it "
                'cannot: leave this hop to the single points on the model path'
            )
    return None


def validate_parameters(value, _):
    """Schema errors (closest key named), then a dry run of the hop builder: a hop the host cannot hold (no Mn next
    to any tetrahedral site of this cell, say) is refused before submission, naming the hop."""
    if value is None:
        return None
    params = value.get_dict()
    errors = PARAMETERS.errors(params, 'parameters')
    if errors:
        return '\n'.join(errors)
    return _plan_error(json.dumps(params, sort_keys=True))


def validate_inputs(inputs, _):
    if 'dft' in inputs and inputs['dft'] and 'code' not in inputs['dft']:
        return 'the `dft` namespace needs code, engine and settings (get_builder_from_protocol(dft_code=...))'
    zero = inputs.get('zero_shot')
    if zero and 'universal_potential' not in zero:
        return 'the `zero_shot` namespace needs `universal_potential` (e.g. chgnet)'
    parameters = inputs.get('parameters')
    wanted = ((parameters.get_dict() if parameters is not None else {}).get('dft_neb') or {}).get('hops', [])
    dft_neb = inputs.get('dft_neb') or {}
    has_neb = 'code' in dft_neb and 'settings' in dft_neb
    if wanted and not has_neb:
        return 'parameters.dft_neb.hops asks for a DFT NEB: give dft_neb.code (neb.x) and dft_neb.settings'
    if dft_neb and not wanted:
        return 'the `dft_neb` namespace is given but parameters.dft_neb.hops is empty: no hop would use it'
    if has_neb:
        from ..dft.settings import check_resolved_settings

        message = check_resolved_settings(dft_neb['settings'].get_dict(), 'qe')
        if message:
            return f'dft_neb.settings: {message}'
    return None


class BarrierWorkChain(ProtocolMixin, WorkChain):
    """Model CI-NEB of ODH/TSH hops -> DFT single points on the model path (same moments, Ni check) -> zero-shot."""

    _protocol_filename = 'barrier.yaml'

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.expose_inputs(
            NebCalculation,
            namespace='neb',
            exclude=('initial_structure', 'final_structure', 'via_structure'),
            namespace_options={'help': 'Inputs of nmcml.neb: code, models (the committee), parameters, device.'},
        )
        spec.input(
            'parameters',
            valid_type=orm.Dict,
            serializer=to_aiida_type,
            validator=validate_parameters,
            help='Hops and hosts (schema PARAMETERS): supercell, composition, seed, antisite_pairs, hops, '
            'ni_moment_bounds.',
        )
        spec.expose_inputs(
            LabelWorkChain,
            namespace='dft',
            exclude=('structures', 'frames'),
            namespace_options={
                'required': False,
                'populate_defaults': False,
                'help': 'Inputs of nmcml.label for the DFT single points on the model images; absent: no DFT check.',
            },
        )
        spec.inputs['dft'].validator = None  # it demands structures, which come from the NEB images
        spec.expose_inputs(
            EvaluateCalculation,
            namespace='zero_shot',
            exclude=('frames', 'models'),
            namespace_options={
                'required': False,
                'populate_defaults': False,
                'help': 'Inputs of nmcml.evaluate with a universal_potential (chgnet) for the zero-shot barrier.',
            },
        )
        spec.input_namespace(
            'dft_neb',
            required=False,
            populate_defaults=False,
            help='Full DFT CI-NEB with neb.x for the hops in parameters.dft_neb.hops (absent: none).',
        )
        spec.input('dft_neb.code', valid_type=orm.AbstractCode, required=False, help='neb.x (nmcml-neb of setup).')
        spec.input(
            'dft_neb.settings',
            valid_type=orm.Dict,
            required=False,
            serializer=to_aiida_type,
            help='DFT settings as for nmcml.label with engine qe (the single points use the same).',
        )
        spec.input(
            'group_label',
            valid_type=str,
            non_db=True,
            required=False,
            help='Campaign name C: the table, images, transition states and labels go to the group C/barriers.',
        )
        spec.inputs.validator = validate_inputs
        spec.outline(
            cls.setup,
            cls.run_neb,
            cls.inspect_neb,
            if_(cls.should_run_dft)(cls.run_dft, cls.inspect_dft),
            if_(cls.should_run_dft_neb)(cls.run_dft_neb, cls.inspect_dft_neb),
            if_(cls.should_run_zero_shot)(cls.run_zero_shot, cls.inspect_zero_shot),
            cls.results,
        )
        spec.output('table', valid_type=orm.Dict, required=False, help='Per hop key: model/DFT/zero-shot barriers.')
        spec.output_namespace(
            'hops', dynamic=True, required=False, help='Per hop key: images, transition_state, neb (summary).'
        )
        spec.output('labelled', valid_type=orm.Data, required=False, help='DFT single points (TrainingSet).')
        spec.output('zero_shot_predictions', valid_type=orm.ArrayData, required=False, help='nmcml.evaluate arrays.')
        exit_codes.declare(
            spec,
            'ERROR_BARRIER_NEB_FAILED',
            'ERROR_BARRIER_DFT_FAILED',
            'ERROR_BARRIER_ZERO_SHOT_FAILED',
            'ERROR_BARRIER_DFT_NEB_FAILED',
            'ERROR_BARRIER_INCOMPLETE',
        )  # docs/dev/exit_codes.md

    @classmethod
    def get_builder_from_protocol(
        cls,
        engine_code,
        models=None,
        protocol=None,
        overrides=None,
        *,
        dft_code=None,
        dft_engine: str = 'qe',
        dft_neb_code=None,
        group_label: str | None = None,
    ):
        """A builder from ``barrier.yaml``; ``overrides`` may set any key of it, plus ``label`` (nmcml.label protocol
        overrides). ``dft_code``: pw.x (or VASP) for the DFT check; without it there is none. ``zero_shot`` (protocol
        key, e.g. ``chgnet``; ``None`` to skip) runs on ``engine_code``. ``dft_neb_code``: neb.x for the hops in
        ``parameters.dft_neb.hops`` (overrides), with the DFT settings of the label protocol (engine qe)."""
        overrides = dict(overrides or {})
        label_overrides = overrides.pop('label', None)
        inputs = cls.get_protocol_inputs(protocol, overrides)
        # a composition is replaced, not merged: {Ni: 1.0} means LiNiO2, not Ni 1.0 + the default's Mn and Co
        level = cls._load_protocol_file()['protocols'][protocol or cls.get_default_protocol()]
        for source in (level, overrides):
            composition = (source.get('parameters') or {}).get('composition')
            if composition is not None:
                inputs['parameters']['composition'] = dict(composition)
        builder = cls.get_builder()
        builder.parameters = orm.Dict(inputs['parameters'])
        neb = inputs['neb']
        builder.neb.code = engine_code
        builder.neb.parameters = orm.Dict(neb['parameters'])
        builder.neb.device = orm.Str(neb['device'])
        if models:
            builder.neb.models = models if isinstance(models, dict) else {f'm{i}': m for i, m in enumerate(models)}
        for key, value in neb.get('metadata', {}).get('options', {}).items():
            builder.neb.metadata.options[key] = value
        if dft_code is not None:
            label = LabelWorkChain.get_builder_from_protocol(
                dft_code, engine=dft_engine, protocol=inputs['label_protocol'], overrides=label_overrides
            )
            for key in ('code', 'engine', 'settings', 'min_success_fraction'):
                builder.dft[key] = label[key]
        if dft_neb_code is not None:
            label = LabelWorkChain.get_builder_from_protocol(
                dft_neb_code, engine='qe', protocol=inputs['label_protocol'], overrides=label_overrides
            )
            builder.dft_neb.code = dft_neb_code
            builder.dft_neb.settings = label['settings']
        if inputs.get('zero_shot'):
            builder.zero_shot.code = engine_code
            builder.zero_shot.universal_potential = orm.Str(inputs['zero_shot'])
            builder.zero_shot.device = orm.Str(neb['device'])
        if group_label:
            builder.group_label = group_label
        return builder

    def setup(self):
        outputs = build_hops(self.inputs.parameters)
        self.ctx.hop_info = outputs['hop_info'].get_dict()
        self.ctx.hop_structures = outputs
        self.ctx.hop_keys = sorted(self.ctx.hop_info)
        self.ctx.failed = {}
        self.ctx.group_nodes = []
        for key in self.ctx.hop_keys:
            info = self.ctx.hop_info[key]
            self.report(
                f'hop {key}: {info["formula"]}, moving Li {info["moving_index"]}, TM nearest the transition point '
                f'{info["nearest_tm_to_transition_point"]}'
            )

    def run_neb(self):
        children = {}
        for key in self.ctx.hop_keys:
            inputs = self.exposed_inputs(NebCalculation, namespace='neb')
            inputs['initial_structure'] = self.ctx.hop_structures[f'{key}__initial']
            inputs['final_structure'] = self.ctx.hop_structures[f'{key}__final']
            if f'{key}__via' in self.ctx.hop_structures:
                inputs['via_structure'] = self.ctx.hop_structures[f'{key}__via']
            inputs['metadata'] = {**inputs.get('metadata', {}), 'call_link_label': f'neb_{key}'}
            node = self.submit(NebCalculation, **inputs)
            self.report(f'submitted NebCalculation<{node.pk}> for hop {key}')
            children[f'neb_{key}'] = node
        return ToContext(**children)

    def inspect_neb(self):
        """A converged NEB or one that stopped with its images attached (740) is usable; others fail their hop."""
        not_converged = NebCalculation.exit_codes.ERROR_NEB_NOT_CONVERGED.status
        self.ctx.usable = []
        for key in self.ctx.hop_keys:
            node = self.ctx[f'neb_{key}']
            usable = (node.is_finished_ok or node.exit_status == not_converged) and all(
                name in node.outputs for name in ('output_parameters', 'images', 'image_structures')
            )
            if not usable:
                reason = f'model NEB failed: NebCalculation<{node.pk}> exit {node.exit_status}: {node.exit_message}'
                self.ctx.failed[key] = reason
                self.report(f'hop {key}: {reason}')
                continue
            summary = node.outputs.output_parameters.get_dict()
            self.report(
                f'hop {key}: model barrier {summary["barrier_forward"]:.3f} eV (climbing image '
                f'{summary.get("climbing_image")}, committee spread {summary.get("committee", {}).get("barrier_std")})'
                + ('' if node.is_finished_ok else ', NOT converged (740): images used anyway, flagged')
            )
            self.ctx.usable.append(key)
            self.out(f'hops.{key}.images', node.outputs.images)
            self.out(f'hops.{key}.neb', node.outputs.output_parameters)
            self.ctx.group_nodes.extend([node.outputs.images.uuid, node.outputs.output_parameters.uuid])
            if 'transition_state' in node.outputs:
                self.out(f'hops.{key}.transition_state', node.outputs.transition_state)
                self.ctx.group_nodes.append(node.outputs.transition_state.uuid)
        if not self.ctx.usable:
            return self.exit_codes.ERROR_BARRIER_NEB_FAILED.format(reasons='; '.join(self.ctx.failed.values()))
        return None

    def _image_structures(self) -> dict:
        structures = {}
        for key in self.ctx.usable:
            for name, structure in self.ctx[f'neb_{key}'].outputs.image_structures.items():
                structures[f'{key}__{name}'] = structure
        return structures

    def should_run_dft(self):
        return 'dft' in self.inputs and 'code' in self.inputs.dft

    def run_dft(self):
        """All images of all hops in one nmcml.label: the daemon runs them concurrently. Each starts from the moments
        of its hop's initial structure (carried by the image), so the DFT path starts alike everywhere."""
        inputs = self.exposed_inputs(LabelWorkChain, namespace='dft')
        inputs['structures'] = self._image_structures()
        inputs['metadata'] = {'call_link_label': 'dft_check'}
        node = self.submit(LabelWorkChain, **inputs)
        self.report(f'submitted LabelWorkChain<{node.pk}> for {len(inputs["structures"])} DFT single points')
        return ToContext(dft=node)

    def inspect_dft(self):
        node = self.ctx.dft
        if 'labelled' in node.outputs:
            self.out('labelled', node.outputs.labelled)
        if not node.is_finished_ok:
            self.ctx.dft_failed = node.exit_status
            self.report(f'DFT check LabelWorkChain<{node.pk}> failed: exit {node.exit_status} {node.exit_message}')

    def should_run_dft_neb(self):
        wanted = self.inputs.parameters.get_dict().get('dft_neb') or {}
        return bool(wanted.get('hops')) and 'dft_neb' in self.inputs and 'code' in self.inputs.dft_neb

    def run_dft_neb(self):
        """One neb.x per chosen hop (:func:`dft_neb_inputs`), started from the model's converged images."""
        from aiida_quantumespresso.calculations.neb import NebCalculation as QeNebCalculation

        params = DFT_NEB.with_defaults(self.inputs.parameters.get_dict().get('dft_neb'))
        self.ctx.dft_neb_keys = []
        children = {}
        for key in params['hops']:
            if key not in self.ctx.usable:
                self.report(f'hop {key}: no model images, no DFT NEB')
                continue
            structures = dict(self.ctx[f'neb_{key}'].outputs.image_structures.items())
            inputs = dft_neb_inputs(
                self.inputs.dft_neb.code, self.inputs.dft_neb.settings.get_dict(), structures, params, key
            )
            node = self.submit(QeNebCalculation, **inputs)
            self.report(f'submitted neb.x NebCalculation<{node.pk}> for hop {key} ({len(structures)} images)')
            children[f'dft_neb_{key}'] = node
            self.ctx.dft_neb_keys.append(key)
        return ToContext(**children)

    def inspect_dft_neb(self):
        """A finished neb.x, or one that hit ``nstep_path`` (its images parsed), gives a row entry; others fail."""
        from aiida_quantumespresso.calculations.neb import NebCalculation as QeNebCalculation

        not_converged = QeNebCalculation.exit_codes.ERROR_NEB_CYCLE_EXCEEDED_NSTEP.status
        self.ctx.dft_neb_failed = {}
        for key in self.ctx.dft_neb_keys:
            node = self.ctx[f'dft_neb_{key}']
            if (node.is_finished_ok or node.exit_status == not_converged) and 'output_parameters' in node.outputs:
                self.out(f'hops.{key}.dft_neb', node.outputs.output_parameters)
                if not node.is_finished_ok:
                    self.report(f'hop {key}: neb.x stopped at nstep_path (502): its last images are used, flagged')
                continue
            self.ctx.dft_neb_failed[key] = f'NebCalculation<{node.pk}> exit {node.exit_status}: {node.exit_message}'
            self.report(f'hop {key}: DFT NEB failed: {self.ctx.dft_neb_failed[key]}')

    def should_run_zero_shot(self):
        return 'zero_shot' in self.inputs and 'universal_potential' in self.inputs.zero_shot

    def run_zero_shot(self):
        from ..engine.teacher import teacher_available

        name = self.inputs.zero_shot.universal_potential.value
        computer = self.inputs.zero_shot.code.computer
        if computer is not None and computer.transport_type == 'core.local' and not teacher_available(name):
            self.ctx.zero_shot_unavailable = f'zero-shot potential {name} is not installed on {computer.label}'
            self.report(self.ctx.zero_shot_unavailable + ': no zero-shot barrier')
            return None
        self.ctx.zero_shot_frames = images_to_frames(**self._image_structures())
        inputs = self.exposed_inputs(EvaluateCalculation, namespace='zero_shot')
        inputs['frames'] = self.ctx.zero_shot_frames
        inputs['metadata'] = {**inputs.get('metadata', {}), 'call_link_label': 'zero_shot'}
        node = self.submit(EvaluateCalculation, **inputs)
        self.report(f'submitted EvaluateCalculation<{node.pk}> ({name}, zero-shot) on the model images')
        return ToContext(zero_shot=node)

    def inspect_zero_shot(self):
        node = self.ctx.get('zero_shot')
        if node is None:  # not installed here: skipped in run_zero_shot
            return
        unavailable = exit_codes.TABLE['ERROR_TEACHER_UNAVAILABLE'].status
        if node.is_finished_ok and 'predictions' in node.outputs:
            self.out('zero_shot_predictions', node.outputs.predictions)
        elif node.exit_status == unavailable:
            self.ctx.zero_shot_unavailable = f'zero-shot potential not available: {node.exit_message}'
            self.report(self.ctx.zero_shot_unavailable)
        else:
            self.ctx.zero_shot_failed = node.exit_status
            self.report(f'zero-shot EvaluateCalculation<{node.pk}> failed: exit {node.exit_status}')

    def results(self):
        zero_ok = 'zero_shot_predictions' in self.outputs
        settings = {
            'hop_info': self.ctx.hop_info,
            'failed': self.ctx.failed,
            'dft': self.should_run_dft(),
            'zero_shot': zero_ok,
            'zero_shot_unavailable': self.ctx.get('zero_shot_unavailable'),
            'ni_moment_bounds': self.inputs.parameters.get_dict().get('ni_moment_bounds', [0.5, 1.35]),
        }
        kwargs = {f'neb__{key}': self.ctx[f'neb_{key}'].outputs.output_parameters for key in self.ctx.usable}
        for key in self.ctx.get('dft_neb_keys', []):
            if key not in self.ctx.dft_neb_failed:
                kwargs[f'dft_neb__{key}'] = self.ctx[f'dft_neb_{key}'].outputs.output_parameters
        if 'labelled' in self.outputs:
            kwargs['labelled'] = self.outputs['labelled']
        if zero_ok:
            kwargs['zero_shot_frames'] = self.ctx.zero_shot_frames
            kwargs['zero_shot_predictions'] = self.outputs['zero_shot_predictions']
        table = barrier_table(settings=orm.Dict(settings), metadata={'call_link_label': 'barrier_table'}, **kwargs)
        self.out('table', table)
        incomplete = self._report_table(table.get_dict())
        self._add_to_group()
        if self.ctx.get('dft_failed') is not None:
            return self.exit_codes.ERROR_BARRIER_DFT_FAILED.format(status=self.ctx.dft_failed)
        if self.ctx.get('zero_shot_failed') is not None:
            return self.exit_codes.ERROR_BARRIER_ZERO_SHOT_FAILED.format(status=self.ctx.zero_shot_failed)
        if self.ctx.get('dft_neb_failed'):
            return self.exit_codes.ERROR_BARRIER_DFT_NEB_FAILED.format(
                reasons='; '.join(f'{k}: {v}' for k, v in self.ctx.dft_neb_failed.items())
            )
        if incomplete:
            return self.exit_codes.ERROR_BARRIER_INCOMPLETE.format(details='; '.join(incomplete))
        return None

    def _report_table(self, table: dict) -> list[str]:
        """One report line per hop; returns what makes the table incomplete (failed/unconverged NEB, missing DFT)."""
        incomplete = []

        def fmt(value):
            return 'n/a' if value is None else f'{value:.3f}'

        for key, row in sorted(table.items()):
            if 'failed' in row:
                incomplete.append(f'{key}: {row["failed"]}')
                continue
            dft = (row.get('dft') or {}).get('barrier')
            zero = (row.get('zero_shot') or {}).get('barrier')
            self.report(
                f'hop {key}: model {fmt(row["model"]["barrier"])} eV, DFT on the model path {fmt(dft)} eV, '
                f'zero-shot {fmt(zero)} eV' + (f'; flags: {" | ".join(row["flags"])}' if row['flags'] else '')
            )
            if row.get('dft_neb'):
                self.report(f'hop {key}: DFT NEB (neb.x) barrier {fmt(row["dft_neb"]["barrier"])} eV')
                if not row['dft_neb']['converged']:
                    incomplete.append(f'{key}: DFT NEB not converged')
            if not row['model']['converged']:
                incomplete.append(f'{key}: model NEB not converged')
            if row.get('dft') and row['dft']['missing_images']:
                incomplete.append(f'{key}: no DFT for images {row["dft"]["missing_images"]}')
        return incomplete

    def _add_to_group(self):
        if 'group_label' not in self.inputs:
            return
        label = f'{self.inputs.group_label}/{GROUP_SUFFIX}'
        group, _ = orm.Group.collection.get_or_create(label)
        nodes = [self.outputs['table']] + [orm.load_node(uuid) for uuid in self.ctx.group_nodes]
        if 'labelled' in self.outputs:
            nodes.append(self.outputs['labelled'])
        group.add_nodes(nodes)
        self.report(f'added {len(nodes)} nodes to group {label}')

"""``nmcml.search``: genetic search of low-energy orderings at several Li contents, optionally verified by DFT.

One ``nmcml.ga`` per Li content, plus the end members x = 0 and x = 1 on the same cell with the same committee (they
are what formation energies are measured against), all submitted in one step. The GA ranks orderings by the committee
mean and reports the committee spread per candidate. ``hull`` (calcfunction :func:`convex_hull`) gives the formation
energy per formula unit of every content's best ordering, E_f(x) = [E(x) - x E(1) - (1 - x) E(0)] / n_fu, its
committee spread, and the lower convex hull. With ``verify_with_dft``, ``n_verify`` candidates per content, spread
over the energy range the GA saw, go to ``nmcml.label`` in one batch; ``summary`` reports per content the MAE of the
MLIP relative energies against DFT (meV per formula unit), the Spearman rank correlation and whether the DFT ground
state is the model's.
"""

from __future__ import annotations

import numpy as np
from aiida import orm
from aiida.engine import ToContext, WorkChain, calcfunction, if_
from aiida.orm.nodes.data.base import to_aiida_type
from aiida.plugins import WorkflowFactory

from ..calculations.ga import GaCalculation
from ..common import exit_codes
from ..data.trainingset import TrainingSet
from ..protocols import ProtocolMixin, load_protocol_inputs
from .ga_base import GaBaseWorkChain


def content_key(x_li: float) -> str:
    """``x_li`` as a link-label-safe key: 0.5 -> ``x0_5000``."""
    return 'x' + f'{x_li:.4f}'.replace('.', '_')


def spearman(a, b) -> float | None:
    if len(a) < 2:
        return None
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    if np.std(ra) == 0 or np.std(rb) == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def n_formula_units(params: dict) -> int:
    """LiMO2 formula units of a GA cell: its number of TM-layer sites."""
    return int(sum(params['composition']['tm'].values()))


def li_fraction(params: dict) -> float:
    """Actual Li per formula unit of a GA cell (Li on either layer over the Li-layer sites)."""
    composition = params['composition']
    n_li = sum(counts.get('Li', 0) for counts in composition.values())
    return n_li / sum(composition['li'].values())


def lower_hull(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points on the lower convex hull (monotone chain), sorted by x."""
    order = sorted(range(len(points)), key=lambda i: points[i])
    hull: list[int] = []
    for i in order:
        while len(hull) >= 2:
            (x1, y1), (x2, y2), (x3, y3) = points[hull[-2]], points[hull[-1]], points[i]
            if (x2 - x1) * (y3 - y1) - (y2 - y1) * (x3 - x1) <= 1e-12:  # not a left turn: the middle point is above
                hull.pop()
            else:
                break
        hull.append(i)
    return hull


@calcfunction
def convex_hull(**kwargs):
    """Formation energies per formula unit against the end members (same model, same cell), and the lower hull.

    E_f(x) = [E(x) - x E(1) - (1 - x) E(0)] / n_fu with E the committee-mean energy of the GA's best ordering. Its
    committee spread is the standard deviation over members of the same expression with each member's energies. The
    E0 offsets of the model cancel in this difference (same atoms on both sides), so E_f does not depend on them.
    """
    data = {key: params.get_dict() for key, params in kwargs.items()}
    ends = {}
    for params in data.values():
        x = li_fraction(params)
        if x in (0.0, 1.0):
            ends[x] = params
    if set(ends) != {0.0, 1.0}:
        raise ValueError('convex_hull needs the GA results of both end members, x = 0 and x = 1')
    n_fu = n_formula_units(ends[1.0])
    e0, e1 = ends[0.0]['top'][0], ends[1.0]['top'][0]
    rows = {}
    for key, params in sorted(data.items()):
        x, best = li_fraction(params), params['top'][0]
        e_f = (best['energy'] - x * e1['energy'] - (1 - x) * e0['energy']) / n_fu
        spread = None
        if best.get('member_energies') and e0.get('member_energies') and e1.get('member_energies'):
            members = [
                (b - x * m1 - (1 - x) * m0) / n_fu
                for b, m0, m1 in zip(best['member_energies'], e0['member_energies'], e1['member_energies'], strict=True)
            ]
            spread = float(np.std(members))
        rows[key] = {
            'x_li': x,
            'formation_energy_eV_per_fu': float(e_f),
            'formation_energy_spread_eV_per_fu': spread,
            'energy_eV': best['energy'],
            'canonical_key': best['canonical_key'],
            'converged': params['converged'],
        }
    keys = list(rows)
    points = [(rows[k]['x_li'], rows[k]['formation_energy_eV_per_fu']) for k in keys]
    on_hull = {keys[i] for i in lower_hull(points)}
    hull_x = [points[i][0] for i in lower_hull(points)]
    hull_y = [points[i][1] for i in lower_hull(points)]
    for key in keys:
        x, y = rows[key]['x_li'], rows[key]['formation_energy_eV_per_fu']
        rows[key]['above_hull_eV_per_fu'] = float(max(0.0, y - np.interp(x, hull_x, hull_y)))
        rows[key]['on_hull'] = key in on_hull
    return orm.Dict({'formula_units': n_fu, 'contents': rows, 'hull_x_li': hull_x, 'hull_eV_per_fu': hull_y})


def verification_entry(params: dict, prefix: str, dft: dict) -> dict | None:
    """MLIP vs DFT on the verified candidates of one content: relative energies per formula unit, MAE, ground state."""
    pairs = []
    for name, entries in (('span', params.get('spanning') or []), ('rank', params['top'])):
        for t in entries:
            key = f'{prefix}__{name}_{t["rank"]}'
            if key in dft:
                pairs.append((key, t['energy'], dft[key]))
        if pairs:
            break
    if not pairs:
        return None
    n_fu = n_formula_units(params)
    keys = [k for k, _, _ in pairs]
    mlip = np.array([e for _, e, _ in pairs])
    ref = np.array([e for _, _, e in pairs])
    rel_mlip, rel_dft = (mlip - mlip.min()) / n_fu, (ref - ref.min()) / n_fu
    # relative to each set's own mean: the MAE then does not depend on which candidate is the reference
    centred = (mlip - mlip.mean() - (ref - ref.mean())) / n_fu
    return {
        'keys': keys,
        'mlip_energy': mlip.tolist(),
        'dft_energy': ref.tolist(),
        'mlip_relative_meV_per_fu': (1000 * rel_mlip).tolist(),
        'dft_relative_meV_per_fu': (1000 * rel_dft).tolist(),
        'mae_relative_meV_per_fu': float(1000 * np.mean(np.abs(centred))),
        'spearman': spearman(mlip.tolist(), ref.tolist()),
        'dft_ground_state_is_mlip': bool(np.argmin(mlip) == np.argmin(ref)),
        'same_lowest': bool(np.argmin(mlip) == np.argmin(ref)),
    }


@calcfunction
def summarize_search(**kwargs):
    """Per Li content: best energies, evaluations, convergence; with DFT labels: the ranking MLIP vs DFT."""
    labelled = kwargs.pop('labelled', None)
    dft = {}
    if labelled is not None:
        for atoms in labelled.get_frames():
            key = atoms.info.get('label_key')
            if key is not None and 'REF_energy' in atoms.info:
                dft[str(key)] = float(atoms.info['REF_energy'])
    summary = {}
    for key, params in sorted(kwargs.items()):
        data = params.get_dict()
        entry = {
            'best_energy': data['best_energy'],
            'best_spread': data.get('best_spread'),
            'evaluations': data['evaluations'],
            'converged': data['converged'],
            'top_energies': [t['energy'] for t in data['top']],
            'top_spreads': [t.get('spread') for t in data['top']],
        }
        verification = verification_entry(data, key, dft)
        if verification is not None:
            entry['verification'] = verification
        summary[key] = entry
    return orm.Dict(summary)


def validate_inputs(inputs, _):
    contents = inputs['li_contents'].get_list()
    if not contents or any(not 0.0 <= float(x) <= 1.0 for x in contents):
        return 'li_contents must be a non-empty list of Li fractions within [0, 1]'
    if len({content_key(float(x)) for x in contents}) != len(contents):
        return 'li_contents holds duplicates'
    if inputs['verify_with_dft'].value and 'label' not in inputs:
        return 'verify_with_dft needs the `label` inputs (build them with get_builder_from_protocol(dft_code=...))'
    return None


class SearchWorkChain(ProtocolMixin, WorkChain):
    """GA per Li content and end members -> candidates, formation energies, hull -> optional DFT verification."""

    _protocol_filename = 'search.yaml'

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.expose_inputs(GaCalculation, namespace='ga', exclude=('lattice',))
        spec.input(
            'lattice',
            valid_type=orm.Dict,
            serializer=to_aiida_type,
            help='Lattice of nmcml.ga without x_li (supercell, composition, antisite_fraction, seed).',
        )
        spec.input('li_contents', valid_type=orm.List, serializer=to_aiida_type, help='Li fractions to search.')
        spec.input(
            'verify_with_dft',
            valid_type=orm.Bool,
            serializer=to_aiida_type,
            default=lambda: orm.Bool(False),
            help='Send the best candidates to nmcml.label.',
        )
        spec.input(
            'n_verify',
            valid_type=orm.Int,
            serializer=to_aiida_type,
            default=lambda: orm.Int(5),
            help='Candidates per Li content to verify with DFT, spread over the energy range the GA saw.',
        )
        spec.expose_inputs(
            WorkflowFactory('nmcml.label'),
            namespace='label',
            exclude=('structures', 'frames'),
            namespace_options={
                'required': False,
                'populate_defaults': False,
                'help': 'Inputs of nmcml.label for the DFT verification.',
            },
        )
        spec.inputs.validator = validate_inputs
        spec.outline(
            cls.run_searches,
            cls.inspect_searches,
            if_(cls.should_verify)(cls.run_verification, cls.inspect_verification),
            cls.results,
        )
        spec.output_namespace(
            'candidates',
            valid_type=orm.StructureData,
            dynamic=True,
            help='Per Li content (key x0_5000 ...): rank_0 ... of its GA.',
        )
        spec.output(
            'summary',
            valid_type=orm.Dict,
            help='Per content: energies and committee spreads, evaluations, convergence; with DFT: MAE of relative '
            'energies (meV/f.u.), Spearman rho, whether the DFT ground state is the MLIP one.',
        )
        spec.output(
            'hull',
            valid_type=orm.Dict,
            help='Formation energy per formula unit (and its committee spread) of each content against the x=0 and '
            'x=1 end members from the same model and cell; the lower convex hull and the distance above it.',
        )
        spec.output('labelled', valid_type=TrainingSet, required=False, help='DFT-labelled candidates.')
        exit_codes.declare(spec, 'ERROR_GA_FAILED', 'ERROR_VERIFICATION_FAILED')  # docs/dev/exit_codes.md

    @classmethod
    def get_builder_from_protocol(
        cls, engine_code, models=None, protocol=None, overrides=None, *, dft_code=None, dft_engine: str = 'qe'
    ):
        """``overrides`` may set any key of search.yaml plus ``ga`` (GA protocol overrides) and ``label``."""
        overrides = dict(overrides or {})
        ga_overrides = overrides.pop('ga', None)
        label_overrides = overrides.pop('label', None)
        inputs = cls.get_protocol_inputs(protocol, overrides)
        if 'composition' in overrides.get('lattice', {}):  # replaced, not merged: {Ni: 0.5, Co: 0.5} means no Mn
            inputs['lattice']['composition'] = dict(overrides['lattice']['composition'])
        builder = cls.get_builder()
        ga = load_protocol_inputs('ga.yaml', inputs['ga_protocol'], ga_overrides, owner='nmcml.ga.base')
        builder.ga.code = engine_code
        builder.ga.parameters = orm.Dict(ga['parameters'])
        builder.ga.device = orm.Str(ga['device'])
        if models:
            builder.ga.models = models if isinstance(models, dict) else {f'm{i}': m for i, m in enumerate(models)}
        for key, value in ga.get('metadata', {}).get('options', {}).items():
            builder.ga.metadata.options[key] = value
        builder.lattice = orm.Dict({k: v for k, v in inputs['lattice'].items() if k != 'x_li'})
        builder.li_contents = orm.List(list(inputs['li_contents']))
        builder.n_verify = orm.Int(inputs['n_verify'])
        builder.verify_with_dft = orm.Bool(bool(inputs['verify_with_dft']) or dft_code is not None)
        if dft_code is not None:
            label = WorkflowFactory('nmcml.label').get_builder_from_protocol(
                dft_code, engine=dft_engine, protocol=inputs['label_protocol'], overrides=label_overrides
            )
            for key in ('code', 'engine', 'settings', 'min_success_fraction'):
                builder.label[key] = label[key]
        return builder

    def searched_contents(self) -> list[float]:
        """The requested Li contents plus the end members 0 and 1 (formation energies need them), each once."""
        contents = [float(x) for x in self.inputs.li_contents.get_list()]
        keys = {content_key(x) for x in contents}
        return contents + [x for x in (1.0, 0.0) if content_key(x) not in keys]

    def run_searches(self):
        children = {}
        lattice = self.inputs.lattice.get_dict()
        parameters = self.inputs.ga.parameters.get_dict()
        if self.inputs.verify_with_dft.value:  # the GA also returns n_verify orderings spread over its energy range
            parameters['spanning_k'] = max(int(parameters.get('spanning_k') or 0), self.inputs.n_verify.value)
        for x_li in self.searched_contents():
            inputs = self.exposed_inputs(GaCalculation, namespace='ga')
            inputs['lattice'] = orm.Dict({**lattice, 'x_li': float(x_li)})
            inputs['parameters'] = orm.Dict(parameters)
            # one restart work chain per content (nmcml.ga.base: out of memory remedied, candidates of an
            # unconverged GA exposed with the same 720); its exit codes are the calcjob's numbers
            metadata = {'call_link_label': f'ga_{content_key(float(x_li))}'}
            node = self.submit(GaBaseWorkChain, ga=inputs, metadata=metadata)
            self.report(f'submitted GaBaseWorkChain<{node.pk}> for x_li={x_li}')
            children[content_key(float(x_li))] = node
        return ToContext(**{f'ga_{k}': v for k, v in children.items()})

    def inspect_searches(self):
        self.ctx.content_keys = [content_key(float(x)) for x in self.inputs.li_contents.get_list()]
        self.ctx.all_keys = [content_key(x) for x in self.searched_contents()]
        for key, x_li in zip(self.ctx.all_keys, self.searched_contents(), strict=True):
            node = self.ctx[f'ga_{key}']
            not_converged = node.exit_status == GaCalculation.exit_codes.ERROR_GA_NOT_CONVERGED.status
            if not (node.is_finished_ok or not_converged) or 'candidates' not in node.outputs:
                return self.exit_codes.ERROR_GA_FAILED.format(x_li=x_li, reason=node.exit_message or node.exit_status)
            if not node.is_finished_ok:
                self.report(f'x_li={x_li}: GA not converged; its candidates are used anyway')
            for rank, structure in node.outputs.candidates.items():
                self.out(f'candidates.{key}.{rank}', structure)
        self.out(
            'hull', convex_hull(**{key: self.ctx[f'ga_{key}'].outputs.output_parameters for key in self.ctx.all_keys})
        )
        return None

    def should_verify(self):
        return self.inputs.verify_with_dft.value

    def run_verification(self):
        structures = {}
        for key in self.ctx.content_keys:  # n_verify orderings spread over the energy range (the lowest first)
            outputs = self.ctx[f'ga_{key}'].outputs
            candidates = outputs.spanning if 'spanning' in outputs else outputs.candidates
            for name in sorted(candidates, key=lambda r: int(r.split('_')[1]))[: self.inputs.n_verify.value]:
                structures[f'{key}__{name}'] = candidates[name]
        inputs = self.exposed_inputs(WorkflowFactory('nmcml.label'), namespace='label')
        inputs['structures'] = structures
        node = self.submit(WorkflowFactory('nmcml.label'), **inputs)
        self.report(f'submitted {node.process_label}<{node.pk}> to verify {len(structures)} candidates with DFT')
        return ToContext(label=node)

    def inspect_verification(self):
        node = self.ctx.label
        if not node.is_finished_ok or 'labelled' not in node.outputs:
            self.ctx.verification_failed = node.exit_status
            return None
        self.out('labelled', node.outputs.labelled)
        return None

    def results(self):
        kwargs = {key: self.ctx[f'ga_{key}'].outputs.output_parameters for key in self.ctx.content_keys}
        if 'labelled' in self.outputs:
            kwargs['labelled'] = self.outputs['labelled']
        self.out('summary', summarize_search(**kwargs))
        if self.ctx.get('verification_failed') is not None:
            return self.exit_codes.ERROR_VERIFICATION_FAILED.format(status=self.ctx.verification_failed)
        return None

"""``nmcml.search``: genetic search of low-energy orderings at several Li contents, optionally verified by DFT.

One ``nmcml.ga`` per Li content, all submitted in one step (they run concurrently). With ``verify_with_dft``, the
best ``n_verify`` candidates of every content go to ``nmcml.label`` in one batch, and the summary reports how the
MLIP ranks them against DFT (per content: Spearman correlation and whether both agree on the lowest).
"""

from __future__ import annotations

import numpy as np
from aiida import orm
from aiida.engine import ToContext, WorkChain, calcfunction, if_
from aiida.orm.nodes.data.base import to_aiida_type
from aiida.plugins import WorkflowFactory

from ..calculations.ga import GaCalculation
from ..common import exit_codes
from ..protocols import ProtocolMixin, load_protocol_inputs


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
            'evaluations': data['evaluations'],
            'converged': data['converged'],
            'top_energies': [t['energy'] for t in data['top']],
        }
        verified = [(f'{key}__rank_{t["rank"]}', t['energy']) for t in data['top'] if f'{key}__rank_{t["rank"]}' in dft]
        if verified:
            mlip = [e for _, e in verified]
            ref = [dft[k] for k, _ in verified]
            entry['verification'] = {
                'keys': [k for k, _ in verified],
                'mlip_energy': mlip,
                'dft_energy': ref,
                'spearman': spearman(mlip, ref),
                'same_lowest': bool(np.argmin(mlip) == np.argmin(ref)),
            }
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
    """GA per Li content -> top candidates -> optional DFT verification."""

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
            default=lambda: orm.Int(2),
            help='Candidates per Li content to verify with DFT.',
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
        spec.inputs['label'].validator = None  # it demands structures, which this work chain supplies from the GA
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
        spec.output('summary', valid_type=orm.Dict, help='Energies, evaluations, convergence, MLIP-vs-DFT ranking.')
        spec.output('labelled', valid_type=orm.Data, required=False, help='DFT-labelled candidates (TrainingSet).')
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

    def run_searches(self):
        children = {}
        lattice = self.inputs.lattice.get_dict()
        for x_li in self.inputs.li_contents.get_list():
            inputs = self.exposed_inputs(GaCalculation, namespace='ga')
            inputs['lattice'] = orm.Dict({**lattice, 'x_li': float(x_li)})
            inputs['metadata'] = {**inputs.get('metadata', {}), 'call_link_label': f'ga_{content_key(float(x_li))}'}
            node = self.submit(GaCalculation, **inputs)
            self.report(f'submitted GaCalculation<{node.pk}> for x_li={x_li}')
            children[content_key(float(x_li))] = node
        return ToContext(**{f'ga_{k}': v for k, v in children.items()})

    def inspect_searches(self):
        self.ctx.content_keys = [content_key(float(x)) for x in self.inputs.li_contents.get_list()]
        for key, x_li in zip(self.ctx.content_keys, self.inputs.li_contents.get_list(), strict=True):
            node = self.ctx[f'ga_{key}']
            not_converged = node.exit_status == GaCalculation.exit_codes.ERROR_GA_NOT_CONVERGED.status
            if not (node.is_finished_ok or not_converged) or 'candidates' not in node.outputs:
                return self.exit_codes.ERROR_GA_FAILED.format(x_li=x_li, reason=node.exit_message or node.exit_status)
            if not node.is_finished_ok:
                self.report(f'x_li={x_li}: GA not converged; its candidates are used anyway')
            for rank, structure in node.outputs.candidates.items():
                self.out(f'candidates.{key}.{rank}', structure)
        return None

    def should_verify(self):
        return self.inputs.verify_with_dft.value

    def run_verification(self):
        structures = {}
        for key in self.ctx.content_keys:
            candidates = self.ctx[f'ga_{key}'].outputs.candidates
            for rank in sorted(candidates, key=lambda r: int(r.split('_')[1]))[: self.inputs.n_verify.value]:
                structures[f'{key}__{rank}'] = candidates[rank]
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

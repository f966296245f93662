"""``nmcml.campaign``: the whole study in one work chain, the product a battery researcher runs.

Stages, in order (each one a stage work chain with its own protocol, restarts and exit codes)::

    initial set   rattled and strained cells across Li contents (calcfunction :func:`initial_structures`)
    labels        nmcml.label            -> training_set
    committee     nmcml.finetune         -> committee (from the foundation model)
    search        nmcml.search           -> candidates per Li content, verified with DFT
    active_learning nmcml.active_learning -> final committee (seeded by the search's candidates)
    diffusion     nmcml.diffusion  \\
    barriers      nmcml.barrier    /      run concurrently on the final committee
    report        aiida_nmcml.report (files, not a process: see :meth:`CampaignWorkChain.write_report`)

Why one chain: the stages hand each other nodes (a TrainingSet, a committee of MaceModels, GA candidates), so a
campaign is one connected provenance graph, and the two things a user needs from it need the whole chain in view:

* **skip any stage by giving its result** -- ``training_set`` (skips labels), ``committee`` (skips fine-tuning),
  ``search_candidates`` (skips the search), ``final_committee`` (skips active learning); or, for any stage, ``reuse``:
  ``{stage: uuid}`` of a finished stage work chain whose outputs are taken as that stage's result;
* **continue a killed campaign** (``aiida-nmcml campaign continue``, :func:`continue_builder`): the same inputs plus
  ``reuse`` built from the stages the previous node finished, under the same campaign name (so the same groups).
  Finished stages are not run again; a stage killed half-way is run again, and its DFT is not repeated because the
  set-up enables AiiDA caching for the DFT calcjobs (same structure, same settings -> the finished calculation).

Every node lands in the group hierarchy ``<name>/labels``, ``<name>/committee``, ``<name>/search``,
``<name>/active_learning`` (``/iter_NN`` below it, made by the AL chain), ``<name>/diffusion``, ``<name>/barriers``,
``<name>/report``; stage chains that take ``group_label`` get theirs, the others' important nodes are added here.

Stages whose work chains are not installed (entry point missing) are skipped and reported as
``skipped: not available`` in ``summary``; a stage switched off in the protocol (``enabled: false``) as ``skipped:
disabled``. Progress for ``campaign status`` is kept in the node's extras (``nmcml_campaign``): the stage now running,
each stage's state, the DFT calculations planned.
"""

from __future__ import annotations

import copy
import datetime
import os
import pathlib

from aiida import orm
from aiida.common.exceptions import MissingEntryPointError
from aiida.common.links import LinkType
from aiida.engine import ToContext, WorkChain, calcfunction, if_
from aiida.orm.nodes.data.base import to_aiida_type
from aiida.plugins import WorkflowFactory

from ..common import exit_codes
from ..common.schema import Field, Section, port_validator
from ..data.model import MaceModel
from ..data.trainingset import TrainingSet
from ..protocols import PROTOCOL_LEVELS, ProtocolMixin, load_protocol_inputs, recursive_merge

EXTRAS_KEY = 'nmcml_campaign'

#: stage -> entry point of its work chain (the report is not a process)
STAGE_ENTRY_POINTS = {
    'labels': 'nmcml.label',
    'committee': 'nmcml.finetune',
    'search': 'nmcml.search',
    'active_learning': 'nmcml.active_learning',
    'diffusion': 'nmcml.diffusion',
    'barriers': 'nmcml.barrier',
}
STAGES = (*STAGE_ENTRY_POINTS, 'report')
OPTIONAL_STAGES = ('search', 'active_learning', 'diffusion', 'barriers', 'report')
ENGINES = ('qe', 'vasp')
STAGE_FAILED = {
    'labels': 'ERROR_CAMPAIGN_LABELS_FAILED',
    'committee': 'ERROR_CAMPAIGN_COMMITTEE_FAILED',
    'search': 'ERROR_CAMPAIGN_SEARCH_FAILED',
    'active_learning': 'ERROR_CAMPAIGN_ACTIVE_LEARNING_FAILED',
    'diffusion': 'ERROR_CAMPAIGN_DIFFUSION_FAILED',
    'barriers': 'ERROR_CAMPAIGN_BARRIERS_FAILED',
}


def _fraction(value) -> str | None:
    return None if 0.0 <= value <= 1.0 else 'a Li content must be within [0, 1]'


def _stage(optional: bool, **extra) -> Section:
    fields = {
        'protocol': Field(str, default='moderate', help='the stage work chain protocol'),
        'overrides': Field(dict, default={}, help="overrides in the stage work chain's protocol layout"),
        **extra,
    }
    if optional:
        fields['enabled'] = Field(bool, default=True, help='run this stage')
    return Section(fields)


PARAMETERS = Section(
    {
        'li_contents': Field(
            list, items=Field(float, min=0.0, max=1.0), min_length=1, help='Li contents of the search and diffusion'
        ),
        'temperatures_K': Field(
            list, items=Field(float, min=0.0, min_exclusive=True, unit='K'), min_length=2,
            help='MD temperatures of the diffusion grid (at least two: the Arrhenius fit)',
        ),
        'initial': Section(
            {
                'supercell': Field((int, list), default=40, help='atoms (int) or repeats of the initial cells'),
                'composition': Field(dict, default={'Ni': 0.8, 'Mn': 0.1, 'Co': 0.1}),
                'li_contents': Field(
                    list, default=None, nullable=True, items=Field(float, min=0.0, max=1.0), min_length=1,
                    help='null: the campaign li_contents',
                ),
                'rattled_per_content': Field(int, default=4, min=0, max=1000),
                'rattle_stdev': Field(float, default=0.05, min=0.0, max=0.5, unit='Å'),
                'strains': Field(list, default=[], items=Field(float, min=-0.2, max=0.2)),
                'seed': Field(int, default=0, min=0),
            },
            check=lambda v: None
            if v.get('rattled_per_content', 4) + len(v.get('strains', [])) > 0
            else 'no initial cells: set rattled_per_content > 0 or give strains',
        ),
        'stages': Section(
            {
                'labels': _stage(False),
                'committee': _stage(False),
                'search': _stage(True, verify_with_dft=Field(bool, default=True, help='verify the GA with DFT')),
                'active_learning': _stage(True),
                'diffusion': _stage(True),
                'barriers': _stage(True, dft_check=Field(bool, default=True, help='DFT points on the NEB images')),
                'report': Section(
                    {
                        'enabled': Field(bool, default=True),
                        'directory': Field(str, default=None, nullable=True, help='null: the report default'),
                    }
                ),
            }
        ),
    }
)  # fmt: skip


def stage_available(stage: str) -> bool:
    """Whether the work chain of ``stage`` is installed (its entry point loads)."""
    if stage == 'report':
        return report_entry_point() is not None
    try:
        WorkflowFactory(STAGE_ENTRY_POINTS[stage])
    except MissingEntryPointError:
        return False
    return True


def report_entry_point():
    """The report writer of ``aiida_nmcml.report`` (``build_report(node_or_group, folder) -> path``), or None."""
    try:
        from .. import report
    except ImportError:
        return None
    return getattr(report, 'build_report', None)


def default_report_directory(name: str) -> pathlib.Path:
    """Where a campaign's report goes unless told: ``$NMCML_REPORT_DIR`` or ``~/aiida-nmcml/reports``, then the
    campaign name with ``/`` as ``_``."""
    root = os.environ.get('NMCML_REPORT_DIR') or pathlib.Path.home() / 'aiida-nmcml' / 'reports'
    return pathlib.Path(root) / name.replace('/', '_')


def content_key(x_li: float) -> str:
    return 'x' + f'{x_li:.4f}'.replace('.', '_')


@calcfunction
def initial_structures(parameters: orm.Dict, **parents):
    """The first DFT set: per Li content, rattled copies and isotropically strained (and rattled) copies.

    Without ``parents`` the cells are built with :func:`aiida_nmcml.structures.build_nmc` at each Li content of
    ``parameters`` (``supercell``, ``composition``, seeded). With ``parents`` (StructureData from the user), each parent
    is rattled and strained as it is: its Li content is its own. Displacements are Gaussian with ``rattle_stdev``
    (Å) per Cartesian component, seeded, so the set is reproducible and the DFT of a continued campaign is cached.
    """
    import warnings

    import numpy as np

    from .. import structures as st

    p = parameters.get_dict()
    bases = {}
    if parents:
        for key in sorted(parents):
            bases[key] = st.from_structure_data(parents[key])
    else:
        for i, x_li in enumerate(p['li_contents']):
            with warnings.catch_warnings():  # LiNiO2-type cells in the demo are deliberate
                warnings.simplefilter('ignore', st.NmcStructureWarning)
                bases[content_key(x_li)] = st.build_nmc(
                    p['supercell'], x_li=x_li, composition=p['composition'], seed=p['seed'] + i
                )
    out = {}
    for b, (key, base) in enumerate(bases.items()):
        rng = np.random.default_rng(p['seed'] + 1000 * (b + 1))
        for r in range(p['rattled_per_content']):
            atoms = base.copy()
            atoms.positions = atoms.positions + rng.normal(0.0, p['rattle_stdev'], atoms.positions.shape)
            out[f'{key}_rattle_{r}'] = st.to_structure_data(atoms)
        for s, strain in enumerate(p['strains']):
            atoms = base.copy()
            atoms.set_cell(atoms.cell.array * (1.0 + strain), scale_atoms=True)
            atoms.positions = atoms.positions + rng.normal(0.0, p['rattle_stdev'] / 2, atoms.positions.shape)
            out[f'{key}_strain_{s}'] = st.to_structure_data(atoms)
    return out


@calcfunction
def summarize_campaign(stages: orm.Dict, **results):
    """One Dict of the campaign: each stage's state and the headline numbers of its result, linked to the results."""
    summary = {'stages': stages.get_dict()}
    if 'training_set' in results:
        summary['initial_frames'] = results['training_set'].num_frames
    if 'final_training_set' in results:
        summary['final_frames'] = results['final_training_set'].num_frames
    for key in ('committee_metrics', 'search_summary'):
        if key in results:
            summary[key] = results[key].get_dict()
    return orm.Dict(summary)


def validate_inputs(inputs, _):
    """Refuse what would fail later: nothing to start the committee from, an engine/code mismatch, bad reuse."""
    given = {key for key in ('committee', 'final_committee') if inputs.get(key)}
    reuse = inputs['reuse'].get_dict() if 'reuse' in inputs else {}
    if 'foundation_model' not in inputs and not given and not ({'committee', 'active_learning'} & set(reuse)):
        return 'give a foundation_model (or a committee to skip fine-tuning)'
    unknown = sorted(set(reuse) - set(STAGE_ENTRY_POINTS) - {'active_learning_continue'})
    if unknown:
        return f'reuse: unknown stage(s) {unknown}; stages are {list(STAGE_ENTRY_POINTS)}'
    engine = inputs['engine'].value
    from .label import ENGINE_PLUGINS

    dft = inputs['codes']['dft']
    plugin = ENGINE_PLUGINS.get(engine)
    if dft.default_calc_job_plugin not in (None, plugin):
        return f'codes.dft {dft.full_label!r} runs {dft.default_calc_job_plugin!r}; engine {engine!r} needs {plugin!r}'
    for stage, uuid in reuse.items():
        if stage == 'active_learning_continue':
            continue
        try:
            node = orm.load_node(uuid)
        except Exception:  # NotExistent, MultipleObjectsError
            return f'reuse.{stage}: no node {uuid}'
        if not isinstance(node, orm.WorkflowNode) or not usable_result(stage, node):
            return f'reuse.{stage}: <{node.pk}> is not a finished {STAGE_ENTRY_POINTS[stage]} work chain with results'
    return None


def _validate_engine(value, _):
    if value is not None and value.value not in ENGINES:
        return f'unknown engine {value.value!r}: choose one of {", ".join(ENGINES)}'
    return None


class CampaignWorkChain(ProtocolMixin, WorkChain):
    """Initial DFT set -> committee -> search -> active learning -> diffusion and barriers -> report."""

    _protocol_filename = 'campaign.yaml'

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input('name', valid_type=orm.Str, serializer=to_aiida_type, help='Campaign name: the group prefix.')
        spec.input('engine', valid_type=orm.Str, serializer=to_aiida_type, validator=_validate_engine)
        spec.input(
            'parameters', valid_type=orm.Dict, serializer=to_aiida_type, validator=port_validator(PARAMETERS),
            help='The resolved campaign protocol (campaign.yaml); build it with get_builder_from_protocol.',
        )  # fmt: skip
        spec.input_namespace('codes', help='dft (pw.x or VASP), train (mace_run_train), engine (aiida-nmcml-engine).')
        spec.input('codes.dft', valid_type=orm.AbstractCode)
        spec.input('codes.train', valid_type=orm.AbstractCode)
        spec.input('codes.engine', valid_type=orm.AbstractCode)
        spec.input('codes.neb', valid_type=orm.AbstractCode, required=False, help='neb.x for DFT barrier checks.')
        spec.input('foundation_model', valid_type=MaceModel, required=False)
        spec.input_namespace(
            'structures', valid_type=orm.StructureData, dynamic=True, required=False,
            help='Parent cells of the initial set (rattled and strained as they are); default: built per Li content.',
        )  # fmt: skip
        # skip inputs: a stage's result given -> the stage is not run
        spec.input('training_set', valid_type=TrainingSet, required=False, help='Skips the labels stage.')
        spec.input_namespace('committee', valid_type=MaceModel, dynamic=True, required=False, help='Skips fine-tuning.')
        spec.input_namespace(
            'search_candidates', valid_type=orm.StructureData, dynamic=True, required=False,
            help='Skips the search: the structures that seed active learning.',
        )  # fmt: skip
        spec.input_namespace(
            'final_committee', valid_type=MaceModel, dynamic=True, required=False,
            help='Skips active learning: the committee of diffusion and barriers.',
        )  # fmt: skip
        spec.input(
            'reuse', valid_type=orm.Dict, serializer=to_aiida_type, required=False,
            help='{stage: uuid} of finished stage work chains whose outputs are that stage\'s result (campaign '
            'continue).',
        )  # fmt: skip
        spec.inputs.validator = validate_inputs
        spec.outline(
            cls.setup,
            if_(cls.should_run_labels)(cls.run_labels, cls.inspect_labels),
            if_(cls.should_run_committee)(cls.run_committee, cls.inspect_committee),
            if_(cls.should_run_search)(cls.run_search, cls.inspect_search),
            if_(cls.should_run_active_learning)(cls.run_active_learning, cls.inspect_active_learning),
            cls.run_transport,
            cls.inspect_transport,
            cls.write_report,
            cls.results,
        )
        spec.output('training_set', valid_type=TrainingSet, required=False, help='The initial DFT set.')
        spec.output_namespace('committee', valid_type=MaceModel, dynamic=True, help='The fine-tuned committee.')
        spec.output_namespace(
            'search_candidates', valid_type=orm.StructureData, dynamic=True, required=False,
            help='Best ordering per Li content (key x0_5000), the seeds of active learning.',
        )  # fmt: skip
        spec.output_namespace(
            'final_committee', valid_type=MaceModel, dynamic=True, required=False,
            help='The committee after active learning (= committee when it was skipped).',
        )  # fmt: skip
        spec.output('summary', valid_type=orm.Dict, help='Per stage: done / skipped (why) / failed; headline numbers.')
        exit_codes.declare(spec, *STAGE_FAILED.values())  # docs/dev/exit_codes.md

    # ------------------------------------------------------------------------------------------------ builder
    @classmethod
    def get_builder_from_protocol(
        cls,
        codes: dict | None = None,
        *,
        engine: str = 'qe',
        protocol: str | None = None,
        overrides: dict | None = None,
        foundation_model=None,
        structures=None,
        training_set: TrainingSet | None = None,
        committee=None,
        name: str | None = None,
    ):
        """A ready builder. ``codes``: {dft, train, engine[, neb]} codes or labels; default the set-up's codes on
        localhost (``nmcml-pw`` for qe). ``overrides`` follow campaign.yaml. ``foundation_model``: MaceModel, name or
        file. Raises ``ValueError`` (one line: unknown protocol, a stage protocol that does not exist, a bad key or
        value) before anything is stored except the foundation model node.
        """
        if engine not in ENGINES:
            raise ValueError(f'unknown engine {engine!r}: choose one of {", ".join(ENGINES)}')
        parameters = resolve_parameters(protocol, overrides)
        codes = resolve_codes(codes, engine)
        builder = cls.get_builder()
        builder.name = orm.Str(name or default_name(protocol or cls.get_default_protocol()))
        builder.engine = orm.Str(engine)
        builder.parameters = orm.Dict(parameters)
        builder.codes = codes
        builder.metadata.label = builder.name.value
        builder.metadata.description = f'nmcml campaign {builder.name.value} ({protocol}, {engine})'
        if foundation_model is not None:
            if not isinstance(foundation_model, MaceModel):
                from ..data.model import resolve_foundation_model

                foundation_model = resolve_foundation_model(foundation_model)
            builder.foundation_model = foundation_model
        if structures:
            builder.structures = (
                structures if isinstance(structures, dict) else {f's{i}': s for i, s in enumerate(structures)}
            )
        if training_set is not None:
            builder.training_set = training_set
        if committee:
            builder.committee = (
                committee if isinstance(committee, dict) else {f'member_{i}': m for i, m in enumerate(committee)}
            )
        return builder

    # ------------------------------------------------------------------------------------------------ helpers
    def _params(self, stage: str) -> dict:
        return self.ctx.parameters['stages'][stage]

    def _group(self, stage: str, *nodes) -> str:
        label = f'{self.inputs.name.value}/{stage}'
        group, _ = orm.Group.collection.get_or_create(label)
        stored = [n for n in nodes if n is not None and n.is_stored]
        if stored:
            group.add_nodes(stored)
        return label

    def _set_stage(self, stage: str, state: str) -> None:
        """Record progress where ``campaign status`` reads it (extras: mutable on a process node)."""
        self.ctx.stages[stage] = state
        extras = self.node.base.extras.get(EXTRAS_KEY, {})
        extras['stages'] = dict(self.ctx.stages)
        if state == 'running':
            extras['stage'] = stage
        self.node.base.extras.set(EXTRAS_KEY, extras)

    def _skip(self, stage: str, why: str) -> None:
        self._set_stage(stage, f'skipped: {why}')
        self.report(f'stage {stage}: skipped ({why})')

    def _reused(self, stage: str):
        uuid = self.ctx.reuse.get(stage)
        return orm.load_node(uuid) if uuid else None

    def _skipped(self, stage: str, reuse) -> bool:
        """Skip ``stage`` (True) when an earlier run of it is reused (``reuse(node)`` takes over its results), it is
        disabled or its work chain is not installed; False when it is to run."""
        node = self._reused(stage)
        if node is not None:
            reuse(node)
            self._skip(stage, f'reused from <{node.pk}>')
            return True
        if not self._params(stage)['enabled']:
            self._skip(stage, 'disabled')
            return True
        if not stage_available(stage):
            self._skip(stage, f'not available ({STAGE_ENTRY_POINTS[stage]} is not installed)')
            return True
        return False

    def set_group_label(self, builder, stage_class) -> None:
        """``group_label`` = the campaign name for stage chains that take one (they add ``/<stage>`` themselves:
        ``C/active_learning/iter_NN``, ``C/diffusion``, ``C/barriers``); the others' nodes are grouped here."""
        port = stage_class.spec().inputs.get('group_label')
        if port is None:
            return
        name = self.inputs.name.value
        builder.group_label = name if getattr(port, 'non_db', False) else orm.Str(name)

    def _label_protocol(self) -> tuple[str, dict]:
        labels = self._params('labels')
        return labels['protocol'], labels['overrides']

    # ------------------------------------------------------------------------------------------------ steps
    def setup(self):
        self.ctx.parameters = PARAMETERS.with_defaults(self.inputs.parameters.get_dict())
        self.ctx.reuse = self.inputs.reuse.get_dict() if 'reuse' in self.inputs else {}
        self.ctx.stages = {stage: 'pending' for stage in STAGES}
        self.ctx.committee = dict(self.inputs.committee) if 'committee' in self.inputs else {}
        self.ctx.final_committee = dict(self.inputs.final_committee) if 'final_committee' in self.inputs else {}
        self.ctx.seeds = dict(self.inputs.search_candidates) if 'search_candidates' in self.inputs else {}
        self.ctx.training_set = self.inputs.get('training_set')
        self.ctx.failed = None
        extras = {
            'name': self.inputs.name.value,
            'engine': self.inputs.engine.value,
            'stage': 'setup',
            'stages': dict(self.ctx.stages),
            'started': datetime.datetime.now(datetime.UTC).isoformat(),
            'dft_planned': self.plan_dft(),
        }
        if self.ctx.reuse:
            extras['reused'] = dict(self.ctx.reuse)
        self.node.base.extras.set(EXTRAS_KEY, extras)
        self.report(
            f'campaign {self.inputs.name.value}: engine {self.inputs.engine.value}, about {extras["dft_planned"]} DFT '
            f'calculations planned; stages {", ".join(STAGES)}'
        )

    def plan_dft(self) -> int:
        """DFT calculations this campaign plans (upper bound): initial set + search verification + AL labels."""
        p = self.ctx.parameters
        total = 0
        if self.ctx.training_set is None and 'labels' not in self.ctx.reuse:
            n_parents = len(self.inputs.structures) if 'structures' in self.inputs else None
            contents = p['initial']['li_contents'] or p['li_contents']
            total += (n_parents or len(contents)) * (p['initial']['rattled_per_content'] + len(p['initial']['strains']))
        search = self._params('search')
        if search['enabled'] and search['verify_with_dft'] and not self.ctx.seeds and 'search' not in self.ctx.reuse:
            try:
                n_verify = load_protocol_inputs('search.yaml', search['protocol'], search['overrides'])['n_verify']
            except (ValueError, KeyError):
                n_verify = 0
            total += n_verify * len(p['li_contents'])
        total += self.plan_active_learning_dft()
        barriers = self._params('barriers')
        if barriers['enabled'] and barriers['dft_check'] and 'barriers' not in self.ctx.reuse:
            try:  # every NEB image plus the two end points, per hop
                inputs = load_protocol_inputs('barrier.yaml', barriers['protocol'], barriers['overrides'])
                total += len(inputs['parameters']['hops']) * (int(inputs['neb']['parameters']['n_images']) + 2)
            except (ValueError, KeyError, FileNotFoundError):
                pass
        return int(total)

    def plan_active_learning_dft(self) -> int:
        """Upper bound of the AL labels: min(max_iterations x (max_selected + held-out), max_dft_labels)."""
        al = self._params('active_learning')
        if not al['enabled'] or self.ctx.final_committee or 'active_learning' in self.ctx.reuse:
            return 0
        if not stage_available('active_learning'):
            return 0
        try:
            inputs = WorkflowFactory('nmcml.active_learning').get_protocol_inputs(al['protocol'], al['overrides'])
            loop = inputs['parameters']
            per_iteration = int(loop['max_selected'])
            held_out = (
                int(loop.get('held_out_per_condition') or 0)
                * max(len(self.ctx.seeds), 1)
                * len(loop.get('temperatures_K') or [1])
            )
            return min(int(loop['max_iterations']) * per_iteration + held_out, int(loop['max_dft_labels']))
        except Exception:  # a protocol or key the AL chain does not know is refused by its own builder later
            return 0

    # labels ----------------------------------------------------------------------------------------------------
    def should_run_labels(self):
        if self.ctx.training_set is not None:
            self._skip('labels', 'training_set given')
            self._group('labels', self.ctx.training_set)
            return False
        node = self._reused('labels')
        if node is not None:
            self.ctx.training_set = node.outputs.labelled
            self._skip('labels', f'reused from <{node.pk}>')
            return False
        return True

    def run_labels(self):
        self._set_stage('labels', 'running')
        p = self.ctx.parameters
        initial = dict(p['initial'])
        initial['li_contents'] = initial['li_contents'] or p['li_contents']
        parents = dict(self.inputs.structures) if 'structures' in self.inputs else {}
        structures = initial_structures(orm.Dict(initial), **parents)
        self._group('labels', *structures.values())
        Label = WorkflowFactory('nmcml.label')
        protocol, overrides = self._label_protocol()
        builder = Label.get_builder_from_protocol(
            self.inputs.codes.dft, structures, engine=self.inputs.engine.value, protocol=protocol, overrides=overrides
        )
        builder.metadata.call_link_label = 'labels'
        node = self.submit(builder)
        self._group('labels', node)
        self.report(f'stage labels: {len(structures)} initial cells -> {node.process_label}<{node.pk}>')
        return ToContext(labels_node=node)

    def inspect_labels(self):
        node = self.ctx.labels_node
        if not node.is_finished_ok or 'labelled' not in node.outputs:
            return self._fail('labels', node)
        self.ctx.training_set = node.outputs.labelled
        self._group('labels', self.ctx.training_set)
        self._set_stage('labels', 'done')
        self.report(f'stage labels: {self.ctx.training_set.num_frames} frames labelled')
        return None

    # committee -------------------------------------------------------------------------------------------------
    def should_run_committee(self):
        if self.ctx.committee:
            self._skip('committee', 'committee given')
            self._group('committee', *self.ctx.committee.values())
            return False
        node = self._reused('committee')
        if node is not None:
            self.ctx.committee = dict(node.outputs.models)
            self._skip('committee', f'reused from <{node.pk}>')
            return False
        if self.ctx.final_committee or 'active_learning' in self.ctx.reuse:
            self._skip('committee', 'final committee given')
            return False
        return True

    def run_committee(self):
        self._set_stage('committee', 'running')
        Finetune = WorkflowFactory('nmcml.finetune')
        params = self._params('committee')
        builder = Finetune.get_builder_from_protocol(
            self.inputs.codes.train,
            self.ctx.training_set,
            foundation_model=self.inputs.foundation_model,
            evaluate_code=self.inputs.codes.engine,
            protocol=params['protocol'],
            overrides=params['overrides'],
        )
        builder.metadata.call_link_label = 'committee'
        node = self.submit(builder)
        self._group('committee', node)
        self.report(f'stage committee: fine-tuning from the foundation model -> FinetuneWorkChain<{node.pk}>')
        return ToContext(committee_node=node)

    def inspect_committee(self):
        node = self.ctx.committee_node
        spread = WorkflowFactory('nmcml.finetune').exit_codes.ERROR_NEGLIGIBLE_SPREAD.status
        models = dict(node.outputs.models) if 'models' in node.outputs else {}
        if not (node.is_finished_ok or (node.exit_status == spread and models)):
            self.ctx.committee = {}
            return self._fail('committee', node)
        if not node.is_finished_ok:
            self.report(f'stage committee: {node.exit_message} -- going on with an uncalibrated committee')
        self.ctx.committee = models
        self._group('committee', *models.values())
        self._set_stage('committee', 'done')
        self.report(f'stage committee: {len(models)} members')
        return None

    # search ----------------------------------------------------------------------------------------------------
    def should_run_search(self):
        if self.ctx.seeds:
            self._skip('search', 'search_candidates given')
            return False
        if self._skipped('search', self._reuse_search):
            return False
        if not self.ctx.committee:
            self._skip('search', 'no committee (final committee given)')
            return False
        return True

    def _reuse_search(self, node) -> None:
        self.ctx.seeds = flatten_candidates(node, self.ctx.parameters['li_contents'])

    def run_search(self):
        self._set_stage('search', 'running')
        Search = WorkflowFactory('nmcml.search')
        params = self._params('search')
        protocol, label_overrides = self._label_protocol()
        overrides = recursive_merge(
            {'li_contents': list(self.ctx.parameters['li_contents']), 'label_protocol': protocol},
            params['overrides'],
        )
        overrides['label'] = recursive_merge(label_overrides, params['overrides'].get('label', {}))
        verify = params['verify_with_dft']
        builder = Search.get_builder_from_protocol(
            self.inputs.codes.engine,
            models=self.ctx.committee,
            protocol=params['protocol'],
            overrides=overrides,
            dft_code=self.inputs.codes.dft if verify else None,
            dft_engine=self.inputs.engine.value,
        )
        builder.metadata.call_link_label = 'search'
        node = self.submit(builder)
        self._group('search', node)
        self.report(f'stage search: GA per Li content{" with DFT verification" if verify else ""} -> <{node.pk}>')
        return ToContext(search_node=node)

    def inspect_search(self):
        node = self.ctx.search_node
        Search = WorkflowFactory('nmcml.search')
        verification = Search.exit_codes.ERROR_VERIFICATION_FAILED.status
        if not (node.is_finished_ok or node.exit_status == verification) or 'candidates' not in node.outputs:
            return self._fail('search', node)
        if not node.is_finished_ok:
            self.report('stage search: the DFT verification failed; its GA candidates are used anyway')
        self.ctx.seeds = flatten_candidates(node, self.ctx.parameters['li_contents'])
        self._group('search', *self.ctx.seeds.values(), *(node.outputs[k] for k in ('hull', 'summary', 'labelled')
                                                          if k in node.outputs))  # fmt: skip
        self._set_stage('search', 'done')
        self.report(f'stage search: {len(self.ctx.seeds)} seed structures for active learning')
        return None

    # active learning -------------------------------------------------------------------------------------------
    def should_run_active_learning(self):
        if self.ctx.final_committee:
            self._skip('active_learning', 'final_committee given')
            return False
        return not self._skipped('active_learning', self._reuse_active_learning)

    def _reuse_active_learning(self, node) -> None:
        self.ctx.final_committee = active_learning_committee(node)

    def run_active_learning(self):
        self._set_stage('active_learning', 'running')
        return self._submit_stage('active_learning', active_learning_builder)

    def inspect_active_learning(self):
        node = self.ctx.active_learning_node
        committee = active_learning_committee(node) if usable_result('active_learning', node) else {}
        if not committee:
            return self._fail('active_learning', node)
        if not node.is_finished_ok:
            self.report(
                f'stage active_learning: stopped with {node.exit_status} ({node.exit_message}); its final '
                'committee is used'
            )
        self.ctx.final_committee = committee
        self._group('active_learning', *committee.values())
        self._set_stage('active_learning', 'done')
        return None

    # diffusion and barriers ------------------------------------------------------------------------------------
    def _transport_committee(self) -> dict:
        return self.ctx.final_committee or self.ctx.committee

    def run_transport(self):
        """Diffusion grid and barriers on the final committee, submitted together (they do not depend on each
        other)."""
        if self.ctx.failed:
            return None
        futures = {}
        for stage, make in (('diffusion', diffusion_builder), ('barriers', barrier_builder)):

            def reuse(node, key=f'{stage}_node'):
                self.ctx[key] = node

            if self._skipped(stage, reuse):
                continue
            if not self._transport_committee():
                self._skip(stage, 'no committee')
                continue
            self._set_stage(stage, 'running')
            stage_class = WorkflowFactory(STAGE_ENTRY_POINTS[stage])
            builder = make(self, stage_class)
            self.set_group_label(builder, stage_class)
            builder.metadata.call_link_label = stage
            node = self.submit(builder)
            self._group(stage, node)
            self.report(f'stage {stage}: {node.process_label}<{node.pk}>')
            futures[f'{stage}_node'] = node
        return ToContext(**futures)

    def inspect_transport(self):
        if self.ctx.failed:
            return None
        for stage in ('diffusion', 'barriers'):
            node = self.ctx.get(f'{stage}_node')
            if node is None or self.ctx.stages[stage] != 'running':
                continue
            if usable_result(stage, node):  # 770 / 780: some points or hops missing, the table is attached
                if not node.is_finished_ok:
                    self.report(f'stage {stage}: exit {node.exit_status} ({node.exit_message}); its table is used')
                self._set_stage(stage, 'done')
            elif self.ctx.failed is None:
                self._fail(stage, node)
            else:
                self._set_stage(stage, f'failed: exit {node.exit_status or node.process_state.value}')
        return None

    def _submit_stage(self, stage: str, make):
        stage_class = WorkflowFactory(STAGE_ENTRY_POINTS[stage])
        builder = make(self, stage_class)
        self.set_group_label(builder, stage_class)
        builder.metadata.call_link_label = stage
        node = self.submit(builder)
        self._group(stage, node)
        self.report(f'stage {stage}: {node.process_label}<{node.pk}>')
        return ToContext(**{f'{stage}_node': node})

    def _fail(self, stage: str, node):
        status = node.exit_status if node.exit_status is not None else node.process_state.value  # excepted/killed
        self._set_stage(stage, f'failed: exit {status}')
        self.ctx.failed = (stage, node)
        self.report(f'stage {stage}: {node.process_label}<{node.pk}> failed: {status} {node.exit_message or ""}')
        return self.exit_codes[STAGE_FAILED[stage]].format(pk=node.pk, status=status)

    # report ----------------------------------------------------------------------------------------------------
    def write_report(self):
        """The HTML report is files, not a node (architecture review: not a work chain). It is written here when the
        report module provides ``write_report`` so a daemon-run campaign has one; ``aiida-nmcml campaign report``
        writes it again any time. A report that fails does not fail the campaign (its results are in the graph)."""
        if not self.ctx.parameters['stages']['report']['enabled']:
            self._skip('report', 'disabled')
            return
        writer = report_entry_point()
        if writer is None:
            self._skip('report', 'not available (aiida_nmcml.report.write_report is missing)')
            return
        self._set_stage('report', 'running')
        try:
            folder = self.ctx.parameters['stages']['report']['directory']
            path = writer(self.node, folder or default_report_directory(self.inputs.name.value))
            self._group('report')
        except Exception as exc:  # the report reads the finished stages; a bug there must not lose the campaign
            self._set_stage('report', f'failed: {type(exc).__name__}: {exc}')
            self.report(f'report: failed ({type(exc).__name__}: {exc}); rerun `aiida-nmcml campaign report`')
            return
        extras = self.node.base.extras.get(EXTRAS_KEY, {})
        extras['report'] = str(path)
        self.node.base.extras.set(EXTRAS_KEY, extras)
        self._set_stage('report', 'done')
        self.report(f'report: {path}')

    def results(self):
        if self.ctx.training_set is not None:
            self.out('training_set', self.ctx.training_set)
        for key, model in self.ctx.committee.items():
            self.out(f'committee.{key}', model)
        for key, structure in self.ctx.seeds.items():
            self.out(f'search_candidates.{key}', structure)
        for key, model in (self.ctx.final_committee or {}).items():
            self.out(f'final_committee.{key}', model)
        results = {}
        if self.ctx.training_set is not None:
            results['training_set'] = self.ctx.training_set
        committee_node = self.ctx.get('committee_node') or self._reused('committee')
        if committee_node is not None and 'metrics' in committee_node.outputs:
            results['committee_metrics'] = committee_node.outputs.metrics
        search_node = self.ctx.get('search_node') or self._reused('search')
        if search_node is not None and 'summary' in search_node.outputs:
            results['search_summary'] = search_node.outputs.summary
        summary = summarize_campaign(orm.Dict(dict(self.ctx.stages)), **results)
        self.out('summary', summary)
        extras = self.node.base.extras.get(EXTRAS_KEY, {})
        extras['stage'] = 'finished' if not self.ctx.failed else f'failed in {self.ctx.failed[0]}'
        self.node.base.extras.set(EXTRAS_KEY, extras)
        if self.ctx.failed:
            stage, node = self.ctx.failed
            status = node.exit_status if node.exit_status is not None else node.process_state.value
            return self.exit_codes[STAGE_FAILED[stage]].format(pk=node.pk, status=status)
        return None


# ---------------------------------------------------------------------------------------- stage adapters
# Each takes the running campaign and the stage's work chain class and returns a builder. They are functions, not
# methods, so the stage owners' interfaces are met in one place each.


def _dft_overrides(campaign: CampaignWorkChain, stage_overrides: dict) -> tuple[str, dict]:
    """The labels stage's protocol and overrides, with the stage's own ``label`` overrides on top: every label of a
    campaign is made with one set of DFT settings (the TrainingSet guard refuses a mixed set)."""
    protocol, label_overrides = campaign._label_protocol()
    return protocol, recursive_merge(label_overrides, stage_overrides.get('label') or {})


def active_learning_builder(campaign: CampaignWorkChain, ActiveLearning):
    """``nmcml.active_learning`` from the committee, the initial set (plus the search's DFT-verified candidates) and
    the search's best orderings as seed cells (the AL protocol's own cells when the search was skipped)."""
    params = campaign._params('active_learning')
    inputs = campaign.inputs
    restart = campaign.ctx.reuse.get('active_learning_continue')
    if restart:  # a killed AL of the campaign this one continues: go on after its last finished iteration
        node = orm.load_node(restart)
        campaign.report(f'stage active_learning: continuing <{node.pk}> after its last finished iteration')
        return ActiveLearning.get_builder_restart(node)
    overrides = copy.deepcopy(params['overrides'])
    protocol, overrides['label'] = _dft_overrides(campaign, overrides)
    overrides['label_protocol'] = protocol
    training_set = campaign.ctx.training_set
    search = campaign.ctx.get('search_node') or campaign._reused('search')
    if search is not None and 'labelled' in search.outputs:
        from ..data.trainingset import merge_trainingsets

        training_set = merge_trainingsets(
            initial=training_set, search=search.outputs.labelled, metadata={'call_link_label': 'merge_search_labels'}
        )
        campaign.report(f'stage active_learning: {search.outputs.labelled.num_frames} DFT-verified candidates added')
    committee_node = campaign.ctx.get('committee_node') or campaign._reused('committee')
    calibration = (
        committee_node.outputs.calibration if committee_node and 'calibration' in committee_node.outputs else None
    )
    return ActiveLearning.get_builder_from_protocol(
        engine_code=inputs.codes.engine,
        dft_code=inputs.codes.dft,
        train_code=inputs.codes.train,
        committee=campaign.ctx.committee,
        training_set=training_set,
        structures=dict(campaign.ctx.seeds) or None,
        foundation_model=inputs.get('foundation_model'),
        calibration=calibration,
        dft_engine=inputs.engine.value,
        protocol=params['protocol'],
        overrides=overrides,
    )


def active_learning_committee(node) -> dict:
    """The final committee of an active-learning chain (output namespace ``committee``)."""
    for key in ('committee', 'models', 'final_committee'):
        if key in node.outputs:
            return dict(node.outputs[key])
    return {}


def diffusion_builder(campaign: CampaignWorkChain, Diffusion):
    """``nmcml.diffusion`` on the campaign's grid: Li contents strictly between 0 and 1 (no vacancy or no Li: no
    diffusion) x ``temperatures_K``; the search's best orderings start replica 0 when they are on the same lattice."""
    params = campaign._params('diffusion')
    p = campaign.ctx.parameters
    overrides = copy.deepcopy(params['overrides'])
    grid = overrides.setdefault('parameters', {})
    contents = [x for x in p['li_contents'] if 0.0 < x < 1.0]
    if contents and 'li_contents' not in grid:
        grid['li_contents'] = contents
    grid.setdefault('temperatures_K', list(p['temperatures_K']))
    ground_states = None
    if campaign.ctx.seeds and same_lattice(campaign, Diffusion, params['protocol'], overrides):
        ground_states = {key.split('__')[0]: node for key, node in campaign.ctx.seeds.items()}
    return Diffusion.get_builder_from_protocol(
        campaign.inputs.codes.engine,
        campaign._transport_committee(),
        protocol=params['protocol'],
        overrides=overrides,
        ground_states=ground_states,
    )


def same_lattice(campaign: CampaignWorkChain, Diffusion, protocol: str, overrides: dict) -> bool:
    """Whether the search's GA cell is the diffusion cell (same supercell and composition): only then is a GA ground
    state a valid starting ordering for the MD."""
    search = campaign._params('search')
    try:
        ga = load_protocol_inputs('search.yaml', search['protocol'], search['overrides'])['lattice']
        md = Diffusion.get_protocol_inputs(protocol, overrides)['parameters'].get('lattice', {})
    except (ValueError, KeyError):
        return False
    composition = search['overrides'].get('lattice', {}).get('composition', ga.get('composition'))
    return md.get('supercell') == ga.get('supercell') and md.get('composition', composition) == composition


def barrier_builder(campaign: CampaignWorkChain, Barrier):
    """``nmcml.barrier`` with the final committee; with ``dft_check`` the model's NEB images are single points with
    the campaign's DFT code and label settings (the model-vs-DFT profiles of the report)."""
    params = campaign._params('barriers')
    overrides = copy.deepcopy(params['overrides'])
    kwargs = {}
    if params['dft_check']:
        protocol, overrides['label'] = _dft_overrides(campaign, overrides)
        overrides['label_protocol'] = protocol
        kwargs = {'dft_code': campaign.inputs.codes.dft, 'dft_engine': campaign.inputs.engine.value}
    return Barrier.get_builder_from_protocol(
        campaign.inputs.codes.engine,
        campaign._transport_committee(),
        protocol=params['protocol'],
        overrides=overrides,
        **kwargs,
    )


# ---------------------------------------------------------------------------------------- module helpers
def flatten_candidates(search_node, li_contents=None) -> dict:
    """``candidates.x0_5000.rank_0`` of a search -> ``{'x0_5000__rank_0': StructureData}`` (the best per content).

    With ``li_contents`` only those contents: the search adds the end members x = 0 and 1 for the hull, which are not
    conditions the campaign asked for (x = 0 has no Li to move, and its Ni4+ is non-magnetic in the spin-only start).
    """
    wanted = None if li_contents is None else {content_key(float(x)) for x in li_contents}
    seeds = {}
    for content, ranks in search_node.outputs.candidates.items():
        if wanted is not None and content not in wanted:
            continue
        names = sorted(ranks, key=lambda r: int(r.split('_')[1]))
        if names:
            seeds[f'{content}__{names[0]}'] = ranks[names[0]]
    return seeds


#: exit statuses of a stage chain whose outputs the campaign goes on with (search: DFT verification failed, the GA
#: candidates are outputs; finetune: spread too small to calibrate, the models are outputs)
USABLE_EXIT_STATUSES = {
    'search': (0, 521),
    'committee': (0, 730),
    'active_learning': (0, 760, 761, 762),
    'diffusion': (0, 770),
    'barriers': (0, 780),
}


def usable_result(stage: str, node) -> bool:
    """Whether a terminated stage work chain left a result the campaign can take as that stage's output."""
    if not node.is_finished:
        return False
    if node.exit_status not in USABLE_EXIT_STATUSES.get(stage, (0,)):
        return False
    needed = {
        'labels': 'labelled',
        'committee': 'models',
        'search': 'candidates',
        'active_learning': 'committee',
        'diffusion': 'table',
        'barriers': 'table',
    }.get(stage)
    return needed is None or needed in node.outputs


def default_name(protocol: str) -> str:
    return f'nmcml/campaign/{protocol}/{datetime.datetime.now().strftime("%Y%m%d-%H%M%S")}'


def resolve_codes(codes: dict | None, engine: str) -> dict:
    """``{dft, train, engine[, neb]}`` as loaded codes; missing ones default to the set-up's codes on localhost."""
    defaults = {'dft': 'nmcml-pw@localhost' if engine == 'qe' else None, 'train': 'nmcml-mace-train@localhost',
                'engine': 'nmcml-engine@localhost'}  # fmt: skip
    codes = dict(codes or {})
    out = {}
    for key, default in defaults.items():
        value = codes.get(key) or default
        if value is None:
            raise ValueError(f'no {key} code for engine {engine}: pass one (e.g. --dft-code vasp@cluster)')
        if isinstance(value, str):
            try:
                value = orm.load_code(value)
            except Exception as exc:  # NotExistent, MultipleObjectsError
                raise ValueError(f'code {value!r} not found ({type(exc).__name__}); run `aiida-nmcml setup`') from exc
        out[key] = value
    if codes.get('neb') is not None:
        out['neb'] = orm.load_code(codes['neb']) if isinstance(codes['neb'], str) else codes['neb']
    return out


def resolve_parameters(protocol: str | None, overrides: dict | None) -> dict:
    """campaign.yaml at ``protocol`` with ``overrides``; every key and value checked, every stage protocol known.

    Raises ``ValueError`` with one line per problem.
    """
    if protocol is not None and protocol not in PROTOCOL_LEVELS:
        raise ValueError(f'unknown protocol {protocol!r}: choose one of {", ".join(PROTOCOL_LEVELS)}')
    overrides = dict(overrides or {})
    parameters = load_protocol_inputs('campaign.yaml', protocol, overrides, owner='nmcml.campaign')
    # a composition replaces, it does not merge ({Ni: 1.0} means no Mn and Co): protocol level, then overrides
    from ..protocols import PROTOCOL_DIRECTORY, _load

    level = _load(str(PROTOCOL_DIRECTORY / 'campaign.yaml'))['protocols'].get(protocol or 'moderate', {})
    for source in (level, overrides):
        composition = (source.get('initial') or {}).get('composition')
        if composition is not None:
            parameters['initial']['composition'] = dict(composition)
    errors = PARAMETERS.errors(parameters, 'campaign')
    if errors:
        raise ValueError('; '.join(errors))
    parameters = PARAMETERS.with_defaults(parameters)
    for stage, filename in (('labels', 'label.yaml'), ('committee', 'finetune.yaml'), ('search', 'search.yaml')):
        try:
            load_protocol_inputs(filename, parameters['stages'][stage]['protocol'], owner=STAGE_ENTRY_POINTS[stage])
        except ValueError as exc:
            raise ValueError(f'stages.{stage}.protocol: {exc}') from exc
    for stage in ('active_learning', 'diffusion', 'barriers'):
        params = parameters['stages'][stage]
        if params['enabled'] and stage_available(stage):
            cls = WorkflowFactory(STAGE_ENTRY_POINTS[stage])
            if hasattr(cls, 'get_protocol_inputs'):
                try:
                    cls.get_protocol_inputs(params['protocol'])
                except ValueError as exc:
                    raise ValueError(f'stages.{stage}.protocol: {exc}') from exc
    return parameters


def continue_builder(previous: orm.WorkflowNode):
    """A builder that continues ``previous`` (a campaign that was killed, excepted or failed): its inputs, plus
    ``reuse`` naming every stage work chain it called that finished OK (those are not run again)."""
    if previous.process_class is not CampaignWorkChain and previous.process_type != 'aiida.workflows:nmcml.campaign':
        raise ValueError(f'<{previous.pk}> is not a campaign ({previous.process_label})')
    builder = previous.get_builder_restart()
    reuse = dict(previous.inputs.reuse.get_dict()) if 'reuse' in previous.inputs else {}
    for link in previous.base.links.get_outgoing(link_type=LinkType.CALL_WORK).all():
        if link.link_label in STAGE_ENTRY_POINTS and usable_result(link.link_label, link.node):
            reuse[link.link_label] = link.node.uuid
        elif link.link_label == 'active_learning' and 'iteration_metrics' in link.node.outputs:
            reuse['active_learning_continue'] = link.node.uuid  # its finished iterations are not repeated
    if reuse:
        builder.reuse = orm.Dict(reuse)
    builder.metadata.label = previous.label
    builder.metadata.description = f'continues <{previous.pk}>'
    return builder, reuse

"""``nmcml.distill``: a MACE foundation model distilled from a universal potential that ships in its wheel.

Why: MACE-MP weights cannot be downloaded on an air-gapped machine, and a toy model makes every downstream number
meaningless. CHGNet's weights are inside ``chgnet==0.4.2``; a small MACE trained on CHGNet labels of Li–Ni–Mn–Co–O
configurations is a physically grounded starting point for fine-tuning on DFT (never a DFT result itself).

Steps, every one in the graph::

    sample_frames (calcfunction)        NMC811 across x, antisites, rattles, ±strain, end members, MD seeds
    nmcml.teacher.label (CalcJob)       teacher labels + teacher-MD snapshots; frames name the teacher and its hash
    split_training_set (calcfunction)   deterministic train/valid split
    nmcml.mace.train (CalcJob)          MACE from scratch
    refinement rounds (``refine.rounds``, DAgger):
      exploration_seeds (calcfunction)  40-atom NMC811 cells across x
      nmcml.teacher.label (CalcJob)     the *student* runs NPT MD from each seed, the teacher labels its frames
      split + merge (calcfunctions)     the new frames join the train/valid sets
      nmcml.mace.train (CalcJob)        MACE from scratch on the union
      ... until the student holds every cell (a final exploration checks the last model)
    -> model                            extras ``nmcml_teacher`` (name, versions, weights sha256)

Why refine: a student trained only on the teacher's configurations never saw the states its own errors lead to. The
unrefined demo student let a 70-atom Li0.5NiO2 cell swell 5x in 0.6 ps of NPT at 800 K where CHGNet holds it
(docs/foundation.md); the exploration's frames teach it the restoring force it lacked.

:func:`get_or_distill_foundation` is what ``setup`` and the demo call: it reuses a finished distillation of the same
protocol and teacher (in this profile, the model file cached on this machine, or the ``demo`` model shipped in
``aiida_nmcml/resources/foundation``) and only distils when there is none.
"""

from __future__ import annotations

import hashlib
import json
import pathlib

from aiida import orm
from aiida.engine import ToContext, WorkChain, calcfunction, if_, while_

from ..calculations.teacher import TeacherLabelCalculation
from ..calculations.train import MaceTrainCalculation
from ..common import exit_codes
from ..common.schema import Field, Section, port_validator
from ..data.model import MaceModel
from ..data.trainingset import TrainingSet, merge_trainingsets
from ..engine.teacher import SAMPLE_SCHEMA
from ..engine.teacher_explore import EXPLORE_SCHEMA, SEEDS_SCHEMA, explore_requested
from ..protocols import ProtocolMixin
from ..setup.computer import job_options
from .finetune import split_training_set

EXTRAS_TEACHER = 'nmcml_teacher'
EXTRAS_PROTOCOL = 'nmcml_distill_protocol'
EXTRAS_KEY = 'nmcml_distill_key'

REFINE_SCHEMA = Section(
    {
        'rounds': Field(
            int, default=0, min=0, max=10, help='retrainings on student-explored frames (0: no refinement)'
        ),
        'seeds': SEEDS_SCHEMA,
        'explore': EXPLORE_SCHEMA,
    },
    help='DAgger refinement: the student explores in NPT, the teacher labels, the student retrains',
)


@calcfunction
def sample_frames(parameters: orm.Dict) -> TrainingSet:
    """Unlabelled configurations from :func:`aiida_nmcml.engine.teacher.sample_configurations` (deterministic)."""
    from ..engine.teacher import sample_configurations

    return TrainingSet.from_frames(sample_configurations(parameters.get_dict()))


@calcfunction
def exploration_seeds(parameters: orm.Dict) -> TrainingSet:
    """The cells the student explores from (:func:`aiida_nmcml.engine.teacher_explore.exploration_seeds`)."""
    from ..engine.teacher_explore import exploration_seeds as seeds

    return TrainingSet.from_frames(seeds(parameters.get_dict()['seeds']))


@calcfunction
def refinement_record(**nodes) -> orm.Dict:
    """Every exploration's verdict, the student's errors on its own frames, and the retrained model's validation
    metrics, round by round. ``explore_NN``: the summary of exploration NN; ``metrics_NN``: the metrics of the model
    retrained on its frames."""
    rounds = []
    for key in sorted(k for k in nodes if k.startswith('explore_')):
        index = key.split('_')[1]
        summary = nodes[key].get_dict()
        metrics = nodes.get(f'metrics_{index}')
        rounds.append(
            {
                'round': int(index),
                'exploration': summary['exploration'],
                'runs': [{k: v for k, v in run.items() if k != 'volumes_A3'} for run in summary['explore_runs']],
                'frames_labelled': summary['n_explore_frames'],
                'frames_dropped': summary['n_dropped'],
                'retrained_validation': metrics.get_dict() if metrics is not None else None,
            }
        )
    return orm.Dict({'rounds': rounds})


class DistillWorkChain(ProtocolMixin, WorkChain):
    """Sample → label with the teacher → train MACE from scratch; the model names its teacher."""

    _protocol_filename = 'distill.yaml'

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input(
            'sample',
            valid_type=orm.Dict,
            default=lambda: orm.Dict({}),
            validator=port_validator(SAMPLE_SCHEMA, 'sample'),
            help='Sampler settings (aiida_nmcml.engine.teacher.SAMPLE_SCHEMA).',
        )
        spec.input(
            'refine',
            valid_type=orm.Dict,
            default=lambda: orm.Dict({}),
            validator=port_validator(REFINE_SCHEMA, 'refine'),
            help='Refinement rounds (REFINE_SCHEMA): student NPT exploration labelled by the teacher, retraining.',
        )
        spec.input('valid_fraction', valid_type=orm.Float, default=lambda: orm.Float(0.1))
        spec.input('seed', valid_type=orm.Int, default=lambda: orm.Int(1), help='Seed of the split and the training.')
        spec.expose_inputs(TeacherLabelCalculation, namespace='label', exclude=('frames',))
        spec.expose_inputs(
            MaceTrainCalculation,
            namespace='train',
            exclude=('training_set', 'validation_set', 'foundation_model', 'replay_set', 'seed'),
        )
        spec.inputs.validator = cls.validate_inputs
        spec.outline(
            cls.sample,
            cls.run_label,
            cls.inspect_label,
            cls.run_train,
            cls.inspect_train,
            while_(cls.refining)(
                cls.run_explore,
                cls.inspect_explore,
                if_(cls.refining)(cls.run_train, cls.inspect_train),
            ),
            cls.results,
        )

        spec.output('model', valid_type=MaceModel, help='The distilled MACE foundation model.')
        spec.output('training_set', valid_type=TrainingSet, help='Teacher-labelled frames the model trained on.')
        spec.output('validation_set', valid_type=TrainingSet, help='Held-out teacher-labelled frames.')
        spec.output('teacher_identity', valid_type=orm.Dict, help='Teacher name, versions and weights sha256.')
        spec.output('metrics', valid_type=orm.Dict, help='Training metrics of mace_run_train (vs the teacher).')
        spec.output(
            'refinement',
            valid_type=orm.Dict,
            required=False,
            help='Per round: the student NPT runs (volumes, stop reasons), its errors vs the teacher on its own '
            "frames, frames added, and the retrained model's validation metrics.",
        )
        spec.default_output_node = 'metrics'

        # numbers and messages: the plugin's one exit-code table (docs/dev/exit_codes.md)
        exit_codes.declare(
            spec,
            'ERROR_LABELLING_FAILED',
            'ERROR_TOO_FEW_FRAMES',
            'ERROR_STUDENT_TRAINING_FAILED',
            'ERROR_STUDENT_EXPLORATION_FAILED',
            'ERROR_STUDENT_CELL_RUNAWAY',
        )

    @staticmethod
    def validate_inputs(inputs, _):
        if not 0.0 < inputs['valid_fraction'].value < 0.5:
            return 'valid_fraction must be in (0, 0.5)'
        refine = REFINE_SCHEMA.with_defaults(inputs['refine'].get_dict()) if 'refine' in inputs else {'rounds': 0}
        if refine['rounds'] and not explore_requested(refine['explore']):
            return 'refine.rounds > 0 needs refine.explore.steps and refine.explore.temperatures_K'
        return None

    @classmethod
    def get_builder_from_protocol(
        cls,
        engine_code,
        train_code,
        *,
        teacher: str = 'chgnet',
        device: str = 'cpu',
        protocol: str | None = None,
        overrides: dict | None = None,
    ):
        """A ready builder. ``overrides`` follow the YAML layout, e.g. ``{'train': {'parameters': {'lr': 1e-3}}}``."""
        if isinstance(engine_code, str):
            engine_code = orm.load_code(engine_code)
        if isinstance(train_code, str):
            train_code = orm.load_code(train_code)
        inputs = cls.get_protocol_inputs(protocol, {'device': device, 'teacher': teacher, **(overrides or {})})
        gpu = inputs['device'].startswith('cuda')
        builder = cls.get_builder()
        builder.sample = orm.Dict(inputs['sample'])
        builder.refine = orm.Dict(inputs['refine'])
        builder.valid_fraction = orm.Float(inputs['valid_fraction'])
        builder.seed = orm.Int(inputs['seed'])
        builder.label.code = engine_code
        builder.label.teacher = orm.Str(inputs['teacher'])
        builder.label.device = orm.Str(inputs['device'])
        builder.label.parameters = orm.Dict(inputs['label']['parameters'])
        gpu_kwargs = {
            'gpu': gpu,
            'default_gpu_options': inputs['gpu_options'],
            'gpu_options': (overrides or {}).get('gpu_options'),
        }
        builder.label.metadata.options = job_options(engine_code, inputs['label']['metadata']['options'], **gpu_kwargs)
        builder.train.code = train_code
        builder.train.device = orm.Str(inputs['device'])
        builder.train.parameters = orm.Dict(inputs['train']['parameters'])
        builder.train.metadata.options = job_options(train_code, inputs['train']['metadata']['options'], **gpu_kwargs)
        builder.metadata.label = f'distill:{protocol or cls.get_default_protocol()}:{inputs["teacher"]}'
        return builder

    def sample(self):
        self.ctx.frames = sample_frames(self.inputs.sample)
        self.ctx.round = 0
        self.ctx.refine = REFINE_SCHEMA.with_defaults(self.inputs.refine.get_dict())
        self.ctx.refined = self.ctx.refine['rounds'] == 0
        self.ctx.record_nodes = {}
        self.report(f'sampled {self.ctx.frames.num_frames} configurations')

    def run_label(self):
        inputs = self.exposed_inputs(TeacherLabelCalculation, namespace='label')
        inputs['frames'] = self.ctx.frames
        inputs['metadata'] = {**inputs.get('metadata', {}), 'call_link_label': 'label_with_teacher'}
        return ToContext(label=self.submit(TeacherLabelCalculation, **inputs))

    def inspect_label(self):
        node = self.ctx.label
        if not node.is_finished_ok:
            return self.exit_codes.ERROR_LABELLING_FAILED.format(message=f'<{node.pk}> {node.exit_message}')
        labelled = node.outputs.labelled
        if labelled.num_labelled < 4:
            return self.exit_codes.ERROR_TOO_FEW_FRAMES.format(n=labelled.num_labelled)
        parts = split_training_set(labelled, self.inputs.valid_fraction, self.inputs.seed)
        self.ctx.train_set, self.ctx.valid_set = parts['train'], parts['valid']
        summary = node.outputs.summary.get_dict()
        self.report(
            f'teacher {node.outputs.teacher_identity["name"]} labelled {summary["n_labelled"]} frames and '
            f'{summary["n_md_snapshots"]} MD snapshots ({summary["n_dropped"]} dropped)'
        )
        return None

    def run_train(self):
        inputs = self.exposed_inputs(MaceTrainCalculation, namespace='train')
        inputs['training_set'] = self.ctx.train_set
        inputs['validation_set'] = self.ctx.valid_set
        inputs['seed'] = self.inputs.seed
        inputs['metadata'] = {**inputs.get('metadata', {}), 'call_link_label': 'train_student'}
        return ToContext(train=self.submit(MaceTrainCalculation, **inputs))

    def inspect_train(self):
        node = self.ctx.train
        if not node.is_finished_ok:
            return self.exit_codes.ERROR_STUDENT_TRAINING_FAILED.format(message=f'<{node.pk}> {node.exit_message}')
        if self.ctx.round:
            self.ctx.record_nodes[f'metrics_{self.ctx.round - 1:02d}'] = node.outputs.metrics
        return None

    # ------------------------------------------------------------------------------------------------ refinement
    def refining(self):
        """Explore again (loop) / retrain (after an exploration that did not end the refinement)."""
        return not self.ctx.refined

    def run_explore(self):
        """The current student explores from every seed cell in NPT; the teacher labels what it visits."""
        if 'seeds' not in self.ctx:
            self.ctx.seeds = exploration_seeds(self.inputs.refine)
        inputs = self.exposed_inputs(TeacherLabelCalculation, namespace='label')
        parameters = {**inputs['parameters'].get_dict(), 'explore': self.ctx.refine['explore']}
        parameters['md'] = {**parameters.get('md', {}), 'steps': 0}  # the teacher's own MD ran in the first job
        inputs.update(frames=self.ctx.seeds, models={'student': self.ctx.train.outputs.model})
        inputs['parameters'] = orm.Dict(parameters)
        inputs['metadata'] = {**inputs.get('metadata', {}), 'call_link_label': f'explore_{self.ctx.round:02d}'}
        return ToContext(explore=self.submit(TeacherLabelCalculation, **inputs))

    def inspect_explore(self):
        node = self.ctx.explore
        if not node.is_finished_ok:
            return self.exit_codes.ERROR_STUDENT_EXPLORATION_FAILED.format(
                round=self.ctx.round, message=f'<{node.pk}> {node.exit_message}'
            )
        summary = node.outputs.summary.get_dict()
        verdict = summary['exploration']
        self.ctx.record_nodes[f'explore_{self.ctx.round:02d}'] = node.outputs.summary
        energy, forces = verdict['student_energy_rmse_meV_atom'], verdict['student_force_rmse_eV_A']
        self.report(
            f'round {self.ctx.round}: the student held {verdict["n_runs"] - verdict["n_stopped"]} of '
            f'{verdict["n_runs"]} NPT cells (max |V/V0 - 1| {verdict["max_abs_volume_change"]:.2f}); on its own '
            f'{summary["n_explore_frames"]} frames vs the teacher: energy RMSE {_fmt(energy)} meV/atom, forces '
            f'{_fmt(forces)} eV/Å'
        )
        if verdict['holds_cell'] or self.ctx.round >= self.ctx.refine['rounds']:
            self.ctx.refined = True
            return None
        labelled = node.outputs.labelled
        parts = split_training_set(labelled, self.inputs.valid_fraction, self.inputs.seed)
        self.ctx.train_set = merge_trainingsets(a=self.ctx.train_set, b=parts['train'])
        self.ctx.valid_set = merge_trainingsets(a=self.ctx.valid_set, b=parts['valid'])
        self.ctx.round += 1
        self.report(
            f'retraining (round {self.ctx.round} of {self.ctx.refine["rounds"]}) on {self.ctx.train_set.num_frames} '
            f'frames ({labelled.num_frames} from the exploration)'
        )
        return None

    def results(self):
        model = self.ctx.train.outputs.model
        identity = self.ctx.label.outputs.teacher_identity
        self.out('model', model)
        self.out('training_set', self.ctx.train_set)
        self.out('validation_set', self.ctx.valid_set)
        self.out('teacher_identity', identity)
        self.out('metrics', self.ctx.train.outputs.metrics)
        if self.ctx.record_nodes:
            self.out('refinement', refinement_record(**self.ctx.record_nodes))
        # Stored nodes are immutable; extras make the teacher queryable on the model itself (the graph proves it).
        teacher = {**identity.get_dict(), 'distill_workchain': self.node.uuid}
        model.base.extras.set(EXTRAS_TEACHER, teacher)
        protocol = self.node.label.split(':')[1] if self.node.label.startswith('distill:') else 'custom'
        model.base.extras.set(EXTRAS_PROTOCOL, protocol)
        self.node.base.extras.set(EXTRAS_TEACHER, teacher)
        self.report(f'distilled MACE model <{model.pk}> sha256 {model.sha256[:12]} from {identity["name"]}')
        explorations = sorted(k for k in self.ctx.record_nodes if k.startswith('explore_'))
        last = self.ctx.record_nodes[explorations[-1]]['exploration'] if explorations else None
        if last is not None and not last['holds_cell']:
            return self.exit_codes.ERROR_STUDENT_CELL_RUNAWAY.format(
                rounds=self.ctx.refine['rounds'], stopped=last['n_stopped'], runs=last['n_runs'],
                change=last['max_abs_volume_change'],
            )  # fmt: skip
        return None


# ---------------------------------------------------------------------------------------------- reuse per machine
def distill_key(protocol: str, teacher: str) -> str:
    """Identity of a distillation recipe: protocol content + teacher + sampler source. Editing any retrains."""
    import inspect

    from ..engine import teacher as teacher_module
    from ..engine import teacher_explore

    content = {
        'protocol': DistillWorkChain.get_protocol_inputs(protocol, {'teacher': teacher, 'device': 'cpu'}),
        # the functions that make the data, not the whole module: a docstring edit must not retrain
        'data': hashlib.sha256(
            ''.join(
                inspect.getsource(getattr(teacher_module, name))
                for name in ('sample_configurations', '_end_members', '_perturb', '_clean', 'label_atoms', 'teacher_md')
            ).encode()
            + ''.join(
                inspect.getsource(getattr(teacher_explore, name)) for name in ('student_explore', 'exploration_seeds')
            ).encode()
        ).hexdigest(),
        # the sampler's defaults fill what a protocol leaves out: a changed default is a changed recipe
        'sample_defaults': SAMPLE_SCHEMA.with_defaults({}),
        'refine_defaults': REFINE_SCHEMA.with_defaults({}),
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]


def machine_cache_dir() -> pathlib.Path:
    import os

    root = os.environ.get('NMCML_CACHE') or pathlib.Path.home() / '.cache' / 'aiida-nmcml'
    return pathlib.Path(root) / 'foundation'


SHIPPED_DIR = pathlib.Path(__file__).resolve().parent.parent / 'resources' / 'foundation'


def model_filename(protocol: str, teacher: str, key: str) -> str:
    """The file name of a distilled model of recipe ``key``, in the machine cache and in the package alike."""
    return f'distilled-{teacher}-{protocol}-{key}.model'


def shipped_foundation(protocol: str, teacher: str = 'chgnet', key: str | None = None) -> pathlib.Path | None:
    """The distilled model of this exact recipe shipped inside the package, if any (only ``demo`` is shipped).

    Why: distilling the demo foundation takes 10-18 min on two cores, most of the README's first command on a fresh
    machine. The file is the output of ``aiida-nmcml foundation distill --protocol demo`` (its ``.json`` names the
    teacher, the versions, the student's validation errors and how it was built); its name carries the recipe key
    (:func:`distill_key`), so a recipe edited without rebuilding it is never used: the demo then distils anew.
    ``NMCML_SKIP_MACHINE_CACHE`` (``foundation distill --force``) skips it as it skips the machine cache.
    """
    path = SHIPPED_DIR / model_filename(protocol, teacher, key or distill_key(protocol, teacher))
    return path if path.is_file() else None


def importable_model_files(protocol: str, teacher: str = 'chgnet', key: str | None = None) -> list:
    """``(path, where)`` of the model files of this exact recipe that can be imported instead of distilling, in the
    order :func:`get_or_distill_foundation` tries them (machine cache, then the package); each has its ``.json``.
    Empty under ``NMCML_SKIP_MACHINE_CACHE``."""
    import os

    if os.environ.get('NMCML_SKIP_MACHINE_CACHE'):
        return []
    key = key or distill_key(protocol, teacher)
    candidates = (
        (machine_cache_dir() / model_filename(protocol, teacher, key), 'cached on this machine'),
        (shipped_foundation(protocol, teacher, key), 'shipped with aiida-nmcml'),
    )
    return [
        (path, where)
        for path, where in candidates
        if path is not None and path.is_file() and path.with_suffix('.json').is_file()
    ]


def find_distilled(protocol: str, teacher: str = 'chgnet') -> MaceModel | None:
    """A stored distilled model of this exact recipe, if any (newest first)."""
    qb = orm.QueryBuilder()
    qb.append(MaceModel, filters={f'extras.{EXTRAS_KEY}': distill_key(protocol, teacher)}, tag='m')
    qb.order_by({'m': {'ctime': 'desc'}})
    return qb.first(flat=True)


def get_or_distill_foundation(
    protocol: str = 'demo', teacher: str = 'chgnet', device: str = 'cpu', echo=print, wait: bool = True
) -> MaceModel:
    """The distilled foundation model of ``protocol``: reused from this profile, else from this machine's cache,
    else distilled now on the daemon (``submit``) and cached on the machine for the next profile.

    A model re-imported from the machine cache into a new profile has no distillation graph there: its extras
    (``nmcml_teacher``) still name the teacher, its version and weights hash, and its ``source`` says where it came
    from.
    """
    import shutil
    import time

    from aiida.engine import submit

    key = distill_key(protocol, teacher)
    found = find_distilled(protocol, teacher)
    if found is not None:
        echo(f'reusing distilled foundation model <{found.pk}> ({protocol}, {teacher}, sha256 {found.sha256[:12]})')
        return found
    importable = importable_model_files(protocol, teacher, key)
    if importable:
        path, where = importable[0]
        teacher_info = json.loads(path.with_suffix('.json').read_text())
        node = MaceModel.find_by_hash(_sha(path))
        if node is None:
            node = MaceModel.from_file(path, source=f'distilled:{teacher}:{protocol} ({where})')
            node.store()
        node.base.extras.set_many({EXTRAS_TEACHER: teacher_info, EXTRAS_PROTOCOL: protocol, EXTRAS_KEY: key})
        echo(f'imported the distilled foundation model {where}: <{node.pk}> from {path}')
        return node
    cached = machine_cache_dir() / model_filename(protocol, teacher, key)
    meta = cached.with_suffix('.json')
    from ..setup import ensure_environment

    codes = ensure_environment()
    builder = DistillWorkChain.get_builder_from_protocol(
        codes['engine'], codes['mace_train'], teacher=teacher, device=device, protocol=protocol
    )
    node = submit(builder)
    echo(f'distilling a foundation model from {teacher} (protocol {protocol}): DistillWorkChain <{node.pk}>')
    if not wait:
        return node
    start, last = time.time(), None
    while not node.is_terminated:
        state = node.process_status or node.process_state.value
        if state != last:
            echo(f'  <{node.pk}> {state} ({time.time() - start:.0f} s)')
            last = state
        time.sleep(5)
    runaway = DistillWorkChain.exit_codes.ERROR_STUDENT_CELL_RUNAWAY.status
    if node.exit_status == runaway and 'model' in node.outputs:
        echo(f'WARNING: {node.exit_message}')  # the best model there is; the diffusion chain's NPT check stays on
    elif not node.is_finished_ok:
        raise RuntimeError(
            f'distillation <{node.pk}> failed: {node.exit_status} {node.exit_message}; `verdi process report {node.pk}`'
        )
    model = node.outputs.model
    model.base.extras.set(EXTRAS_KEY, key)
    cached.parent.mkdir(parents=True, exist_ok=True)
    staged = cached.with_suffix('.partial')
    model.copy_to(staged)
    meta.write_text(json.dumps(model.base.extras.get(EXTRAS_TEACHER), indent=1))
    shutil.move(staged, cached)
    echo(f'distilled in {time.time() - start:.0f} s: model <{model.pk}>, cached at {cached}')
    return model


def _fmt(value) -> str:
    return 'n/a' if value is None else f'{value:.3g}'


def _sha(path) -> str:
    from ..data.model import sha256_file

    return sha256_file(path)

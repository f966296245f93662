"""``nmcml.finetune``: a committee of N MACE models fine-tuned concurrently, diverse in data and initial condition.

The committee's spread is the uncertainty that active learning selects on. Members that differ only by seed are
nearly identical after fine-tuning (science review B4: byte-identical files in the demo), so by default each member
trains on its own bootstrap sample of the training frames (validating on the frames it did not draw) and starts from
a copy of the foundation model whose readout is perturbed with the member's seed (``diversity`` input,
``aiida_nmcml/engine/committee_init.py``). One common held-out set, seen by no member, is kept for the committee's
evaluation and calibration (``nmcml.evaluate``), which refuses a committee without spread (exit code 730).

The E0 dictionary is computed once for the committee (:func:`compute_e0s`, daemon side) and passed to every member.
"""

from __future__ import annotations

from aiida import orm
from aiida.engine import ToContext, WorkChain, calcfunction

from ..calculations.evaluate import EvaluateCalculation, declare_negligible_spread
from ..calculations.train import MaceTrainCalculation
from ..common import exit_codes
from ..data.model import MaceModel
from ..data.trainingset import TrainingSet
from ..engine.committee_init import READOUT_INIT, RESAMPLING
from ..protocols import ProtocolMixin
from ..setup.computer import job_options


@calcfunction
def split_training_set(training_set, valid_fraction, seed):
    """Deterministic train/valid split, in the graph so every member provably saw the same frames."""
    fraction = float(valid_fraction.value)
    parts = training_set.split(fractions=(1.0 - fraction, fraction), seed=int(seed.value), names=('train', 'valid'))
    return {'train': parts['train'], 'valid': parts['valid']}


@calcfunction
def compute_e0s(foundation_model, training_set, isolated_atom_energies=None):
    """The E0 dictionary of the fine-tuned head: foundation E0s + least-squares correction (analysis/e0s.py).

    Where: here, in the daemon, from the hash-checked MaceModel node, once per committee. The foundation model has to
    be unpickled for it (torch in the daemon, which the training parser already needs to read a new model's
    metadata); the cost is one foundation evaluation of at most 200 training frames (every composition kept), seconds
    for mace-mp-medium on a CPU, and the result is a node that every member's training links to. Doing it on the
    compute node instead would need the engine installed next to mace_run_train and would make the E0s an output
    of each member rather than one shared input.
    """
    from ..analysis.e0s import compute_e0s as compute

    isolated = isolated_atom_energies.get_dict() if isolated_atom_energies is not None else None
    model = foundation_model.load_model(device='cpu')
    result = compute(model, training_set.get_frames(), isolated_atoms=isolated)
    return orm.Dict(result)


@calcfunction
def resample_training_set(training_set, seed, diversity):
    """One member's training frames (bootstrap / subsample of ``training_set``) and its out-of-bag validation set."""
    from ..engine.committee_init import member_indices

    settings = diversity.get_dict()
    frames = training_set.get_frames()
    train, out_of_bag = member_indices(
        len(frames), int(seed.value), settings['resampling'], float(settings['subsample_fraction'])
    )
    result = {'train': TrainingSet.from_frames([frames[i] for i in train])}
    if out_of_bag:
        result['valid'] = TrainingSet.from_frames([frames[i] for i in out_of_bag])
    return result


@calcfunction
def prepare_member_model(foundation_model, seed, diversity, e0s=None):
    """The model one member fine-tunes from: a copy of the foundation with the plugin's E0s and its own readout.

    E0s: mace-torch 0.3.16 copies every foundation tensor of matching shape into the model it fine-tunes
    (``load_foundations_elements``, the ``state_dict`` loop), the E0 buffer included, so in naive fine-tuning the
    ``E0s`` argument is silently replaced by the foundation's own E0s. Writing the E0s into the copy makes that copy
    carry them. Not for multihead fine-tuning (``e0s`` not given): there the copied foundation E0s are the replay
    head's reference, and the fine-tuning head's E0s come from the ``E0s`` argument (shapes differ, nothing copied).
    Readout: re-drawn or perturbed with the member's seed (``diversity``, engine/committee_init.py).
    """
    import io

    import torch

    from ..engine.committee_init import initialise_readout

    settings = {**DIVERSITY_DEFAULTS, **diversity.get_dict()}
    model = foundation_model.load_model(device='cpu')
    initialise_readout(
        model, int(seed.value), settings['readout_init'], float(settings['readout_scale']), settings['readout_blocks']
    )
    if e0s is not None:
        set_model_e0s(model, e0s.get_dict()['e0s'])
    buffer = io.BytesIO()
    torch.save(model, buffer)
    return MaceModel.from_bytes(
        buffer.getvalue(), filename=f'member_seed{seed.value}.model', source=f'member:{settings["readout_init"]}'
    )


def set_model_e0s(model, e0s: dict) -> None:
    """Write ``{symbol: eV}`` into the E0 buffer of a loaded MACE model (every head, every element)."""
    import torch
    from ase.data import chemical_symbols

    buffer = model.atomic_energies_fn.atomic_energies
    values = torch.tensor(
        [float(e0s[chemical_symbols[int(z)]]) for z in model.atomic_numbers], dtype=buffer.dtype, device=buffer.device
    )
    with torch.no_grad():
        buffer.copy_(values.expand_as(buffer))


# Defaults of the `diversity` input; the protocols set them explicitly.
DIVERSITY_DEFAULTS = {
    'resampling': 'bootstrap',
    'subsample_fraction': 0.8,
    'readout_init': 'perturb',
    'readout_scale': 0.5,
    'readout_blocks': 'last',
}


def check_diversity(settings: dict) -> str | None:
    """Why a ``diversity`` dict is refused (unknown key with the closest valid one, bad value), or None."""
    import difflib

    for key in settings:
        if key not in DIVERSITY_DEFAULTS:
            close = difflib.get_close_matches(key, list(DIVERSITY_DEFAULTS), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ''
            return f'diversity: unknown key {key!r}{hint} Valid keys: {sorted(DIVERSITY_DEFAULTS)}'
    merged = {**DIVERSITY_DEFAULTS, **settings}
    if merged['resampling'] not in RESAMPLING:
        return f'diversity.resampling must be one of {RESAMPLING}, not {merged["resampling"]!r}'
    if merged['readout_init'] not in READOUT_INIT:
        return f'diversity.readout_init must be one of {READOUT_INIT}, not {merged["readout_init"]!r}'
    if merged['readout_blocks'] not in ('last', 'all'):
        return f'diversity.readout_blocks must be last or all, not {merged["readout_blocks"]!r}'
    if not 0.0 < float(merged['subsample_fraction']) < 1.0:
        return 'diversity.subsample_fraction must be between 0 and 1 (exclusive)'
    if not 0.0 < float(merged['readout_scale']) <= 10.0:
        return 'diversity.readout_scale must be in (0, 10]'
    return None


class FinetuneWorkChain(ProtocolMixin, WorkChain):
    _protocol_filename = 'finetune.yaml'

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input('training_set', valid_type=TrainingSet)
        spec.input(
            'validation_set',
            valid_type=TrainingSet,
            required=False,
            help='Without it, `valid_fraction` of training_set is held out (same split for every member).',
        )
        spec.input('foundation_model', valid_type=MaceModel, required=False)
        spec.input(
            'replay_set',
            valid_type=TrainingSet,
            required=False,
            help='Replay frames for multihead fine-tuning (needs foundation_model).',
        )
        spec.input('committee_size', valid_type=orm.Int, default=lambda: orm.Int(4))
        spec.input(
            'base_seed', valid_type=orm.Int, default=lambda: orm.Int(1), help='Member i trains with seed base_seed + i.'
        )
        spec.input('valid_fraction', valid_type=orm.Float, default=lambda: orm.Float(0.1))
        spec.input(
            'min_members',
            valid_type=orm.Int,
            required=False,
            serializer=orm.to_aiida_type,
            help='Fewest members that must train for the committee to go on (the failed ones are reported in '
            '`metrics.failed_members`). Default: half the committee, at least 2 (a committee of 1 has no spread).',
        )
        spec.input(
            'diversity',
            valid_type=orm.Dict,
            default=lambda: orm.Dict(DIVERSITY_DEFAULTS),
            help='How members differ: resampling (bootstrap|subsample|none), subsample_fraction, readout_init '
            '(perturb|reinit|none), readout_scale, readout_blocks (last|all). See engine/committee_init.py.',
        )
        spec.input(
            'isolated_atom_energies',
            valid_type=orm.Dict,
            required=False,
            help='{symbol: eV} of isolated atoms computed with the same DFT settings as the labels: used as E0s.',
        )
        spec.expose_inputs(
            MaceTrainCalculation,
            namespace='train',
            exclude=('training_set', 'validation_set', 'foundation_model', 'replay_set', 'seed', 'e0s'),
        )
        spec.expose_inputs(
            EvaluateCalculation,
            namespace='evaluate',
            exclude=('models', 'frames'),
            namespace_options={
                'required': False,
                'populate_defaults': False,
                'help': 'Give evaluate.code to evaluate the committee on validation.',
            },
        )
        spec.inputs.validator = cls.validate_inputs

        spec.outline(
            cls.setup,
            cls.run_training,
            cls.inspect_training,
            cls.run_evaluation,
            cls.results,
        )
        spec.output_namespace('models', valid_type=MaceModel, dynamic=True, help='The committee, keyed member_<i>.')
        spec.output(
            'metrics',
            valid_type=orm.Dict,
            help='Per-member training metrics and, with evaluate, the committee validation metrics.',
        )
        spec.output(
            'calibration',
            valid_type=orm.Dict,
            required=False,
            help='Per-atom calibration of the spread on the held-out set (alpha, Spearman rho, trust levels).',
        )
        spec.output(
            'reliability',
            valid_type=orm.ArrayData,
            required=False,
            help='Binned RMS force error against binned committee deviation on the held-out set.',
        )
        spec.output(
            'e0s',
            valid_type=orm.Dict,
            required=False,
            help='The E0s every member was trained with, the fit behind them and its rank-deficiency warning.',
        )
        spec.output(
            'validation_set',
            valid_type=TrainingSet,
            required=False,
            help='The held-out frames when they were split off training_set.',
        )

        exit_codes.declare(spec, 'ERROR_MEMBERS_FAILED', 'ERROR_EVALUATION_FAILED')  # docs/dev/exit_codes.md
        declare_negligible_spread(spec)  # the committee's spread is too small to calibrate (from nmcml.evaluate)

    @staticmethod
    def validate_inputs(inputs, _):
        if inputs['committee_size'].value < 1:
            return 'committee_size must be at least 1'
        if 'min_members' in inputs and not 1 <= inputs['min_members'].value <= inputs['committee_size'].value:
            return f'min_members must be between 1 and committee_size ({inputs["committee_size"].value})'
        if 'diversity' in inputs:
            message = check_diversity(inputs['diversity'].get_dict())
            if message:
                return message
        if 'isolated_atom_energies' in inputs and 'foundation_model' in inputs:
            unknown = sorted(
                set(inputs['isolated_atom_energies'].get_dict()) - set(inputs['foundation_model'].elements)
            )
            if unknown:
                return f'isolated_atom_energies: {unknown} are not elements of the foundation model'
        if 'validation_set' not in inputs and not 0.0 < inputs['valid_fraction'].value < 1.0:
            return 'valid_fraction must be between 0 and 1'
        return None

    @classmethod
    def get_builder_from_protocol(
        cls,
        train_code,
        training_set,
        *,
        foundation_model=None,
        validation_set=None,
        replay_set=None,
        evaluate_code=None,
        device: str = 'cpu',
        protocol: str | None = None,
        overrides: dict | None = None,
    ):
        """A ready builder; ``device='cuda'`` also adds a GPU request to every job: ``overrides['gpu_options']``,
        else the computer template's ``gpu_directive``, else the protocol's generic ``gpu_options``
        (:func:`aiida_nmcml.setup.computer.job_options`, which also adds the template's partition/account/qos).

        ``foundation_model`` may be a MaceModel, a foundation model name or a file path (resolved and stored once,
        deduplicated by hash). ``overrides`` follow the YAML layout, e.g. ``{'train': {'parameters': {'lr': 1e-3}}}``.
        """
        from ..data.model import resolve_foundation_model

        if isinstance(train_code, str):
            train_code = orm.load_code(train_code)
        if isinstance(evaluate_code, str):
            evaluate_code = orm.load_code(evaluate_code)
        inputs = cls.get_protocol_inputs(protocol, {'device': device, **(overrides or {})})
        device = inputs['device']
        gpu = device.startswith('cuda')

        builder = cls.get_builder()
        builder.training_set = training_set
        if validation_set is not None:
            builder.validation_set = validation_set
        if foundation_model is not None:
            if not isinstance(foundation_model, MaceModel):
                foundation_model = resolve_foundation_model(foundation_model)
            builder.foundation_model = foundation_model
        if replay_set is not None:
            builder.replay_set = replay_set
        builder.committee_size = orm.Int(inputs['committee_size'])
        builder.base_seed = orm.Int(inputs['base_seed'])
        builder.valid_fraction = orm.Float(inputs['valid_fraction'])
        builder.diversity = orm.Dict({**DIVERSITY_DEFAULTS, **inputs.get('diversity', {})})

        train = inputs['train']
        # the GPU request: an explicit `gpu_options` override, else the computer template's, else the protocol's
        gpu_kwargs = {
            'gpu': gpu,
            'default_gpu_options': inputs['gpu_options'],
            'gpu_options': (overrides or {}).get('gpu_options'),
        }
        options = job_options(train_code, train['metadata']['options'], **gpu_kwargs)
        builder.train.code = train_code
        builder.train.parameters = orm.Dict(train['parameters'])
        builder.train.device = orm.Str(device)
        builder.train.metadata.options = options
        if evaluate_code is not None:
            evaluate = inputs['evaluate']
            options = job_options(evaluate_code, evaluate['metadata']['options'], **gpu_kwargs)
            builder.evaluate.code = evaluate_code
            builder.evaluate.device = orm.Str(device)
            builder.evaluate.parameters = orm.Dict({'dtype': evaluate['dtype']})
            builder.evaluate.metadata.options = options
        return builder

    def setup(self):
        """Common held-out set, E0s (once), then each member's data and starting model (all calcfunctions)."""
        if 'validation_set' in self.inputs:
            self.ctx.train_set = self.inputs.training_set
            self.ctx.valid_set = self.inputs.validation_set
        else:
            parts = split_training_set(self.inputs.training_set, self.inputs.valid_fraction, self.inputs.base_seed)
            self.ctx.train_set, self.ctx.valid_set = parts['train'], parts['valid']
            self.out('validation_set', parts['valid'])
        self.ctx.e0s = None
        if 'foundation_model' in self.inputs:
            extra = {}
            if 'isolated_atom_energies' in self.inputs:
                extra['isolated_atom_energies'] = self.inputs.isolated_atom_energies
            self.ctx.e0s = compute_e0s(self.inputs.foundation_model, self.ctx.train_set, **extra)
            self.out('e0s', self.ctx.e0s)
            warning = self.ctx.e0s.get('warning')
            if warning:
                self.report(f'E0s: {warning}')
        self.ctx.member_inputs = [self.member_data(index) for index in range(self.inputs.committee_size.value)]

    def member_data(self, index: int) -> dict:
        """Training frames, validation frames (out of bag, else the common held-out set) and starting model."""
        diversity = self.inputs.diversity
        settings = diversity.get_dict()
        # stored now: with resampling 'none' and no foundation model no calcfunction stores it, and an unstored node in
        # the context makes aiida skip the checkpoint after this step (PersistenceError logged, nothing raised)
        seed = orm.Int(self.inputs.base_seed.value + index).store()
        data = {'training_set': self.ctx.train_set, 'validation_set': self.ctx.valid_set, 'seed': seed}
        if settings.get('resampling', 'bootstrap') != 'none':
            parts = resample_training_set(self.ctx.train_set, seed, diversity)
            data['training_set'] = parts['train']
            # early stopping on the member's own out-of-bag frames: the common held-out set stays unseen
            data['validation_set'] = parts.get('valid', self.ctx.valid_set)
        if 'foundation_model' in self.inputs:
            # naive fine-tuning: the E0s travel inside the member's starting model too (see prepare_member_model)
            extra = {} if 'replay_set' in self.inputs else {'e0s': self.ctx.e0s}
            data['foundation_model'] = prepare_member_model(self.inputs.foundation_model, seed, diversity, **extra)
            data['e0s'] = self.ctx.e0s
        return data

    def run_training(self):
        """All members at once, each in its own restart work chain (nmcml.mace.train.base: NaN loss, out of memory
        and walltime are remedied per member); the scheduler (or the daemon on localhost) runs them concurrently."""
        from .train_base import MaceTrainBaseWorkChain

        base = self.exposed_inputs(MaceTrainCalculation, namespace='train')
        futures = {}
        for index in range(self.inputs.committee_size.value):
            inputs = {**base, **self.ctx.member_inputs[index]}
            if 'replay_set' in self.inputs:
                inputs['replay_set'] = self.inputs.replay_set
            metadata = {'call_link_label': f'train_member_{index}'}
            futures[f'member_{index}'] = self.submit(MaceTrainBaseWorkChain, train=inputs, metadata=metadata)
        return ToContext(**futures)

    def min_members(self) -> int:
        """The policy when members fail for good: go on with at least this many (default half, at least 2)."""
        size = self.inputs.committee_size.value
        if 'min_members' in self.inputs:
            return self.inputs.min_members.value
        return max(min(2, size), -(-size // 2))

    def inspect_training(self):
        """Members that failed for good (after their own restarts) are dropped and reported; too few fail the chain."""
        keys = [f'member_{i}' for i in range(self.inputs.committee_size.value)]
        failed = {key: self.ctx[key] for key in keys if not self.ctx[key].is_finished_ok}
        self.ctx.members = [key for key in keys if key not in failed]
        self.ctx.failed_members = {
            key: {'pk': node.pk, 'exit_status': node.exit_status, 'exit_message': node.exit_message or ''}
            for key, node in failed.items()
        }
        if not failed:
            return None
        details = '; '.join(f'{key}<{node.pk}>: {node.exit_status} {node.exit_message}' for key, node in failed.items())
        needed = self.min_members()
        if len(self.ctx.members) < needed:
            return self.exit_codes.ERROR_MEMBERS_FAILED.format(
                failures=f'{len(self.ctx.members)} of {len(keys)} trained, min_members is {needed}: {details}'
            )
        self.report(
            f'{len(failed)} of {len(keys)} members failed for good and are left out of the committee '
            f'({len(self.ctx.members)} >= min_members {needed}): {details}'
        )
        return None

    def run_evaluation(self):
        if 'evaluate' not in self.inputs or 'code' not in self.inputs.evaluate:
            return None
        inputs = self.exposed_inputs(EvaluateCalculation, namespace='evaluate')
        inputs['models'] = {key: self.ctx[key].outputs.model for key in self.ctx.members}
        inputs['frames'] = self.ctx.valid_set
        inputs['metadata'] = {**inputs.get('metadata', {}), 'call_link_label': 'evaluate_committee'}
        return ToContext(evaluation=self.submit(EvaluateCalculation, **inputs))

    def results(self):
        sources = {}
        for key in self.ctx.members:
            node = self.ctx[key]
            self.out(f'models.{key}', node.outputs.model)
            sources[key] = node.outputs.metrics
        exit_code = None
        if 'evaluation' in self.ctx:
            evaluation = self.ctx.evaluation
            if evaluation.is_finished_ok:
                sources['committee_validation'] = evaluation.outputs.metrics
                for key in ('calibration', 'reliability'):
                    if key in evaluation.outputs:
                        self.out(key, evaluation.outputs[key])
            elif evaluation.exit_status == EvaluateCalculation.exit_codes.ERROR_NEGLIGIBLE_SPREAD.status:
                sources['committee_validation'] = evaluation.outputs.metrics
                exit_code = self.exit_codes.ERROR_NEGLIGIBLE_SPREAD.format(message=evaluation.exit_message or '')
            else:
                exit_code = self.exit_codes.ERROR_EVALUATION_FAILED.format(message=evaluation.exit_message or '')
        if self.ctx.failed_members:
            sources['failed_members'] = orm.Dict(self.ctx.failed_members)
        self.out('metrics', collect_metrics(**sources))
        return exit_code


@calcfunction
def collect_metrics(**metrics):
    """One Dict linked to every member's metrics (and the committee evaluation): ``members``, seeds, summary."""
    members = {key: node.get_dict() for key, node in metrics.items() if key.startswith('member_')}
    result = {'committee_size': len(members), 'members': members}
    for subset in ('train', 'valid'):
        values = [m.get(subset, {}).get('rmse_f') for m in members.values()]
        values = [v for v in values if v is not None]
        if values:
            result[f'{subset}_rmse_f_mean'] = sum(values) / len(values)
    if 'committee_validation' in metrics:
        result['committee_validation'] = metrics['committee_validation'].get_dict()
    if 'failed_members' in metrics:  # left out of the committee after their own restarts (min_members policy)
        result['failed_members'] = metrics['failed_members'].get_dict()
    return orm.Dict(result)

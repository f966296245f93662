"""``nmcml.finetune``: a committee of N MACE models that differ only by seed, trained concurrently.

The committee's spread is the uncertainty that active learning selects on, so the members must differ *only* by
seed: same data, same split, same hyperparameters. With an ``evaluate`` code the committee is then evaluated on the
validation set, which gives its parity metrics and the calibration of deviation against true error in one job.
"""

from __future__ import annotations

from aiida import orm
from aiida.engine import ToContext, WorkChain, calcfunction

from ..calculations.evaluate import EvaluateCalculation
from ..common import exit_codes
from ..calculations.train import MaceTrainCalculation
from ..data.model import MaceModel
from ..data.trainingset import TrainingSet
from .protocols.utils import ProtocolMixin, recursive_merge


@calcfunction
def split_training_set(training_set, valid_fraction, seed):
    """Deterministic train/valid split, in the graph so every member provably saw the same frames."""
    fraction = float(valid_fraction.value)
    parts = training_set.split(fractions=(1.0 - fraction, fraction), seed=int(seed.value), names=('train', 'valid'))
    return {'train': parts['train'], 'valid': parts['valid']}


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
        spec.expose_inputs(
            MaceTrainCalculation,
            namespace='train',
            exclude=('training_set', 'validation_set', 'foundation_model', 'replay_set', 'seed'),
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
            help='Force error ≈ slope · committee deviation on the validation set.',
        )
        spec.output(
            'validation_set',
            valid_type=TrainingSet,
            required=False,
            help='The held-out frames when they were split off training_set.',
        )

        exit_codes.declare(spec, 'ERROR_MEMBERS_FAILED', 'ERROR_EVALUATION_FAILED')  # docs/dev/exit_codes.md

    @staticmethod
    def validate_inputs(inputs, _):
        if inputs['committee_size'].value < 1:
            return 'committee_size must be at least 1'
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
        """A ready builder; ``device='cuda'`` also adds the protocol's ``gpu_options`` to every job.

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

        train = inputs['train']
        options = train['metadata']['options']
        if gpu:
            options = recursive_merge(options, inputs['gpu_options'])
        builder.train.code = train_code
        builder.train.parameters = orm.Dict(train['parameters'])
        builder.train.device = orm.Str(device)
        builder.train.metadata.options = options
        if evaluate_code is not None:
            evaluate = inputs['evaluate']
            options = evaluate['metadata']['options']
            if gpu:
                options = recursive_merge(options, inputs['gpu_options'])
            builder.evaluate.code = evaluate_code
            builder.evaluate.device = orm.Str(device)
            builder.evaluate.parameters = orm.Dict({'dtype': evaluate['dtype']})
            builder.evaluate.metadata.options = options
        return builder

    def setup(self):
        if 'validation_set' in self.inputs:
            self.ctx.train_set = self.inputs.training_set
            self.ctx.valid_set = self.inputs.validation_set
        else:
            parts = split_training_set(self.inputs.training_set, self.inputs.valid_fraction, self.inputs.base_seed)
            self.ctx.train_set, self.ctx.valid_set = parts['train'], parts['valid']
            self.out('validation_set', parts['valid'])

    def run_training(self):
        """All members at once: the scheduler (or the daemon on localhost) runs them concurrently."""
        base = self.exposed_inputs(MaceTrainCalculation, namespace='train')
        futures = {}
        for index in range(self.inputs.committee_size.value):
            inputs = dict(base)
            inputs['training_set'] = self.ctx.train_set
            inputs['validation_set'] = self.ctx.valid_set
            inputs['seed'] = orm.Int(self.inputs.base_seed.value + index)
            for key in ('foundation_model', 'replay_set'):
                if key in self.inputs:
                    inputs[key] = self.inputs[key]
            inputs.setdefault('metadata', {})
            inputs['metadata'] = {**inputs['metadata'], 'call_link_label': f'train_member_{index}'}
            futures[f'member_{index}'] = self.submit(MaceTrainCalculation, **inputs)
        return ToContext(**futures)

    def inspect_training(self):
        keys = [f'member_{i}' for i in range(self.inputs.committee_size.value)]
        failures = [
            f'{key}<{self.ctx[key].pk}>: {self.ctx[key].exit_status} {self.ctx[key].exit_message}'
            for key in keys
            if not self.ctx[key].is_finished_ok
        ]
        if failures:
            return self.exit_codes.ERROR_MEMBERS_FAILED.format(failures='; '.join(failures))
        self.ctx.members = keys
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
                if 'calibration' in evaluation.outputs:
                    self.out('calibration', evaluation.outputs.calibration)
            else:
                exit_code = self.exit_codes.ERROR_EVALUATION_FAILED.format(message=evaluation.exit_message or '')
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
    return orm.Dict(result)

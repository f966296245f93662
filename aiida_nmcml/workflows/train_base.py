"""``nmcml.mace.train.base``: one MACE training (``nmcml.mace.train``) that applies the remedies its exit codes name.

Handlers, highest priority first (docs/restarts.md):

* device unavailable (210): stop with 210; no silent CPU fallback (shared base).
* scheduler walltime (120): continue from mace's latest checkpoint: the parent's ``checkpoints/`` is copied and
  ``restart_latest`` set by the calcjob (its ``parent_folder`` input); the epoch budget stays the same.
* NaN loss (420): ``default_dtype: float64`` and ``lr × 0.1``, restarted from scratch (the checkpoints hold NaN
  weights); at most ``defaults.max_nan_restarts`` times, then 420.
* out of memory (410): halve ``batch_size`` and ``valid_batch_size``; at batch size 1 there is nothing left to
  halve: 410.

The training hyperparameters of the protocol levels are the ``train`` section of ``finetune.yaml``: one source for a
single training and for a committee.
"""

from __future__ import annotations

from aiida import orm
from aiida.common import AttributeDict
from aiida.engine import ProcessHandlerReport, process_handler

from ..calculations.train import DEFAULT_PARAMETERS, MaceTrainCalculation
from ..common import exit_codes
from ..protocols import (
    ProtocolMixin,
    check_override_keys,
    check_override_types,
    load_protocol_inputs,
    recursive_merge,
)
from ..setup.computer import job_options
from .restart import NmcmlBaseRestartWorkChain

SCHEDULER_WALLTIME = 120  # aiida-core CalcJob.exit_codes.ERROR_SCHEDULER_OUT_OF_WALLTIME
MACE_DEFAULT_LR = 0.01  # mace_run_train's default --lr


class MaceTrainBaseWorkChain(ProtocolMixin, NmcmlBaseRestartWorkChain):
    """Train one MACE model, restarting ``mace_run_train`` with edited inputs when a handler knows the remedy."""

    _process_class = MaceTrainCalculation
    _namespace = 'train'
    _protocol_filename = 'finetune.yaml'
    _handled_labels = ('ERROR_NAN_LOSS', 'ERROR_OUT_OF_MEMORY')

    #: handler factors (aiida-qe style): tune by subclassing, not by editing the handlers
    defaults = AttributeDict({'lr_factor': 0.1, 'max_nan_restarts': 2, 'batch_factor': 0.5})

    @classmethod
    def get_protocol_inputs(cls, protocol: str | None = None, overrides: dict | None = None) -> dict:
        """The ``train`` section of ``finetune.yaml`` at ``protocol`` (plus ``device``), ``overrides`` on top.

        With ``device: cuda`` the protocol's ``gpu_options`` are merged into ``metadata.options``.
        """
        inputs, gpu_options = cls._train_inputs(protocol, overrides)
        if str(inputs['device']).startswith('cuda'):
            options = inputs.setdefault('metadata', {}).setdefault('options', {})
            inputs['metadata']['options'] = recursive_merge(options, gpu_options)
        return inputs

    @classmethod
    def _train_inputs(cls, protocol, overrides) -> tuple[dict, dict]:
        """The ``train`` section with ``device`` and ``overrides``, and the protocol's generic ``gpu_options``."""
        full = load_protocol_inputs(cls._protocol_filename, protocol, owner=cls.__name__)
        valid = {*full['train'], 'device', 'metadata', 'gpu_options', 'max_iterations', 'clean_workdir'}
        check_override_keys(overrides, valid, owner=cls.__name__)
        inputs = recursive_merge(full['train'], {'device': full.get('device', 'cpu')})
        check_override_types(overrides or {}, inputs)
        return recursive_merge(inputs, dict(overrides or {})), full.get('gpu_options', {})

    @classmethod
    def get_builder_from_protocol(cls, code, training_set, *, protocol=None, overrides=None, **inputs):
        """A builder for ``code`` (``mace_run_train``) on ``training_set``.

        :param overrides: in the layout of the returned inputs: ``parameters``, ``device``, ``metadata``,
            ``max_iterations``, ``clean_workdir``; ``gpu_options`` replaces the GPU request of a ``cuda`` job, which
            is otherwise the computer template's ``gpu_directive`` or else the protocol's generic ``--gres=gpu:1``
            (:func:`aiida_nmcml.setup.computer.job_options`; partition, account and qos come from the template too).
        :param inputs: further calcjob inputs (``validation_set``, ``foundation_model``, ``replay_set``, ``seed``,
            ``e0s`` ...), set as given.
        """
        values, default_gpu_options = cls._train_inputs(protocol, overrides)
        builder = cls.get_builder()
        builder.train.code = code
        builder.train.training_set = training_set
        builder.train.parameters = orm.Dict(values.get('parameters', {}))
        builder.train.device = orm.Str(values['device'])
        builder.train.metadata.options.update(
            job_options(
                code,
                values.get('metadata', {}).get('options', {}),
                gpu=str(values['device']).startswith('cuda'),
                default_gpu_options=default_gpu_options,
                gpu_options=values.get('gpu_options'),
            )
        )
        for key, value in inputs.items():
            builder.train[key] = value
        if 'max_iterations' in values:
            builder.max_iterations = orm.Int(values['max_iterations'])
        if 'clean_workdir' in values:
            builder.clean_workdir = orm.Bool(values['clean_workdir'])
        return builder

    @process_handler(priority=600)
    def handle_out_of_walltime(self, node):
        """Walltime: continue from mace's latest checkpoint in the parent folder (same epoch budget)."""
        if node.exit_status != SCHEDULER_WALLTIME:
            return None
        self.ctx.inputs.parent_folder = node.outputs.remote_folder
        self.report_error_handled(node, 'continuing from the latest mace checkpoint in the parent folder')
        return ProcessHandlerReport(True)

    @process_handler(priority=500)
    def handle_nan_loss(self, node):
        """NaN loss: float64 and a 10x smaller learning rate, from scratch; bounded."""
        if node.exit_status != exit_codes.TABLE['ERROR_NAN_LOSS'].status:
            return None
        if self.count_handled('handle_nan_loss') > self.defaults.max_nan_restarts:
            self.report(f'the loss is still NaN after {self.defaults.max_nan_restarts} restarts with a lower lr')
            return ProcessHandlerReport(True, self.child_exit_code(node))
        parameters = self.ctx.inputs.parameters
        actions = []
        if parameters.get('default_dtype', DEFAULT_PARAMETERS['default_dtype']) != 'float64':
            parameters['default_dtype'] = 'float64'
            actions.append('default_dtype float64')
        lr = float(parameters.get('lr', MACE_DEFAULT_LR))
        parameters['lr'] = lr * self.defaults.lr_factor
        actions.append(f'lr {lr:g} -> {parameters["lr"]:g}')
        self.ctx.inputs.pop('parent_folder', None)  # the checkpoints hold the NaN weights: start from scratch
        self.report_error_handled(node, ', '.join(actions) + ', restarting from scratch')
        return ProcessHandlerReport(True)

    @process_handler(priority=400)
    def handle_out_of_memory(self, node):
        """Out of memory: halve the training and validation batch sizes."""
        if node.exit_status != exit_codes.TABLE['ERROR_OUT_OF_MEMORY'].status:
            return None
        parameters = self.ctx.inputs.parameters
        batch = int(parameters.get('batch_size', DEFAULT_PARAMETERS['batch_size']))
        valid = int(parameters.get('valid_batch_size', DEFAULT_PARAMETERS['valid_batch_size']))
        if batch <= 1 and valid <= 1:
            self.report('out of memory at batch size 1: use a device with more memory or a smaller model')
            return ProcessHandlerReport(True, self.child_exit_code(node))
        parameters['batch_size'] = max(1, int(batch * self.defaults.batch_factor))
        parameters['valid_batch_size'] = max(1, int(valid * self.defaults.batch_factor))
        self.report_error_handled(
            node, f'batch_size {batch} -> {parameters["batch_size"]}, valid_batch_size {valid} -> '
            f'{parameters["valid_batch_size"]}'
        )  # fmt: skip
        return ProcessHandlerReport(True)

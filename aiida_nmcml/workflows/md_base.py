"""``nmcml.md.base``: an MD run (``nmcml.md``) that applies the remedies its exit codes describe.

Handlers, highest priority first (docs/restarts.md):

* device unavailable (210): stop with 210; no silent CPU fallback (shared base).
* killed: scheduler walltime (120), or no status file at all (310) with a checkpoint in ``retrieved``: continue from
  the parent folder (trajectory, logs and checkpoint copied; the engine cuts records newer than the checkpoint) with
  the same target ``steps``. Killed before the first checkpoint, or without a new one since the last restart: stop
  with 550 (lower ``checkpoint_stride`` or raise the walltime).
* stop rule (710-712) or non-finite positions/forces (440): finish with that status *and* the child's outputs
  exposed, so active learning harvests the frames and candidates of a run that left the model's domain.
* out of memory (410): the documented fallback, one step per restart: ``committee_dtype: float32``; then half the
  committee (the driver ``m0`` and the first members by key, at least two so the spread stays defined); then 410.

The MD protocols (``md.yaml``) belong to this work chain, not to the calcjob.
"""

from __future__ import annotations

import hashlib
import math

from aiida import orm
from aiida.engine import ProcessHandlerReport, process_handler

from ..calculations.md import STOP_EXIT_LABELS, MdCalculation
from ..common import exit_codes
from ..engine import md_io
from ..protocols import ProtocolMixin
from ..setup.computer import job_options
from .restart import NmcmlBaseRestartWorkChain

SCHEDULER_WALLTIME = 120  # aiida-core CalcJob.exit_codes.ERROR_SCHEDULER_OUT_OF_WALLTIME
# The run ended early but its frames are worth harvesting: stop rules and the non-finite guard (positions or forces).
FINISH_WITH_OUTPUTS = (*STOP_EXIT_LABELS, 'ERROR_NON_FINITE')


class MdBaseWorkChain(ProtocolMixin, NmcmlBaseRestartWorkChain):
    """Run ``nmcml.md`` until it reaches its target steps, restarting it from its checkpoint when killed."""

    _process_class = MdCalculation
    _namespace = 'md'
    _protocol_filename = 'md.yaml'
    _handled_labels = ('ERROR_MISSING_STATUS_FILE', 'ERROR_OUT_OF_MEMORY', *FINISH_WITH_OUTPUTS)

    @classmethod
    def define(cls, spec):
        super().define(spec)
        exit_codes.declare(spec, 'ERROR_KILLED_WITHOUT_CHECKPOINT')

    @classmethod
    def get_builder_from_protocol(cls, code, structure, models=None, protocol=None, overrides=None):
        """A builder with the protocol's engine parameters (``md.yaml``).

        :param code: the ``aiida-nmcml-engine`` code.
        :param structure: the starting ``StructureData``.
        :param models: a dict or list of MaceModel nodes (a list is keyed ``m0``, ``m1`` ...; ``m0`` drives the MD).
        :param protocol: demo, fast, moderate or precise.
        :param overrides: merged over the protocol, in its layout, e.g. ``{'parameters': {'steps': 500}}``; the
            work chain's own inputs ``max_iterations`` and ``clean_workdir`` may be set there too. With ``device:
            cuda`` the job asks for a GPU: ``gpu_options`` here, else the computer template's ``gpu_directive``, else
            the protocol's generic ``--gres=gpu:1`` (partition, account, qos come from the template too).
        """
        inputs = cls.get_protocol_inputs(protocol, overrides)
        builder = cls.get_builder()
        builder.md.code = code
        builder.md.structure = structure
        if models:
            builder.md.models = models if isinstance(models, dict) else {f'm{i}': m for i, m in enumerate(models)}
        builder.md.parameters = orm.Dict(inputs['parameters'])
        builder.md.device = orm.Str(inputs['device'])
        # a cuda job asks for a GPU as the computer's template says (or `gpu_options` / the protocol's generic form)
        protocol_gpu_options = cls.get_protocol_inputs(protocol)['gpu_options']
        builder.md.metadata.options.update(
            job_options(
                code,
                inputs.get('metadata', {}).get('options', {}),
                gpu=str(inputs['device']).startswith('cuda'),
                default_gpu_options=protocol_gpu_options,
                gpu_options=(overrides or {}).get('gpu_options'),
            )
        )
        if 'max_iterations' in inputs:
            builder.max_iterations = orm.Int(inputs['max_iterations'])
        if 'clean_workdir' in inputs:
            builder.clean_workdir = orm.Bool(inputs['clean_workdir'])
        return builder

    @staticmethod
    def checkpoint_digest(node) -> str | None:
        """sha256 of the checkpoint the killed run left in ``retrieved``, or None when it wrote none."""
        if 'retrieved' not in node.outputs:
            return None
        retrieved = node.outputs.retrieved
        if md_io.CHECKPOINT not in retrieved.base.repository.list_object_names():
            return None
        return hashlib.sha256(retrieved.base.repository.get_object_content(md_io.CHECKPOINT, mode='rb')).hexdigest()

    def has_checkpoint(self, node) -> bool:
        return self.checkpoint_digest(node) is not None

    def continue_from(self, node) -> None:
        """Next iteration continues ``node`` from its work directory; ``steps`` stays the target of the whole run."""
        self.ctx.inputs.parent_folder = node.outputs.remote_folder
        self.ctx.inputs.pop('checkpoint', None)

    @process_handler(priority=600)
    def handle_killed(self, node):
        """Walltime (120) or no status file (310): continue from the parent folder when a checkpoint exists."""
        missing_status = exit_codes.TABLE['ERROR_MISSING_STATUS_FILE'].status
        if node.exit_status not in (SCHEDULER_WALLTIME, missing_status):
            return None
        digest = self.checkpoint_digest(node)
        if digest is None or digest == self.ctx.get('last_checkpoint'):
            # no checkpoint, or the same one as the run before: another restart would be killed at the same place
            self.report(f'{node.process_label}<{node.pk}> was killed before it wrote a (new) checkpoint')
            return ProcessHandlerReport(True, self.exit_codes.ERROR_KILLED_WITHOUT_CHECKPOINT)
        self.ctx.last_checkpoint = digest
        self.continue_from(node)
        self.report_error_handled(node, 'continuing from its checkpoint in the parent folder, same target steps')
        return ProcessHandlerReport(True)

    @process_handler(priority=500)
    def handle_stop_rule(self, node):
        """A stop rule (or the non-finite guard) fired: finish with its status, the frames so far as outputs."""
        if node.exit_status not in {exit_codes.TABLE[label].status for label in FINISH_WITH_OUTPUTS}:
            return None
        return self.finish_with_outputs(node, 'stopped early')

    @process_handler(priority=400)
    def handle_out_of_memory(self, node):
        """Out of memory: committee in float32, then half the committee; restart from the checkpoint if any."""
        if node.exit_status != exit_codes.TABLE['ERROR_OUT_OF_MEMORY'].status:
            return None
        parameters = self.ctx.inputs.parameters
        models = dict(self.ctx.inputs.get('models', {}))
        if parameters.get('committee_dtype', 'float32') != 'float32':
            parameters['committee_dtype'] = 'float32'
            action = 'committee members in float32 (committee_dtype)'
        elif len(models) > 2:
            keep = sorted(models)[: max(2, math.ceil(len(models) / 2))]
            self.ctx.inputs.models = {key: models[key] for key in keep}
            action = f'committee reduced from {len(models)} to {len(keep)} members ({", ".join(keep)})'
        else:
            self.report(f'{node.process_label}<{node.pk}> is out of memory with the smallest committee')
            return ProcessHandlerReport(True, self.child_exit_code(node))
        if self.has_checkpoint(node):
            self.continue_from(node)
            action += ', continuing from its checkpoint'
        self.report_error_handled(node, action)
        return ProcessHandlerReport(True)

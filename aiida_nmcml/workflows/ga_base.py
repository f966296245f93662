"""``nmcml.ga.base``: a GA search (``nmcml.ga``) with its protocols and the remedies that apply to it.

A GA run is short and restarts from scratch (there is no checkpoint), so few failures are recoverable:

* device unavailable (210): stop with 210 (shared base).
* not converged (720): finish with 720 and the candidates exposed (they are usable: the best orderings found).
* out of memory (410): ``dtype: float32`` once, then 410.

The GA protocols (``ga.yaml``) belong to this work chain, not to the calcjob.
"""

from __future__ import annotations

from aiida import orm
from aiida.engine import ProcessHandlerReport, process_handler

from ..calculations.ga import GaCalculation
from ..common import exit_codes
from ..protocols import ProtocolMixin
from .restart import NmcmlBaseRestartWorkChain


class GaBaseWorkChain(ProtocolMixin, NmcmlBaseRestartWorkChain):
    """Run ``nmcml.ga``; expose the candidates also when it did not converge."""

    _process_class = GaCalculation
    _namespace = 'ga'
    _protocol_filename = 'ga.yaml'
    _handled_labels = ('ERROR_GA_NOT_CONVERGED', 'ERROR_OUT_OF_MEMORY')

    @classmethod
    def get_builder_from_protocol(cls, code, lattice, models=None, protocol=None, overrides=None):
        """A builder with the protocol's engine parameters (``ga.yaml``); ``models`` a dict or list of MaceModels."""
        inputs = cls.get_protocol_inputs(protocol, overrides)
        builder = cls.get_builder()
        builder.ga.code = code
        builder.ga.lattice = lattice if isinstance(lattice, orm.Dict) else orm.Dict(lattice)
        if models:
            builder.ga.models = models if isinstance(models, dict) else {f'm{i}': m for i, m in enumerate(models)}
        builder.ga.parameters = orm.Dict(inputs['parameters'])
        builder.ga.device = orm.Str(inputs['device'])
        builder.ga.metadata.options.update(inputs.get('metadata', {}).get('options', {}))
        return builder

    @process_handler(priority=500)
    def handle_not_converged(self, node):
        """Not converged: the candidates are usable; finish with 720 and expose them."""
        if node.exit_status != exit_codes.TABLE['ERROR_GA_NOT_CONVERGED'].status:
            return None
        return self.finish_with_outputs(node, 'did not converge')

    @process_handler(priority=400)
    def handle_out_of_memory(self, node):
        """Out of memory: evaluate in float32 once, then give up with 410."""
        if node.exit_status != exit_codes.TABLE['ERROR_OUT_OF_MEMORY'].status:
            return None
        parameters = self.ctx.inputs.parameters
        if parameters.get('dtype', 'float64') == 'float32':
            return ProcessHandlerReport(True, self.child_exit_code(node))
        parameters['dtype'] = 'float32'
        self.report_error_handled(node, 'dtype float32')
        return ProcessHandlerReport(True)

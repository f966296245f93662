"""What the plugin's restart work chains share (aiida-core's ``BaseRestartWorkChain`` plus the one exit-code table).

Why a shared base: every restart work chain of the plugin must (1) return the *same* exit status as its child when it
gives up, so a status means one thing from the calcjob up to the campaign (docs/dev/exit_codes.md); (2) stop on an
unavailable device with its own code instead of aiida-core's generic 402 (no silent CPU fallback); (3) keep the
child's ``parameters`` as a plain dict in ``ctx.inputs`` so that handlers edit values, and ``run_process`` stores the
edited dict as a new ``Dict`` node (the edit is in the provenance graph, as in aiida-quantumespresso).
"""

from __future__ import annotations

from aiida.common import AttributeDict
from aiida.engine import BaseRestartWorkChain, ExitCode, ProcessHandlerReport, process_handler, while_

from ..common import exit_codes


class NmcmlBaseRestartWorkChain(BaseRestartWorkChain):
    """Subclasses set ``_process_class`` and ``_namespace`` (the exposed-inputs namespace), and write handlers.

    ``_handled_labels`` lists the child exit codes a subclass handler deals with; every other failure of the child
    that is in the table ends the work chain with the child's own status and message (:meth:`handle_unrecoverable`).
    """

    _namespace: str = ''
    _handled_labels: tuple[str, ...] = ()

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.expose_inputs(cls._process_class, namespace=cls._namespace)
        spec.expose_outputs(cls._process_class)
        spec.outline(
            cls.setup,
            while_(cls.should_run_process)(cls.run_process, cls.inspect_process),
            cls.results,
        )
        # The child's exit codes, with the child's numbers (the table's), so the work chain can pass them on.
        for label, code in cls._process_class.exit_codes.items():
            if code.status >= 200 and label in exit_codes.TABLE:
                spec.exit_code(code.status, label, message=code.message)

    def setup(self):
        """``ctx.inputs`` from the exposed namespace; ``parameters`` as a plain dict for the handlers to edit."""
        super().setup()
        self.ctx.inputs = AttributeDict(self.exposed_inputs(self._process_class, self._namespace))
        parameters = self.ctx.inputs.get('parameters')
        self.ctx.inputs.parameters = parameters.get_dict() if parameters is not None else {}
        self.ctx.handled = {}  # handler name -> number of times it restarted the child

    def count_handled(self, name: str) -> int:
        """Increment and return how often handler ``name`` has restarted the child (for bounded remedies)."""
        self.ctx.handled[name] = self.ctx.handled.get(name, 0) + 1
        return self.ctx.handled[name]

    def report_error_handled(self, node, action: str) -> None:
        """Report the child's failure and what the handler changed (aiida-qe's wording)."""
        self.report(f'{node.process_label}<{node.pk}> failed with exit status {node.exit_status}: {node.exit_message}')
        self.report(f'Action taken: {action}')

    @staticmethod
    def child_exit_code(node) -> ExitCode:
        """The child's exit code, with its formatted message: the work chain declares the same number."""
        return ExitCode(node.exit_status, node.exit_message or '')

    def finish_with_outputs(self, node, why: str) -> ProcessHandlerReport:
        """End with the child's (7xx / usable) status *and* its outputs exposed: a stopped MD's frames, a GA's
        candidates. ``inspect_process`` returns the report's code once ``ctx.is_finished`` is set."""
        self.ctx.is_finished = True
        self._attach_outputs(node)
        self.report(f'{node.process_label}<{node.pk}> {why}; its outputs are exposed: {node.exit_message}')
        return ProcessHandlerReport(True, self.child_exit_code(node))

    @process_handler(priority=900)
    def handle_device_unavailable(self, node):
        """A device asked for and absent: stop with 210. Falling back to the CPU silently would hide a cost of 100x."""
        if node.exit_status != exit_codes.TABLE['ERROR_DEVICE_UNAVAILABLE'].status:
            return None
        self.report(f'{node.process_label}<{node.pk}>: the requested device is unavailable; not falling back to CPU')
        return ProcessHandlerReport(True, self.child_exit_code(node))

    @process_handler(priority=1)
    def handle_unrecoverable(self, node):
        """Any other failure of the child that is in the table: end with the child's status (not the generic 402)."""
        if not node.is_failed or node.exit_status in self._handled_statuses():
            return None
        if node.exit_status not in {code.status for code in self.exit_codes.values()}:
            return None  # e.g. a scheduler code: aiida-core's ERROR_UNHANDLED_FAILURE
        if node.exit_status in {301, 302, 401, 402}:
            return None
        self.report(f'{node.process_label}<{node.pk}> failed with {node.exit_status}: no remedy, passing it on')
        return ProcessHandlerReport(True, self.child_exit_code(node))

    def _handled_statuses(self) -> set[int]:
        return {exit_codes.TABLE[label].status for label in self._handled_labels} | {
            exit_codes.TABLE['ERROR_DEVICE_UNAVAILABLE'].status
        }

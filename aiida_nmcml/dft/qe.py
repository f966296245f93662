"""Quantum ESPRESSO (pw.x) behind the DFT adapter interface, and the label's thin ``PwBaseWorkChain`` subclass.

:class:`NmcmlPwBaseWorkChain` is aiida-quantumespresso's ``PwBaseWorkChain`` plus one *sanity handler on success*
(aiida-qe's own idiom, like its ``sanity_check_insufficient_bands``): a pw.x run that finished with exit 0 but did
not apply the Hubbard U it was asked for (the U pw.x echoes in its XML differs, or no XML came back) would put a
plain-DFT label among DFT+U labels. Nothing in the inputs can fix that (this package already writes U through the
SYSTEM namelist that old and new pw.x honour; a code that ignores it needs another build), so the handler refuses
the result with its own exit code, ``ERROR_HUBBARD_U_NOT_APPLIED``, and ``nmcml.label`` lists the frame in
``failures`` with that status.

It also adds the remedy aiida-quantumespresso leaves out for an SCF killed by the *scheduler* (120): pw.x's own
``max_seconds`` stop (95 % of the walltime, handled upstream as 400) only acts between SCF iterations, so a start-up
or one iteration longer than the last 5 % of the job is killed by SLURM first. Nothing restartable is written then,
so the remedy is the same calculation with twice the walltime and ``max_seconds`` following it.
"""

from __future__ import annotations

from functools import cached_property

from aiida.engine import ExitCode, ProcessHandlerReport, process_handler
from aiida_quantumespresso.calculations.pw import PwCalculation
from aiida_quantumespresso.common.types import RestartType
from aiida_quantumespresso.workflows.pw.base import PwBaseWorkChain

from ..common import exit_codes
from .adapter import DftAdapter
from .frames import qe_frame
from .qe_inputs import check_pseudos, family_cutoffs, load_pseudo_family, pw_base_inputs, qe_fingerprint
from .qe_outputs import hubbard_mismatch


class NmcmlPwBaseWorkChain(PwBaseWorkChain):
    """``PwBaseWorkChain`` that refuses a converged pw.x run whose applied Hubbard U differs from the request."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        exit_codes.declare(spec, 'ERROR_HUBBARD_U_NOT_APPLIED')  # docs/dev/exit_codes.md

    @process_handler(priority=600, exit_codes=ExitCode(0))
    def sanity_check_hubbard_u(self, calculation):
        """The U pw.x applied (its XML) must be the U requested (SYSTEM namelist); else refuse the label (340)."""
        message = hubbard_mismatch(calculation)
        if message is None:
            return None
        self.report(f'{calculation.process_label}<{calculation.pk}> finished, but its label is REJECTED: {message}')
        return ProcessHandlerReport(True, self.exit_codes.ERROR_HUBBARD_U_NOT_APPLIED.format(message=message))

    walltime_factor = 2.0  # each scheduler kill doubles the walltime; max_iterations bounds the number of doublings

    @process_handler(priority=570, exit_codes=[PwCalculation.exit_codes.ERROR_SCHEDULER_OUT_OF_WALLTIME])
    def handle_scheduler_out_of_walltime(self, calculation):
        """Killed by the scheduler before pw.x's own ``max_seconds`` stop: rerun from scratch with twice the walltime.

        From scratch because a killed pw.x leaves no consistent restart files (the clean stop, 400, is restarted in
        full by aiida-quantumespresso's handler). ``max_seconds`` is set again: the parent sets it only once.
        """
        options = self.ctx.inputs.metadata.options
        old = options.get('max_wallclock_seconds')
        if old is None:  # no walltime requested: the kill came from a partition default we cannot see; stop
            return None
        new = round(old * self.walltime_factor)
        options['max_wallclock_seconds'] = new
        self.ctx.inputs.parameters.setdefault('CONTROL', {})['max_seconds'] = (
            new * self.defaults.delta_factor_max_seconds
        )
        self.set_restart_type(RestartType.FROM_SCRATCH)
        self.report_error_handled(
            calculation, f'killed by the scheduler at its walltime: rerunning from scratch with {old} s -> {new} s'
        )
        return ProcessHandlerReport(True)


class QeAdapter(DftAdapter):
    """pw.x through :class:`NmcmlPwBaseWorkChain`; the pseudopotential family and cutoffs resolved once."""

    engine = 'qe'
    plugin = 'quantumespresso.pw'

    @cached_property
    def family(self):
        return load_pseudo_family(self.settings.section['pseudo_family'])

    @cached_property
    def cutoffs(self) -> tuple[float, float]:
        return family_cutoffs(self.family, self.settings.section)

    def check(self, key: str, structure) -> None:
        check_pseudos(key, structure, self.family)

    def builder(self, code, structure):
        settings = self.settings
        return pw_base_inputs(
            code, structure, settings.section, settings.hubbard_u, settings.magmoms,
            family=self.family, cutoffs=self.cutoffs,
        )  # fmt: skip

    def fingerprint(self) -> dict:
        return qe_fingerprint(self.settings.section, self.settings.hubbard_u, family=self.family)

    @staticmethod
    def frame_outputs(child) -> dict:
        return {
            'parameters': child.outputs.output_parameters,
            'trajectory': child.outputs.output_trajectory,
            'retrieved': child.outputs.retrieved,
        }

    @staticmethod
    def frame(structure, parameters, trajectory, retrieved=None):
        return qe_frame(structure, parameters, trajectory, retrieved)

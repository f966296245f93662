"""Quantum ESPRESSO (pw.x) behind the DFT adapter interface, and the label's thin ``PwBaseWorkChain`` subclass.

:class:`NmcmlPwBaseWorkChain` is aiida-quantumespresso's ``PwBaseWorkChain`` plus one *sanity handler on success*
(aiida-qe's own idiom, like its ``sanity_check_insufficient_bands``): a pw.x run that finished with exit 0 but did
not apply the Hubbard U it was asked for (the U pw.x echoes in its XML differs, or no XML came back) would put a
plain-DFT label among DFT+U labels. Nothing in the inputs can fix that (this package already writes U through the
SYSTEM namelist that old and new pw.x honour; a code that ignores it needs another build), so the handler refuses
the result with its own exit code, ``ERROR_HUBBARD_U_NOT_APPLIED``, and ``nmcml.label`` lists the frame in
``failures`` with that status.
"""

from __future__ import annotations

from functools import cached_property

from aiida.engine import ExitCode, ProcessHandlerReport, process_handler
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

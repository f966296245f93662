"""VASP behind the DFT adapter interface, and the label's thin ``VaspWorkChain`` subclass.

:class:`NmcmlVaspWorkChain` is aiida-vasp's ``VaspWorkChain`` plus one sanity handler on success: a POTCAR mapping or
species-order slip puts Ni's U on another species without any error from VASP. vasprun.xml records the LDAUU VASP
used and the element of each atom type (from the POTCAR); paired, they give the U each element really got. A run
whose U differs from the one its INCAR requests is refused with ``ERROR_HUBBARD_U_NOT_APPLIED`` (the same number as
for pw.x), and ``nmcml.label`` lists the frame in ``failures`` with that status.
"""

from __future__ import annotations

from aiida.engine import ExitCode, ProcessHandlerReport, process_handler
from aiida_vasp.workchains.v2.vasp import VaspWorkChain

from ..common import exit_codes
from .adapter import DftAdapter
from .frames import vasp_frame
from .vasp_inputs import check_potentials, ldau_mismatch, requested_ldauu, vasp_fingerprint, vasp_inputs


class NmcmlVaspWorkChain(VaspWorkChain):
    """``VaspWorkChain`` that refuses a finished VASP run whose applied LDAUU differs from the requested U."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        exit_codes.declare(spec, 'ERROR_HUBBARD_U_NOT_APPLIED')  # docs/dev/exit_codes.md

    @process_handler(priority=1, exit_codes=ExitCode(0))
    def sanity_check_hubbard_u(self, node):
        """After aiida-vasp's own checks (priority 5..3): the U VASP applied must be the U the INCAR requests."""
        requested = requested_ldauu(self.inputs.structure, self.inputs.parameters.get_dict().get('incar', {}))
        message = ldau_mismatch(node, requested)
        if message is None:
            return None
        self.report(f'{node.process_label}<{node.pk}> finished, but its label is REJECTED: {message}')
        return ProcessHandlerReport(True, self.exit_codes.ERROR_HUBBARD_U_NOT_APPLIED.format(message=message))


class VaspAdapter(DftAdapter):
    """VASP through :class:`NmcmlVaspWorkChain`."""

    engine = 'vasp'
    plugin = 'vasp.vasp'

    def check(self, key: str, structure) -> None:
        check_potentials(key, structure, self.settings.section)

    def builder(self, code, structure):
        settings = self.settings
        return vasp_inputs(code, structure, settings.section, settings.hubbard_u, settings.magmoms)

    def fingerprint(self) -> dict:
        return vasp_fingerprint(self.settings.section, self.settings.hubbard_u)

    @staticmethod
    def frame_outputs(child) -> dict:
        return {'misc': child.outputs.misc}

    @staticmethod
    def frame(structure, misc):
        return vasp_frame(structure, misc)

"""What pw.x really did, read from the retrieved XML (never from the remote work directory).

Why: aiida-quantumespresso 5.1 sets ``lda_plus_u_calculation`` from a top-level ``dftU`` element, but pw.x 6.7
writes it under ``output/dft``, so the flag reads False even when U acts. And a QE >= 7.1 ``HUBBARD`` card given
to pw.x 6.7 is ignored with exit code 0. The U values pw.x echoes in its XML are the only proof that U was applied.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

# pw.x 6.7 writes Hubbard_U in its XML in Rydberg, not Hartree like the rest (6.2 eV is written as 0.45569). The
# schema does not state the unit and other QE versions may write Hartree, so a match in either unit is accepted and
# the unit that matched is recorded per frame (``dft_hubbard_u_xml_unit``).
RYDBERG_TO_EV = 13.605693122994
HARTREE_TO_EV = 2 * RYDBERG_TO_EV
XML_U_UNITS = {'Ry': RYDBERG_TO_EV, 'Ha': HARTREE_TO_EV}
XML_NAME = 'data-file-schema.xml'


def _xml_root(retrieved):
    if XML_NAME not in retrieved.base.repository.list_object_names():
        return None
    return ET.fromstring(retrieved.base.repository.get_object_content(XML_NAME, mode='rb'))


def xml_hubbard_u(retrieved) -> dict[str, float]:
    """The non-zero ``output/dft/dftU/Hubbard_U`` numbers per species, as written (unit not converted)."""
    root = _xml_root(retrieved)
    if root is None:
        return {}
    values = {}
    for element in root.findall('./output/dft/dftU/Hubbard_U'):
        if abs(float(element.text)) > 1e-10:
            values[element.get('specie')] = float(element.text)
    return values


def qe_version(retrieved) -> str | None:
    """The QE version that wrote the XML (``general_info/creator``), e.g. ``'6.7MaX'``."""
    root = _xml_root(retrieved)
    creator = None if root is None else root.find('./general_info/creator')
    return None if creator is None else creator.get('VERSION')


def applied_hubbard_u(retrieved, unit: str = 'Ry') -> dict[str, float]:
    """U (eV) per species that pw.x applied, reading the XML numbers in ``unit``; {} for none."""
    return {k: round(v * XML_U_UNITS[unit], 4) for k, v in xml_hubbard_u(retrieved).items()}


def requested_hubbard_u(calculation) -> dict[str, float]:
    """U (eV) per kind in the calculation's SYSTEM namelist (the way this package requests U)."""
    system = calculation.inputs.parameters.get_dict().get('SYSTEM', {})
    if not system.get('lda_plus_u'):
        return {}
    return {kind: float(u) for kind, u in (system.get('hubbard_u') or {}).items() if u}


def match_hubbard_u(requested: dict[str, float], written: dict[str, float]) -> tuple[str | None, dict[str, float]]:
    """(unit, applied U in eV) for the XML unit in which ``written`` equals ``requested``; (None, Ry reading) if none.

    No U requested and none written is a match (unit ``'none'``).
    """
    if not requested and not written:
        return 'none', {}
    wanted = {k: round(v, 3) for k, v in requested.items()}
    for unit, factor in XML_U_UNITS.items():
        applied = {k: round(v * factor, 4) for k, v in written.items()}
        if {k: round(v, 3) for k, v in applied.items()} == wanted:
            return unit, applied
    return None, {k: round(v * RYDBERG_TO_EV, 4) for k, v in written.items()}


def hubbard_mismatch(calculation) -> str | None:
    """A message when the U requested differs from what pw.x applied (in either XML unit), else ``None``."""
    requested = requested_hubbard_u(calculation)
    retrieved = calculation.outputs.retrieved
    if requested and _xml_root(retrieved) is None:
        return f'DFT+U requested {requested} eV but no {XML_NAME} was retrieved: the U pw.x applied cannot be checked.'
    written = xml_hubbard_u(retrieved)
    unit, applied = match_hubbard_u(requested, written)
    if unit is None:
        return (
            f'DFT+U requested {requested} eV but pw.x {qe_version(retrieved) or "(unknown version)"} applied '
            f'{applied} eV reading its XML in Ry, {applied_hubbard_u(retrieved, "Ha")} eV in Ha: '
            'this pw.x does not honour the input (QE < 7.1 ignores the HUBBARD card; this package writes '
            'lda_plus_u/Hubbard_U, check the code version).'
        )
    return None

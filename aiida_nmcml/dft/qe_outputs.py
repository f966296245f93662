"""What pw.x really did, read from the retrieved XML (never from the remote work directory).

Why: aiida-quantumespresso 5.1 sets ``lda_plus_u_calculation`` from a top-level ``dftU`` element, but pw.x 6.7
writes it under ``output/dft``, so the flag reads False even when U acts. And a QE >= 7.1 ``HUBBARD`` card given
to pw.x 6.7 is ignored with exit code 0. The U values pw.x echoes in its XML are the only proof that U was applied.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

# pw.x 6.7 writes Hubbard_U in its XML in Rydberg, not Hartree like the rest (6.2 eV is written as 0.45569).
RYDBERG_TO_EV = 13.605693122994
XML_NAME = 'data-file-schema.xml'


def applied_hubbard_u(retrieved) -> dict[str, float]:
    """U (eV) per species that pw.x applied, from ``output/dft/dftU`` of the XML in ``retrieved``; {} for none."""
    if XML_NAME not in retrieved.base.repository.list_object_names():
        return {}
    root = ET.fromstring(retrieved.base.repository.get_object_content(XML_NAME, mode='rb'))
    values = {}
    for element in root.findall('./output/dft/dftU/Hubbard_U'):
        value = float(element.text) * RYDBERG_TO_EV
        if abs(value) > 1e-8:
            values[element.get('specie')] = round(value, 4)
    return values


def requested_hubbard_u(calculation) -> dict[str, float]:
    """U (eV) per kind in the calculation's SYSTEM namelist (the way this package requests U)."""
    system = calculation.inputs.parameters.get_dict().get('SYSTEM', {})
    if not system.get('lda_plus_u'):
        return {}
    return {kind: float(u) for kind, u in (system.get('hubbard_u') or {}).items() if u}


def hubbard_mismatch(calculation) -> str | None:
    """A message when the U requested differs from what pw.x applied, else ``None``."""
    requested = requested_hubbard_u(calculation)
    applied = applied_hubbard_u(calculation.outputs.retrieved)
    if {k: round(v, 3) for k, v in requested.items()} != {k: round(v, 3) for k, v in applied.items()}:
        return (
            f'DFT+U requested {requested} eV but pw.x applied {applied} eV: this pw.x does not honour the input '
            '(QE < 7.1 ignores the HUBBARD card; this package writes lda_plus_u/Hubbard_U, check the code version).'
        )
    return None


def pw_run_window(retrieved):
    """(start, end) datetimes of the pw.x run, from the stamps it prints in ``aiida.out`` (1 s resolution).

    Why: the CalcJob node's times include upload, queueing and parsing; overlap of these windows is what shows
    that the daemon ran several pw.x at once.
    """
    import datetime
    import re

    text = retrieved.base.repository.get_object_content('aiida.out')
    start = re.search(r'starts on\s+(\d+\w{3}\d{4}) at\s+([\d: ]+?)\s*$', text, re.MULTILINE)
    end = re.search(r'terminated on:\s+([\d: ]+?)\s+(\d+\w{3}\d{4})', text)
    if not (start and end):
        return None

    def stamp(day: str, clock: str):
        return datetime.datetime.strptime(f'{day} {clock.replace(" ", "0")}', '%d%b%Y %H:%M:%S')

    return stamp(start.group(1), start.group(2)), stamp(end.group(2), end.group(1))

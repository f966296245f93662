"""The offline pseudopotential family: Debian's pslibrary PBEsol ultrasoft files plus a Mn generated with ld1.x.

Why generate Mn: ``quantum-espresso-data`` ships Li, Ni, Co and O but no Mn, and CI has no internet for SSSP.
The Mn input (``resources/Mn.pbesol-n-rrkjus_nmcml.ld1.in``) follows the pslibrary Ni ``-n-`` recipe with the Mn
configuration [Ar] 4s2 3d5. ld1.x stamps the generation date into the UPF header; we normalise it, so the file (and
its AiiDA hash, hence caching) is identical whatever day the family is built.

These are fine for tests and demos. For production use SSSP (``aiida-pseudo install sssp``) and pass
``--family`` to ``aiida-nmcml setup``.
"""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
import tempfile

DEFAULT_FAMILY = 'nmcml-pbesol-us-offline'
DEBIAN_PSEUDO_DIR = pathlib.Path('/usr/share/espresso/pseudo')
DEBIAN_FILES = {
    'Li': 'Li.pbesol-s-rrkjus_psl.0.2.1.UPF',
    'Ni': 'Ni.pbesol-n-rrkjus_psl.0.1.UPF',
    'Co': 'Co.pbesol-spn-rrkjus_psl.0.3.1.UPF',
    'O': 'O.pbesol-n-rrkjus_psl.0.1.UPF',
}
MN_INPUT = pathlib.Path(__file__).parent / 'resources' / 'Mn.pbesol-n-rrkjus_nmcml.ld1.in'
MN_FILENAME = 'Mn.pbesol-n-rrkjus_nmcml.UPF'
NORMALISED_DATE = '01Jan2026'
# Recommended cutoffs (Ry). 'normal': the pslibrary "suggested minimum" of each file (Mn: ld1.x's estimate, rounded
# up). 'low': tiny cells in CI and the demo only -- not converged, never for production numbers.
CUTOFFS = {
    'normal': {
        'Li': (78.0, 355.0),
        'Ni': (41.0, 236.0),
        'Co': (60.0, 445.0),
        'O': (47.0, 323.0),
        'Mn': (40.0, 240.0),
    },
    'low': {element: (30.0, 240.0) for element in ('Li', 'Ni', 'Co', 'O', 'Mn')},
}


class PseudoSetupError(RuntimeError):
    """The offline family cannot be built on this machine; the message says what to install."""


def normalise_upf_date(text: str) -> str:
    text = re.sub(r'Generation date:\s*\S+', f'Generation date: {NORMALISED_DATE}', text)
    return re.sub(r'date="[^"]*"', f'date="{NORMALISED_DATE}"', text)


def generate_mn(target_dir: pathlib.Path, ld1: str = 'ld1.x') -> pathlib.Path:
    """Run ld1.x on the bundled input; return the UPF with its date normalised."""
    executable = shutil.which(ld1)
    if executable is None:
        raise PseudoSetupError(
            'ld1.x not found: install Quantum ESPRESSO (`apt-get install quantum-espresso`) or pass --family '
            'with an installed aiida-pseudo family (e.g. `aiida-pseudo install sssp`).'
        )
    with tempfile.TemporaryDirectory() as workdir:
        proc = subprocess.run(
            [executable], stdin=MN_INPUT.open(), cwd=workdir, capture_output=True, text=True, check=False
        )
        produced = pathlib.Path(workdir) / MN_FILENAME
        if proc.returncode != 0 or not produced.is_file():
            raise PseudoSetupError(f'ld1.x failed to generate Mn (exit {proc.returncode}):\n{proc.stdout[-2000:]}')
        target = target_dir / MN_FILENAME
        target.write_text(normalise_upf_date(produced.read_text()))
    return target


def collect_files(target_dir: pathlib.Path, source_dir: pathlib.Path = DEBIAN_PSEUDO_DIR) -> list[pathlib.Path]:
    missing = [name for name in DEBIAN_FILES.values() if not (source_dir / name).is_file()]
    if missing:
        raise PseudoSetupError(
            f'missing {", ".join(missing)} in {source_dir}: install them with '
            '`apt-get install quantum-espresso-data`, or pass --family with an installed aiida-pseudo family.'
        )
    files = []
    for name in DEBIAN_FILES.values():
        shutil.copy(source_dir / name, target_dir / name)
        files.append(target_dir / name)
    files.append(generate_mn(target_dir))
    return files


def get_family(label: str):
    from aiida.common.exceptions import NotExistent
    from aiida.orm import Group, QueryBuilder

    try:
        return QueryBuilder().append(Group, filters={'label': label}).one()[0]
    except NotExistent:
        return None


#: extra on the pseudopotential family group that `aiida-nmcml setup --family` chose; nmcml.label uses it by default
DEFAULT_FAMILY_EXTRA = 'nmcml_default_family'


def set_default_family(family) -> None:
    """Make ``family`` (a group) the one ``nmcml.label`` uses when the overrides name none; unmark any other."""
    from aiida.orm import Group, QueryBuilder

    query = QueryBuilder().append(Group, filters={f'extras.{DEFAULT_FAMILY_EXTRA}': True})
    for (group,) in query.all():
        if group.pk != family.pk:
            group.base.extras.delete(DEFAULT_FAMILY_EXTRA)
    family.base.extras.set(DEFAULT_FAMILY_EXTRA, True)


def configured_family() -> str | None:
    """The family label `aiida-nmcml setup` made the default in this profile, or ``None``."""
    from aiida.orm import Group, QueryBuilder

    found = QueryBuilder().append(Group, filters={f'extras.{DEFAULT_FAMILY_EXTRA}': True}, project='label').all()
    return found[0][0] if found else None


def ensure_pseudo_family(label: str = DEFAULT_FAMILY):
    """Return the family ``label``, building the offline default if it does not exist yet (idempotent)."""
    from aiida_pseudo.data.pseudo import UpfData
    from aiida_pseudo.groups.family import CutoffsPseudoPotentialFamily

    family = get_family(label)
    if family is not None:
        return family, False
    if label != DEFAULT_FAMILY:
        raise PseudoSetupError(
            f'pseudopotential family {label!r} is not installed: install it first (e.g. `aiida-pseudo install '
            'sssp -x PBEsol`) or omit --family to use the offline default.'
        )
    with tempfile.TemporaryDirectory() as tmp:
        collect_files(pathlib.Path(tmp))
        family = CutoffsPseudoPotentialFamily.create_from_folder(pathlib.Path(tmp), label, pseudo_type=UpfData)
    for stringency, values in CUTOFFS.items():
        family.set_cutoffs(
            {element: {'cutoff_wfc': wfc, 'cutoff_rho': rho} for element, (wfc, rho) in values.items()},
            stringency,
            unit='Ry',
        )
    family.set_default_stringency('normal')
    family.description = 'aiida-nmcml offline PBEsol ultrasoft: pslibrary (Debian) Li, Ni, Co, O + ld1.x Mn'
    return family, True

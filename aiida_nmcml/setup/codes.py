"""Codes on ``localhost``: pw.x, neb.x, the MACE trainer and the engine. Existing codes are reused by label."""

from __future__ import annotations

import pathlib
import shutil
import sys
from dataclasses import dataclass

from .computer import PREPEND


@dataclass(frozen=True)
class CodeSpec:
    key: str
    label: str
    executable: str
    plugin: str
    with_mpi: bool | None
    description: str


def _venv_script(name: str) -> str:
    """Console scripts of *this* Python environment, so the daemon runs the same mace/engine as the user."""
    candidate = pathlib.Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else (shutil.which(name) or str(candidate))


def code_specs() -> list[CodeSpec]:
    mpi = None  # the calcjob's metadata.options.withmpi decides; builders set it from mpi_available()
    return [
        CodeSpec(
            'pw',
            'nmcml-pw',
            shutil.which('pw.x') or '/usr/bin/pw.x',
            'quantumespresso.pw',
            mpi,
            'Quantum ESPRESSO pw.x',
        ),
        CodeSpec(
            'neb',
            'nmcml-neb',
            shutil.which('neb.x') or '/usr/bin/neb.x',
            'quantumespresso.neb',
            mpi,
            'Quantum ESPRESSO neb.x',
        ),
        CodeSpec(
            'mace_train',
            'nmcml-mace-train',
            _venv_script('mace_run_train'),
            'nmcml.mace.train',
            False,
            'mace-torch trainer (mace_run_train)',
        ),
        CodeSpec(
            'engine',
            'nmcml-engine',
            _venv_script('aiida-nmcml-engine'),
            'nmcml.md',
            False,
            'aiida-nmcml engine: MD, GA, NEB, committee evaluation',
        ),
    ]


def ensure_code(spec: CodeSpec, computer):
    """Return ``(code, created)``; an existing code with the same label on this computer is reused as it is."""
    from aiida import orm
    from aiida.common.exceptions import MultipleObjectsError, NotExistent

    try:
        return orm.load_code(f'{spec.label}@{computer.label}'), False
    except NotExistent:
        pass
    except MultipleObjectsError:
        return orm.load_code(f'{spec.label}@{computer.label}'), False
    code = orm.InstalledCode(
        label=spec.label,
        computer=computer,
        filepath_executable=spec.executable,
        default_calc_job_plugin=spec.plugin,
        description=spec.description,
        with_mpi=spec.with_mpi,
        prepend_text=PREPEND,
    )
    return code.store(), True


def ensure_codes(computer) -> dict:
    """All codes keyed by role (``pw``, ``neb``, ``mace_train``, ``engine``); second element lists created labels."""
    codes, created = {}, []
    for spec in code_specs():
        code, new = ensure_code(spec, computer)
        codes[spec.key] = code
        if new:
            created.append(code.full_label)
    return codes, created


def missing_executables() -> list[str]:
    return [f'{s.label}: {s.executable}' for s in code_specs() if not pathlib.Path(s.executable).exists()]


def mpi_available() -> bool:
    """Whether builders should run pw.x/neb.x under mpirun on localhost."""
    return shutil.which('mpirun') is not None

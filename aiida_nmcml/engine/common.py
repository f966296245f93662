"""Shared plumbing of the engine subcommands: input files, status files, model loading, devices.

Every subcommand ends by writing ``engine_status.json`` (see :func:`write_status`), also when it fails, so a parser can
tell *why* a job stopped from the retrieved files alone, even if the process exit code was lost by the scheduler.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pathlib
import time
from dataclasses import dataclass

from ..common.exit_codes import ENGINE_EXIT_CODES

TM_SYMBOLS = ('Ni', 'Mn', 'Co')


def li_per_tm(symbols) -> float | None:
    """x in Li_x TM O2: Li atoms per transition-metal atom (antisite Ni counted as a TM); None without any TM.

    The one definition used by the engine (lattice check), the active-learning rules and the report.
    """
    symbols = list(symbols)
    n_tm = sum(s in TM_SYMBOLS for s in symbols)
    return symbols.count('Li') / n_tm if n_tm else None


STATUS_FILENAME = 'engine_status.json'


class EngineError(Exception):
    """A failure the user can act on. ``status`` is a stable name the parsers map to a CalcJob exit code."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# Stable status names -> process exit codes of the engine. Parsers map the *names* to CalcJob exit codes through the
# plugin's one table (aiida_nmcml/common/exit_codes.py, pure Python like the engine), so the numbers here only matter
# for someone running the engine by hand. A new status is added to that table, never only here.
EXIT_CODES: dict[str, int] = dict(ENGINE_EXIT_CODES)


def read_input(path: str | os.PathLike) -> dict:
    """Read the subcommand's input file: JSON, or YAML when the suffix says so."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise EngineError('invalid_input', f'input file {path} does not exist')
    text = path.read_text()
    if path.suffix in {'.yaml', '.yml'}:
        import yaml

        return yaml.safe_load(text) or {}
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise EngineError('invalid_input', f'input file {path} is not valid JSON: {exc}') from exc


def write_json(path: str | os.PathLike, data) -> None:
    """Write JSON with NaN/inf turned into ``null``: the parsers must never choke on a bare ``NaN`` token."""

    def clean(obj):
        if isinstance(obj, float) and not math.isfinite(obj):
            return None
        if isinstance(obj, dict):
            return {k: clean(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [clean(v) for v in obj]
        return obj

    pathlib.Path(path).write_text(json.dumps(clean(data), indent=1))


def write_status(status: str, message: str = '', **extra) -> None:
    write_json(STATUS_FILENAME, {'status': status, 'message': message, 'time': time.time(), **extra})


def sha256sum(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def select_device(requested: str = 'auto') -> str:
    """``auto`` picks CUDA when present. Asking for CUDA where there is none is an error, not a silent CPU run."""
    import torch

    if requested == 'auto':
        return 'cuda' if torch.cuda.is_available() else 'cpu'
    if requested.startswith('cuda') and not torch.cuda.is_available():
        raise EngineError('device_unavailable', f'device {requested!r} requested but torch sees no CUDA device')
    if requested not in {'cpu', 'mps'} and not requested.startswith('cuda'):
        raise EngineError('invalid_input', f'unknown device {requested!r}: use auto, cpu or cuda')
    return requested


@dataclass
class ModelSpec:
    """A model file in the job's working directory and the sha256 provenance says it must have."""

    path: str
    sha256: str | None = None

    @classmethod
    def from_config(cls, entry) -> ModelSpec:
        if isinstance(entry, str):
            return cls(path=entry)
        return cls(path=entry['path'], sha256=entry.get('sha256'))


def verify_models(specs: list[ModelSpec]) -> None:
    """Refuse files whose hash differs from what provenance records: model files are pickles and run code on load."""
    if not specs:
        raise EngineError('invalid_input', 'no model files given')
    for spec in specs:
        if not pathlib.Path(spec.path).is_file():
            raise EngineError('invalid_input', f'model file {spec.path} is missing from the working directory')
        if spec.sha256 is not None:
            actual = sha256sum(spec.path)
            if actual != spec.sha256:
                raise EngineError(
                    'model_hash_mismatch',
                    f'model file {spec.path} has sha256 {actual} but {spec.sha256} was expected; '
                    'the file was changed or corrupted in transfer: re-upload the MaceModel node',
                )


def make_calculator(models: list, device: str = 'auto', dtype: str = 'float64'):
    """Build one MACECalculator over a committee (a list of model entries); checks hashes before unpickling.

    With more than one model, mace-torch adds committee keys (``forces_comm``, ``energy_var`` ...) to ``results``.
    """
    specs = [ModelSpec.from_config(m) for m in models]
    verify_models(specs)
    device = select_device(device)
    if dtype not in {'float32', 'float64'}:
        raise EngineError('invalid_input', f'dtype must be float32 or float64, not {dtype!r}')
    from mace.calculators import MACECalculator

    paths = [s.path for s in specs]
    try:
        return MACECalculator(model_paths=paths if len(paths) > 1 else paths[0], device=device, default_dtype=dtype)
    except Exception as exc:  # unpickling a damaged file raises anything from EOFError to AttributeError
        if 'out of memory' in str(exc).lower():
            raise
        raise EngineError(
            'model_corrupt', f'could not load model files {paths} ({type(exc).__name__}: {exc}); re-export the model'
        ) from exc


def mace_calculator(model_path, device: str = 'cpu', dtype: str = 'float64'):
    """A MACECalculator over one model file, loaded as it is: no hash check (the caller vouches for the file, e.g.
    :meth:`aiida_nmcml.data.model.MaceModel.calculator`, which copies a node's file out and checks it first).

    For the daemon-side helpers (descriptors of the selection, the lattice check); the engine itself builds its
    calculators with :func:`make_calculator`. Needs mace-torch (imported here only).
    """
    from mace.calculators import MACECalculator

    return MACECalculator(model_paths=str(model_path), device=device, default_dtype=dtype)


def check_finite_forces(forces, where: str = '') -> None:
    import numpy as np

    if not np.all(np.isfinite(forces)):
        raise EngineError('nan_forces', f'model returned non-finite forces {where}; the model or structure is broken')

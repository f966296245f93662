"""Files an MD run leaves behind, written so that a run killed at any moment can be harvested and continued.

Every writer appends and flushes per record: whatever a killed job wrote is complete up to its last line. The
checkpoint is replaced atomically (write, then rename), so a kill during the write leaves the previous one intact.
On restart, records newer than the checkpoint are cut away (:func:`truncate_after`), so the continued run never
holds two frames for one step.

Trajectory choice (documented in docs/md.md): one extxyz, positions wrapped into the cell, and the per-atom array
``unwrapped`` with the positions as integrated (the driver never wraps), so MSD needs no unwrapping afterwards.
"""

from __future__ import annotations

import json
import os
import pathlib
import re

import numpy as np

TRAJECTORY = 'trajectory.extxyz'
CANDIDATES = 'candidates.extxyz'
STOP_FRAME = 'stop_frame.extxyz'
THERMO = 'thermo.log'
UNCERTAINTY = 'uncertainty.dat'
CHECKPOINT = 'checkpoint.npz'
SUMMARY = 'md_summary.json'

THERMO_COLUMNS = ('step', 'time_fs', 'epot', 'ekin', 'etot', 'temperature', 'volume', 'pressure_gpa')
UNCERTAINTY_COLUMNS = ('step', 'time_fs', 'max_force_dev', 'mean_force_dev', 'energy_std_per_atom')

_STEP_RE = re.compile(r'(?:^|\s)step=(\d+)')


# Per-atom labels of the starting structure that every written frame keeps. Labelling derives the DFT starting
# moments from ``sublattice`` (structures.dft_ready); without them an MD candidate reached pw.x/VASP with zero moments
# and converged non-magnetic. Both belong to the atom, not to the site, so they stay true however far it moves
# (``site_index`` does not: a Li that hops sits on another site, so it is not carried).
CARRIED_ARRAYS = ('initial_magmoms', 'sublattice')


def frame_atoms(atoms, info: dict, extra_arrays: dict | None = None):
    """A light copy of ``atoms`` for writing: wrapped positions, ``unwrapped`` array, the :data:`CARRIED_ARRAYS` the
    structure has, ``info`` only (no calculator, no constraints)."""
    from ase import Atoms

    frame = Atoms(numbers=atoms.numbers, positions=atoms.get_positions(wrap=True), cell=atoms.cell, pbc=atoms.pbc)
    frame.arrays['unwrapped'] = atoms.get_positions().copy()
    for key in CARRIED_ARRAYS:
        if key in atoms.arrays:
            frame.arrays[key] = np.array(atoms.arrays[key], dtype=str if key == 'sublattice' else float)
    for key, value in (extra_arrays or {}).items():
        frame.arrays[key] = np.asarray(value)
    frame.info.update(info)
    return frame


class AppendWriter:
    """Appends extxyz frames to one file, flushing each, opened lazily so an empty candidate file is never created."""

    def __init__(self, path: str):
        self.path = path
        self.count = 0
        self._handle = None

    def write(self, frame) -> None:
        from ase.io import write

        if self._handle is None:
            self._handle = open(self.path, 'a')
        write(self._handle, frame, format='extxyz')
        self._handle.flush()
        self.count += 1

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class TableWriter:
    """A whitespace table with a ``#`` header line, one row per record, first column the MD step."""

    def __init__(self, path: str, columns: tuple[str, ...]):
        self.path = path
        self.columns = columns
        fresh = not pathlib.Path(path).is_file() or pathlib.Path(path).stat().st_size == 0
        self._handle = open(path, 'a')
        if fresh:
            self._handle.write('# ' + ' '.join(columns) + '\n')
            self._handle.flush()

    def write(self, *values) -> None:
        cells = [str(int(v)) if i == 0 else f'{float(v):.10g}' for i, v in enumerate(values)]
        self._handle.write(' '.join(cells) + '\n')
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def read_table(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a :class:`TableWriter` file back into ``{column: array}`` (empty arrays when there are no rows)."""
    return parse_table(pathlib.Path(path).read_text())


def parse_table(text: str) -> dict[str, np.ndarray]:
    """The text of a :class:`TableWriter` file as ``{column: array}``; the parser reads retrieved files with it."""
    lines = text.splitlines()
    columns = lines[0].lstrip('#').split()
    rows = [line.split() for line in lines[1:] if line.strip() and not line.startswith('#')]
    data = np.array(rows, dtype=float).reshape(len(rows), len(columns))
    return {name: data[:, i] for i, name in enumerate(columns)}


def truncate_after(step: int, directory: str | os.PathLike = '.') -> None:
    """Cut records newer than ``step`` from every output file: they belong to the part of a killed run after its
    last checkpoint, which the restart computes again."""
    directory = pathlib.Path(directory)
    for name in (TRAJECTORY, CANDIDATES):
        path = directory / name
        if path.is_file():
            _truncate_extxyz(path, step)
    for name in (THERMO, UNCERTAINTY):
        path = directory / name
        if path.is_file():
            kept = [
                line
                for line in path.read_text().splitlines(keepends=True)
                if line.startswith('#') or (line.strip() and int(line.split()[0]) <= step)
            ]
            path.write_text(''.join(kept))


def _truncate_extxyz(path: pathlib.Path, step: int) -> None:
    lines = path.read_text().splitlines(keepends=True)
    kept, index = [], 0
    while index < len(lines):
        try:
            natoms = int(lines[index])
        except ValueError:
            break  # a frame cut off mid-write by the kill: drop it and everything after
        block = lines[index : index + natoms + 2]
        if len(block) < natoms + 2:
            break
        match = _STEP_RE.search(block[1])
        if match is None or int(match.group(1)) <= step:
            kept.extend(block)
        index += natoms + 2
    path.write_text(''.join(kept))


def save_checkpoint(atoms, step: int, rng, thermostat_state: dict, path: str = CHECKPOINT) -> None:
    """Everything needed to continue bit-for-bit: positions (unwrapped), momenta, cell, step, RNG and thermostat."""
    tmp = f'{path}.tmp.npz'
    np.savez(
        tmp,
        positions=atoms.get_positions(),
        momenta=atoms.get_momenta(),
        cell=atoms.cell.array,
        numbers=atoms.numbers,
        step=np.int64(step),
        rng_state=np.array(json.dumps(rng.bit_generator.state)),
        thermostat_state=np.array(json.dumps(thermostat_state)),
    )
    os.replace(tmp, path)


def load_checkpoint(path: str) -> dict:
    with np.load(path) as data:
        return {
            'positions': data['positions'],
            'momenta': data['momenta'],
            'cell': data['cell'],
            'numbers': data['numbers'],
            'step': int(data['step']),
            'rng_state': json.loads(str(data['rng_state'])),
            'thermostat_state': json.loads(str(data['thermostat_state'])),
        }

"""TrainingSet: labelled (or to-be-labelled) structures as one extxyz file node.

Why one file rather than one node per frame: MACE reads extxyz, active learning appends hundreds of frames per
iteration, and a single hashed file keeps the dataset that trained a model exactly reproducible. Per-frame provenance
is kept *inside* the file (``info['source_uuid']`` = the DFT calculation that produced the frame), and the node's
attributes summarise it for queries.

Frames use the keys MACE reads: ``REF_energy`` (eV), ``REF_forces`` (eV/Å), ``REF_stress`` (Voigt, eV/Å^3),
``REF_magmoms`` (µB). Frames without ``REF_energy`` are unlabelled candidates (e.g. from MD), waiting for DFT.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from collections.abc import Callable, Iterable

import numpy as np
from aiida import orm
from aiida.engine import calcfunction

FILENAME = 'frames.extxyz'
ENERGY_KEY = 'REF_energy'
FORCES_KEY = 'REF_forces'
STRESS_KEY = 'REF_stress'
MAGMOMS_KEY = 'REF_magmoms'
# The DFT settings that make two labels comparable. Frames with different values must not train one model: besides
# code, functional, U, cutoff and k-points, the pseudopotentials (md5s), the density cutoff, the smearing and the U
# projectors each change the potential-energy surface.
SETTINGS_KEYS = (
    'engine', 'functional', 'hubbard_u', 'ecutwfc', 'kpoints_distance', 'ecutrho', 'pseudos', 'smearing',
    'hubbard_projector',
)  # fmt: skip


class MixedSettingsError(ValueError):
    """Frames computed with different DFT settings were put into one set."""


class TrainingSetHashMismatch(ValueError):
    """The file's bytes differ from the sha256 recorded when the set was made: never train on them."""


def frame_settings(atoms) -> tuple | None:
    """The settings tuple of a frame; ``None`` for a frame that records no DFT settings at all."""
    values = tuple(_normalise(atoms.info.get(key)) for key in SETTINGS_KEYS)
    return None if all(v is None for v in values) else values


def _normalise(value):
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, str) and value.startswith('{'):
        try:  # hubbard_u is a JSON string; key order must not matter
            return json.dumps(json.loads(value), sort_keys=True)
        except json.JSONDecodeError:
            return value
    if isinstance(value, np.generic):
        return value.item()
    return value


def check_consistent_settings(frames) -> dict | None:
    """Return the shared DFT settings of the labelled frames, or raise :class:`MixedSettingsError`.

    Unlabelled frames (no ``REF_energy``) are ignored: they carry no label to mix.
    """
    seen: dict[tuple | None, int] = {}
    for index, atoms in enumerate(frames):
        if ENERGY_KEY not in atoms.info:
            continue
        seen.setdefault(frame_settings(atoms), index)
    if len(seen) > 1:
        described = '; '.join(
            f'frame {i}: ' + (', '.join(f'{k}={v}' for k, v in zip(SETTINGS_KEYS, s)) if s else 'no DFT settings')
            for s, i in seen.items()
        )
        raise MixedSettingsError(
            f'refusing to mix frames labelled with different DFT settings ({described}). Relabel them with one '
            'protocol, or keep them in separate TrainingSets.'
        )
    if not seen:
        return None
    (settings,) = seen
    return None if settings is None else dict(zip(SETTINGS_KEYS, settings))


def _write(frames) -> bytes:
    from ase.io import write

    handle = io.StringIO()
    if frames:
        write(handle, list(frames), format='extxyz')
    return handle.getvalue().encode()


def _read(content: str) -> list:
    from ase.io import read

    if not content.strip():
        return []
    return read(io.StringIO(content), index=':', format='extxyz')


class TrainingSet(orm.SinglefileData):
    """An extxyz file of frames with a summary in the attributes (counts, settings, sha256)."""

    @classmethod
    def from_frames(cls, frames: Iterable, **kwargs) -> TrainingSet:
        """New (unstored) node from ASE Atoms; refuses NaN labels and mixed DFT settings."""
        frames = [atoms.copy() if hasattr(atoms, 'copy') else atoms for atoms in frames]
        for index, atoms in enumerate(frames):
            _check_finite(atoms, index)
        settings = check_consistent_settings(frames)
        content = _write(frames)
        node = cls(io.BytesIO(content), filename=FILENAME, **kwargs)
        node.base.attributes.set('num_frames', len(frames))
        node.base.attributes.set('num_labelled', sum(ENERGY_KEY in a.info for a in frames))
        node.base.attributes.set('num_atoms_total', int(sum(len(a) for a in frames)))
        node.base.attributes.set('elements', sorted({s for a in frames for s in a.get_chemical_symbols()}))
        node.base.attributes.set('dft_settings', settings)
        node.base.attributes.set('compositions', dict(_composition_counts(frames)))
        node.base.attributes.set('sha256', hashlib.sha256(content).hexdigest())
        return node

    @property
    def num_frames(self) -> int:
        return self.base.attributes.get('num_frames')

    @property
    def num_labelled(self) -> int:
        return self.base.attributes.get('num_labelled', 0)

    @property
    def elements(self) -> list[str]:
        return self.base.attributes.get('elements', [])

    @property
    def dft_settings(self) -> dict | None:
        return self.base.attributes.get('dft_settings', None)

    @property
    def sha256(self) -> str | None:
        return self.base.attributes.get('sha256', None)

    def verified_content(self) -> bytes:
        """The file's bytes, after checking them against the recorded sha256 (as :class:`MaceModel` does).

        Why: the hash identifies the data a model was trained on; a set read back with other bytes (a damaged
        repository, a file swapped outside AiiDA) would silently train or label something else.
        """
        content = self.get_content(mode='rb')
        recorded = self.sha256
        if recorded is not None and hashlib.sha256(content).hexdigest() != recorded:
            raise TrainingSetHashMismatch(
                f'TrainingSet<{self.pk}> content has sha256 {hashlib.sha256(content).hexdigest()}, the node records '
                f'{recorded}: refusing to read it'
            )
        return content

    def get_frames(self) -> list:
        return _read(self.verified_content().decode())

    def __len__(self) -> int:
        return self.num_frames

    def write_extxyz(self, path) -> None:
        """Export the frames exactly as stored (byte-identical file, sha256 checked)."""
        content = self.verified_content()
        with open(path, 'wb') as handle:
            handle.write(content)

    def counts_by_composition(self) -> dict[str, int]:
        return dict(self.base.attributes.get('compositions', {}))

    def append(self, other) -> TrainingSet:
        """A new node with this set's frames followed by ``other`` (frames or a TrainingSet).

        Stored nodes are immutable; inside a work chain use :func:`merge_trainingsets` to keep provenance links.
        """
        extra = other.get_frames() if isinstance(other, TrainingSet) else list(other)
        return TrainingSet.from_frames(self.get_frames() + extra)

    def filter(self, predicate: Callable) -> TrainingSet:
        return TrainingSet.from_frames([a for a in self.get_frames() if predicate(a)])

    def split(self, fractions=(0.8, 0.1, 0.1), seed: int = 0, names=('train', 'valid', 'test')) -> dict:
        """Deterministic split by ``seed``: the same set and seed always give the same subsets.

        Each non-zero fraction gets at least one frame when there are enough frames.
        """
        if len(fractions) != len(names):
            raise ValueError(f'{len(fractions)} fractions for {len(names)} names')
        if any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1.0):
            raise ValueError(f'split fractions must be non-negative and sum to 1, got {fractions}')
        frames = self.get_frames()
        n = len(frames)
        order = np.random.default_rng(seed).permutation(n)
        counts = [int(np.floor(f * n)) for f in fractions]
        for i, f in enumerate(fractions):
            if f > 0 and counts[i] == 0 and sum(counts) < n:
                counts[i] = 1
        counts[int(np.argmax(fractions))] += n - sum(counts)
        result, start = {}, 0
        for name, count in zip(names, counts):
            result[name] = TrainingSet.from_frames([frames[i] for i in order[start : start + count]])
            start += count
        return result


def _check_finite(atoms, index: int) -> None:
    for key in (ENERGY_KEY, STRESS_KEY):
        if key in atoms.info and not np.all(np.isfinite(np.asarray(atoms.info[key], dtype=float))):
            raise ValueError(f'frame {index} has a non-finite {key}; drop or relabel it before building a TrainingSet')
    for key in (FORCES_KEY, MAGMOMS_KEY):
        if key in atoms.arrays and not np.all(np.isfinite(atoms.arrays[key])):
            raise ValueError(f'frame {index} has non-finite {key}; drop or relabel it before building a TrainingSet')
    if not np.all(np.isfinite(atoms.positions)):
        raise ValueError(f'frame {index} has non-finite positions')


def _composition_counts(frames) -> Counter:
    return Counter(atoms.get_chemical_formula(mode='hill') for atoms in frames)


@calcfunction
def merge_trainingsets(**sets: TrainingSet) -> TrainingSet:
    """Concatenate sets in key order, inside provenance (links from every input set to the merged set)."""
    frames = []
    for key in sorted(sets):
        frames.extend(sets[key].get_frames())
    return TrainingSet.from_frames(frames)

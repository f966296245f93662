"""The fixed lattice the GA searches on, its symmetry, and symmetry-canonical keys of occupancies.

A genome is an occupancy: one symbol per lattice site, ``'X'`` for a vacancy. The lattice file is an extxyz of the
starting occupancy *with* the vacancies as ``X`` atoms and ``arrays['sublattice']`` (``li`` / ``tm`` / ``o``); the
starting occupancy fixes each sublattice's composition, which every operator then preserves.

Two occupancies related by a symmetry operation of the empty lattice (space-group rotations and supercell
translations, from spglib) are the same ordering. :meth:`Lattice.canonical_key` maps each to the lexicographically
smallest image under those site permutations, so the population can hold distinct orderings only.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import zlib
from dataclasses import dataclass, field

import numpy as np

from .common import EngineError

VACANCY = 'X'
SPECIES_ORDER = ('X', 'Li', 'Ni', 'Mn', 'Co', 'O')  # code of a symbol in the keys; unknown symbols sort after


@functools.lru_cache(maxsize=256)
def species_code(symbol: str) -> int:
    """Integer code of a symbol in the canonical keys, the same in every process.

    Why: keys are compared across runs (restarts, the search summary, DFT verification keys), so they must not use
    Python's ``hash`` of a string, which is randomised per process (PYTHONHASHSEED). The standard species come first
    in :data:`SPECIES_ORDER`; any other element sorts after them by atomic number; a non-element string by CRC-32.
    """
    if symbol in SPECIES_ORDER:
        return SPECIES_ORDER.index(symbol)
    from ase.data import atomic_numbers

    if symbol in atomic_numbers:
        return len(SPECIES_ORDER) + atomic_numbers[symbol]
    return 1000 + zlib.crc32(symbol.encode()) % 30000  # fits int16, above every element code


def occupied_atoms(cell, positions, sublattice, occupancy):
    """Atoms of the occupied sites of a lattice (vacancies dropped), with ``site_index`` and ``sublattice`` arrays.

    The one conversion from an occupancy to a structure, used by :class:`Lattice` here and by
    ``aiida_nmcml.structures.NmcLattice``, so a GA candidate and a built structure cannot differ in layout.
    """
    from ase import Atoms

    occupancy = np.asarray(occupancy)
    keep = np.flatnonzero(occupancy != VACANCY)
    atoms = Atoms(symbols=occupancy[keep].tolist(), positions=np.asarray(positions)[keep], cell=cell, pbc=True)
    atoms.arrays['site_index'] = keep.astype(int)
    atoms.arrays['sublattice'] = np.asarray(sublattice)[keep].astype('<U2')
    return atoms


def infer_sublattice(symbols) -> np.ndarray:
    labels = {'Li': 'li', 'X': 'li', 'Ni': 'tm', 'Mn': 'tm', 'Co': 'tm', 'O': 'o'}
    try:
        return np.array([labels[s] for s in symbols])
    except KeyError as exc:
        raise EngineError('invalid_input', f'cannot infer the sublattice of {exc}; give arrays["sublattice"]') from exc


@dataclass
class Lattice:
    cell: np.ndarray
    positions: np.ndarray
    sublattice: np.ndarray
    start: np.ndarray  # starting occupancy (sets the compositions)
    symprec: float = 1e-3
    _perms: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def from_atoms(cls, atoms) -> Lattice:
        symbols = np.array(atoms.get_chemical_symbols(), dtype='<U2')
        sub = atoms.arrays.get('sublattice')
        sub = np.asarray(sub, dtype='<U2') if sub is not None else infer_sublattice(symbols)
        return cls(cell=atoms.cell.array.copy(), positions=atoms.positions.copy(), sublattice=sub, start=symbols)

    @classmethod
    def from_nmc(cls, nmc, occupancy) -> Lattice:
        """The search lattice of an ``NmcLattice`` (or anything with ``cell``, ``positions``, ``sublattice``).

        The one place the structures module's fixed lattice becomes the GA's; duck-typed, so the engine needs neither
        AiiDA nor the structures module.
        """
        return cls(
            cell=np.array(nmc.cell, dtype=float),
            positions=np.array(nmc.positions, dtype=float),
            sublattice=np.asarray(nmc.sublattice).astype('<U2'),
            start=np.asarray(occupancy).astype('<U2'),
        )

    @classmethod
    def read(cls, path: str) -> Lattice:
        from ase.io import read

        try:
            return cls.from_atoms(read(path))
        except FileNotFoundError as exc:
            raise EngineError('invalid_input', f'lattice file {path} is missing from the working directory') from exc

    def to_atoms(self, occupancy):
        """Atoms of the occupied sites (vacancies dropped), with ``site_index`` and ``sublattice`` arrays."""
        return occupied_atoms(self.cell, self.positions, self.sublattice, occupancy)

    def lattice_atoms(self, occupancy):
        """All sites, vacancies as ``X``: the lattice-file form of an occupancy."""
        from ase import Atoms

        atoms = Atoms(symbols=list(occupancy), positions=self.positions, cell=self.cell, pbc=True)
        atoms.arrays['sublattice'] = self.sublattice.copy()
        return atoms

    @property
    def groups(self) -> dict[str, np.ndarray]:
        """Sites of each sublattice that holds more than one species: the only places the GA can change."""
        out = {}
        for name in dict.fromkeys(self.sublattice.tolist()):
            sites = np.flatnonzero(self.sublattice == name)
            if len(set(self.start[sites].tolist())) > 1:
                out[name] = sites
        return out

    def composition(self, occupancy) -> dict[str, dict[str, int]]:
        occupancy = np.asarray(occupancy)
        out = {}
        for name in dict.fromkeys(self.sublattice.tolist()):
            values, counts = np.unique(occupancy[self.sublattice == name], return_counts=True)
            out[name] = dict(zip(values.tolist(), counts.tolist(), strict=True))
        return out

    # ----------------------------------------------------------------------------------------------- symmetry
    @property
    def permutations(self) -> np.ndarray:
        """(n_ops, n_sites): site ``perms[k, i]`` is where op ``k`` sends site ``i``; ops of the empty lattice."""
        if self._perms is None:
            self._perms = self._site_permutations()
        return self._perms

    def _site_permutations(self) -> np.ndarray:
        import spglib

        types = {name: i + 1 for i, name in enumerate(dict.fromkeys(self.sublattice.tolist()))}
        numbers = [types[s] for s in self.sublattice]
        frac = np.linalg.solve(self.cell.T, self.positions.T).T % 1.0
        sym = spglib.get_symmetry((self.cell, frac, numbers), symprec=self.symprec)
        if sym is None:
            return np.arange(len(frac))[None]
        perms = []
        for rot, trans in zip(sym['rotations'], sym['translations'], strict=True):
            image = (frac @ rot.T + trans) % 1.0
            delta = image[:, None, :] - frac[None, :, :]
            delta -= np.rint(delta)
            dist = np.linalg.norm(delta @ self.cell, axis=2)
            target = dist.argmin(axis=1)
            if dist[np.arange(len(frac)), target].max() < 0.05 and len(set(target)) == len(frac):
                perms.append(target)
        return np.unique(np.array(perms), axis=0)

    def n_orderings(self) -> int:
        """Number of composition-preserving occupancies (exact integer): the size of the search space."""
        return _fixed_count(self, np.arange(len(self.start)))

    def n_classes(self) -> float:
        """Number of symmetry-distinct orderings, by Burnside's lemma: the mean over the lattice's symmetry operations
        of the number of occupancies each leaves unchanged (an occupancy is fixed by a permutation when every cycle
        of the permutation holds one species). Exact, without enumerating; what the GA's stopping rule scales with.
        """
        perms = self.permutations
        return float(sum(_fixed_count(self, perm) for perm in perms)) / len(perms)

    def codes(self, occupancy) -> np.ndarray:
        return np.array([species_code(str(s)) for s in occupancy], dtype=np.int16)

    def canonical_key(self, occupancy) -> str:
        """Short hash of the smallest image of the occupancy under the lattice's symmetry operations."""
        codes = self.codes(occupancy)
        images = np.empty((len(self.permutations), len(codes)), dtype=np.int16)
        images[np.arange(len(self.permutations))[:, None], self.permutations] = codes[None, :]
        order = np.lexsort(images.T[::-1])
        smallest = images[order[0]]
        return hashlib.sha1(smallest.tobytes()).hexdigest()[:16]


def _fixed_count(lattice: Lattice, perm: np.ndarray) -> int:
    """Occupancies with the lattice's compositions that the site permutation ``perm`` leaves unchanged."""
    total = 1
    for sites in lattice.groups.values():
        counts = tuple(np.unique(lattice.start[sites], return_counts=True)[1].tolist())
        seen = np.zeros(len(perm), bool)
        lengths = []
        for site in sites:
            length, i = 0, int(site)
            while not seen[i]:
                seen[i] = True
                i = int(perm[i])
                length += 1
            if length:
                lengths.append(length)
        ways = {counts: 1}  # remaining count per species -> number of ways
        for length in lengths:
            nxt: dict[tuple, int] = {}
            for remaining, n in ways.items():
                for s, left in enumerate(remaining):
                    if left >= length:
                        key = (*remaining[:s], left - length, *remaining[s + 1 :])
                        nxt[key] = nxt.get(key, 0) + n
            ways = nxt
        total *= ways.get(tuple(0 for _ in counts), 0)
    return total


def multiset_permutations(items: list) -> list[tuple]:
    """Distinct orderings of a multiset (e.g. 4 Li + 4 X), generated without duplicates."""
    values, counts = np.unique(items, return_counts=True)
    n = len(items)
    out = []
    for combo in _place(list(values), list(counts), n):
        out.append(tuple(combo))
    return out


def _place(values, counts, n):
    if len(values) == 1:
        yield [values[0]] * n
        return
    for positions in itertools.combinations(range(n), counts[0]):
        rest_n = n - counts[0]
        for rest in _place(values[1:], counts[1:], rest_n):
            combo, it = [None] * n, iter(rest)
            chosen = set(positions)
            for i in range(n):
                combo[i] = values[0] if i in chosen else next(it)
            yield combo


def enumerate_occupancies(lattice: Lattice):
    """Every composition-preserving occupancy of the lattice (for tests and benchmarks on small cells)."""
    groups = lattice.groups
    per_group = [multiset_permutations(lattice.start[sites].tolist()) for sites in groups.values()]
    for choice in itertools.product(*per_group):
        occ = lattice.start.copy()
        for sites, values in zip(groups.values(), choice, strict=True):
            occ[sites] = values
        yield occ

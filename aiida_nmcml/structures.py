"""NMC structure builders (layered R-3m, alpha-NaFeO2 type).

Lattice parameters: a = 2.87 Å, c = 14.2 Å for NMC811 (hint, docs/references.md "Structure"; NMC111 a = 2.864,
c = 14.233 Å, Electrochim. Acta 48, 145 (2002)).

Every later stage (GA, DFT labelling, MD analysis) must know which site belongs to which sublattice without
guessing from element names (a Ni on the Li layer is an antisite, not a TM site), so every structure made here carries
``arrays['sublattice']`` (``'li' | 'tm' | 'o'``) and ``arrays['site_index']`` (index on the fixed :class:`NmcLattice`).

Oxidation states and initial magnetic moments (one documented scheme, spin-only, as in the DFT+U literature on
layered Ni-rich oxides): Li+ and O2- are fixed, Mn is 4+ (d3, 3 µB) and Co 3+ (low-spin d6, 0 µB); Ni carries the
charge compensation: Ni2+ (d8, 2 µB), Ni3+ (low-spin d7, 1 µB), Ni4+ (low-spin d6, 0 µB). Only once every Ni is 4+
(NMC811 below x ≈ 0.1) is Co oxidised to Co4+ (low-spin d5, 1 µB). Zero starting moments for the low-spin d6 ions are
deliberate: a nonzero start pushes the SCF towards a spurious intermediate-spin state, and Ni2+/Ni3+/Mn4+ already
break the spin symmetry whenever they are present. ``magnetic='mp'`` gives the Materials Project ferromagnetic
high-spin start instead (Ni 5, Co 0.6, Mn 5 µB; docs/references.md, pymatgen MPRelaxSet).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np

A_NMC811 = 2.87
C_NMC811 = 14.2
Z_OXYGEN = 0.2586  # free coordinate of O on 6c in LiNiO2-type cells

SUBLATTICES = ('li', 'tm', 'o')
TM_ELEMENTS = ('Ni', 'Mn', 'Co')
NMC811 = {'Ni': 0.8, 'Mn': 0.1, 'Co': 0.1}
VACANCY = 'X'

#: Oxidation states that do not take part in charge compensation (Co only leaves 3+ once all Ni is 4+).
FIXED_OXIDATION = {'Li': 1, 'O': -2, 'Mn': 4}
#: Spin-only initial moments (µB) by (element, oxidation state); see the module docstring for the choice.
SPIN_ONLY_MOMENTS = {
    ('Li', 1): 0.0,
    ('O', -2): 0.0,
    ('Ni', 2): 2.0,
    ('Ni', 3): 1.0,
    ('Ni', 4): 0.0,
    ('Co', 3): 0.0,
    ('Co', 4): 1.0,
    ('Mn', 4): 3.0,
}
#: Materials Project ferromagnetic high-spin start (pymatgen MPRelaxSet), independent of oxidation state.
MP_MOMENTS = {'Ni': 5.0, 'Co': 0.6, 'Mn': 5.0}

# Rows: the rhombohedral primitive vectors of layered_parent() in fractions of the hexagonal cell (obverse setting).
_PRIMITIVE_IN_HEX = np.array([[2, 1, 1], [-1, 1, 1], [-1, -2, 1]]) / 3.0


class NmcStructureWarning(UserWarning):
    """The request could not be met exactly (composition, Li content, antisites, cell size) and was rounded."""


def layered_parent(a: float = A_NMC811, c: float = C_NMC811, z_oxygen: float = Z_OXYGEN, primitive: bool = True):
    """The LiNiO2 prototype of NMC811: Li on 3b, transition metal on 3a, O on 6c (space group 166).

    ``primitive=True`` gives the 4-atom rhombohedral cell; otherwise the 12-atom hexagonal setting.
    """
    from ase.spacegroup import crystal

    return crystal(
        ['Li', 'Ni', 'O'],
        basis=[(0, 0, 0.5), (0, 0, 0), (0, 0, z_oxygen)],
        spacegroup=166,
        cellpar=[a, a, c, 90, 90, 120],
        primitive_cell=primitive,
    )


# ----------------------------------------------------------------------------------------------------------- cells
def _perpendicular_widths(cells: np.ndarray) -> np.ndarray:
    """Distances between opposite faces of each cell (shape (..., 3)): what limits a cutoff radius in MD/MLIPs."""
    a, b, c = cells[..., 0, :], cells[..., 1, :], cells[..., 2, :]
    volume = np.abs(np.einsum('...i,...i', a, np.cross(b, c)))
    areas = np.stack(
        [
            np.linalg.norm(np.cross(b, c), axis=-1),
            np.linalg.norm(np.cross(c, a), axis=-1),
            np.linalg.norm(np.cross(a, b), axis=-1),
        ],
        axis=-1,
    )
    return volume[..., None] / areas


def _reduced_plane_bases(index: int) -> list[np.ndarray]:
    """Every sublattice of index ``index`` of the hexagonal layer lattice, as Lagrange-reduced right-handed bases.

    Hermite normal forms ``[[p, 0], [q, r]]`` (p*r = index, 0 <= q < p) list each sublattice once; reduction makes
    the two vectors as short as possible, which maximises the face-to-face widths of that sublattice. Integer
    arithmetic (metric of the 120-degree layer in units of a^2/2) so that ties cannot make the reduction cycle.
    """
    metric = np.array([[2, -1], [-1, 2]])

    def norm(v):
        return int(v @ metric @ v)

    bases = []
    for p in range(1, index + 1):
        if index % p:
            continue
        r = index // p
        for q in range(p):
            b1, b2 = np.array([p, 0]), np.array([q, r])
            if norm(b2) < norm(b1):
                b1, b2 = b2, b1
            while True:
                dot, n1 = int(b1 @ metric @ b2), norm(b1)
                mu = (2 * abs(dot) + n1 - 1) // (2 * n1) * (1 if dot >= 0 else -1)  # nearest, halves toward 0
                b2 = b2 - mu * b1
                if norm(b2) >= norm(b1):
                    break
                b1, b2 = b2, b1
            if b1[0] * b2[1] - b1[1] * b2[0] < 0:
                b2 = -b2
            bases.append(np.array([b1, b2]))
    return bases


@functools.lru_cache(maxsize=64)
def _layer_aligned_matrix(n_cells: int, a: float, c: float) -> tuple[tuple[int, ...], ...]:
    """Supercell matrix (on the primitive cell) of ``n_cells`` cells that keeps the TM/Li layers in the ab plane.

    Two in-plane vectors span a sublattice of the hexagonal layer; the third climbs ``k`` layers (k * c/3) with the
    smallest in-plane tilt. The winner has the largest smallest face-to-face width (what limits an MLIP cutoff or a
    DFT supercell), then the largest second-smallest width; remaining ties go to the smallest integer entries and a
    positive diagonal, so the choice is deterministic. Layer alignment makes ``z`` the stacking axis in every cell.
    """
    hexagonal = np.array([[a, 0.0, 0.0], [-a / 2, a * math.sqrt(3) / 2, 0.0], [0.0, 0.0, c]])
    candidates = []
    for k in range(1, n_cells + 1):
        if n_cells % k:
            continue
        shift = np.array([2 * k / 3, k / 3])  # k * t; subtracting the nearest layer vector removes most tilt
        third = [*(shift - np.round(shift)), k / 3]
        for basis in _reduced_plane_bases(n_cells // k):
            frac = np.zeros((3, 3))
            frac[:2, :2] = basis
            frac[2] = third
            candidates.append(frac)
    frac = np.array(candidates)
    widths = np.sort(_perpendicular_widths(frac @ hexagonal), axis=1)
    size = np.abs(frac[:, :2, :2]).sum(axis=(1, 2))
    diagonal = frac[:, 0, 0] + frac[:, 1, 1]
    best = frac[np.lexsort((-diagonal, size, -np.round(widths[:, 1], 6), -np.round(widths[:, 0], 6)))[0]]
    primitive = best @ np.linalg.inv(_PRIMITIVE_IN_HEX)
    matrix = np.rint(primitive).astype(int)
    assert np.allclose(primitive, matrix, atol=1e-8), 'supercell search left the lattice'
    return tuple(map(tuple, matrix.tolist()))


def supercell_matrix(supercell, a: float = A_NMC811, c: float = C_NMC811) -> np.ndarray:
    """Integer 3x3 matrix on the primitive cell from an int (target number of atoms), a 3-vector or a 3x3 matrix.

    An int is a *target number of atoms*: the nearest multiple of 4 (atoms per LiMO2 primitive cell) is used, with a
    warning when it differs, in the layer-aligned cell of :func:`_layer_aligned_matrix`.
    """
    if isinstance(supercell, bool):
        raise ValueError('supercell must be a number of atoms, a 3-vector of repeats or a 3x3 integer matrix')
    if isinstance(supercell, (int, np.integer)):
        target = int(supercell)
        if target < 2:
            raise ValueError(f'a target of {target} atoms is too small: the primitive LiMO2 cell has 4 atoms')
        n_cells = max(1, math.floor(target / 4 + 0.5))
        if 4 * n_cells != target:
            warnings.warn(
                f'{target} atoms is not a multiple of 4 (atoms per LiMO2 cell): using {4 * n_cells} atoms',
                NmcStructureWarning,
                stacklevel=3,
            )
        return np.array(_layer_aligned_matrix(n_cells, float(a), float(c)), dtype=int)
    matrix = np.asarray(supercell, dtype=float)
    if matrix.shape == (3,):
        matrix = np.diag(matrix)
    if matrix.shape != (3, 3):
        raise ValueError(f'supercell must be an int, a 3-vector or a 3x3 matrix; got shape {matrix.shape}')
    if not np.allclose(matrix, np.rint(matrix)):
        raise ValueError(f'supercell matrix must have integer entries; got {matrix.tolist()}')
    matrix = np.rint(matrix).astype(int)
    det = round(np.linalg.det(matrix))
    if det == 0:
        raise ValueError(f'supercell matrix {matrix.tolist()} is singular (determinant 0)')
    if det < 0:
        raise ValueError(
            f'supercell matrix {matrix.tolist()} has a negative determinant (left-handed cell): swap two rows'
        )
    return matrix


# --------------------------------------------------------------------------------------------------------- lattice
@dataclasses.dataclass(frozen=True, eq=False)
class NmcLattice:
    """The fixed sites of a layered supercell; an occupancy (one symbol per site, ``'X'`` = vacancy) is a structure.

    The GA mutates occupancies only, so sites never move and their order never changes: Li-layer sites first, then
    TM-layer sites, then O sites, each in :func:`ase.build.make_supercell` order. Arrays are read-only.
    """

    cell: np.ndarray
    positions: np.ndarray
    sublattice: np.ndarray
    matrix: np.ndarray

    @classmethod
    def from_supercell(
        cls, supercell=(1, 1, 1), *, a: float = A_NMC811, c: float = C_NMC811, z_oxygen: float = Z_OXYGEN
    ) -> NmcLattice:
        """Lattice of ``supercell`` (see :func:`supercell_matrix`) of the primitive :func:`layered_parent` cell."""
        from ase.build import make_supercell

        matrix = supercell_matrix(supercell, a=a, c=c)
        parent = layered_parent(a=a, c=c, z_oxygen=z_oxygen, primitive=True)
        labels = {'Li': 'li', 'Ni': 'tm', 'O': 'o'}
        parent.arrays['sublattice'] = np.array([labels[s] for s in parent.get_chemical_symbols()])
        atoms = make_supercell(parent, matrix)
        rank = {name: i for i, name in enumerate(SUBLATTICES)}
        order = np.argsort([rank[s] for s in atoms.arrays['sublattice']], kind='stable')
        return cls(
            cell=_frozen(atoms.cell.array),
            positions=_frozen(atoms.positions[order]),
            sublattice=_frozen(atoms.arrays['sublattice'][order].astype('<U2')),
            matrix=_frozen(matrix),
        )

    def as_dict(self) -> dict:
        """Plain lists for ``input.json``: the GA engine rebuilds the same lattice without redoing the search."""
        return {
            'cell': self.cell.tolist(),
            'positions': self.positions.tolist(),
            'sublattice': self.sublattice.tolist(),
            'matrix': self.matrix.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> NmcLattice:
        lattice = cls(
            cell=_frozen(np.asarray(data['cell'], dtype=float)),
            positions=_frozen(np.asarray(data['positions'], dtype=float)),
            sublattice=_frozen(np.asarray(data['sublattice'], dtype='<U2')),
            matrix=_frozen(np.asarray(data['matrix'], dtype=int)),
        )
        if lattice.cell.shape != (3, 3) or lattice.positions.shape != (lattice.n_sites, 3):
            raise ValueError('lattice dict needs a 3x3 cell and one position per sublattice label')
        unknown = set(lattice.sublattice.tolist()) - set(SUBLATTICES)
        if unknown:
            raise ValueError(f'unknown sublattice label(s) {sorted(unknown)}: expected {SUBLATTICES}')
        return lattice

    # -- site bookkeeping
    @property
    def n_sites(self) -> int:
        return len(self.sublattice)

    @functools.cached_property
    def li_sites(self) -> np.ndarray:
        return _frozen(np.flatnonzero(self.sublattice == 'li'))

    @functools.cached_property
    def tm_sites(self) -> np.ndarray:
        return _frozen(np.flatnonzero(self.sublattice == 'tm'))

    @functools.cached_property
    def o_sites(self) -> np.ndarray:
        return _frozen(np.flatnonzero(self.sublattice == 'o'))

    def parent_occupancy(self) -> np.ndarray:
        """LiNiO2 on every site: the starting point that compositions and vacancies are written onto."""
        occupancy = np.empty(self.n_sites, dtype='<U2')
        occupancy[self.li_sites] = 'Li'
        occupancy[self.tm_sites] = 'Ni'
        occupancy[self.o_sites] = 'O'
        return occupancy

    # -- occupancies
    def default_occupancy(
        self,
        x_li: float = 1.0,
        composition: Mapping[str, float] | None = None,
        seed: int | None = None,
        tm_order: Sequence[str] | None = None,
        antisite_fraction: float = 0.0,
    ) -> np.ndarray:
        """Occupancy for Li content ``x_li``, TM ``composition`` and antisite fraction; warns where it rounds."""
        occupancy, _, notes = self._occupancy(
            x_li, composition, np.random.default_rng(seed), tm_order, antisite_fraction
        )
        for note in notes:
            warnings.warn(note, NmcStructureWarning, stacklevel=2)
        return occupancy

    def _occupancy(self, x_li, composition, rng, tm_order, antisite_fraction):
        """(occupancy, record, warning texts): the random draws happen in a fixed order so a seed reproduces."""
        notes: list[str] = []
        x_li = float(x_li)
        if not math.isfinite(x_li) or not 0.0 <= x_li <= 1.0:
            raise ValueError(f'x_li must be within [0, 1] (Li per LiMO2 formula unit); got {x_li}')
        antisite_fraction = float(antisite_fraction)
        if not math.isfinite(antisite_fraction) or not 0.0 <= antisite_fraction <= 1.0:
            raise ValueError(
                'antisite_fraction must be within [0, 1] (fraction of Li-layer sites holding Ni); '
                f'got {antisite_fraction}'
            )
        n_tm = len(self.tm_sites)
        occupancy = self.parent_occupancy()

        # 1. transition metals
        if tm_order is not None:
            tm_symbols = np.asarray(list(tm_order), dtype='<U2')
            if tm_symbols.shape != (n_tm,):
                raise ValueError(f'tm_order must list one symbol per TM site ({n_tm} here); got {len(tm_symbols)}')
            unknown = sorted(set(tm_symbols.tolist()) - set(TM_ELEMENTS))
            if unknown:
                raise ValueError(
                    f'unknown element(s) {unknown} in tm_order: only {", ".join(TM_ELEMENTS)} are '
                    'allowed on the transition-metal sites'
                )
            counts = {el: int(np.sum(tm_symbols == el)) for el in TM_ELEMENTS}
            if composition is not None:
                wanted = tm_counts(composition, n_tm)[0]
                if wanted != counts:
                    raise ValueError(
                        f'tm_order has {counts} but composition {dict(composition)} asks for {wanted} '
                        f'on {n_tm} TM sites: give one or the other'
                    )
        else:
            counts, note = tm_counts(NMC811 if composition is None else composition, n_tm)
            if note:
                notes.append(note)
            tm_symbols = np.repeat(list(counts), list(counts.values())).astype('<U2')
            tm_symbols = tm_symbols[rng.permutation(n_tm)]
        occupancy[self.tm_sites] = tm_symbols

        # 2. Li/Ni antisites, placed on the fully lithiated lattice (before any Li is removed): antisite_fraction is
        #    the fraction of Li-layer *sites* holding Ni (Rietveld "Li/Ni mixing"), fixed at synthesis, so the same
        #    fraction gives the same number of Ni_Li at every x_li. A swap keeps the composition (the Li goes to the
        #    TM layer, where it stays: delithiation empties Li-layer sites only).
        n_li_sites = len(self.li_sites)
        n_swap_exact = antisite_fraction * n_li_sites
        n_swap = math.floor(n_swap_exact + 0.5)
        if not math.isclose(n_swap, n_swap_exact, abs_tol=1e-9):
            notes.append(
                f'antisite_fraction = {antisite_fraction} of {n_li_sites} Li-layer sites is {n_swap_exact:.3g} '
                f'Ni_Li: using {n_swap} Li/Ni antisite pairs'
            )
        if n_swap:
            ni_atoms = self.tm_sites[occupancy[self.tm_sites] == 'Ni']
            if n_swap > len(ni_atoms):
                raise ValueError(
                    f'antisite_fraction = {antisite_fraction} needs {n_swap} Ni to swap but the TM '
                    f'layer holds only {len(ni_atoms)} Ni'
                )
            li_pick = rng.choice(self.li_sites, n_swap, replace=False)
            ni_pick = rng.choice(ni_atoms, n_swap, replace=False)
            occupancy[li_pick], occupancy[ni_pick] = 'Ni', 'Li'

        # 3. Li vacancies: x_li counts all Li per formula unit (antisite Li on the TM layer included); the vacancies
        #    are made among the Li of the Li layer
        n_li = math.floor(x_li * n_li_sites + 0.5)
        if not math.isclose(n_li, x_li * n_li_sites, abs_tol=1e-9):
            notes.append(
                f'x_li = {x_li} needs {x_li * n_li_sites:.3g} Li on {n_li_sites} Li sites: using {n_li} '
                f'Li (x_li = {n_li / n_li_sites:.4g})'
            )
        layer_li = self.li_sites[occupancy[self.li_sites] == 'Li']
        if n_li_sites - n_li > len(layer_li):
            raise ValueError(
                f'x_li = {x_li} leaves {n_li} Li, fewer than the {n_swap} Li on the TM layer that '
                f'antisite_fraction = {antisite_fraction} puts there: raise x_li or lower antisite_fraction'
            )
        vacancies = rng.choice(layer_li, n_li_sites - n_li, replace=False)
        occupancy[vacancies] = VACANCY

        record = {
            'x_li_actual': n_li / n_li_sites,
            'n_li': n_li,
            'tm_counts': counts,
            'composition_actual': {el: counts[el] / n_tm for el in TM_ELEMENTS},
            'n_antisite_pairs': n_swap,
        }
        return occupancy, record, notes

    def validate_occupancy(self, occupancy) -> np.ndarray:
        """The occupancy as a ``<U2`` array; ValueError for a wrong length or a symbol that is not an element."""
        from ase.data import atomic_numbers

        occupancy = np.asarray(occupancy, dtype='<U2')
        if occupancy.shape != (self.n_sites,):
            raise ValueError(
                f'occupancy must have one symbol per lattice site ({self.n_sites}); got shape {occupancy.shape}'
            )
        unknown = sorted({s for s in occupancy.tolist() if s != VACANCY and s not in atomic_numbers})
        if unknown:
            raise ValueError(f'unknown symbol(s) {unknown} in occupancy: use element symbols or {VACANCY!r}')
        return occupancy

    def to_atoms(self, occupancy):
        """ASE Atoms of the occupied sites, with ``arrays['site_index']`` and ``arrays['sublattice']``.

        The conversion itself is the GA engine's (:func:`aiida_nmcml.engine.ga_lattice.occupied_atoms`, no AiiDA), so a
        GA candidate and a built structure have one layout.
        """
        from .engine.ga_lattice import occupied_atoms

        return occupied_atoms(self.cell, self.positions, self.sublattice, self.validate_occupancy(occupancy))


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.array(array)
    array.flags.writeable = False
    return array


# ------------------------------------------------------------------------------------------------- composition
def check_composition(composition: Mapping[str, float]) -> dict[str, float]:
    """TM fractions as a full {Ni, Mn, Co} dict; ValueError for unknown elements, negatives or a sum other than 1."""
    if not isinstance(composition, Mapping):
        raise ValueError(f'composition must be a mapping such as {NMC811}; got {composition!r}')
    unknown = sorted(set(composition) - set(TM_ELEMENTS))
    if unknown:
        raise ValueError(
            f'unknown element(s) {unknown} in composition: only {", ".join(TM_ELEMENTS)} are allowed on '
            'the transition-metal sites (Li and O have their own sublattices)'
        )
    fractions = {el: float(composition.get(el, 0.0)) for el in TM_ELEMENTS}
    if any(not math.isfinite(v) or v < 0 for v in fractions.values()):
        raise ValueError(f'composition fractions must be non-negative numbers; got {dict(composition)}')
    total = sum(fractions.values())
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise ValueError(f'composition fractions must sum to 1 (per TM site); {dict(composition)} sums to {total:.6g}')
    return fractions


def tm_counts(composition: Mapping[str, float], n_tm: int) -> tuple[dict[str, int], str | None]:
    """Whole numbers of Ni, Mn, Co on ``n_tm`` sites by largest remainder, and a warning text if not exact."""
    fractions = check_composition(composition)
    exact = {el: fractions[el] * n_tm for el in TM_ELEMENTS}
    counts = {el: math.floor(v + 1e-9) for el, v in exact.items()}
    remainders = sorted(TM_ELEMENTS, key=lambda el: (-(exact[el] - counts[el]), TM_ELEMENTS.index(el)))
    for el in remainders[: n_tm - sum(counts.values())]:
        counts[el] += 1
    if all(math.isclose(counts[el], exact[el], abs_tol=1e-6) for el in TM_ELEMENTS):
        return counts, None
    wanted = ' '.join(f'{el}{fractions[el]:g}' for el in TM_ELEMENTS if fractions[el])
    got = ' '.join(f'{el}{counts[el]}' for el in TM_ELEMENTS if counts[el])
    return counts, (
        f'composition {wanted} is not exact on {n_tm} TM sites: using the nearest, {got} '
        f'({", ".join(f"{el} {counts[el] / n_tm:.3f}" for el in TM_ELEMENTS)}); NMC811 is exact on multiples of '
        '10 TM sites'
    )


# ---------------------------------------------------------------------------------- oxidation states and moments
def assign_oxidation_states(symbols, sublattice=None, rng=None, priority=None) -> np.ndarray:
    """Integer oxidation state per atom with Li+, O2-, Mn4+ fixed and the charge balance closed by Ni, then Co.

    Ni starts at 2+ and is oxidised one step at a time (all to 3+ first, then to 4+); TM-layer Ni in the order of
    ``priority`` (highest first, ties by index; :func:`oxidation_priority`), or in random order (``rng``) when no
    priority is given; Ni on the Li layer (antisites) last, because antisite Ni is Ni2+ in layered oxides. Only when
    every Ni is 4+ does Co go from 3+ to 4+. Raises ValueError when no assignment closes the balance (it would need Ni
    below 2+, or TMs beyond 4+).
    """
    symbols = np.asarray(symbols, dtype='<U2')
    rng = np.random.default_rng(rng)
    unknown = sorted(set(symbols.tolist()) - {'Li', 'O', *TM_ELEMENTS})
    if unknown:
        raise ValueError(f'no oxidation-state rule for {unknown}: only Li, O, Ni, Mn, Co are known')
    states = np.zeros(len(symbols), dtype=int)
    for el, q in FIXED_OXIDATION.items():
        states[symbols == el] = q
    states[symbols == 'Co'] = 3
    states[symbols == 'Ni'] = 2
    excess = -int(states.sum())  # positive charge still needed for neutrality
    formula = ' '.join(f'{el}{int(np.sum(symbols == el))}' for el in ('Li', *TM_ELEMENTS, 'O'))
    if excess < 0:
        raise ValueError(
            f'charge balance impossible for {formula}: it would need Ni below 2+ '
            f'({-excess} electrons too many); check the Li and O counts'
        )
    ni = np.flatnonzero(symbols == 'Ni')
    co = np.flatnonzero(symbols == 'Co')
    if priority is not None:  # deterministic: highest priority oxidised first, ties by index, antisite Ni last
        priority = np.asarray(priority, dtype=float)
        on_li = np.asarray(sublattice)[ni] == 'li' if sublattice is not None else np.zeros(len(ni), bool)
        ni = ni[np.lexsort((ni, -priority[ni], on_li))]
        co = co[np.lexsort((co, -priority[co]))]
    elif sublattice is not None:
        on_li = np.asarray(sublattice)[ni] == 'li'
        ni = np.concatenate([rng.permutation(ni[~on_li]), rng.permutation(ni[on_li])])
        co = rng.permutation(co)
    else:
        ni = rng.permutation(ni)
        co = rng.permutation(co)
    for ladder in (ni, ni, co):
        step = ladder[:excess]
        states[step] += 1
        excess -= len(step)
    if excess > 0:
        raise ValueError(
            f'charge balance impossible for {formula}: it would need transition metals beyond 4+ '
            f'({excess} holes left after all Ni and Co are 4+); add Li or remove O vacancies'
        )
    return states


def initial_magnetic_moments(symbols, oxidation_states, scheme: str = 'spin_only') -> np.ndarray:
    """Initial moments (µB): ``'spin_only'`` by oxidation state, ``'mp'`` the MP high-spin start, ``'none'`` zeros."""
    symbols = list(np.asarray(symbols, dtype='<U2'))
    if scheme == 'none':
        return np.zeros(len(symbols))
    if scheme == 'mp':
        return np.array([MP_MOMENTS.get(s, 0.0) for s in symbols])
    if scheme != 'spin_only':
        raise ValueError(f"unknown magnetic scheme {scheme!r}: use 'spin_only', 'mp' or 'none'")
    try:
        return np.array([SPIN_ONLY_MOMENTS[(s, int(q))] for s, q in zip(symbols, oxidation_states, strict=True)])
    except KeyError as exc:
        raise ValueError(f'no spin-only moment for {exc.args[0]}: known {sorted(SPIN_ONLY_MOMENTS)}') from None


#: Neighbour cutoff (Å) of the charge-ordering rule: TM-TM in-plane neighbours sit at a = 2.87 Å and the six nearest
#: Li-layer sites of a TM at 2.89 Å; the next shells are at 4.07 Å (Li layer) and 4.97 Å (TM), so 3.4 Å separates
#: them with room for relaxed or thermally displaced frames.
CHARGE_ORDER_CUTOFF = 3.4
#: Li-layer sites next to a TM-layer site in the ideal layered lattice (3 above, 3 below).
LI_LAYER_NEIGHBOURS = 6


def oxidation_priority(atoms, cutoff: float = CHARGE_ORDER_CUTOFF) -> np.ndarray:
    """Per-atom priority for oxidation (higher = oxidised first): empty Li-layer sites next to it minus Mn neighbours.

    The charge-ordering rule of :func:`dft_ready` (and :func:`build_nmc`): holes go first to the Ni (then Co) with the
    most Li vacancies among its six nearest Li-layer sites, which become Ni4+ first on delithiation (the vacancy
    removes the Li+ next to it); and last to Ni next to Mn, which stay Ni2+ (Ni2+/Mn4+ pairs, the usual charge order
    in Mn-containing layered oxides). Empty sites are counted as six minus the occupied Li-layer sites (Li or Ni_Li)
    within ``cutoff``, so a frame without vacancy placeholders works (GA candidates, MD snapshots). Needs
    ``arrays['sublattice']``.
    """
    from ase.neighborlist import neighbor_list

    symbols = np.asarray(atoms.get_chemical_symbols())
    sublattice = np.asarray(atoms.arrays['sublattice'])
    i, j = neighbor_list('ij', atoms, cutoff)
    occupied_li = np.bincount(i[sublattice[j] == 'li'], minlength=len(atoms))
    mn = np.bincount(i[symbols[j] == 'Mn'], minlength=len(atoms))
    empty = np.where(sublattice == 'tm', LI_LAYER_NEIGHBOURS - occupied_li, 0)
    priority = (empty - mn).astype(float)
    if 'site_index' in atoms.arrays:  # ties broken by lattice site, whatever the atom order in the frame
        priority -= 1e-6 * np.argsort(np.argsort(np.asarray(atoms.arrays['site_index']), kind='stable'))
    return priority


def dft_ready(atoms, scheme: str = 'spin_only'):
    """Oxidation states and initial moments from the sublattice labels, so a DFT run of this frame starts magnetic.

    Why: frames that did not come from :func:`build_nmc` (GA candidates, MD snapshots) carry the sublattice labels but
    no (or zero) moments; without this, pw.x/VASP would start spin-symmetric and converge non-magnetic. Which Ni carry
    which charge decides which DFT+U local minimum the SCF lands in (~0.1 eV per cell), so the choice is a fixed,
    documented charge order (:func:`oxidation_priority`: Ni4+ next to Li vacancies, Ni2+ next to Mn4+, ties by
    ``site_index`` then atom order), the same in every run. Modifies and returns ``atoms``; a composition with no
    charge-balanced assignment keeps its moments unchanged.
    """
    sublattice = atoms.arrays.get('sublattice')
    priority = oxidation_priority(atoms) if sublattice is not None else None
    try:
        states = assign_oxidation_states(atoms.get_chemical_symbols(), sublattice, rng=0, priority=priority)
    except ValueError:
        return atoms  # a composition with no charge-balanced assignment keeps its moments
    atoms.arrays['oxidation_state'] = states
    atoms.set_initial_magnetic_moments(initial_magnetic_moments(atoms.get_chemical_symbols(), states, scheme))
    return atoms


# ------------------------------------------------------------------------------------------------------ builder
def build_nmc(
    supercell=(1, 1, 1),
    x_li: float = 1.0,
    composition: Mapping[str, float] | None = None,
    seed: int | None = None,
    tm_order: Sequence[str] | None = None,
    antisite_fraction: float = 0.0,
    magnetic: bool | str = True,
):
    """Li_x(Ni,Mn,Co)O2 on a layered supercell, ready for DFT or MD.

    ``supercell``: target number of atoms (int), repeats (3-vector), a 3x3 matrix on the primitive cell, or an
    :class:`NmcLattice`. ``composition`` defaults to NMC811 (exact on multiples of 10 TM sites; otherwise the nearest
    counts with an :class:`NmcStructureWarning`). ``x_li`` in [0, 1] sets Li vacancies on the Li layer. ``seed``
    fixes the random TM order, vacancy and antisite sites (which Ni carry which charge then follows the charge order of
    :func:`oxidation_priority`); ``None`` draws one and records
    it. ``tm_order`` (one symbol per TM site) replaces the random TM order. ``antisite_fraction`` is the fraction of
    Li-layer *sites* holding Ni (each swapped with a TM-layer Ni), placed before Li is removed, so it does not depend on
    ``x_li``. ``magnetic``: True / ``'spin_only'`` (default scheme, see module
    docstring), ``'mp'``, or False (zero moments).

    Warnings are also recorded in ``atoms.info['nmcml']['warnings']``, so a stored structure says it was rounded.
    """
    lattice = supercell if isinstance(supercell, NmcLattice) else NmcLattice.from_supercell(supercell)
    scheme = {True: 'spin_only', False: 'none', None: 'none'}.get(magnetic, magnetic)
    if scheme not in ('spin_only', 'mp', 'none'):
        raise ValueError(f"magnetic must be True, False, 'spin_only' or 'mp'; got {magnetic!r}")
    if seed is None:
        seed = int(np.random.default_rng().integers(2**31))
    rng = np.random.default_rng(seed)
    occupancy, record, notes = lattice._occupancy(x_li, composition, rng, tm_order, antisite_fraction)
    for note in notes:
        warnings.warn(note, NmcStructureWarning, stacklevel=2)
    atoms = lattice.to_atoms(occupancy)
    states = assign_oxidation_states(
        atoms.get_chemical_symbols(), atoms.arrays['sublattice'], priority=oxidation_priority(atoms)
    )  # the charge order of dft_ready, so a built structure and a relabelled frame of it start alike
    atoms.arrays['oxidation_state'] = states
    atoms.set_initial_magnetic_moments(initial_magnetic_moments(atoms.get_chemical_symbols(), states, scheme))
    atoms.info['nmcml'] = {
        'x_li': float(x_li),
        'composition': check_composition(NMC811 if composition is None else composition)
        if tm_order is None or composition is not None
        else dict(record['composition_actual']),
        'seed': seed,
        'tm_order_given': tm_order is not None,
        'antisite_fraction': float(antisite_fraction),
        'magnetic': scheme,
        'supercell_matrix': lattice.matrix.tolist(),
        **record,
        'warnings': notes,
    }
    return atoms


# --------------------------------------------------------------------------------------------------- conversions
def _plain(value):
    """JSON-friendly copy (AiiDA attributes and pymatgen properties reject numpy scalars)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def kind_names(symbols, magmoms) -> list[str]:
    """One kind per distinct (element, initial moment): ``Ni``, ``Ni1``, ``Ni2`` in order of first appearance.

    QE sets ``starting_magnetization`` per species, so distinct starting moments need distinct kinds.
    """
    names: dict[tuple[str, float], str] = {}
    used: dict[str, int] = {}
    out = []
    for symbol, moment in zip(symbols, magmoms, strict=True):
        key = (symbol, round(float(moment), 4))
        if key not in names:
            n = used.get(symbol, 0)
            names[key] = symbol if n == 0 else f'{symbol}{n}'
            used[symbol] = n + 1
        out.append(names[key])
    return out


def to_structure_data(atoms):
    """Unstored StructureData with kinds split by initial moment and the NMC site data as attributes.

    Attributes (set before storing, so they are part of the node's identity): ``nmcml_sublattice``,
    ``nmcml_magmoms``, ``nmcml_kind_magmoms`` ({kind: moment}), and where present ``nmcml_site_index``,
    ``nmcml_oxidation_state`` and ``nmcml_info`` (the build request).
    """
    from aiida import orm
    from aiida.orm.nodes.data.structure import Kind, Site

    symbols = atoms.get_chemical_symbols()
    magmoms = atoms.get_initial_magnetic_moments()
    names = kind_names(symbols, magmoms)
    structure = orm.StructureData(cell=atoms.cell.array.tolist(), pbc=tuple(bool(p) for p in atoms.pbc))
    seen = set()
    for symbol, name, position in zip(symbols, names, atoms.positions, strict=True):
        if name not in seen:
            structure.append_kind(Kind(symbols=symbol, name=name))
            seen.add(name)
        structure.append_site(Site(kind_name=name, position=position.tolist()))
    attributes = {
        'nmcml_magmoms': [float(m) for m in magmoms],
        'nmcml_kind_magmoms': {name: float(m) for name, m in zip(names, magmoms, strict=True)},
    }
    if 'sublattice' in atoms.arrays:
        attributes['nmcml_sublattice'] = [str(s) for s in atoms.arrays['sublattice']]
    if 'site_index' in atoms.arrays:
        attributes['nmcml_site_index'] = [int(i) for i in atoms.arrays['site_index']]
    if 'oxidation_state' in atoms.arrays:
        attributes['nmcml_oxidation_state'] = [int(q) for q in atoms.arrays['oxidation_state']]
    if 'nmcml' in atoms.info:
        attributes['nmcml_info'] = _plain(atoms.info['nmcml'])
    for key, value in attributes.items():
        structure.base.attributes.set(key, value)
    return structure


def from_structure_data(node):
    """ASE Atoms from a StructureData, restoring sublattice, site index, oxidation states and initial moments.

    A StructureData without the ``nmcml_*`` attributes (e.g. a relaxed structure from a DFT code) gives plain Atoms:
    the sublattice is not guessed from element names.
    """
    atoms = node.get_ase()
    attrs = node.base.attributes.all
    n = len(atoms)
    if 'nmcml_magmoms' in attrs:
        atoms.set_initial_magnetic_moments(np.asarray(attrs['nmcml_magmoms'], dtype=float))
    for key, array, dtype in (
        ('nmcml_sublattice', 'sublattice', '<U2'),
        ('nmcml_site_index', 'site_index', int),
        ('nmcml_oxidation_state', 'oxidation_state', int),
    ):
        if key in attrs:
            values = np.asarray(attrs[key], dtype=dtype)
            if values.shape != (n,):
                raise ValueError(f'attribute {key} of StructureData<{node.pk}> has {len(values)} entries for {n} sites')
            atoms.arrays[array] = values
    if 'nmcml_info' in attrs:
        atoms.info['nmcml'] = attrs['nmcml_info']
    return atoms


def to_pymatgen(atoms):
    """pymatgen Structure with site properties ``sublattice``, ``magmom`` (and ``site_index``, ``oxidation_state``)."""
    from pymatgen.io.ase import AseAtomsAdaptor

    plain = atoms.copy()
    plain.calc = None
    plain.info = _plain(atoms.info)
    if not plain.has('initial_magmoms'):
        plain.set_initial_magnetic_moments(np.zeros(len(plain)))
    return AseAtomsAdaptor.get_structure(plain)


def from_pymatgen(structure):
    """Inverse of :func:`to_pymatgen`: ASE Atoms with the NMC arrays in their numpy types."""
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = AseAtomsAdaptor.get_atoms(structure, msonable=False)
    for name, dtype in (('sublattice', '<U2'), ('site_index', int), ('oxidation_state', int)):
        if name in atoms.arrays:
            atoms.arrays[name] = np.asarray(atoms.arrays[name], dtype=dtype)
    return atoms

"""Genetic operators that keep every sublattice's composition (ase-ga's do not: they would change x_li or Ni:Mn:Co).

All operators act on occupancies (arrays of symbols, ``'X'`` = vacancy) and only *permute* symbols within one
sublattice's sites, so the multiset of symbols on each sublattice, hence the composition, is invariant.
"""

from __future__ import annotations

import numpy as np


def swap_mutation(occupancy: np.ndarray, groups: dict[str, np.ndarray], rng, n_swaps: int = 1) -> np.ndarray:
    """Exchange the species of two sites of one sublattice that hold different species, ``n_swaps`` times."""
    child = occupancy.copy()
    names = list(groups)
    for _ in range(n_swaps):
        sites = groups[names[rng.integers(len(names))]]
        values = child[sites]
        if len(set(values.tolist())) < 2:
            continue
        i = rng.integers(len(sites))
        others = np.flatnonzero(values != values[i])
        j = others[rng.integers(len(others))]
        child[sites[i]], child[sites[j]] = values[j], values[i]
    return child


def cut_splice_crossover(
    a: np.ndarray, b: np.ndarray, groups: dict[str, np.ndarray], positions: np.ndarray, rng
) -> np.ndarray:
    """Sites on one side of a random plane come from parent ``a``, the rest from ``b``; then a repair step.

    Spatial blocks carry local orderings (a Li-vacancy stripe, a Mn-Co pair) from parent to child, which uniform
    crossover would break. Per sublattice, the spliced child may hold too many of one species and too few of another;
    the repair turns randomly chosen surplus sites from the ``b`` side into the missing species, so the composition is
    that of the parents.
    """
    child = a.copy()
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    for sites in groups.values():
        projection = positions[sites] @ direction
        cut = rng.uniform(projection.min(), projection.max()) if len(sites) > 1 else projection[0]
        from_b = projection > cut
        values = np.where(from_b, b[sites], a[sites])
        target = dict(zip(*np.unique(a[sites], return_counts=True), strict=True))
        have = dict(zip(*np.unique(values, return_counts=True), strict=True))
        missing = [s for s, n in target.items() for _ in range(n - have.get(s, 0)) if n > have.get(s, 0)]
        rng.shuffle(missing)
        for species, count in have.items():
            surplus = count - target.get(species, 0)
            if surplus <= 0:
                continue
            candidates = np.flatnonzero((values == species) & from_b)
            if len(candidates) < surplus:  # all on the a side: any site of that species will do
                candidates = np.flatnonzero(values == species)
            for idx in rng.choice(candidates, surplus, replace=False):
                values[idx] = missing.pop()
        child[sites] = values
    return child


def random_occupancy(start: np.ndarray, groups: dict[str, np.ndarray], rng) -> np.ndarray:
    """A uniformly random ordering with the start's compositions: a random permutation within each sublattice."""
    occ = start.copy()
    for sites in groups.values():
        occ[sites] = occ[sites][rng.permutation(len(sites))]
    return occ

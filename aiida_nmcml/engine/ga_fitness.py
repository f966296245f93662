"""Fitness functions of the GA: the MACE energy (production) and a screened-Coulomb pair energy (test double).

``pair`` is a *test double*: a quadratic form in the occupancy with nominal charges, exact, deterministic and ~1 µs
per configuration, so a small lattice can be enumerated exhaustively and the GA compared with the true ground state.
It is not a physical model of NMC and must never feed a result.
"""

from __future__ import annotations

import numpy as np

from .common import EngineError, check_finite_forces

PAIR_CHARGES = {'X': 0.0, 'Li': 1.0, 'Ni': 2.0, 'Co': 3.0, 'Mn': 4.0, 'O': -2.0}


class PairFitness:
    """E = 1/2 sum_ij q_i q_j J_ij, J_ij = sum over periodic images within ``cutoff`` of exp(-r/screening)/r."""

    name = 'pair'

    def __init__(self, lattice, cutoff: float = 6.0, screening: float = 3.0, charges: dict | None = None):
        from ase.neighborlist import neighbor_list

        self.charges = {**PAIR_CHARGES, **(charges or {})}
        atoms = lattice.lattice_atoms(lattice.start)
        i, j, d = neighbor_list('ijd', atoms, cutoff)
        n = len(atoms)
        self.J = np.zeros((n, n))
        np.add.at(self.J, (i, j), np.exp(-d / screening) / d)

    def energies(self, occupancies: list[np.ndarray]) -> np.ndarray:
        q = np.array([[self.charges[s] for s in occ] for occ in occupancies])
        return 0.5 * np.einsum('ki,ij,kj->k', q, self.J, q)

    def evaluate(self, lattice, occupancy) -> tuple[float, object]:
        return float(self.energies([occupancy])[0]), None

    def exhaustive(self, lattice) -> tuple[np.ndarray, list[list[tuple]]]:
        """Energies of *every* composition-preserving occupancy, as an array with one axis per mixed sublattice.

        The quadratic form splits into per-sublattice and pairwise blocks, so this costs matrix products instead
        of one evaluation per configuration (10^5 configurations in well under a second).
        """
        from .ga_lattice import multiset_permutations

        groups = lattice.groups
        fixed = np.ones(len(lattice.start), bool)
        q_fixed = np.array([self.charges[s] for s in lattice.start])
        orderings, blocks = [], []
        for sites in groups.values():
            fixed[sites] = False
            perms = multiset_permutations(lattice.start[sites].tolist())
            orderings.append(perms)
            blocks.append((sites, np.array([[self.charges[s] for s in p] for p in perms])))
        q_fixed[~fixed] = 0.0
        total = np.array(0.5 * q_fixed @ self.J @ q_fixed)
        m = len(blocks)
        for g, (sites_g, q_g) in enumerate(blocks):
            own = 0.5 * np.einsum('ai,ij,aj->a', q_g, self.J[np.ix_(sites_g, sites_g)], q_g)
            own += q_g @ (self.J[sites_g] @ q_fixed)
            shape = [1] * m
            shape[g] = len(q_g)
            total = total + own.reshape(shape)
            for h in range(g + 1, m):
                sites_h, q_h = blocks[h]
                cross = q_g @ self.J[np.ix_(sites_g, sites_h)] @ q_h.T
                shape = [1] * m
                shape[g], shape[h] = len(q_g), len(q_h)
                total = total + cross.reshape(shape)
        return total, orderings


class MaceFitness:
    """Model energy (driver model) after an optional short relaxation of positions at fixed cell."""

    name = 'mace'

    def __init__(
        self, models: list, device: str = 'auto', dtype: str = 'float64', relax_steps: int = 0, fmax: float = 0.05
    ):
        from .common import make_calculator

        self.calc = make_calculator(models[:1], device=device, dtype=dtype)
        self.relax_steps = int(relax_steps)
        self.fmax = float(fmax)

    def evaluate(self, lattice, occupancy):
        atoms = lattice.to_atoms(occupancy)
        atoms.calc = self.calc
        if self.relax_steps > 0:
            from ase.optimize import FIRE

            FIRE(atoms, logfile=None).run(fmax=self.fmax, steps=self.relax_steps)
        check_finite_forces(atoms.get_forces(), 'in a GA fitness evaluation')
        energy = float(atoms.get_potential_energy())
        atoms.calc = None
        return energy, atoms


def make_fitness(config: dict, lattice):
    kind = config.get('fitness', 'mace')
    if kind == 'pair':
        return PairFitness(lattice, **(config.get('pair') or {}))
    if kind == 'mace':
        relax = config.get('relax') or {}
        return MaceFitness(
            config.get('models') or [],
            device=config.get('device', 'auto'),
            dtype=config.get('dtype', 'float64'),
            relax_steps=relax.get('steps', 0),
            fmax=relax.get('fmax', 0.05),
        )
    raise EngineError('invalid_input', f"fitness {kind!r} unknown: use 'mace' (or 'pair', a test double)")

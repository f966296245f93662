"""Fitness functions of the GA: the MACE committee energy (production) and two pair energies (test doubles).

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

    def __init__(
        self, lattice, cutoff: float = 6.0, screening: float = 3.0, charges: dict | None = None, coupling=None
    ):
        from ase.neighborlist import neighbor_list

        self.charges = {**PAIR_CHARGES, **(charges or {})}
        atoms = lattice.lattice_atoms(lattice.start)
        i, j, d = neighbor_list('ijd', atoms, cutoff)
        n = len(atoms)
        self.J = np.zeros((n, n))
        np.add.at(self.J, (i, j), np.exp(-d / screening) / d if coupling is None else coupling(d))

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


class RandomPairFitness:
    """A *test double* no code was tuned on: a random pair expansion drawn from ``seed``.

    E = sum over ``channels`` c of 1/2 sum_ij q_c(s_i) q_c(s_j) V_c(shell(r_ij)): per channel, random species
    "charges" q_c and a random coupling per distance shell (distances rounded to 0.01 Å) within ``cutoff``. Shells are
    invariant under every isometry of the lattice, so symmetry-equivalent orderings keep equal energies, and the
    quadratic form keeps :meth:`exhaustive` cheap. Benchmarks use it so that the GA's settings cannot have been tuned
    to the energy landscape they are measured on.
    """

    name = 'random_pair'

    def __init__(self, lattice, seed: int = 0, channels: int = 3, cutoff: float = 6.0):
        from ase.neighborlist import neighbor_list

        rng = np.random.default_rng(seed)
        _, _, d = neighbor_list('ijd', lattice.lattice_atoms(lattice.start), cutoff)
        shells = np.unique(np.round(d, 2))
        species = sorted(set(PAIR_CHARGES) | set(lattice.start.tolist()))
        self.channels = []
        for _ in range(int(channels)):
            charges = dict(zip(species, rng.normal(size=len(species)).tolist(), strict=True))
            values = rng.normal(size=len(shells))

            def coupling(r, values=values):
                return values[np.searchsorted(shells, np.round(r, 2))]

            self.channels.append(PairFitness(lattice, cutoff=cutoff, charges=charges, coupling=coupling))

    def energies(self, occupancies: list[np.ndarray]) -> np.ndarray:
        return sum(channel.energies(occupancies) for channel in self.channels)

    def evaluate(self, lattice, occupancy) -> tuple[float, object]:
        return float(self.energies([occupancy])[0]), None

    def exhaustive(self, lattice):
        total, orderings = None, None
        for channel in self.channels:
            energies, orderings = channel.exhaustive(lattice)
            total = energies if total is None else total + energies
        return total, orderings


class MaceFitness:
    """Committee-mean model energy after an optional short relaxation of positions (mean forces) at fixed cell.

    Why the mean: ranking by one member lets the GA exploit that member's errors and find "too good" orderings where
    the model was never trained; the mean is less exploitable, and the spread (standard deviation of the members'
    energies) is returned with every candidate so that low-energy, high-spread orderings can go to DFT.
    """

    name = 'mace'

    def __init__(
        self, models: list, device: str = 'auto', dtype: str = 'float64', relax_steps: int = 0, fmax: float = 0.05
    ):
        from .common import make_calculator

        if not models:
            raise EngineError('invalid_input', 'the mace fitness needs at least one model')
        self.calc = make_calculator(list(models), device=device, dtype=dtype)
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
        members = self.calc.results.get('energy_comm')
        extra = {}
        if members is not None and np.size(members) > 1:
            members = np.asarray(members, dtype=float).ravel()
            extra = {'members': members.tolist(), 'spread': float(members.std())}
        atoms.calc = None
        return energy, atoms, extra


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

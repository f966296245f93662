"""``aiida-nmcml-engine ga``: genetic search over orderings on a fixed lattice (Li/vacancy, Ni/Mn/Co, antisites).

Input (defaults in :data:`DEFAULTS`)::

    lattice: lattice.extxyz     # starting occupancy, vacancies as X, arrays['sublattice']; fixes the compositions
    fitness: mace | pair        # pair: a test double (see ga_fitness)
    models: [...]               # for mace; member 0 is the fitness model
    relax: {steps: 0, fmax: 0.05}
    population_size, generations, elitism, patience, top_k, seed ...

Outputs: ``ga_results.json`` (top-K distinct orderings with energies and occupancies, history, evaluation counts),
``top_candidates.extxyz`` (those structures, vacancies dropped), ``ga_history.dat``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .common import EngineError, write_json
from .ga_fitness import make_fitness
from .ga_lattice import Lattice
from .ga_operators import cut_splice_crossover, random_occupancy, swap_mutation

RESULTS = 'ga_results.json'
TOP_CANDIDATES = 'top_candidates.extxyz'
HISTORY = 'ga_history.dat'

DEFAULTS = {
    'lattice': 'lattice.extxyz',
    'fitness': 'mace',
    'population_size': 12,
    'generations': 30,
    'elitism': 2,
    'tournament_size': 3,
    'crossover_rate': 0.8,
    'mutation_rate': 0.3,
    'max_swaps': 2,
    'patience': 8,  # converged when the best energy has not improved for this many generations
    'tolerance_eV': 1e-6,
    'top_k': 5,
    'seed': 0,
    'max_evaluations': None,
    'target_energy': None,  # benchmarks: stop as soon as an energy <= target is found
    'require_convergence': False,
}


@dataclass
class Individual:
    energy: float
    key: str
    occupancy: np.ndarray


@dataclass
class SearchResult:
    population: list[Individual]
    evaluated: dict[str, Individual]
    history: list[dict] = field(default_factory=list)
    converged: bool = False
    evaluations_to_best: int = 0
    structures: dict = field(default_factory=dict)

    def top(self, k: int) -> list[Individual]:
        return sorted(self.evaluated.values(), key=lambda ind: ind.energy)[:k]


class GeneticSearch:
    """Generational GA with elitism and tournament selection; the population never holds two equivalent orderings."""

    def __init__(self, lattice: Lattice, fitness, params: dict):
        self.lattice = lattice
        self.fitness = fitness
        self.p = {**DEFAULTS, **params}
        self.rng = np.random.default_rng(int(self.p['seed']))
        self.groups = lattice.groups
        self.evaluated: dict[str, Individual] = {}
        self.structures: dict = {}
        self.best_energy = np.inf
        self.evaluations_to_best = 0
        if self.p['population_size'] < 2 or self.p['elitism'] >= self.p['population_size']:
            raise EngineError('invalid_input', 'population_size must be >= 2 and larger than elitism')

    @property
    def n_evaluations(self) -> int:
        return len(self.evaluated)

    def _budget_left(self) -> bool:
        budget = self.p['max_evaluations']
        target = self.p['target_energy']
        if target is not None and self.best_energy <= float(target) + 1e-9:
            return False
        return budget is None or self.n_evaluations < int(budget)

    def evaluate(self, occupancy) -> Individual:
        key = self.lattice.canonical_key(occupancy)
        if key not in self.evaluated:
            energy, atoms = self.fitness.evaluate(self.lattice, occupancy)
            self.evaluated[key] = Individual(energy, key, occupancy.copy())
            if atoms is not None:
                self.structures[key] = atoms
            if energy < self.best_energy - float(self.p['tolerance_eV']):
                self.best_energy = energy
                self.evaluations_to_best = self.n_evaluations
        return self.evaluated[key]

    def _new_child(self, population: list[Individual], taken: set[str]) -> np.ndarray:
        """A child whose ordering is not yet in the population, preferring ones never evaluated."""
        child = None
        for attempt in range(30):
            a, b = self._select(population), self._select(population)
            if self.rng.random() < self.p['crossover_rate']:
                child = cut_splice_crossover(a.occupancy, b.occupancy, self.groups, self.lattice.positions, self.rng)
            else:
                child = a.occupancy.copy()
            if self.rng.random() < self.p['mutation_rate'] or attempt > 0 or np.array_equal(child, a.occupancy):
                n_swaps = int(self.rng.integers(1, int(self.p['max_swaps']) + 1)) + attempt // 10
                child = swap_mutation(child, self.groups, self.rng, n_swaps)
            key = self.lattice.canonical_key(child)
            if key not in taken and (key not in self.evaluated or attempt >= 20):
                return child
        return random_occupancy(self.lattice.start, self.groups, self.rng)

    def _select(self, population: list[Individual]) -> Individual:
        picks = self.rng.choice(len(population), min(int(self.p['tournament_size']), len(population)), replace=False)
        return population[int(min(picks))]  # population is sorted by energy

    def run(self) -> SearchResult:
        size = int(self.p['population_size'])
        population: dict[str, Individual] = {}
        for _ in range(50 * size):
            if len(population) >= size or not self._budget_left():
                break
            ind = self.evaluate(random_occupancy(self.lattice.start, self.groups, self.rng))
            population[ind.key] = ind
        pop = sorted(population.values(), key=lambda ind: ind.energy)
        history = [self._record(0, pop)]
        stale, converged = 0, False
        for generation in range(1, int(self.p['generations']) + 1):
            if not self._budget_left():
                break
            best_before = pop[0].energy
            nxt = {ind.key: ind for ind in pop[: int(self.p['elitism'])]}
            while len(nxt) < len(pop) and self._budget_left():
                ind = self.evaluate(self._new_child(pop, set(nxt)))
                nxt.setdefault(ind.key, ind)
            merged = {**{i.key: i for i in pop}, **nxt} if len(nxt) < len(pop) else nxt
            pop = sorted(merged.values(), key=lambda ind: ind.energy)[:size]
            history.append(self._record(generation, pop))
            stale = stale + 1 if pop[0].energy > best_before - float(self.p['tolerance_eV']) else 0
            if stale >= int(self.p['patience']):
                converged = True
                break
        return SearchResult(pop, self.evaluated, history, converged, self.evaluations_to_best, self.structures)

    def _record(self, generation: int, pop: list[Individual]) -> dict:
        energies = np.array([ind.energy for ind in pop])
        return {
            'generation': generation,
            'best_energy': float(energies.min()),
            'mean_energy': float(energies.mean()),
            'evaluations': self.n_evaluations,
        }


def write_outputs(lattice: Lattice, result: SearchResult, params: dict, wall_s: float) -> dict:
    from ase.io import write

    top = result.top(int(params['top_k']))
    frames = []
    for rank, ind in enumerate(top):
        atoms = result.structures.get(ind.key)
        atoms = atoms.copy() if atoms is not None else lattice.to_atoms(ind.occupancy)
        atoms.info.update(
            {'rank': rank, 'ga_energy': ind.energy, 'canonical_key': ind.key, 'config_type': 'ga_candidate'}
        )
        frames.append(atoms)
    write(TOP_CANDIDATES, frames, format='extxyz')
    with open(HISTORY, 'w') as handle:
        handle.write('# generation best_energy mean_energy evaluations\n')
        for row in result.history:
            handle.write(
                f'{row["generation"]} {row["best_energy"]:.10g} {row["mean_energy"]:.10g} {row["evaluations"]}\n'
            )
    summary = {
        'fitness': params['fitness'],
        'converged': result.converged,
        'generations_run': result.history[-1]['generation'],
        'evaluations': len(result.evaluated),
        'evaluations_to_best': result.evaluations_to_best,
        'best_energy': top[0].energy,
        'n_sites': len(lattice.start),
        'composition': lattice.composition(lattice.start),
        'symmetry_operations': len(lattice.permutations),
        'wall_s': wall_s,
        'top': [
            {
                'rank': r,
                'energy': ind.energy,
                'energy_per_atom': ind.energy / len(frames[r]),
                'canonical_key': ind.key,
                'occupancy': ind.occupancy.tolist(),
            }
            for r, ind in enumerate(top)
        ],
        'history': result.history,
    }
    write_json(RESULTS, summary)
    return summary


def run(config: dict) -> dict:
    params = {**DEFAULTS, **config}
    lattice = Lattice.read(params['lattice'])
    if not lattice.groups:
        raise EngineError(
            'invalid_input',
            'the lattice has a single ordering (no sublattice mixes two species): '
            'set x_li < 1 or a mixed TM composition',
        )
    fitness = make_fitness(params, lattice)
    started = time.perf_counter()
    result = GeneticSearch(lattice, fitness, params).run()
    summary = write_outputs(lattice, result, params, time.perf_counter() - started)
    if params['require_convergence'] and not result.converged:
        raise EngineError(
            'ga_not_converged',
            f'best energy still improving after {summary["generations_run"]} '
            'generations: raise generations or patience; the top candidates so far are in the outputs',
        )
    return summary

"""``aiida-nmcml-engine ga``: genetic search over orderings on a fixed lattice (Li/vacancy, Ni/Mn/Co, antisites).

Input (defaults in :data:`DEFAULTS`)::

    lattice: lattice.extxyz     # starting occupancy, vacancies as X, arrays['sublattice']; fixes the compositions
    fitness: mace | pair        # pair: a test double (see ga_fitness)
    models: [...]               # for mace: the committee; the fitness is the committee mean, its spread is reported
    relax: {steps: 0, fmax: 0.05}
    islands, agree, population_size, patience, patience_per_ln_class, max_evaluations, top_k, spanning_k, seed ...

Outputs: ``ga_results.json`` (top-K distinct orderings with energies and occupancies, history, evaluation counts),
``top_candidates.extxyz`` (those structures, vacancies dropped), ``ga_history.dat``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from . import ga_config
from .common import EngineError, write_json
from .ga_fitness import make_fitness
from .ga_lattice import Lattice
from .ga_operators import cut_splice_crossover, random_occupancy, swap_mutation

RESULTS = 'ga_results.json'
TOP_CANDIDATES = 'top_candidates.extxyz'
HISTORY = 'ga_history.dat'

DEFAULTS = ga_config.DEFAULTS  # every key, range and default: aiida_nmcml/engine/ga_config.py


@dataclass
class Individual:
    energy: float
    key: str
    occupancy: np.ndarray
    spread: float | None = None  # committee standard deviation of the energy (eV), when the fitness has one
    members: list | None = None  # per-member energies (eV)


@dataclass
class SearchResult:
    population: list[Individual]
    evaluated: dict[str, Individual]
    history: list[dict] = field(default_factory=list)
    converged: bool = False
    evaluations_to_best: int = 0
    structures: dict = field(default_factory=dict)
    stop_reason: str = ''
    n_classes: float = 0.0
    island_best: list[str] = field(default_factory=list)
    restarts: int = 0

    def top(self, k: int) -> list[Individual]:
        return sorted(self.evaluated.values(), key=lambda ind: ind.energy)[:k]

    def spanning(self, k: int) -> list[Individual]:
        """``k`` distinct orderings whose energies spread evenly from the lowest to the highest seen (best first).

        Why: a DFT check of the model's ranking needs energy differences larger than the model's error; the top-K
        alone can sit within a few meV of each other.
        """
        ranked = sorted(self.evaluated.values(), key=lambda ind: ind.energy)
        if k <= 0 or not ranked:
            return []
        energies = np.array([ind.energy for ind in ranked])
        chosen: list[int] = []
        for target in np.linspace(energies[0], energies[-1], k):
            free = [i for i in range(len(ranked)) if i not in chosen]
            if not free:
                break
            chosen.append(min(free, key=lambda i: abs(energies[i] - target)))
        return [ranked[i] for i in sorted(chosen)]


@dataclass
class Island:
    """One independent sub-population: its own random stream, population and memory of what it has visited."""

    rng: np.random.Generator
    population: list[Individual] = field(default_factory=list)
    seen: set = field(default_factory=set)
    best: float = np.inf
    stale: int = 0
    restarts: int = 0


class GeneticSearch:
    """Island GA with elitism and tournament selection; no population holds two equivalent orderings.

    Why islands: a single population that stops when its best has not improved for a fixed number of generations
    stops too early on large lattices (on a 5e4-class benchmark it reported a non-ground state as converged in 8 of
    10 seeds). Here ``islands`` sub-populations evolve independently (own random streams, no migration); all share
    one energy cache, so an ordering is evaluated once whichever island proposes it. The search is converged only
    when ``agree`` islands have *independently* reached the same best ordering and the overall best has not improved
    for ``patience_per_ln_class * ln(n_classes)`` evaluations, so the stopping point grows with the search space.
    An island that stalls (``patience`` generations without improving) on a worse ordering is restarted from random
    orderings. ``max_evaluations`` caps the cost; hitting it means "not converged".
    """

    def __init__(self, lattice: Lattice, fitness, params: dict):
        self.lattice = lattice
        self.fitness = fitness
        self.p = {**DEFAULTS, **params}
        self.groups = lattice.groups
        self.evaluated: dict[str, Individual] = {}
        self.structures: dict = {}
        self.best_energy = np.inf
        self.best_key = ''
        self.evaluations_to_best = 0
        if self.p['population_size'] < 2 or self.p['elitism'] >= self.p['population_size']:
            raise EngineError('invalid_input', 'population_size must be >= 2 and larger than elitism')
        if not 1 <= int(self.p['agree']) <= int(self.p['islands']):
            raise EngineError('invalid_input', 'agree must be between 1 and the number of islands')
        streams = np.random.SeedSequence(int(self.p['seed'])).spawn(int(self.p['islands']))
        self.islands = [Island(np.random.default_rng(stream)) for stream in streams]
        self.n_classes = lattice.n_classes() if self.groups else 1.0
        per_ln_class = float(self.p['patience_per_ln_class'])
        self.patience_evaluations = int(np.ceil(per_ln_class * np.log(max(self.n_classes, 2.0))))
        self.exhaustive_at = round(self.n_classes)  # every symmetry class evaluated: the minimum is known

    @property
    def n_evaluations(self) -> int:
        return len(self.evaluated)

    def _budget_left(self) -> bool:
        target = self.p['target_energy']
        if target is not None and self.best_energy <= float(target) + 1e-9:
            return False
        budget = self.p['max_evaluations']
        return budget is None or self.n_evaluations < int(budget)

    def evaluate(self, occupancy, island: Island | None = None) -> Individual:
        key = self.lattice.canonical_key(occupancy)
        if island is not None:
            island.seen.add(key)
        if key not in self.evaluated:
            energy, atoms, extra = _call_fitness(self.fitness, self.lattice, occupancy)
            self.evaluated[key] = Individual(energy, key, occupancy.copy(), extra.get('spread'), extra.get('members'))
            if atoms is not None:
                self.structures[key] = atoms
            if energy < self.best_energy - float(self.p['tolerance_eV']):
                self.evaluations_to_best = self.n_evaluations
            if energy < self.best_energy:
                self.best_energy, self.best_key = energy, key
        return self.evaluated[key]

    def _new_child(self, island: Island, taken: set[str]) -> np.ndarray:
        """A child whose ordering is not in the island's population, preferring ones the island has not visited."""
        population, rng = island.population, island.rng
        for attempt in range(30):
            a, b = self._select(population, rng), self._select(population, rng)
            if rng.random() < self.p['crossover_rate']:
                child = cut_splice_crossover(a.occupancy, b.occupancy, self.groups, self.lattice.positions, rng)
            else:
                child = a.occupancy.copy()
            if rng.random() < self.p['mutation_rate'] or attempt > 0 or np.array_equal(child, a.occupancy):
                n_swaps = int(rng.integers(1, int(self.p['max_swaps']) + 1)) + attempt // 10
                child = swap_mutation(child, self.groups, rng, n_swaps)
            key = self.lattice.canonical_key(child)
            if key not in taken and (key not in island.seen or attempt >= 20):
                return child
        return random_occupancy(self.lattice.start, self.groups, rng)

    def _select(self, population: list[Individual], rng) -> Individual:
        picks = rng.choice(len(population), min(int(self.p['tournament_size']), len(population)), replace=False)
        return population[int(min(picks))]  # population is sorted by energy

    def _seed_island(self, island: Island) -> None:
        size = int(self.p['population_size'])
        members: dict[str, Individual] = {}
        for _ in range(50 * size):
            if len(members) >= size or not self._budget_left():
                break
            ind = self.evaluate(random_occupancy(self.lattice.start, self.groups, island.rng), island)
            members[ind.key] = ind
        island.population = sorted(members.values(), key=lambda ind: ind.energy)
        island.best = island.population[0].energy if island.population else np.inf
        island.stale = 0

    def _step(self, island: Island) -> None:
        pop = island.population
        nxt = {ind.key: ind for ind in pop[: int(self.p['elitism'])]}
        for _ in range(20 * len(pop)):  # bounded: a tiny space may hold fewer new orderings than the population
            if len(nxt) >= len(pop) or not self._budget_left():
                break
            ind = self.evaluate(self._new_child(island, set(nxt)), island)
            nxt.setdefault(ind.key, ind)
        merged = {**{i.key: i for i in pop}, **nxt} if len(nxt) < len(pop) else nxt
        island.population = sorted(merged.values(), key=lambda ind: ind.energy)[: int(self.p['population_size'])]
        if island.population[0].energy < island.best - float(self.p['tolerance_eV']):
            island.best, island.stale = island.population[0].energy, 0
        else:
            island.stale += 1

    def _agreeing(self) -> int:
        return sum(1 for isl in self.islands if isl.population and isl.population[0].key == self.best_key)

    def run(self) -> SearchResult:
        if not self.groups:  # a single ordering: nothing to search
            ind = self.evaluate(self.lattice.start.copy())
            return self._result([ind], [self._record(0)], True, 'single ordering')
        for island in self.islands:
            self._seed_island(island)
        history = [self._record(0)]
        converged, reason = False, 'generations exhausted'
        for generation in range(1, int(self.p['generations']) + 1):
            if not self._budget_left():
                reason = 'target reached' if self.p['target_energy'] is not None and self._target_hit() else 'budget'
                break
            for island in self.islands:
                if island.population and self._budget_left():
                    self._step(island)
            for island in self.islands:  # restart stalled islands that hold a worse best than the overall one
                stalled = island.stale >= int(self.p['patience'])
                if stalled and island.population and island.population[0].key != self.best_key and self._budget_left():
                    island.restarts += 1
                    island.seen = set()
                    self._seed_island(island)
            history.append(self._record(generation))
            if self.n_evaluations >= self.exhaustive_at:
                converged, reason = True, 'every ordering evaluated'
                break
            quiet = self.n_evaluations - self.evaluations_to_best
            if self._agreeing() >= int(self.p['agree']) and quiet >= self.patience_evaluations:
                converged, reason = True, 'islands agree'
                break
        population = sorted(
            {i.key: i for isl in self.islands for i in isl.population}.values(), key=lambda ind: ind.energy
        )
        return self._result(population, history, converged, reason)

    def _target_hit(self) -> bool:
        return self.best_energy <= float(self.p['target_energy']) + 1e-9

    def _result(self, population, history, converged, reason) -> SearchResult:
        return SearchResult(
            population,
            self.evaluated,
            history,
            converged,
            self.evaluations_to_best,
            self.structures,
            stop_reason=reason,
            n_classes=float(self.n_classes),
            island_best=[isl.population[0].key if isl.population else '' for isl in self.islands],
            restarts=sum(isl.restarts for isl in self.islands),
        )

    def _record(self, generation: int) -> dict:
        energies = np.array([ind.energy for isl in self.islands for ind in isl.population] or [self.best_energy])
        return {
            'generation': generation,
            'best_energy': float(self.best_energy),
            'mean_energy': float(energies.mean()),
            'evaluations': self.n_evaluations,
            'islands_agreeing': self._agreeing(),
        }


def _call_fitness(fitness, lattice, occupancy) -> tuple[float, object, dict]:
    """(energy, atoms or None, extra): fitness objects may return 2 values or 3 (with committee information)."""
    out = fitness.evaluate(lattice, occupancy)
    if len(out) == 3:
        return float(out[0]), out[1], dict(out[2] or {})
    return float(out[0]), out[1], {}


def _entry(ind: Individual, n_atoms: int, **extra) -> dict:
    return {
        **extra,
        'energy': ind.energy,
        'energy_per_atom': ind.energy / n_atoms,
        'spread': ind.spread,
        'member_energies': ind.members,
        'canonical_key': ind.key,
        'occupancy': ind.occupancy.tolist(),
    }


def write_outputs(lattice: Lattice, result: SearchResult, params: dict, wall_s: float) -> dict:
    """``top_candidates.extxyz``: the top-K (``info['set'] = 'top'``, by rank), then the energy-spanning set (``span``).

    ``ga_results.json`` lists the same structures in the same order (``top``, then ``spanning``), with the committee
    mean energy, its spread and the per-member energies when the fitness is a committee.
    """
    from ase.io import write

    top = result.top(int(params['top_k']))
    spanning = result.spanning(int(params.get('spanning_k') or 0))
    frames = []
    for label, chosen in (('top', top), ('span', spanning)):
        for rank, ind in enumerate(chosen):
            atoms = result.structures.get(ind.key)
            atoms = atoms.copy() if atoms is not None else lattice.to_atoms(ind.occupancy)
            atoms.info.update(
                {
                    'set': label,
                    'rank': rank,
                    'ga_energy': ind.energy,
                    'canonical_key': ind.key,
                    'config_type': 'ga_candidate',
                }
            )
            if ind.spread is not None:
                atoms.info['ga_spread'] = ind.spread
            frames.append(atoms)
    write(TOP_CANDIDATES, frames, format='extxyz')
    with open(HISTORY, 'w') as handle:
        handle.write('# generation best_energy mean_energy evaluations\n')
        for row in result.history:
            handle.write(
                f'{row["generation"]} {row["best_energy"]:.10g} {row["mean_energy"]:.10g} {row["evaluations"]}\n'
            )
    n_atoms = len(frames[0])
    summary = {
        'fitness': params['fitness'],
        'converged': result.converged,
        'stop_reason': result.stop_reason,
        'generations_run': result.history[-1]['generation'],
        'evaluations': len(result.evaluated),
        'evaluations_to_best': result.evaluations_to_best,
        'best_energy': top[0].energy,
        'best_spread': top[0].spread,
        'n_sites': len(lattice.start),
        'n_atoms': n_atoms,
        'composition': lattice.composition(lattice.start),
        'symmetry_operations': len(lattice.permutations),
        'symmetry_classes': result.n_classes,
        'islands_best': result.island_best,
        'island_restarts': result.restarts,
        'wall_s': wall_s,
        'top': [_entry(ind, n_atoms, rank=r) for r, ind in enumerate(top)],
        'spanning': [_entry(ind, n_atoms, rank=r) for r, ind in enumerate(spanning)],
        'history': result.history,
    }
    write_json(RESULTS, summary)
    return summary


def run(config: dict) -> dict:
    errors = ga_config.SCHEMA.errors(config, 'ga')
    if errors:
        raise EngineError('invalid_input', '; '.join(errors))
    params = ga_config.SCHEMA.with_defaults(config)
    lattice = Lattice.read(params['lattice'])
    fitness = make_fitness(params, lattice)
    started = time.perf_counter()
    result = GeneticSearch(lattice, fitness, params).run()  # a lattice with a single ordering: one evaluation
    summary = write_outputs(lattice, result, params, time.perf_counter() - started)
    if params['require_convergence'] and not result.converged:
        raise EngineError(
            'ga_not_converged',
            f'stopped ({result.stop_reason}) after {summary["evaluations"]} evaluations before {params["agree"]} '
            'islands agreed on the best ordering: raise max_evaluations; the top candidates so far are in the outputs',
        )
    return summary

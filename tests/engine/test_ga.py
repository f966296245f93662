"""The genetic search: operators keep compositions, symmetry dedup, GA vs exhaustive enumeration, the engine run."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
from ase.io import read
from hypothesis import given, settings
from hypothesis import strategies as st

from aiida_nmcml.engine import ga
from aiida_nmcml.engine.ga_fitness import PairFitness
from aiida_nmcml.engine.ga_lattice import Lattice, enumerate_occupancies
from aiida_nmcml.engine.ga_operators import cut_splice_crossover, random_occupancy, swap_mutation
from aiida_nmcml.structures import NmcLattice


def make_lattice(supercell, x_li, composition, antisite_fraction=0.0, seed=1) -> Lattice:
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        nmc = NmcLattice.from_supercell(supercell)
        occ = nmc.default_occupancy(x_li=x_li, composition=composition, seed=seed, antisite_fraction=antisite_fraction)
    return Lattice.from_nmc(nmc, occ)


ANTISITE = make_lattice((2, 2, 2), 0.5, {'Ni': 0.75, 'Mn': 0.125, 'Co': 0.125}, antisite_fraction=0.125)
SMALL = make_lattice((3, 3, 1), 4 / 9, {'Ni': 7 / 9, 'Mn': 1 / 9, 'Co': 1 / 9})


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31), n_swaps=st.integers(1, 5))
def test_operators_preserve_every_sublattice_composition(seed, n_swaps):
    """Li/vacancy, Ni/Mn/Co and the Li/Ni antisites: every operator only permutes within a sublattice."""
    lat = ANTISITE
    assert lat.composition(lat.start)['li'].get('Ni') == 1  # the antisite pair is really there
    rng = np.random.default_rng(seed)
    a = random_occupancy(lat.start, lat.groups, rng)
    b = random_occupancy(lat.start, lat.groups, rng)
    target = lat.composition(lat.start)
    assert lat.composition(a) == target
    assert lat.composition(swap_mutation(a, lat.groups, rng, n_swaps)) == target
    child = cut_splice_crossover(a, b, lat.groups, lat.positions, rng)
    assert lat.composition(child) == target
    assert np.all(child[lat.sublattice == 'o'] == 'O')


def test_swap_mutation_changes_the_ordering():
    rng = np.random.default_rng(0)
    occ = random_occupancy(SMALL.start, SMALL.groups, rng)
    assert sum(int(np.any(swap_mutation(occ, SMALL.groups, rng) != occ)) for _ in range(20)) == 20


def test_canonical_key_identifies_symmetry_equivalents():
    """Images under every lattice symmetry share a key; configurations sharing a key share the (symmetric) pair
    energy; and the keys split 3920 orderings into far fewer classes than configurations."""
    lat = make_lattice((2, 2, 2), 0.5, {'Ni': 0.75, 'Mn': 0.125, 'Co': 0.125})
    perms = lat.permutations
    assert len(perms) > 8  # more than the 8 supercell translations: rotations are found too
    rng = np.random.default_rng(1)
    occ = random_occupancy(lat.start, lat.groups, rng)
    for perm in perms[:: max(1, len(perms) // 12)]:
        image = np.empty_like(occ)
        image[perm] = occ
        assert lat.canonical_key(image) == lat.canonical_key(occ)
    configs = list(enumerate_occupancies(lat))
    energies = PairFitness(lat).energies(configs)
    by_key: dict[str, list[float]] = {}
    for occ, energy in zip(configs, energies, strict=True):
        by_key.setdefault(lat.canonical_key(occ), []).append(energy)
    assert len(configs) == 3920
    assert 30 < len(by_key) < 3920 / 8
    assert all(np.ptp(values) < 1e-9 for values in by_key.values())


KEY_SCRIPT = """
import sys, warnings
import numpy as np
from aiida_nmcml.engine.ga_lattice import Lattice
from aiida_nmcml.structures import NmcLattice
warnings.simplefilter('ignore')
nmc = NmcLattice.from_supercell((2, 2, 1))
occ = nmc.default_occupancy(x_li=0.5, composition={'Ni': 0.5, 'Mn': 0.25, 'Co': 0.25}, seed=3)
occ[occ == 'Co'] = 'Al'  # an element outside the standard species list
print(Lattice.from_nmc(nmc, occ).canonical_key(occ))
"""


def test_canonical_key_is_the_same_in_every_process():
    """Keys must not depend on Python's per-process string hash: two interpreters with different PYTHONHASHSEED give
    the same key for an ordering holding an element outside X/Li/Ni/Mn/Co/O (Al here)."""
    import os
    import subprocess
    import sys

    keys = set()
    for hash_seed in ('1', '2', '12345'):
        env = {**os.environ, 'PYTHONHASHSEED': hash_seed}
        out = subprocess.run([sys.executable, '-c', KEY_SCRIPT], env=env, capture_output=True, text=True, check=True)
        keys.add(out.stdout.strip())
    assert len(keys) == 1 and len(keys.pop()) == 16


def test_lattice_from_nmc_matches_the_structures_module():
    """One conversion NmcLattice -> GA Lattice, and one occupancy -> Atoms: both classes give the same structure."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        nmc = NmcLattice.from_supercell(40)
        occ = nmc.default_occupancy(x_li=0.5, seed=2, antisite_fraction=0.1)
    lat = Lattice.from_nmc(nmc, occ)
    a, b = lat.to_atoms(occ), nmc.to_atoms(occ)
    assert a.get_chemical_symbols() == b.get_chemical_symbols() and np.allclose(a.positions, b.positions)
    assert np.array_equal(a.arrays['site_index'], b.arrays['site_index'])
    assert list(a.arrays['sublattice']) == list(b.arrays['sublattice'])
    assert lat.composition(occ)['li'] == {'Li': 4, 'Ni': 1, 'X': 5}  # 5 Li in all: one went to the TM layer
    assert lat.composition(occ)['tm'] == {'Co': 1, 'Li': 1, 'Mn': 1, 'Ni': 7}


def test_population_holds_distinct_orderings():
    lat = SMALL
    params = {'fitness': 'pair', 'generations': 5, 'seed': 2, 'islands': 1, 'agree': 1, 'population_size': 12}
    result = ga.GeneticSearch(lat, PairFitness(lat), params).run()
    keys = [ind.key for ind in result.population]
    assert len(keys) == len(set(keys)) == 12
    assert len(result.evaluated) == len({lat.canonical_key(i.occupancy) for i in result.evaluated.values()})


def test_ga_beats_random_search_against_exhaustive_enumeration():
    """On a 36-atom lattice (9072 orderings), the GA finds the enumerated ground state in each of 5 runs, evaluating
    under 3 % of the configurations, and needs >= 3x fewer evaluations than random sampling's exact expectation
    (N + 1) / (g + 1) for the same result (g = number of ground-state configurations)."""
    lat = SMALL
    fitness = PairFitness(lat)
    energies, _ = fitness.exhaustive(lat)
    n_total = energies.size
    e_min = float(energies.min())
    n_ground = int(np.sum(energies < e_min + 1e-6))
    random_expected = (n_total + 1) / (n_ground + 1)
    needed = []
    for seed in range(5):
        result = ga.GeneticSearch(lat, fitness, {'fitness': 'pair', 'seed': seed, 'target_energy': e_min}).run()
        assert result.top(1)[0].energy == pytest.approx(e_min, abs=1e-9)
        needed.append(result.evaluations_to_best)
    assert n_total == 9072
    assert np.mean(needed) < 0.03 * n_total
    assert random_expected / np.mean(needed) >= 3.0, (random_expected, needed)


def test_stopping_rule_without_a_target():
    """As a user runs it (no known minimum): on a lattice with a random energy no setting was tuned on, the GA stops
    by itself (islands agree), on the enumerated minimum, in each of 5 seeds; and the stopping point scales with the
    search space: the evaluations without improvement it waits for grow with ln(number of symmetry classes)."""
    from aiida_nmcml.engine.ga_fitness import RandomPairFitness

    lat = make_lattice((2, 2, 3), 0.5, {'Ni': 10 / 12, 'Mn': 1 / 12, 'Co': 1 / 12})
    fitness = RandomPairFitness(lat, seed=11)
    energies, _ = fitness.exhaustive(lat)
    assert energies.size == lat.n_orderings() == 121968
    for seed in range(5):
        search = ga.GeneticSearch(lat, fitness, {'seed': seed})
        result = search.run()
        assert result.converged and result.stop_reason == 'islands agree'
        assert result.top(1)[0].energy == pytest.approx(float(energies.min()), abs=1e-9), seed
        assert len(result.evaluated) - result.evaluations_to_best >= search.patience_evaluations
    small = ga.GeneticSearch(SMALL, PairFitness(SMALL), {})
    assert small.patience_evaluations < search.patience_evaluations
    assert lat.n_classes() > 2000 > SMALL.n_classes()


def test_small_space_stops_when_every_ordering_is_evaluated():
    """An end member (x = 1, only TM orderings) can hold fewer symmetry classes than the patience: the GA stops,
    converged, once every class is evaluated, and a lattice with a single ordering needs one evaluation."""
    lat = make_lattice(40, 1.0, {'Ni': 0.8, 'Mn': 0.1, 'Co': 0.1})
    result = ga.GeneticSearch(lat, PairFitness(lat), {'islands': 2, 'agree': 1, 'population_size': 4}).run()
    assert result.converged and result.stop_reason == 'every ordering evaluated'
    assert len(result.evaluated) == lat.n_classes() == 5
    single = make_lattice(40, 1.0, {'Ni': 1.0})
    result = ga.GeneticSearch(single, PairFitness(single), {}).run()
    assert result.converged and len(result.evaluated) == 1


def test_burnside_class_count_matches_enumeration():
    lat = make_lattice((2, 2, 2), 0.5, {'Ni': 0.75, 'Mn': 0.125, 'Co': 0.125})
    keys = {lat.canonical_key(occ) for occ in enumerate_occupancies(lat)}
    assert lat.n_orderings() == 3920 and lat.n_classes() == len(keys)


@pytest.fixture
def ga_workdir(tmp_path, monkeypatch):
    from ase.io import write

    write(tmp_path / 'lattice.extxyz', SMALL.lattice_atoms(SMALL.start))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_engine_run_writes_top_k_and_history(ga_workdir):
    """Through the console-script entry: the lattice file round trips (X vacancies, sublattice labels) and the
    top-K are distinct, sorted, with the lattice's compositions."""
    from aiida_nmcml.engine.cli import main

    (ga_workdir / 'input.json').write_text(json.dumps({'fitness': 'pair', 'generations': 6, 'top_k': 4}))
    assert main(['ga', 'input.json']) == 0
    summary = json.loads((ga_workdir / 'ga_results.json').read_text())
    energies = [t['energy'] for t in summary['top']]
    assert energies == sorted(energies) and len({t['canonical_key'] for t in summary['top']}) == 4
    frames = read(ga_workdir / 'top_candidates.extxyz', ':')
    assert len(frames) == 4 and frames[0].get_chemical_formula() == 'CoLi4MnNi7O18'
    assert [f.info['rank'] for f in frames] == [0, 1, 2, 3]
    assert summary['history'][-1]['evaluations'] == summary['evaluations']
    assert summary['history'][-1]['best_energy'] == pytest.approx(energies[0])


def test_engine_run_with_mace_fitness_and_relaxation(ga_workdir, tiny_foundation_model):
    """The production fitness: the tiny MACE model, 3 FIRE steps per candidate; candidates keep relaxed positions."""
    shutil.copy(tiny_foundation_model, ga_workdir / 'model_0.model')
    summary = ga.run(
        {
            'fitness': 'mace',
            'models': ['model_0.model'],
            'device': 'cpu',
            'population_size': 4,
            'generations': 1,
            'top_k': 2,
            'relax': {'steps': 3, 'fmax': 0.01},
        }
    )
    frames = read(ga_workdir / 'top_candidates.extxyz', ':')
    assert summary['evaluations'] >= 4
    assert frames[0].info['ga_energy'] <= frames[1].info['ga_energy']
    lattice_positions = SMALL.positions[frames[0].arrays['site_index']]
    assert np.abs(frames[0].positions - lattice_positions).max() > 1e-4  # relaxed away from the ideal sites


def test_engine_refuses_unknown_keys(ga_workdir):
    from aiida_nmcml.engine.common import EngineError

    with pytest.raises(EngineError, match="did you mean 'max_evaluations'") as exc:
        ga.run({'fitness': 'pair', 'max_evalutions': 10})
    assert exc.value.status == 'invalid_input'


def test_require_convergence_reports_its_status(ga_workdir):
    from aiida_nmcml.engine.common import EngineError

    with pytest.raises(EngineError) as exc:
        ga.run({'fitness': 'pair', 'generations': 1, 'patience': 5, 'require_convergence': True})
    assert exc.value.status == 'ga_not_converged'
    assert (ga_workdir / 'ga_results.json').is_file()  # the candidates so far are still written

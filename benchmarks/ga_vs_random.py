"""GA vs random sampling vs exhaustive enumeration on a lattice where enumeration is still possible.

Lattice: 48 atoms (3x2x2 primitive cells), 6 Li + 6 vacancies on the Li layer, 10 Ni + 1 Mn + 1 Co on the TM layer:
121,968 composition-preserving orderings. Fitness: the ``pair`` test double (screened Coulomb with nominal charges),
so the exact ground state is known. Reported, per method, the number of *energy evaluations* until the ground-state
energy is first found:

* GA (mean over seeds; duplicates by symmetry are not re-evaluated);
* random sampling without replacement, exact expectation (N + 1) / (g + 1);
* random sampling that also skips symmetry duplicates (simulated; the fair baseline for the GA's dedup).

Run: ``.venv/bin/python benchmarks/ga_vs_random.py [--seeds 10] [--random-repeats 20]``.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np


def lattice():
    from aiida_nmcml.engine.ga_lattice import Lattice
    from aiida_nmcml.structures import NmcLattice

    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        nmc = NmcLattice.from_supercell((3, 2, 2))
        occ = nmc.default_occupancy(x_li=0.5, composition={'Ni': 10 / 12, 'Mn': 1 / 12, 'Co': 1 / 12}, seed=1)
    return Lattice(nmc.cell.copy(), nmc.positions.copy(), nmc.sublattice.astype('<U2'), occ)


def main():
    from aiida_nmcml.engine.ga import GeneticSearch
    from aiida_nmcml.engine.ga_fitness import PairFitness

    parser = argparse.ArgumentParser()
    parser.add_argument('--seeds', type=int, default=10)
    parser.add_argument('--random-repeats', type=int, default=20)
    args = parser.parse_args()
    lat = lattice()
    fitness = PairFitness(lat)
    start = time.perf_counter()
    energies, orderings = fitness.exhaustive(lat)
    enumeration_s = time.perf_counter() - start
    e_min = float(energies.min())
    ground = energies < e_min + 1e-6
    n_total, n_ground = energies.size, int(ground.sum())

    ga_counts = []
    for seed in range(args.seeds):
        params = {'fitness': 'pair', 'seed': seed, 'generations': 2000, 'patience': 2000, 'target_energy': e_min}
        result = GeneticSearch(lat, fitness, params).run()
        found = result.top(1)[0].energy <= e_min + 1e-6
        ga_counts.append(result.evaluations_to_best if found else None)

    rng = np.random.default_rng(0)
    groups = list(lat.groups.values())
    dedup_counts = []
    for _ in range(args.random_repeats):
        seen = set()
        for flat in rng.permutation(n_total):
            index = np.unravel_index(flat, energies.shape)
            occ = lat.start.copy()
            for sites, axis, i in zip(groups, orderings, index, strict=True):
                occ[sites] = axis[i]
            seen.add(lat.canonical_key(occ))
            if ground[index]:
                break
        dedup_counts.append(len(seen))

    ga_mean = float(np.mean([c for c in ga_counts if c is not None]))
    random_plain = (n_total + 1) / (n_ground + 1)
    report = {
        'configurations': n_total,
        'ground_state_configurations': n_ground,
        'enumeration_s': enumeration_s,
        'ga_evaluations': ga_counts,
        'ga_mean': ga_mean,
        'ga_fraction_of_space': ga_mean / n_total,
        'random_expected': random_plain,
        'random_dedup_mean': float(np.mean(dedup_counts)),
        'speedup_vs_random': random_plain / ga_mean,
        'speedup_vs_random_dedup': float(np.mean(dedup_counts)) / ga_mean,
    }
    print(json.dumps(report, indent=1))


if __name__ == '__main__':
    main()

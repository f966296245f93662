"""Throughput of ``nmcml.label``: N cells labelled concurrently vs one after another, and the overhead per frame.

Both modes run in this process (no daemon needed) with caching off and distinct rattled 4-atom LiNiO2 cells (the
`plumbing` protocol by default: Gamma, 30 Ry, seconds per label; it measures overhead, not physics):

* concurrent: one LabelWorkChain over N cells (all PwBaseWorkChains submitted in one step);
* sequential: N LabelWorkChains of one cell each, one after the other.

Overhead per frame = (sequential wall time - sum of pw.x wall times) / N: everything AiiDA adds around pw.x
(building inputs, upload, polling, retrieval, parsing, the frame calcfunction). Reference: a bare PwCalculation on
this cell took 13.4 s for 9.5 s of pw.x (+3.9 s). Goal: <= 3 s per frame; concurrent clearly faster than sequential
(on a machine with free cores; with N > cores the ratio is bounded by the core count).

Usage: ``python benchmarks/label_throughput.py [--cells 3] [--protocol plumbing] [--profile NAME] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault('OMP_NUM_THREADS', '1')
os.environ.setdefault('OMPI_ALLOW_RUN_AS_ROOT', '1')
os.environ.setdefault('OMPI_ALLOW_RUN_AS_ROOT_CONFIRM', '1')


def cells(count: int, offset: int):
    from aiida import orm

    from aiida_nmcml.structures import layered_parent

    result = {}
    for index in range(count):
        atoms = layered_parent()
        atoms.rattle(stdev=0.03, seed=1000 + offset + index + int(time.time()) % 100000)
        structure = orm.StructureData(ase=atoms)
        structure.base.attributes.set(
            'nmcml_magmoms', [1.0 if s == 'Ni' else 0.0 for s in atoms.get_chemical_symbols()]
        )
        result[f'cell_{index}'] = structure
    return result


def pw_seconds(node) -> list[float]:
    return [
        float(n.outputs.output_parameters['wall_time_seconds'])
        for n in node.called_descendants
        if n.process_type == 'aiida.calculations:quantumespresso.pw' and n.is_finished_ok
    ]


def label(codes, structures, protocol):
    from aiida.engine import run_get_node

    from aiida_nmcml.workflows.label import LabelWorkChain

    builder = LabelWorkChain.get_builder_from_protocol(
        codes['pw'], structures, protocol=protocol, overrides={'qe': {'pseudo_family': codes['pseudo_family']}}
    )
    start = time.perf_counter()
    _, node = run_get_node(builder)
    elapsed = time.perf_counter() - start
    if not node.is_finished_ok:
        raise RuntimeError(f'labelling failed: {node.exit_message}')
    return elapsed, pw_seconds(node)


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--cells', type=int, default=3)
    parser.add_argument('--protocol', default='plumbing')
    parser.add_argument('--profile', default=None)
    parser.add_argument('--json', default=None)
    args = parser.parse_args()

    from aiida import load_profile
    from aiida.manage.caching import disable_caching

    load_profile(args.profile, allow_switch=True)
    from aiida_nmcml.setup import ensure_environment

    codes = ensure_environment()
    with disable_caching():
        concurrent, _ = label(codes, cells(args.cells, 0), args.protocol)
        sequential, sequential_pw = 0.0, []
        for key, structure in cells(args.cells, 500).items():
            elapsed, pw = label(codes, {key: structure}, args.protocol)
            sequential += elapsed
            sequential_pw += pw
    result = {
        'cells': args.cells,
        'protocol': args.protocol,
        'cpu_count': os.cpu_count(),
        'concurrent_wall_s': round(concurrent, 2),
        'sequential_wall_s': round(sequential, 2),
        'speedup_sequential_over_concurrent': round(sequential / concurrent, 2),
        'pw_wall_s_sequential': [round(t, 2) for t in sequential_pw],
        'overhead_per_frame_s': round((sequential - sum(sequential_pw)) / args.cells, 2),
        'overhead_fraction': round((sequential - sum(sequential_pw)) / sequential, 3),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, 'w') as handle:
            json.dump(result, handle, indent=1)
    return result


if __name__ == '__main__':
    main()

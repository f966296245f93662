"""Cost of committee monitoring on any device: part 2 of md_engine.py (committee of 4 every 10 steps vs plain MD,
``uncertainty.evaluation`` = ``members`` vs ``shared_descriptor``), for CUDA as well as the CPU. Goal <= 1.15x.

Two measurements per cell size (128 and 1000 atoms of the layered cell of md_engine.py) and driver dtype:

* per call: the driver step (member 0's forces + stress, in the driver dtype) and one monitor call
  (``Committee.deviation``: the other members, float32), each timed on the wall clock between
  ``torch.cuda.synchronize()`` calls, the positions moved before every call (no cached results); the first two calls
  are warm-up. ``1 + monitor / (10 x driver)`` is the slowdown every 10 steps this predicts.
* end to end: ``aiida_nmcml.engine.md.run`` (Langevin default ensemble, the engine's own steps/s, first evaluation
  excluded) with one model, and with the committee of 4 evaluated every 10 steps for both evaluations, interleaved
  repeats, best of each; slowdown = plain / committee.

The committee is md_engine.py's (4 members fine-tuned from one tiny foundation with the project's recipe, cached in
benchmarks/.cache, or ``--models DIR`` holding ``*.model`` files). Prints one JSON document; progress on stderr.

Run: ``python benchmarks/monitor_cost.py --device cuda [--sizes 128,1000] [--dtypes float64,float32] [--steps 100]``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).parent))

import md_engine

CELLS = {128: (4, 4, 2), 1000: (10, 5, 5), 2000: (10, 10, 5)}


def per_call(atoms, paths, device: str, dtype: str, evaluation: str, calls: int) -> dict:
    import numpy as np

    from aiida_nmcml.engine.md_committee import Committee

    committee = Committee([str(p) for p in paths], device=device, dtype=dtype, evaluation=evaluation)
    atoms = atoms.copy()
    atoms.calc = committee.driver
    rng = np.random.default_rng(0)
    driver, monitor = [], []
    for i in range(calls + 2):
        atoms.positions += rng.normal(0.0, 0.005, atoms.positions.shape)
        md_engine._synchronize(device)
        start = time.perf_counter()
        atoms.get_forces()
        atoms.get_stress()
        md_engine._synchronize(device)
        middle = time.perf_counter()
        committee.deviation(atoms)
        md_engine._synchronize(device)
        end = time.perf_counter()
        if i >= 2:
            driver.append(middle - start)
            monitor.append(end - middle)
    d_med, m_med = statistics.median(driver), statistics.median(monitor)
    return {
        'driver_ms_best_median': [round(1e3 * min(driver), 2), round(1e3 * d_med, 2)],
        'monitor_ms_best_median': [round(1e3 * min(monitor), 2), round(1e3 * m_med, 2)],
        'predicted_slowdown_every10_median': round(1 + m_med / (10 * d_med), 3),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--sizes', default='128,1000')
    parser.add_argument('--dtypes', default='float64,float32', help='driver dtypes (the monitor is float32)')
    parser.add_argument('--steps', type=int, default=100)
    parser.add_argument('--calls', type=int, default=20)
    parser.add_argument('--repeats', type=int, default=2)
    parser.add_argument('--models', help='folder of *.model files (default: md_engine.finetuned_committee(4))')
    args = parser.parse_args()
    if args.models:
        paths = sorted(pathlib.Path(args.models).resolve().glob('*.model'))[:4]
    else:
        paths = md_engine.finetuned_committee(4)
    import torch

    report = {
        'device': args.device,
        'gpu': torch.cuda.get_device_name(0) if args.device.startswith('cuda') else None,
        'torch': torch.__version__,
        'threads': torch.get_num_threads(),
        'members': len(paths),
        'steps': args.steps,
        'repeats': args.repeats,
        'load_average_start': os.getloadavg(),
        'sizes': {},
    }
    warm = md_engine.cell(CELLS[128])
    md_engine.engine(warm, paths[:1], 3, stride=10, device=args.device)  # CUDA context, kernels, allocator
    for size in (int(s) for s in args.sizes.split(',')):
        atoms = md_engine.cell(CELLS[size])
        entry = {'natoms': len(atoms), 'per_call': {}, 'engine': {}}
        for dtype in args.dtypes.split(','):
            for evaluation in ('members', 'shared_descriptor'):
                result = per_call(atoms, paths, args.device, dtype, evaluation, args.calls)
                entry['per_call'][f'{dtype}/{evaluation}'] = result
                print(size, dtype, evaluation, json.dumps(result), file=sys.stderr, flush=True)
        for dtype in args.dtypes.split(','):
            runs = {'plain': [], 'members10': [], 'shared10': []}
            for _ in range(args.repeats):
                runs['plain'].append(
                    md_engine.engine(atoms, paths[:1], args.steps, 10, device=args.device, dtype=dtype)
                )
                runs['members10'].append(md_engine.engine(atoms, paths, args.steps, 10, 'members', args.device, dtype))
                runs['shared10'].append(
                    md_engine.engine(atoms, paths, args.steps, 10, 'shared_descriptor', args.device, dtype)
                )
            best = {k: max(v) for k, v in runs.items()}
            entry['engine'][dtype] = {
                'steps_per_s_raw': {k: [round(x, 2) for x in v] for k, v in runs.items()},
                'plain_steps_per_s': round(best['plain'], 2),
                'slowdown_every10_members': round(best['plain'] / best['members10'], 3),
                'slowdown_every10_shared_descriptor': round(best['plain'] / best['shared10'], 3),
            }
            print(size, dtype, 'engine', json.dumps(entry['engine'][dtype]), file=sys.stderr, flush=True)
        report['sizes'][str(size)] = entry
    report['load_average_end'] = os.getloadavg()
    print(json.dumps(report, indent=1))


if __name__ == '__main__':
    main()

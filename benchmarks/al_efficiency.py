"""Benchmark: does committee-driven selection save labels? Active learning against random selection, same MD pool.

The loop of ``nmcml.active_learning`` driven in-process (no AiiDA), with CHGNet (``chgnet==0.4.2``, weights in its
wheel; ``aiida_nmcml.engine.teacher``) standing in for DFT. **The labels are CHGNet's, not DFT**: the benchmark
measures how many labels each selection rule needs, not the accuracy of a production model.

Per seed:

1. **Start**: one exact-NMC811 cell per (T, x) condition (``aiida_nmcml.structures.build_nmc``, 40 atoms = 10 TM by
   default), rattled, labelled by the stand-in: the initial training set.
2. **Committee 0**: ``--members`` MACE models fine-tuned from the foundation (default: the toy tiny MACE,
   ``aiida_nmcml.testing.toymodel``; ``--foundation`` takes the distilled one) with ``mace_run_train``'s own code
   (``mace.cli.run_train.run``, in-process to save the ~10 s start-up per model), the project's diversity recipe
   (bootstrap data + perturbed readout, ``engine/committee_init.py``) and the ``demo`` fine-tuning settings.
3. **Pool**: Langevin MD driven by committee 0's member 0 at every condition (committee-driven exploration);
   a snapshot every ``--pool-interval`` steps. Active and random selection draw from this same pool.
4. **Iterations** (for each strategy, from the same committee 0 and initial set): select ``--batch`` unlabelled pool
   frames, label them, retrain the committee on everything labelled, score it on the held-out set.
   *Active*: ``aiida_nmcml.analysis.selection.select_frames`` (the work chain's rules: per-frame max per-atom
   committee deviation, trust band, farthest-point sampling on MACE descriptors with the labelled frames as
   reference, a minimum step gap along each trajectory). *Random*: uniform among the unlabelled pool frames.
5. **Held-out set**: MD snapshots at every condition from separate trajectories (other velocity seed), labelled by
   the stand-in, never trained on; the same for every seed and strategy. Score: force RMSE of the committee mean.

The trust band is relative (``lower`` = the ``--candidate-quantile`` of the pool's deviations, ``upper`` =
``--trust-upper`` eV/Å): a committee trained on 4-20 frames has no calibration worth the name, and absolute levels
would make every frame a candidate (or none). Declared here, not tuned to the answer.

**Target** (declared before looking at active learning): the mean over seeds of random selection's held-out force
RMSE at the final budget (``--target-rule final``, the primary rule), or at half the budget (``half``), or
``--target-fraction`` (0.5: halve it) of the starting committee's error (``initial-fraction``); the summary gives the
primary rule and the two others side by side. Labels to target = the first label count (initial set included) at
which a strategy's curve is at or below it (``null`` when it never gets there within the budget; the means count such
a seed as budget + one batch, a lower bound); the ratio is also given for the selected labels only (initial set
left out). Goal of the issue: active learning needs at most half the labels of random.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/al_efficiency.py [--seeds 3] [--iterations 3] [--batch 4]
[--members 3] [--natoms 40] [--epochs 6] [--workers 3] [--dtype float64] [--output al.json]``. The run of
docs/benchmarks_al.md (2-core shared machine, one process, 24 min wall at load 10-18): ``--seeds 2 --members 2
--iterations 3 --batch 4 --epochs 6 --pool-steps 60 --heldout-per-condition 2 --dtype float32 --workers 1``. A bigger
run: ``--natoms 80 --iterations 8 --batch 8 --members 4 --pool-steps 400 --epochs 30 --foundation distilled.model``.
Prints one JSON document.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time
import warnings

os.environ.setdefault('OMP_NUM_THREADS', '1')

import numpy as np

CONDITIONS = ((300.0, 1.0), (900.0, 1.0), (600.0, 0.5), (900.0, 0.5))
TIMES = {'train': 0.0, 'trainings': 0, 'explore': 0.0, 'committee_eval': 0.0}


# ------------------------------------------------------------------------------------------------ the stand-in for DFT
class Oracle:
    """CHGNet labels, cached per frame key; counts the labels it was asked for (the 'DFT calls')."""

    def __init__(self):
        from aiida_nmcml.engine.teacher import load_teacher

        self.calc, self.identity = load_teacher('chgnet', 'cpu')
        self.cache: dict = {}
        self.seconds = 0.0

    def label(self, key, atoms):
        from aiida_nmcml.engine.teacher import label_atoms

        if key not in self.cache:
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                self.cache[key] = label_atoms(atoms, self.calc, self.identity)
            self.seconds += time.perf_counter() - start
        return self.cache[key]


# ------------------------------------------------------------------------------------------------------ structures
def clean(atoms):
    from ase import Atoms

    return Atoms(atoms.get_chemical_symbols(), positions=atoms.positions, cell=atoms.cell, pbc=True)


def start_cells(natoms: int, conditions, seed: int, rattle: float = 0.05) -> list:
    from aiida_nmcml.structures import build_nmc

    rng = np.random.default_rng(seed)
    cells = []
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        for temperature, x in conditions:
            atoms = clean(build_nmc(natoms, x_li=x, seed=int(rng.integers(1 << 30)), magnetic=False))
            atoms.positions += rng.normal(0.0, rattle, atoms.positions.shape)
            atoms.info.update(condition=f'T{temperature:.0f}_x{x:.2f}')
            cells.append(atoms)
    return cells


# --------------------------------------------------------------------------------------------------------- training
def train_member(workdir: pathlib.Path, model, frames, valid, config: dict) -> pathlib.Path:
    """mace_run_train's own ``run`` in this process, in ``workdir`` (the config the plugin's calcjob writes)."""
    import torch
    import yaml
    from ase.io import write
    from mace.cli.run_train import run
    from mace.tools import build_default_arg_parser

    started = time.perf_counter()
    workdir.mkdir(parents=True)
    torch.save(model, workdir / 'foundation.model')
    write(workdir / 'train.xyz', frames, format='extxyz')
    write(workdir / 'valid.xyz', valid, format='extxyz')
    config = {**config, 'batch_size': max(1, min(int(config['batch_size']), len(frames))), 'plot': False}
    (workdir / 'config.yaml').write_text(yaml.safe_dump(config))
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    dtype = torch.get_default_dtype()  # mace's run() sets float64; CHGNet (the labeller) needs its own back
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        args = build_default_arg_parser().parse_args(['--config=config.yaml'])
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter('ignore')
            run(args)
    finally:
        os.chdir(cwd)
        for handler in list(root.handlers):  # mace adds a stream and a file handler per run
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(level)
        torch.set_default_dtype(dtype)
    target = workdir / 'nmcml.model'
    if not target.is_file():
        raise RuntimeError(f'training in {workdir} wrote no model')
    TIMES['train'] += time.perf_counter() - started
    TIMES['trainings'] += 1
    return target


def train_committee(workdir, foundation_path, frames, e0s, members: int, parameters: dict, seed: int) -> list:
    """The project's recipe: per member a bootstrap sample (its out-of-bag frames validate) and a perturbed readout."""
    import torch

    from aiida_nmcml.engine.committee_init import initialise_readout, member_indices
    from aiida_nmcml.workflows.finetune import DIVERSITY_DEFAULTS, set_model_e0s

    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    from committee_spread import mace_config

    paths = []
    for index in range(members):
        member_seed = 1000 * seed + index + 1
        model = torch.load(foundation_path, map_location='cpu', weights_only=False)
        set_model_e0s(model, e0s)
        train, out_of_bag = member_indices(len(frames), member_seed, DIVERSITY_DEFAULTS['resampling'])
        initialise_readout(
            model,
            member_seed,
            DIVERSITY_DEFAULTS['readout_init'],
            DIVERSITY_DEFAULTS['readout_scale'],
            DIVERSITY_DEFAULTS['readout_blocks'],
        )
        valid = [frames[i] for i in out_of_bag] or list(frames)
        config = mace_config(parameters, e0s, member_seed, has_valid=True)
        paths.append(train_member(workdir / f'member{index}', model, [frames[i] for i in train], valid, config))
    return paths


# ------------------------------------------------------------------------------------------------------- evaluation
def committee_forces(paths, frames) -> list:
    """Per frame the members' forces, ``(members, atoms, 3)``."""
    from mace.calculators import MACECalculator

    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        calc = MACECalculator(model_paths=[str(p) for p in paths], device='cpu', default_dtype='float64')
    out = []
    for atoms in frames:
        probe = clean(atoms)
        probe.calc = calc
        calc.calculate(probe, ['energy', 'forces'])
        forces = calc.results.get('forces_comm')
        out.append(np.asarray(forces if forces is not None else calc.results['forces'][None]))
    TIMES['committee_eval'] += time.perf_counter() - started
    return out


def heldout_errors(paths, heldout) -> dict:
    forces = committee_forces(paths, heldout)
    mean_err = np.concatenate([(f.mean(axis=0) - a.arrays['REF_forces']).ravel() for f, a in zip(forces, heldout)])
    member0 = np.concatenate([(f[0] - a.arrays['REF_forces']).ravel() for f, a in zip(forces, heldout)])
    return {
        'force_rmse': float(np.sqrt(np.mean(mean_err**2))),
        'force_rmse_member0': float(np.sqrt(np.mean(member0**2))),
    }


# ---------------------------------------------------------------------------------------------------------- pool MD
def explore(driver_path, cells, steps: int, interval: int, seed: int, min_distance: float = 1.0) -> list:
    """Langevin MD with member 0 from every cell at its condition; snapshots with ``md_step``/``condition``."""
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    from mace.calculators import MACECalculator

    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        calc = MACECalculator(model_paths=str(driver_path), device='cpu', default_dtype='float64')
    rng = np.random.default_rng(seed)
    frames = []
    started = time.perf_counter()
    for atoms0 in cells:
        condition = atoms0.info['condition']
        temperature = float(condition.split('_')[0][1:])
        atoms = clean(atoms0)
        atoms.calc = calc
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
        Stationary(atoms)
        dyn = Langevin(atoms, 1.0 * units.fs, temperature_K=temperature, friction=0.02 / units.fs, rng=rng)
        for step in range(interval, steps + 1, interval):
            dyn.run(interval)
            distances = atoms.get_all_distances(mic=True)[np.triu_indices(len(atoms), 1)]
            if not np.all(np.isfinite(atoms.positions)) or distances.min() < min_distance:
                break  # the model left its domain: the trajectory ends (the engine's stop rule)
            snapshot = clean(atoms)
            snapshot.info.update(condition=condition, md_step=step)
            frames.append(snapshot)
    TIMES['explore'] += time.perf_counter() - started
    return frames


# ------------------------------------------------------------------------------------------------------------- loop
def active_pick(paths, pool, labelled_pool, labelled_frames, n, args) -> tuple[list, dict]:
    from aiida_nmcml.analysis.selection import frame_deviations, mace_frame_descriptors, select_frames, trust_band

    free = [i for i in range(len(pool)) if i not in labelled_pool]
    deviations = frame_deviations(committee_forces(paths, [pool[i] for i in free]))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        descriptors = mace_frame_descriptors(paths[0], [pool[i] for i in free] + list(labelled_frames))
    lower = float(np.quantile(deviations, args.candidate_quantile))
    band = trust_band(lower=lower, upper=max(args.trust_upper, 1.01 * lower + 1e-6))
    result = select_frames(
        deviations,
        band,
        descriptors=descriptors[: len(free)],
        reference=descriptors[len(free) :],
        max_selected=n,
        min_step_gap=args.min_step_gap,
        steps=[pool[i].info['md_step'] for i in free],
        conditions=[pool[i].info['condition'] for i in free],
    )
    info = {
        'median_deviation': result.median_deviation,
        'band': result.band.as_dict(),
        'counts': result.counts,
        'selected_deviation': [float(deviations[i]) for i in result.selected],
    }
    return [free[i] for i in result.selected], info


def seed_worker(seed, args, foundation, heldout, parameters, root) -> dict:
    """One seed in its own process (the seeds are independent; on a shared machine they run side by side)."""
    os.environ['OMP_NUM_THREADS'] = '1'
    import torch

    torch.set_num_threads(1)
    oracle = Oracle()
    record = run_seed(seed, args, foundation, oracle, heldout, parameters, root)
    record['labels_computed'] = len(oracle.cache)
    record['oracle_seconds'] = round(oracle.seconds, 1)
    record['seconds_by_part'] = {k: round(v, 1) for k, v in TIMES.items()}
    record['cpu_seconds_process_so_far'] = round(time.process_time(), 1)  # wall / CPU: the share of a core it got
    return record


def run_seed(seed, args, foundation, oracle, heldout, parameters, root) -> dict:
    import torch

    from aiida_nmcml.analysis.e0s import compute_e0s

    t0 = time.perf_counter()
    initial = [oracle.label(('init', seed, i), a) for i, a in enumerate(start_cells(args.natoms, CONDITIONS, seed))]
    e0s = compute_e0s(torch.load(foundation, map_location='cpu', weights_only=False), initial)['e0s']
    committee0 = train_committee(root / f's{seed}_c0', foundation, initial, e0s, args.members, parameters, seed)
    pool_seeds = start_cells(args.natoms, CONDITIONS, 100 + seed, rattle=0.0)
    pool = explore(committee0[0], pool_seeds, args.pool_steps, args.pool_interval, seed=200 + seed)
    record = {
        'seed': seed,
        'initial_labels': len(initial),
        'pool_frames': len(pool),
        'pool_per_condition': {c: sum(1 for f in pool if f.info['condition'] == c) for c, _ in _labels()},
        'e0s': {str(k): float(v) for k, v in e0s.items()},
    }
    start = heldout_errors(committee0, heldout)
    progress = {'seed': seed, 'committee0': start, 'pool': len(pool), 'elapsed_s': round(time.perf_counter() - t0)}
    print(json.dumps({**progress, 'load': os.getloadavg()[0]}), file=sys.stderr, flush=True)
    rng = np.random.default_rng(300 + seed)
    for strategy in ('active', 'random'):
        labelled_pool: list = []
        frames = list(initial)
        paths = committee0
        curve = [{'labels': len(frames), **start}]
        selections = []
        for iteration in range(1, args.iterations + 1):
            if strategy == 'active':
                picked, info = active_pick(paths, pool, set(labelled_pool), frames, args.batch, args)
                selections.append(info)
            else:
                free = [i for i in range(len(pool)) if i not in set(labelled_pool)]
                picked = [int(i) for i in rng.choice(free, size=min(args.batch, len(free)), replace=False)]
            labelled_pool += picked
            frames += [oracle.label(('pool', seed, i), pool[i]) for i in picked]
            workdir = root / f's{seed}_{strategy}_{iteration}'
            paths = train_committee(workdir, foundation, frames, e0s, args.members, parameters, seed + 10 * iteration)
            curve.append({'labels': len(frames), **heldout_errors(paths, heldout)})
            progress = {'seed': seed, 'strategy': strategy, **curve[-1], 'elapsed_s': round(time.perf_counter() - t0)}
            print(json.dumps({**progress, 'load': os.getloadavg()[0]}), file=sys.stderr, flush=True)
        record[strategy] = {
            'curve': curve,
            'picked_conditions': [pool[i].info['condition'] for i in labelled_pool],
            'picked_steps': [pool[i].info['md_step'] for i in labelled_pool],
        }
        if selections:
            record[strategy]['selection'] = selections
    record['seconds'] = round(time.perf_counter() - t0, 1)
    return record


def _labels():
    return [(f'T{t:.0f}_x{x:.2f}', None) for t, x in CONDITIONS]


def labels_to_target(curve, target: float):
    for point in curve:
        if point['force_rmse'] <= target:
            return point['labels']
    return None


def target_value(records, rule: str, fraction: float) -> float:
    """The held-out force RMSE a strategy must reach, by the rule named before the run (module docstring)."""
    if rule == 'initial-fraction':  # a fraction of the starting committee's error (the same committee 0 for both)
        return float(fraction * np.mean([r['random']['curve'][0]['force_rmse'] for r in records]))
    if rule == 'half':
        half = len(records[0]['random']['curve']) // 2
        return float(np.mean([r['random']['curve'][half]['force_rmse'] for r in records]))
    return float(np.mean([r['random']['curve'][-1]['force_rmse'] for r in records]))


def compare(records, target: float) -> dict:
    """Labels to ``target`` per seed and strategy, the censored means and their ratio (total and selected labels)."""
    budget = records[0]['random']['curve'][-1]['labels']
    initial = records[0]['random']['curve'][0]['labels']
    step = records[0]['random']['curve'][1]['labels'] - initial
    out = {'target_force_rmse_eV_per_A': target, 'budget_labels': budget, 'initial_labels': initial, 'per_seed': []}
    for r in records:
        out['per_seed'].append(
            {
                'seed': r['seed'],
                'active': labels_to_target(r['active']['curve'], target),
                'random': labels_to_target(r['random']['curve'], target),
            }
        )
    for key in ('active', 'random'):
        values = [s[key] for s in out['per_seed']]
        reached = [v for v in values if v is not None]
        # a seed that never reaches the target within the budget counts as budget + one batch (a lower bound)
        censored = [v if v is not None else budget + step for v in values]
        out[key] = {
            'reached': f'{len(reached)}/{len(values)}',
            'mean_labels_lower_bound': float(np.mean(censored)),
            'mean_selected_labels_lower_bound': float(np.mean(censored)) - initial,
        }
    active, random = out['active'], out['random']
    out['ratio_active_over_random'] = active['mean_labels_lower_bound'] / random['mean_labels_lower_bound']
    selected_random = random['mean_selected_labels_lower_bound']
    out['ratio_selected_active_over_random'] = (
        active['mean_selected_labels_lower_bound'] / selected_random if selected_random else None
    )
    out['resolved'] = bool(all(s['random'] is not None for s in out['per_seed']))
    return out


def summarise(records, rule: str, fraction: float) -> dict:
    out = {'target_rule': rule, 'target_fraction': fraction if rule == 'initial-fraction' else None}
    out.update(compare(records, target_value(records, rule, fraction)))
    # the other declared rules, side by side (the primary one is `rule`)
    out['other_rules'] = {
        name: compare(records, target_value(records, name, fraction))
        for name in ('final', 'half', 'initial-fraction')
        if name != rule
    }
    # the whole curves, averaged over seeds, at equal label counts
    n = len(records[0]['random']['curve'])
    out['mean_curves'] = {
        strategy: [
            {
                'labels': records[0][strategy]['curve'][i]['labels'],
                'force_rmse': float(np.mean([r[strategy]['curve'][i]['force_rmse'] for r in records])),
                'force_rmse_std': float(np.std([r[strategy]['curve'][i]['force_rmse'] for r in records])),
            }
            for i in range(n)
        ]
        for strategy in ('active', 'random')
    }
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seeds', type=int, default=3)
    parser.add_argument('--members', type=int, default=3)
    parser.add_argument('--natoms', type=int, default=40, help='exact NMC811 needs a multiple of 40 (10 TM)')
    parser.add_argument('--iterations', type=int, default=3)
    parser.add_argument('--batch', type=int, default=4, help='labels per iteration')
    parser.add_argument('--epochs', type=int, default=6)
    parser.add_argument('--pool-steps', type=int, default=100)
    parser.add_argument('--pool-interval', type=int, default=5)
    parser.add_argument('--heldout-per-condition', type=int, default=3)
    parser.add_argument('--candidate-quantile', type=float, default=0.5)
    parser.add_argument('--trust-upper', type=float, default=10.0, help='eV/Å; frames above are discarded')
    parser.add_argument('--min-step-gap', type=int, default=10)
    parser.add_argument('--target-rule', choices=('final', 'half', 'initial-fraction'), default='final')
    parser.add_argument('--target-fraction', type=float, default=0.5, help="of committee 0's error (initial-fraction)")
    parser.add_argument('--dtype', choices=('float64', 'float32'), default='float64', help='training precision')
    parser.add_argument('--foundation', help='.model file (default: the toy tiny MACE stand-in)')
    parser.add_argument('--workers', type=int, default=3, help='seeds run in parallel processes')
    parser.add_argument('--output', help='also write the JSON here')
    args = parser.parse_args(argv)

    from aiida_nmcml.testing.toymodel import cached_tiny_mace
    from aiida_nmcml.workflows.finetune import FinetuneWorkChain

    wall = time.perf_counter()
    load_start = os.getloadavg()
    foundation = pathlib.Path(args.foundation) if args.foundation else cached_tiny_mace(seed=1)
    parameters = dict(FinetuneWorkChain.get_protocol_inputs('demo')['train']['parameters'])
    parameters['max_num_epochs'] = args.epochs
    parameters['default_dtype'] = args.dtype
    oracle = Oracle()
    root = pathlib.Path(tempfile.mkdtemp(prefix='al_efficiency_'))
    try:
        # the held-out set: separate trajectories (other cells, other velocities) driven by seed 0's committee 0
        import torch

        from aiida_nmcml.analysis.e0s import compute_e0s

        seeds0 = [oracle.label(('h0', i), a) for i, a in enumerate(start_cells(args.natoms, CONDITIONS, 999))]
        e0s = compute_e0s(torch.load(foundation, map_location='cpu', weights_only=False), seeds0)['e0s']
        driver = train_committee(root / 'heldout_driver', foundation, seeds0, e0s, 1, parameters, 999)[0]
        interval = max(1, args.pool_steps // args.heldout_per_condition)
        cells = start_cells(args.natoms, CONDITIONS, 998, rattle=0.0)
        snapshots = explore(driver, cells, args.pool_steps, interval, 997)
        heldout = [oracle.label(('h', i), a) for i, a in enumerate(snapshots)]
        if args.workers > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            context = multiprocessing.get_context('spawn')
            with ProcessPoolExecutor(max_workers=args.workers, mp_context=context) as pool:
                futures = [
                    pool.submit(seed_worker, seed, args, foundation, heldout, parameters, root)
                    for seed in range(args.seeds)
                ]
                records = [future.result() for future in futures]
        else:
            records = []
            for seed in range(args.seeds):  # each finished seed is written at once: a run cut short keeps it
                records.append(seed_worker(seed, args, foundation, heldout, parameters, root))
                if args.output:
                    pathlib.Path(args.output + '.partial').write_text(json.dumps(records, indent=1))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report = {
        'stand_in_for_dft': oracle.identity['name'] + ' ' + oracle.identity['package_version'] + ' (not DFT)',
        'foundation': str(foundation) if args.foundation else 'toy tiny MACE (aiida_nmcml.testing.toymodel, seed 1)',
        'settings': vars(args),
        'conditions': [{'temperature_K': t, 'x_li': x} for t, x in CONDITIONS],
        'heldout_frames': len(heldout),
        'heldout_per_condition': {c: sum(1 for f in heldout if f.info.get('condition') == c) for c, _ in _labels()},
        'summary': summarise(records, args.target_rule, args.target_fraction),
        'seeds': records,
        'labels_computed': len(oracle.cache) + sum(r['labels_computed'] for r in records),
        'wall_seconds': round(time.perf_counter() - wall, 1),
        'cpu_seconds': round(time.process_time(), 1),
        'load_average_start': load_start,
        'load_average_end': os.getloadavg(),
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.output:
        pathlib.Path(args.output).write_text(text)
    return report


if __name__ == '__main__':
    main()

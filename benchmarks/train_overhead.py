"""Overhead of ``nmcml.mace.train`` over running ``mace_run_train`` by hand on the same inputs. Goal: ratio <= 1.1.

Both sides run the same tiny naive fine-tuning (tiny MACE from aiida_nmcml/testing/toymodel.py, toy frames, CPU):

* calcjob: ``run_get_node`` on a throw-away SQLite profile, localhost ``core.direct`` scheduler (job poll interval
  lowered to 0.5 s — the 10 s default would measure the polling, not the plugin), including upload, retrieval and
  parsing (which hashes and unpickles the new model to record its metadata);
* direct: ``mace_run_train --config config.yaml`` in a fresh folder holding copies of the files the calcjob wrote.

Runs alternate (calcjob, direct, calcjob, ...) so that load from other processes hits both alike; medians reported.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/train_overhead.py [--repeats 3] [--epochs 3] [--frames 24]
[--poll-interval 0.5]``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault('OMP_NUM_THREADS', '1')

CACHE = pathlib.Path(__file__).parent / '.cache'
INPUT_FILES = ('config.yaml', 'train.xyz', 'valid.xyz', 'foundation.model')


def temporary_profile(workdir: pathlib.Path, poll_interval: float = 0.5):
    from aiida import load_profile, orm
    from aiida.storage.sqlite_temp import SqliteTempBackend

    profile = SqliteTempBackend.create_profile('nmcml-benchmark', options={'runner.poll.interval': poll_interval})
    load_profile(profile, allow_switch=True)
    computer = orm.Computer(
        label='localhost-bench',
        hostname='localhost',
        transport_type='core.local',
        scheduler_type='core.direct',
        workdir=str(workdir / 'scratch'),
    ).store()
    computer.configure(safe_interval=0.0)
    computer.set_minimum_job_poll_interval(poll_interval)
    executable = pathlib.Path(sys.executable).parent / 'mace_run_train'
    return orm.InstalledCode(computer=computer, filepath_executable=str(executable), label='mace-train').store()


def builder(code, epochs: int, frames: int):
    from aiida import orm

    from aiida_nmcml.calculations.train import MaceTrainCalculation
    from aiida_nmcml.data.model import MaceModel
    from aiida_nmcml.data.trainingset import TrainingSet
    from aiida_nmcml.testing.toymodel import toy_frames, train_tiny_mace

    foundation = MaceModel.get_or_create(train_tiny_mace(CACHE / 'seed1', seed=1))
    b = MaceTrainCalculation.get_builder()
    b.code = code
    b.training_set = TrainingSet.from_frames(toy_frames(frames, seed=41)).store()
    b.validation_set = TrainingSet.from_frames(toy_frames(max(frames // 4, 2), seed=42)).store()
    # naive fine-tuning needs the plugin's E0s, carried by the foundation copy (docs/finetuning.md, Energy references)
    from aiida_nmcml.workflows.finetune import compute_e0s, prepare_member_model

    b.e0s = compute_e0s(foundation, b.training_set)
    b.foundation_model = prepare_member_model(foundation, orm.Int(1), orm.Dict({'readout_init': 'none'}), b.e0s)
    b.parameters = orm.Dict({'max_num_epochs': epochs, 'batch_size': 4})
    b.seed = orm.Int(1)
    b.metadata.options.max_wallclock_seconds = 3600
    return b


def run_calcjob(b) -> tuple[float, pathlib.Path]:
    from aiida.engine import run_get_node

    start = time.perf_counter()
    _, node = run_get_node(b)
    elapsed = time.perf_counter() - start
    if not node.is_finished_ok:
        raise RuntimeError(f'calcjob failed: {node.exit_status} {node.exit_message}')
    return elapsed, pathlib.Path(node.outputs.remote_folder.get_remote_path())


def run_direct(inputs: pathlib.Path, scratch: pathlib.Path) -> float:
    folder = pathlib.Path(tempfile.mkdtemp(dir=scratch))
    for name in INPUT_FILES:
        shutil.copy(inputs / name, folder / name)
    executable = pathlib.Path(sys.executable).parent / 'mace_run_train'
    start = time.perf_counter()
    proc = subprocess.run(
        [str(executable), '--config=config.yaml'], cwd=folder, capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return elapsed


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--epochs', type=int, default=3)
    parser.add_argument('--frames', type=int, default=24)
    parser.add_argument('--poll-interval', type=float, default=0.5, help='job poll interval of the computer (s)')
    args = parser.parse_args(argv)

    workdir = pathlib.Path(tempfile.mkdtemp(prefix='nmcml-train-bench-'))
    try:
        code = temporary_profile(workdir, args.poll_interval)
        b = builder(code, args.epochs, args.frames)
        # warm-up: imports (torch, mace) in this process, file-system caches; not timed
        _, inputs = run_calcjob(b)
        calcjob, direct = [], []
        for _ in range(args.repeats):
            elapsed, inputs = run_calcjob(b)
            calcjob.append(elapsed)
            direct.append(run_direct(inputs, workdir))
        report = {
            'epochs': args.epochs,
            'poll_interval_s': args.poll_interval,
            'frames': args.frames,
            'calcjob_s': [round(t, 2) for t in calcjob],
            'direct_s': [round(t, 2) for t in direct],
            'calcjob_median_s': round(statistics.median(calcjob), 2),
            'direct_median_s': round(statistics.median(direct), 2),
            'ratio': round(statistics.median(calcjob) / statistics.median(direct), 3),
            'goal': '<= 1.1',
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(report, indent=1))
    return report


if __name__ == '__main__':
    main()

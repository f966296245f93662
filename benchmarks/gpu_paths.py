"""The GPU paths of training and MD, run for real on a GPU node that has no AiiDA.

Two steps, because the GPU node of a cluster (or the lent test machine) need not have the daemon:

``python benchmarks/gpu_paths.py prepare OUT [--model FILE]``
    In the current AiiDA profile, *dry-run* the calcjobs exactly as a user's work chain would submit them to a
    ``core.slurm`` computer (``device: cuda`` and the protocol's ``#SBATCH --gres=gpu:1``), plus the same jobs with
    ``device: cpu`` as the baseline: ``nmcml.mace.train`` (MACE 64x0e from scratch on CHGNet-labelled 40-atom NMC811
    cells) and ``nmcml.md`` (a 960-atom Li0.9 NMC811 cell, Nose-Hoover at 800 K, one model, and a committee of four
    evaluated every 10 steps). Each job's upload folder (submit script, ``input.json``/``config.yaml``, model files)
    lands under ``OUT/<job>``.

``python benchmarks/gpu_paths.py run OUT``  (on the GPU node)
    Runs each folder's ``_aiidasubmit.sh`` with bash (the ``#SBATCH`` lines are comments there), times it and prints
    one JSON document: wall time, the engine's status, MD steps/s and atom-steps/s, mace's final validation errors.

Nothing here hands the code an answer: the same jobs run on both devices and the JSON reports what each did.
"""

from __future__ import annotations

import itertools
import json
import os
import pathlib
import re
import subprocess
import sys
import time

ENGINE = '/usr/local/bin/aiida-nmcml-engine'
MACE_TRAIN = '/usr/local/bin/mace_run_train'
MD_CELL_ATOMS = 960
MD_STEPS = 300


def _codes():
    from aiida import orm

    label = 'gpu-node-dryrun'
    try:
        computer = orm.load_computer(label)
    except Exception:
        computer = orm.Computer(
            label=label,
            hostname='localhost',
            transport_type='core.local',
            scheduler_type='core.slurm',
            workdir='/tmp/gpu-node-dryrun',
        ).store()
        computer.configure()
    codes = {}
    for key, path, plugin in (('engine', ENGINE, 'nmcml.md'), ('train', MACE_TRAIN, 'nmcml.mace.train')):
        found = orm.QueryBuilder().append(orm.InstalledCode, filters={'label': f'gpu-{key}'}).first()
        codes[key] = (
            found[0]
            if found
            else orm.InstalledCode(
                computer=computer, filepath_executable=path, label=f'gpu-{key}', default_calc_job_plugin=plugin
            ).store()
        )
    return codes


def _training_frames(n_frames: int = 48, seed: int = 0):
    """Rattled/strained 40-atom NMC811 cells labelled by CHGNet (the offline teacher; weights ship in its wheel)."""
    import numpy as np
    from chgnet.model.dynamics import CHGNetCalculator

    from aiida_nmcml.structures import build_nmc

    calc = CHGNetCalculator(use_device='cpu')
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n_frames):
        x = (1.0, 0.8, 0.6, 0.5)[i % 4]
        atoms = build_nmc(40, x_li=x, seed=i)
        atoms.set_cell(atoms.cell * (1 + rng.uniform(-0.02, 0.02)), scale_atoms=True)
        atoms.rattle(0.06, seed=int(rng.integers(1 << 30)))
        atoms.calc = calc
        energy, forces, stress = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
        atoms.calc = None
        atoms.info.update({'REF_energy': float(energy), 'REF_stress': stress, 'config_type': f'x{x}'})
        atoms.arrays['REF_forces'] = forces
        for key in ('initial_magmoms', 'sublattice', 'site_index'):
            atoms.arrays.pop(key, None)
        frames.append(atoms)
    return frames


def _dry_run(builder, folder: pathlib.Path) -> pathlib.Path:
    import shutil

    from aiida.engine import run_get_node

    builder.metadata.dry_run = True
    builder.metadata.store_provenance = False
    _, node = run_get_node(builder)
    source = pathlib.Path(node.dry_run_info['folder'])
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(source, folder)
    return folder


def prepare(out: pathlib.Path, model_file: str | None) -> None:
    from aiida import load_profile, orm

    load_profile()
    from aiida_nmcml.calculations.md import MdCalculation
    from aiida_nmcml.calculations.train import MaceTrainCalculation
    from aiida_nmcml.data.model import MaceModel
    from aiida_nmcml.data.trainingset import TrainingSet
    from aiida_nmcml.structures import build_nmc, to_structure_data

    out.mkdir(parents=True, exist_ok=True)
    codes = _codes()
    cached = out / 'frames.extxyz'  # labelling is the slow part of `prepare`: keep it for a re-run
    if cached.is_file():
        from ase.io import read

        frames = read(cached, index=':')
    else:
        from ase.io import write

        frames = _training_frames()
        write(cached, frames)
    training_set = TrainingSet.from_frames(frames).store()
    gpu = {'custom_scheduler_commands': '#SBATCH --gres=gpu:1', 'max_wallclock_seconds': 1800}
    train_parameters = {
        'model': 'MACE',
        'num_channels': 64,
        'max_L': 0,
        'r_max': 5.0,
        'max_num_epochs': 8,
        'batch_size': 4,
        'valid_batch_size': 8,
        'valid_fraction': 0.15,
        'E0s': 'average',
        'loss': 'stress',
        'energy_weight': 1.0,
        'forces_weight': 10.0,
        'stress_weight': 10.0,
        'default_dtype': 'float32',
    }
    for device in ('cuda', 'cpu'):
        builder = MaceTrainCalculation.get_builder()
        builder.code = codes['train']
        builder.training_set = training_set
        builder.parameters = orm.Dict(train_parameters)
        builder.device = orm.Str(device)
        builder.metadata.options.update(gpu if device == 'cuda' else {'max_wallclock_seconds': 1800})
        _dry_run(builder, out / f'train_{device}')

    if model_file is None:
        # A placeholder with the right elements: `run` swaps in the model the GPU training job produced (file and
        # sha256 in input.json), so the MD timings are those of the 64-channel model, not of a toy.
        from aiida_nmcml.testing.toymodel import cached_tiny_mace

        model_file = str(cached_tiny_mace())
        (out / 'MD_MODEL_FROM_TRAIN_CUDA').write_text('md jobs use train_cuda/nmcml.model\n')
    model = MaceModel.get_or_create(model_file)
    structure = to_structure_data(build_nmc(MD_CELL_ATOMS, x_li=0.9, seed=3))
    md_parameters = {
        'ensemble': 'nvt_nose_hoover',
        'temperature_K': 800.0,
        'steps': MD_STEPS,
        'trajectory_stride': 50,
        'checkpoint_stride': 100,
        'dtype': 'float32',
        'committee_dtype': 'float32',
    }
    jobs = {
        'md_cuda_single': ('cuda', 1),
        'md_cuda_committee4': ('cuda', 4),
        'md_cpu_single': ('cpu', 1),
    }
    for name, (device, members) in jobs.items():
        builder = MdCalculation.get_builder()
        builder.code = codes['engine']
        builder.structure = structure
        builder.models = {f'm{i}': model for i in range(members)}
        parameters = dict(md_parameters)
        if device == 'cpu':
            parameters['steps'] = 60
        builder.parameters = orm.Dict(parameters)
        builder.device = orm.Str(device)
        builder.metadata.options.update(gpu if device == 'cuda' else {'max_wallclock_seconds': 1800})
        _dry_run(builder, out / name)
    print(json.dumps({'prepared': sorted(p.name for p in out.iterdir() if p.is_dir())}))


def _mace_errors(folder: pathlib.Path) -> dict:
    """The last validation line of mace's log (RMSE E per atom, F, stress) as printed by mace_run_train."""
    logs = sorted(folder.glob('logs/*.log'))
    if not logs:
        return {}
    lines = [line for line in logs[-1].read_text().splitlines() if 'RMSE_E_per_atom' in line]
    if not lines:
        return {}
    numbers = re.findall(r'RMSE_(\w+)=\s*([0-9.]+)\s*(\S+)', lines[-1])
    return {f'rmse_{key}': f'{value} {unit}' for key, value, unit in numbers}


def _epoch_times(folder: pathlib.Path) -> dict:
    """Seconds per epoch from the timestamps of mace's debug log ('Initial:' then one line per 'Epoch N:')."""
    from datetime import datetime

    logs = sorted(folder.glob('logs/*_debug.log'))
    if not logs:
        return {}
    stamps = []
    for line in logs[-1].read_text().splitlines():
        if ' INFO: Initial:' in line or re.search(r' INFO: Epoch \d+:', line):
            stamps.append(datetime.strptime(line[:23], '%Y-%m-%d %H:%M:%S.%f'))
    if len(stamps) < 2:
        return {}
    seconds = [round((b - a).total_seconds(), 2) for a, b in itertools.pairwise(stamps)]
    return {'epochs_done': len(seconds), 'epoch_s': seconds}


def _use_trained_model(out: pathlib.Path, folder: pathlib.Path) -> str | None:
    """Swap the GPU-trained model (file and sha256) into an MD job prepared with a placeholder model."""
    import hashlib
    import shutil

    trained = out / 'train_cuda' / 'nmcml.model'
    if not (out / 'MD_MODEL_FROM_TRAIN_CUDA').is_file() or not trained.is_file():
        return None
    sha = hashlib.sha256(trained.read_bytes()).hexdigest()
    config = json.loads((folder / 'input.json').read_text())
    for entry in config['models']:
        shutil.copy(trained, folder / entry['path'])
        entry['sha256'] = sha
    (folder / 'input.json').write_text(json.dumps(config, indent=1))
    return sha


def run(out: pathlib.Path) -> None:
    results = {}
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', str(os.cpu_count())))
    # train_cuda first (the MD jobs use its model), then the cuda MD, the cpu MD, and the cpu training last (the longest
    # and least needed: a time limit around the whole run should cut it before anything else)
    folders = sorted(
        (p for p in out.iterdir() if p.is_dir()),
        key=lambda p: (p.name != 'train_cuda', 'cpu' in p.name, p.name.startswith('train'), p.name),
    )
    for folder in folders:
        swapped = _use_trained_model(out, folder) if folder.name.startswith('md') else None
        start = time.perf_counter()
        command = ['bash', '_aiidasubmit.sh']
        proc = subprocess.run(command, check=False, cwd=folder, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        entry = {'returncode': proc.returncode, 'wall_s': round(wall, 2)}
        if swapped:
            entry['model_sha256'] = swapped
        status = folder / 'engine_status.json'
        if status.is_file():
            entry['engine_status'] = json.loads(status.read_text())
        summary = folder / 'md_summary.json'
        if summary.is_file():
            data = json.loads(summary.read_text())
            entry['summary'] = {k: data[k] for k in list(data)[:30]}
        if folder.name.startswith('train'):
            entry.update(_mace_errors(folder))
            entry.update(_epoch_times(folder))
            entry['model_written'] = any(folder.glob('*.model'))
        if proc.returncode:
            entry['stderr_tail'] = (proc.stderr or '')[-1500:]
            for name in ('_scheduler-stderr.txt', 'mace_train.err', 'aiida.err'):
                if (folder / name).is_file():
                    entry[f'{name}_tail'] = (folder / name).read_text()[-1500:]
        results[folder.name] = entry
        print(folder.name, json.dumps(entry)[:3000], file=sys.stderr, flush=True)
    print(json.dumps(results, indent=1))


if __name__ == '__main__':
    mode, target = sys.argv[1], pathlib.Path(sys.argv[2])
    if mode == 'prepare':
        model_arg = sys.argv[sys.argv.index('--model') + 1] if '--model' in sys.argv else None
        prepare(target, model_arg)
    else:
        run(target)

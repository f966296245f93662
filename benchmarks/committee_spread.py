"""Committee spread before (members differ only by seed) and after (bootstrap + perturbed readout) issue 8.

What it measures, for one foundation model and one data set, for both committee recipes:

* the held-out calibration (``analysis.metrics.calibrate_committee``): median per-atom force deviation, Spearman rho
  of per-atom deviation against per-atom true error, the ML calibration scale alpha (small-committee corrected) and
  whether the committee is refused as spread-less;
* a fresh 300 K Langevin MD run (never-seen NMC811 cell) driven by member 0: the median over monitor steps of the
  max-over-atoms committee deviation, against the dtype noise floor (median of max |F64 - F32| of member 0 on the
  same frames).

Data, honestly: the offline stand-in foundation (a tiny MACE trained on Morse-pair toy frames,
aiida_nmcml/testing/toymodel.py) and toy frames labelled by the same Morse potential ("demo-like": rattled and
strained layered LiMO2 cells of 4-12 atoms). Not DFT, not the CHGNet-distilled foundation: the numbers show what the
recipe does to the spread, not the accuracy of a production model. The training settings are the ``demo`` protocol
of nmcml.finetune (2 epochs, batch 1, stress weight 100), run with ``mace_run_train`` directly (no AiiDA) on the
same config the calcjob writes, E0s computed as the plugin does. The algorithm is never handed the answer: the
held-out labels are used only to score.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/committee_spread.py [--members 4] [--train 24] [--heldout 12]
[--epochs 2] [--md-steps 200]``. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault('OMP_NUM_THREADS', '1')

import numpy as np


def mace_config(protocol_parameters: dict, e0s: dict, seed: int, has_valid: bool) -> dict:
    from aiida_nmcml.analysis.e0s import mace_e0s_argument
    from aiida_nmcml.calculations.train import DATA_KEYS, DEFAULT_PARAMETERS

    config = {**DEFAULT_PARAMETERS, **protocol_parameters, **DATA_KEYS}
    config.update(
        {
            'name': 'nmcml',
            'seed': seed,
            'device': 'cpu',
            'train_file': 'train.xyz',
            'foundation_model': 'foundation.model',
            'foundation_model_elements': True,
            'multiheads_finetuning': False,
            'E0s': mace_e0s_argument(e0s),
        }
    )
    if has_valid:
        config['valid_file'] = 'valid.xyz'
        config.pop('valid_fraction', None)
    return config


def train_member(workdir: pathlib.Path, model, frames, valid, config: dict) -> pathlib.Path:
    import torch
    import yaml
    from ase.io import write

    workdir.mkdir(parents=True)
    torch.save(model, workdir / 'foundation.model')
    write(workdir / 'train.xyz', frames, format='extxyz')
    if valid:
        write(workdir / 'valid.xyz', valid, format='extxyz')
    config = {**config, 'batch_size': max(1, min(int(config['batch_size']), len(frames)))}
    (workdir / 'config.yaml').write_text(yaml.safe_dump(config))
    executable = pathlib.Path(sys.executable).parent / 'mace_run_train'
    proc = subprocess.run(
        [str(executable), '--config=config.yaml'], cwd=workdir, capture_output=True, text=True, check=False
    )
    target = workdir / 'nmcml.model'
    if proc.returncode != 0 or not target.is_file():
        raise RuntimeError(f'training failed in {workdir}:\n{proc.stderr[-2000:]}')
    return target


def build_committee(recipe: str, foundation_path, train_frames, heldout, e0s, members, parameters, workdir):
    import torch

    from aiida_nmcml.engine.committee_init import initialise_readout, member_indices
    from aiida_nmcml.workflows.finetune import DIVERSITY_DEFAULTS, set_model_e0s

    paths = []
    for index in range(members):
        seed = 1 + index
        model = torch.load(foundation_path, map_location='cpu', weights_only=False)
        set_model_e0s(model, e0s)
        if recipe == 'seed_only':
            frames, valid = train_frames, heldout  # the old recipe: same data, common validation set
        else:
            train, out_of_bag = member_indices(len(train_frames), seed, DIVERSITY_DEFAULTS['resampling'])
            frames = [train_frames[i] for i in train]
            valid = [train_frames[i] for i in out_of_bag] or heldout
            initialise_readout(
                model,
                seed,
                DIVERSITY_DEFAULTS['readout_init'],
                DIVERSITY_DEFAULTS['readout_scale'],
                DIVERSITY_DEFAULTS['readout_blocks'],
            )
        config = mace_config(parameters, e0s, seed, has_valid=True)
        paths.append(train_member(workdir / f'{recipe}_{index}', model, frames, valid, config))
    return paths


def heldout_calibration(paths, heldout) -> dict:
    from mace.calculators import MACECalculator

    from aiida_nmcml.analysis.metrics import atomic_force_deviation, calibrate_committee

    calc = MACECalculator(model_paths=[str(p) for p in paths], device='cpu', default_dtype='float64')
    deviation, error = [], []
    for atoms in heldout:
        atoms = atoms.copy()
        atoms.calc = calc
        atoms.get_potential_energy()
        forces = np.asarray(calc.results['forces_comm'])
        deviation.append(atomic_force_deviation(forces))
        error.append(np.linalg.norm(forces.mean(axis=0) - atoms.arrays['REF_forces'], axis=1))
    result = calibrate_committee(np.concatenate(deviation), np.concatenate(error), len(paths))
    result.pop('reliability')
    keep = ('median_deviation', 'rms_error', 'spearman', 'alpha', 'alpha2', 'alpha2_raw', 'negligible_spread')
    return {key: result.get(key) for key in keep}


def md_spread(paths, steps: int, stride: int = 10, seed: int = 7) -> dict:
    """Fresh 300 K Langevin on an NMC811 cell; committee deviation vs the float32/float64 noise floor of member 0."""
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from mace.calculators import MACECalculator

    from aiida_nmcml.engine.md_committee import Committee
    from aiida_nmcml.structures import build_nmc

    atoms = build_nmc(40, seed=0)
    committee = Committee([str(p) for p in paths], device='cpu', dtype='float64')
    single = MACECalculator(model_paths=str(paths[0]), device='cpu', default_dtype='float32')
    atoms.calc = committee.driver
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(seed))
    dyn = Langevin(atoms, 1.0 * units.fs, temperature_K=300, friction=0.01 / units.fs, rng=np.random.default_rng(seed))
    deviations, floors = [], []
    for _ in range(steps // stride):
        dyn.run(stride)
        deviations.append(committee.deviation(atoms).max_force_dev)
        probe = atoms.copy()
        probe.calc = single
        floors.append(float(np.abs(probe.get_forces() - atoms.get_forces()).max()))
    median, floor = float(np.median(deviations)), float(np.median(floors))
    return {
        'md_steps': steps,
        'median_max_force_deviation': median,
        'dtype_noise_floor': floor,
        'ratio_to_floor': median / floor if floor > 0 else None,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--members', type=int, default=4)
    parser.add_argument('--train', type=int, default=24)
    parser.add_argument('--heldout', type=int, default=12)
    parser.add_argument('--epochs', type=int, default=2)
    parser.add_argument('--md-steps', type=int, default=200)
    parser.add_argument('--output', help='also write the JSON here')
    args = parser.parse_args(argv)

    import torch

    from aiida_nmcml.analysis.e0s import compute_e0s
    from aiida_nmcml.testing.toymodel import cached_tiny_mace, toy_frames
    from aiida_nmcml.workflows.finetune import FinetuneWorkChain

    parameters = dict(FinetuneWorkChain.get_protocol_inputs('demo')['train']['parameters'])
    parameters['max_num_epochs'] = args.epochs
    foundation_path = cached_tiny_mace(seed=1)
    train_frames = toy_frames(args.train, seed=51)
    heldout = toy_frames(args.heldout, seed=52)
    model = torch.load(foundation_path, map_location='cpu', weights_only=False)
    e0s = compute_e0s(model, train_frames)['e0s']

    report = {
        'data': 'toy Morse-labelled layered LiMO2 frames; tiny MACE foundation (aiida_nmcml/testing/toymodel.py)',
        'members': args.members,
        'train_frames': args.train,
        'heldout_frames': args.heldout,
        'epochs': args.epochs,
        'recipes': {},
    }
    workdir = pathlib.Path(tempfile.mkdtemp(prefix='committee_spread_'))
    try:
        for recipe in ('seed_only', 'bootstrap_perturbed_readout'):
            start = time.perf_counter()
            paths = build_committee(
                recipe, foundation_path, train_frames, heldout, e0s, args.members, parameters, workdir
            )
            entry = {'train_seconds': round(time.perf_counter() - start, 1)}
            entry['identical_model_files'] = len({p.read_bytes() for p in paths}) == 1
            entry['heldout'] = heldout_calibration(paths, heldout)
            entry['md_300K'] = md_spread(paths, args.md_steps)
            report['recipes'][recipe] = entry
            print(json.dumps({recipe: entry}), file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    text = json.dumps(report, indent=1)
    print(text)
    if args.output:
        pathlib.Path(args.output).write_text(text)
    return report


if __name__ == '__main__':
    main()

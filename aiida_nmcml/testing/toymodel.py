"""A stand-in foundation model that needs no internet: toy NMC frames and a tiny MACE trained on them in seconds.

Foundation models (mace-mp-0, mace-mpa-0 ...) cannot be downloaded on air-gapped machines or in CI. The demo campaign
and the tests fine-tune from this tiny model instead. The toy energies come from a pair potential, not DFT: the model
is a placeholder for the *workflow*, never a physical result.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np

ELEMENTS = ('Li', 'Ni', 'Mn', 'Co', 'O')


def toy_calculator():
    """Morse pairs with a plausible metal-oxygen minimum near 2 Å: smooth, cheap and element-agnostic."""
    from ase.calculators.morse import MorsePotential

    return MorsePotential(epsilon=0.5, r0=2.0, rho0=4.0, rcut1=3.5, rcut2=4.5)


def toy_frames(n: int = 60, seed: int = 0, rattle: float = 0.08, key_prefix: str = 'REF_'):
    """Rattled and strained layered LiMO2 cells (4-12 atoms) labelled with :func:`toy_calculator`.

    Energies, forces and stress are stored under ``REF_energy`` / ``REF_forces`` / ``REF_stress`` (the keys
    ``mace_run_train`` is told to read), so no calculator is attached to the returned frames.
    """
    from ase.build import make_supercell

    from ..structures import layered_parent

    rng = np.random.default_rng(seed)
    calc = toy_calculator()
    frames = []
    metals = ('Ni', 'Mn', 'Co')
    for i in range(n):
        parent = layered_parent()
        if i % 3 == 2:
            parent = make_supercell(parent, np.diag([2, 1, 1]))
        atoms = parent.copy()
        symbols = atoms.get_chemical_symbols()
        for j, s in enumerate(symbols):
            if s == 'Ni':
                symbols[j] = metals[rng.integers(0, 3)] if rng.random() < 0.4 else 'Ni'
        atoms.set_chemical_symbols(symbols)
        strain = np.eye(3) + rng.normal(0, 0.02, (3, 3))
        atoms.set_cell(atoms.cell.array @ strain, scale_atoms=True)
        atoms.rattle(stdev=rattle, seed=int(rng.integers(1 << 30)))
        atoms.calc = calc
        energy = atoms.get_potential_energy()
        forces = atoms.get_forces()
        stress = atoms.get_stress()
        atoms.calc = None
        atoms.info[f'{key_prefix}energy'] = float(energy)
        atoms.arrays[f'{key_prefix}forces'] = forces
        atoms.info[f'{key_prefix}stress'] = stress
        atoms.info['config_type'] = 'toy'
        frames.append(atoms)
    return frames


def isolated_atom_frames(key_prefix: str = 'REF_'):
    """Single atoms marked ``IsolatedAtom`` so mace_run_train takes E0s from data rather than guessing."""
    from ase import Atoms

    out = []
    for symbol in ELEMENTS:
        atoms = Atoms(symbol, cell=[20, 20, 20], pbc=False)
        atoms.info[f'{key_prefix}energy'] = 0.0
        atoms.info['config_type'] = 'IsolatedAtom'
        out.append(atoms)
    return out


def tiny_mace_arguments(train_file: str, name: str = 'tiny', seed: int = 1, epochs: int = 5) -> list[str]:
    """Arguments for a MACE small enough to train in ~15 s on one CPU core (8 channels, L=0)."""
    return [
        f'--name={name}',
        f'--train_file={train_file}',
        '--valid_fraction=0.15',
        '--energy_key=REF_energy',
        '--forces_key=REF_forces',
        '--stress_key=REF_stress',
        '--E0s=average',
        '--model=MACE',
        '--num_channels=8',
        '--max_L=0',
        '--correlation=2',
        '--num_interactions=2',
        '--r_max=4.0',
        '--num_radial_basis=4',
        '--num_cutoff_basis=3',
        f'--max_num_epochs={epochs}',
        '--batch_size=4',
        '--valid_batch_size=8',
        '--default_dtype=float64',
        '--device=cpu',
        f'--seed={seed}',
        '--eval_interval=1',
        '--save_cpu',
        '--restart_latest',
    ]


def train_tiny_mace(workdir: str | os.PathLike, n_frames: int = 60, seed: int = 1, epochs: int = 5) -> pathlib.Path:
    """Train the stand-in foundation model in ``workdir`` and return the path of its ``.model`` file."""
    from ase.io import write

    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    target = workdir / 'tiny.model'
    if target.is_file():
        return target
    train_file = workdir / 'toy_train.xyz'
    write(train_file, toy_frames(n_frames, seed=seed), format='extxyz')
    args = tiny_mace_arguments(train_file.name, seed=seed, epochs=epochs)
    env = {**os.environ, 'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS', '1')}
    cmd = [sys.executable, '-m', 'mace.cli.run_train', *args]
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not target.is_file():
        raise RuntimeError(
            f'tiny MACE training failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}'
        )
    return target


def test_cache_root() -> pathlib.Path:
    """Where test doubles are cached across sessions: ``$NMCML_TEST_CACHE`` or ``~/.cache/aiida-nmcml/test-models``.

    Not pytest's cache plugin, so ``pytest -p no:cacheprovider`` still works and the models survive ``--cache-clear``.
    """
    root = os.environ.get('NMCML_TEST_CACHE') or pathlib.Path.home() / '.cache' / 'aiida-nmcml' / 'test-models'
    return pathlib.Path(root)


def cached_tiny_mace(seed: int = 1) -> pathlib.Path:
    """The tiny model for ``seed``, trained once and reused; keyed by this module's source so editing it retrains.

    Trained in a private temporary folder and moved into place atomically, so two test sessions starting at once
    (several developers on one machine) never read a half-written file.
    """
    import hashlib
    import inspect
    import shutil
    import tempfile

    key = hashlib.sha256(inspect.getsource(sys.modules[__name__]).encode()).hexdigest()[:12]
    final = test_cache_root() / f'tiny_mace_seed{seed}_{key}' / 'tiny.model'
    if final.is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=final.parent.parent, prefix='.training-') as workdir:
        model = train_tiny_mace(workdir, seed=seed)
        staged = final.parent / f'.{os.getpid()}.model'
        shutil.copy(model, staged)
        os.replace(staged, final)
    return final

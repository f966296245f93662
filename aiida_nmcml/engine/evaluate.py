"""``aiida-nmcml-engine evaluate``: committee predictions on a set of frames, parity against DFT, calibration.

Input::

    frames: frames.xyz              # extxyz, REF_* labels optional (unlabelled MD frames still get deviations)
    models: [{path, sha256}, ...]   # the committee; hashes checked before unpickling
    device: auto | cpu | cuda
    dtype: float64 | float32

Outputs: ``evaluate_arrays.npz`` (per-frame and per-atom arrays, see :data:`ARRAY_KEYS`) and
``evaluate_metrics.json`` (parity metrics against REF_* and the deviation → error calibration through the origin).
"""

from __future__ import annotations

import itertools

import numpy as np

from ..analysis.metrics import (
    atomic_force_deviation,
    fit_through_origin,
    max_force_error,
    parity,
)
from .common import EngineError, check_finite_forces, make_calculator, write_json

ARRAYS_FILENAME = 'evaluate_arrays.npz'
METRICS_FILENAME = 'evaluate_metrics.json'
ARRAY_KEYS = (
    'natoms',  # (n_frames,)
    'energy_committee',  # (n_models, n_frames) eV
    'energy',  # (n_frames,) committee mean, eV
    'forces_committee',  # (n_models, total_atoms, 3) eV/Å, frames concatenated in order
    'forces',  # (total_atoms, 3) committee mean
    'stress',  # (n_frames, 6) committee mean, eV/Å^3 (ASE Voigt)
    'max_force_deviation',  # (n_frames,) eV/Å
    'ref_energy',  # (n_frames,) NaN where unlabelled
    'ref_forces',  # (total_atoms, 3) NaN where unlabelled
    'ref_stress',  # (n_frames, 6) NaN where unlabelled
    'max_force_error',  # (n_frames,) eV/Å, NaN where unlabelled
)
DEFAULTS = {'frames': 'frames.xyz', 'device': 'auto', 'dtype': 'float64'}


def read_frames(path: str) -> list:
    from ase.io import read

    try:
        frames = read(path, index=':', format='extxyz')
    except FileNotFoundError as exc:
        raise EngineError('invalid_input', f'frames file {path} is missing') from exc
    except Exception as exc:
        raise EngineError('invalid_input', f'frames file {path} is not readable extxyz: {exc}') from exc
    if not frames:
        raise EngineError('invalid_input', f'frames file {path} holds no frames')
    return frames


def predict(calc, frames, n_models: int) -> dict:
    """Committee energies/forces/stress per frame; with one model the 'committee' is that model."""
    energies, forces, stresses, deviations = [], [], [], []
    for index, atoms in enumerate(frames):
        atoms = atoms.copy()
        atoms.calc = calc
        atoms.get_potential_energy()
        results = calc.results
        member_forces = np.asarray(results['forces_comm']) if n_models > 1 else np.asarray(results['forces'])[None]
        check_finite_forces(member_forces, where=f'on frame {index}')
        member_energies = np.atleast_1d(results['energy_comm']) if n_models > 1 else np.array([results['energy']])
        energies.append(member_energies)
        forces.append(member_forces)
        stress = results.get('stress')
        periodic = stress is not None and atoms.pbc.all()
        stresses.append(np.asarray(stress, dtype=float) if periodic else np.full(6, np.nan))
        deviations.append(float(np.max(atomic_force_deviation(member_forces))) if n_models > 1 else 0.0)
    forces_committee = np.concatenate(forces, axis=1)
    return {
        'energy_committee': np.stack(energies, axis=1),
        'forces_committee': forces_committee,
        'stress': np.array(stresses),
        'max_force_deviation': np.array(deviations),
    }


def reference_arrays(frames) -> dict:
    ref_energy = np.array([float(a.info.get('REF_energy', np.nan)) for a in frames])
    ref_forces = np.concatenate(
        [
            np.asarray(a.arrays['REF_forces'], float) if 'REF_forces' in a.arrays else np.full((len(a), 3), np.nan)
            for a in frames
        ]
    )
    ref_stress = np.array(
        [
            np.asarray(a.info['REF_stress'], float).reshape(-1)[:6] if 'REF_stress' in a.info else np.full(6, np.nan)
            for a in frames
        ]
    )
    return {'ref_energy': ref_energy, 'ref_forces': ref_forces, 'ref_stress': ref_stress}


def compute_metrics(arrays: dict, n_models: int) -> dict:
    natoms = arrays['natoms']
    energy_ok = np.isfinite(arrays['ref_energy'])
    forces_ok = np.all(np.isfinite(arrays['ref_forces']), axis=1)
    stress_ok = np.all(np.isfinite(arrays['ref_stress']), axis=1) & np.all(np.isfinite(arrays['stress']), axis=1)
    metrics = {
        'n_frames': int(natoms.size),
        'n_models': n_models,
        'n_labelled': int(energy_ok.sum()),
        'energy_per_atom': parity(
            arrays['energy'][energy_ok] / natoms[energy_ok], arrays['ref_energy'][energy_ok] / natoms[energy_ok]
        ),
        'forces': parity(arrays['forces'][forces_ok], arrays['ref_forces'][forces_ok]),
        'stress': parity(arrays['stress'][stress_ok], arrays['ref_stress'][stress_ok]),
        'members': [],
    }
    for m in range(n_models):
        metrics['members'].append(
            {
                'energy_per_atom': parity(
                    arrays['energy_committee'][m][energy_ok] / natoms[energy_ok],
                    arrays['ref_energy'][energy_ok] / natoms[energy_ok],
                ),
                'forces': parity(arrays['forces_committee'][m][forces_ok], arrays['ref_forces'][forces_ok]),
            }
        )
    deviation = arrays['max_force_deviation']
    metrics['max_force_deviation'] = {
        'mean': float(np.mean(deviation)),
        'max': float(np.max(deviation)),
        'median': float(np.median(deviation)),
    }
    error = arrays['max_force_error']
    labelled = np.isfinite(error)
    metrics['calibration'] = (
        fit_through_origin(deviation[labelled], error[labelled])
        if n_models > 1
        else {'slope': None, 'r2': None, 'n': 0}
    )
    metrics['calibration']['definition'] = 'max_i |<F_i> - F_i^DFT| = slope * max_i d_i (fit through the origin)'
    return metrics


def run(config: dict) -> None:
    config = {**DEFAULTS, **config}
    models = config.get('models') or []
    calc = make_calculator(models, device=config['device'], dtype=config['dtype'])
    frames = read_frames(config['frames'])
    n_models = len(models)
    arrays = predict(calc, frames, n_models)
    arrays['natoms'] = np.array([len(a) for a in frames])
    arrays['energy'] = arrays['energy_committee'].mean(axis=0)
    arrays['forces'] = arrays['forces_committee'].mean(axis=0)
    arrays.update(reference_arrays(frames))
    bounds = np.cumsum([0, *arrays['natoms']])
    arrays['max_force_error'] = np.array(
        [
            max_force_error(arrays['forces'][lo:hi], arrays['ref_forces'][lo:hi])
            if np.all(np.isfinite(arrays['ref_forces'][lo:hi]))
            else np.nan
            for lo, hi in itertools.pairwise(bounds)
        ]
    )
    np.savez(ARRAYS_FILENAME, **{key: arrays[key] for key in ARRAY_KEYS})
    write_json(METRICS_FILENAME, compute_metrics(arrays, n_models))

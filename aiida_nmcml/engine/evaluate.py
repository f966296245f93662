"""``aiida-nmcml-engine evaluate``: committee predictions on a set of frames, parity against DFT, calibration.

Input::

    frames: frames.xyz              # extxyz, REF_* labels optional (unlabelled MD frames still get deviations)
    models: [{path, sha256}, ...]   # the committee; hashes checked before unpickling
    device: auto | cpu | cuda
    dtype: float64 | float32        # every member in the same dtype (a mixed committee has a dtype noise floor)
    min_spread: 1.0e-3              # eV/Å: a committee whose median per-atom deviation is below is refused
    tolerance: 0.1                  # eV/Å: force error that defines the trust levels
    n_bins: 10                      # quantile bins of the reliability curve

Outputs: ``evaluate_arrays.npz`` (per-frame and per-atom arrays, see :data:`ARRAY_KEYS`) and
``evaluate_metrics.json`` (parity metrics against REF_*, a summary in meV/atom, meV/Å and GPa, and the per-atom
calibration of the committee spread, :func:`aiida_nmcml.engine.metrics.calibrate_committee`).

A committee whose spread is negligible (median per-atom deviation below ``min_spread`` on labelled frames) still gets
its predictions and metrics written, and then the status ``negligible_spread``: its calibration would be a number
without meaning (a scale of 10^3-10^4 from members that differ by 1e-6 eV/Å), so it is refused, not returned.
"""

from __future__ import annotations

import itertools

import numpy as np

from .common import EngineError, check_finite_forces, make_calculator, write_json
from .metrics import (
    atomic_force_deviation,
    calibrate_committee,
    max_force_error,
    parity,
)

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
    'atomic_force_deviation',  # (total_atoms,) eV/Å, d_i of every atom (0 for a single model)
    'atomic_force_error',  # (total_atoms,) eV/Å, |<F_i> - F_i^DFT|, NaN where unlabelled
)
DEFAULTS = {
    'frames': 'frames.xyz',
    'device': 'auto',
    'dtype': 'float64',
    'min_spread': 1.0e-3,
    'tolerance': 0.1,
    'n_bins': 10,
}
# 1 eV/Å^3 in GPa (ASE: units.GPa = 1 / 160.2177 eV/Å^3)
EV_PER_A3_TO_GPA = 160.21766208


def parameters_schema():
    """The user-settable keys of ``nmcml.evaluate``'s ``parameters`` (frames, models, device come from inputs)."""
    from ..common.schema import Field, Section

    return Section(
        {
            'dtype': Field(str, default='float64', choices=('float64', 'float32'), help='every member in this dtype'),
            'min_spread': Field(float, default=1.0e-3, min=0.0, min_exclusive=True, unit='eV/Å',
                                help='refuse to calibrate a committee whose median per-atom deviation is below'),
            'tolerance': Field(float, default=0.1, min=0.0, min_exclusive=True, unit='eV/Å',
                               help='force error that defines the trust levels'),
            'n_bins': Field(int, default=10, min=1, max=100, help='quantile bins of the reliability curve'),
        }
    )  # fmt: skip


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
    energies, forces, stresses, deviations, atomic = [], [], [], [], []
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
        if stress is not None and np.shape(stress) == (3, 3):  # CHGNet and others may return the full tensor
            stress = np.asarray(stress)[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
        periodic = stress is not None and atoms.pbc.all()
        stresses.append(np.asarray(stress, dtype=float) if periodic else np.full(6, np.nan))
        per_atom = atomic_force_deviation(member_forces) if n_models > 1 else np.zeros(len(atoms))
        atomic.append(per_atom)
        deviations.append(float(np.max(per_atom)))
    forces_committee = np.concatenate(forces, axis=1)
    return {
        'energy_committee': np.stack(energies, axis=1),
        'forces_committee': forces_committee,
        'stress': np.array(stresses),
        'max_force_deviation': np.array(deviations),
        'atomic_force_deviation': np.concatenate(atomic),
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
    metrics['stress_GPa'] = parity(
        arrays['stress'][stress_ok] * EV_PER_A3_TO_GPA, arrays['ref_stress'][stress_ok] * EV_PER_A3_TO_GPA
    )
    metrics['summary'] = summary(metrics)
    return metrics


def summary(metrics: dict) -> dict:
    """The three numbers people compare, in the units they compare them in (components RMSE, as mace's table)."""

    def scaled(block, factor):
        value = metrics[block]['rmse']
        return None if value is None else value * factor

    return {
        'energy_rmse_meV_per_atom': scaled('energy_per_atom', 1e3),
        'forces_rmse_meV_per_A': scaled('forces', 1e3),
        'stress_rmse_GPa': scaled('stress_GPa', 1.0),
    }


def calibration(arrays: dict, n_models: int, config: dict) -> dict | None:
    """Per-atom calibration on the labelled atoms; None for a single model (nothing to calibrate)."""
    if n_models < 2:
        return None
    labelled = np.isfinite(arrays['atomic_force_error'])
    return calibrate_committee(
        arrays['atomic_force_deviation'][labelled],
        arrays['atomic_force_error'][labelled],
        n_models,
        n_bins=int(config['n_bins']),
        min_spread=float(config['min_spread']),
        tolerance=float(config['tolerance']),
    )


def check_config(config: dict) -> None:
    for key in ('min_spread', 'tolerance'):
        value = config[key]
        if not isinstance(value, int | float) or not value > 0:
            raise EngineError('invalid_input', f'{key} must be a positive number (eV/Å), not {value!r}')
    if not isinstance(config['n_bins'], int) or not 1 <= config['n_bins'] <= 100:
        raise EngineError('invalid_input', f'n_bins must be an integer between 1 and 100, not {config["n_bins"]!r}')


def run(config: dict) -> None:
    config = {**DEFAULTS, **config}
    check_config(config)
    models = config.get('models') or []
    universal = config.get('universal_potential')
    if universal:  # zero-shot baseline: a universal potential by name, a committee of one (issue 9)
        if models:
            raise EngineError('invalid_input', 'give either models or universal_potential, not both')
        from .teacher import load_teacher

        calc, identity = load_teacher(universal, config['device'])
        models = [identity]
    else:
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
    arrays['atomic_force_error'] = np.linalg.norm(arrays['forces'] - arrays['ref_forces'], axis=1)
    np.savez(ARRAYS_FILENAME, **{key: arrays[key] for key in ARRAY_KEYS})
    metrics = compute_metrics(arrays, n_models)
    metrics['calibration'] = calibration(arrays, n_models, config)
    metrics['per_frame'] = per_frame_errors(arrays)
    metrics['energy_differences'] = energy_difference_parity(arrays, frames)
    if universal:
        metrics['universal_potential'] = identity
        metrics['energy_per_atom'] = None  # MP-corrected absolute energies mean nothing against another code's
        metrics['members'] = [{**m, 'energy_per_atom': None} for m in metrics['members']]
        if 'summary' in metrics:
            metrics['summary']['energy_rmse_meV_per_atom'] = None
    write_json(METRICS_FILENAME, metrics)
    if metrics['calibration'] and metrics['calibration']['negligible_spread']:
        cal = metrics['calibration']
        raise EngineError(
            'negligible_spread',
            f"the committee's median per-atom force deviation is {cal['median_deviation']:.2e} eV/Å "
            f'(< min_spread {cal["min_spread"]:.1e}) against an RMS error of {cal["rms_error"]:.2e} eV/Å: its members '
            'agree too well for the spread to measure anything. Train members on different data (bootstrap) and from '
            're-initialised readouts (nmcml.finetune does both by default).',
        )


def per_frame_errors(arrays: dict) -> dict:
    """Force RMSE and largest stress-component error of every frame (None where unlabelled): where a model fails."""
    bounds = np.cumsum([0, *arrays['natoms']])
    force_rmse, stress_error = [], []
    for frame, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        diff = arrays['forces'][lo:hi] - arrays['ref_forces'][lo:hi]
        force_rmse.append(float(np.sqrt(np.mean(diff**2))) if np.all(np.isfinite(diff)) else None)
        sdiff = arrays['stress'][frame] - arrays['ref_stress'][frame]
        stress_error.append(float(np.max(np.abs(sdiff)) * EV_PER_A3_TO_GPA) if np.all(np.isfinite(sdiff)) else None)
    return {'force_rmse_eV_per_A': force_rmse, 'stress_max_abs_error_GPa': stress_error}


def energy_difference_parity(arrays: dict, frames) -> dict:
    """Energies compared only as differences between frames of one composition (per atom, eV).

    Why: a universal potential's energies (CHGNet: Materials Project corrections) and DFT's from another code differ
    by a constant per element; within one composition that constant cancels, across compositions it does not.
    """
    formulas = [a.get_chemical_formula(mode='hill') for a in frames]
    energy_ok = np.isfinite(arrays['ref_energy'])
    pred, ref = [], []
    for formula in sorted(set(formulas)):
        index = [i for i, f in enumerate(formulas) if f == formula and energy_ok[i]]
        if len(index) < 2:
            continue
        e = arrays['energy'][index] / arrays['natoms'][index]
        r = arrays['ref_energy'][index] / arrays['natoms'][index]
        pred.extend(e - e.mean())
        ref.extend(r - r.mean())
    result = parity(np.array(pred), np.array(ref))
    result['definition'] = 'per-atom energy minus the mean of its composition, frames of compositions seen >= 2 times'
    return result

"""Parity metrics against DFT and the calibration of committee deviation against true error. Pure numpy, no AiiDA:
the engine (on the compute node) and the work chains (in the daemon) use the same definitions.

Definitions (DP-GEN's, so thresholds from the literature carry over):

* per-atom committee deviation ``d_i = sqrt(mean_m |F_mi - <F_i>|^2)``; a frame's deviation is ``max_i d_i``;
* a frame's true force error is ``max_i |<F_i> - F_i^DFT|`` (committee mean against DFT);
* calibration: ``error ≈ k · deviation``, least squares *through the origin* — a committee that agrees should mean a
  small error, so no intercept. Selection multiplies its trust levels by ``k`` or divides the deviation by it.
"""

from __future__ import annotations

import numpy as np


def parity(predicted, reference) -> dict:
    """RMSE, MAE and max absolute error over all components; NaN-free inputs required (checked)."""
    predicted = np.asarray(predicted, dtype=float).ravel()
    reference = np.asarray(reference, dtype=float).ravel()
    if predicted.shape != reference.shape:
        raise ValueError(f'shape mismatch: {predicted.shape} predicted vs {reference.shape} reference')
    if predicted.size == 0:
        return {'rmse': None, 'mae': None, 'max_abs': None, 'n': 0}
    if not (np.all(np.isfinite(predicted)) and np.all(np.isfinite(reference))):
        raise ValueError('non-finite values in parity data')
    delta = predicted - reference
    return {
        'rmse': float(np.sqrt(np.mean(delta**2))),
        'mae': float(np.mean(np.abs(delta))),
        'max_abs': float(np.max(np.abs(delta))),
        'n': int(delta.size),
    }


def atomic_force_deviation(forces_committee) -> np.ndarray:
    """Per-atom deviation ``d_i`` from forces of shape (n_models, n_atoms, 3)."""
    forces = np.asarray(forces_committee, dtype=float)
    if forces.ndim != 3 or forces.shape[-1] != 3:
        raise ValueError(f'expected (n_models, n_atoms, 3), got {forces.shape}')
    mean = forces.mean(axis=0)
    return np.sqrt(np.mean(np.sum((forces - mean) ** 2, axis=-1), axis=0))


def max_force_deviation(forces_committee) -> float:
    return float(np.max(atomic_force_deviation(forces_committee)))


def max_force_error(forces_predicted, forces_reference) -> float:
    delta = np.asarray(forces_predicted, dtype=float) - np.asarray(forces_reference, dtype=float)
    return float(np.max(np.linalg.norm(delta, axis=-1)))


def fit_through_origin(deviation, error) -> dict:
    """Least-squares ``error = k · deviation``; ``r2`` is the usual (centred) coefficient of determination.

    ``k > 1`` means the committee under-estimates its error. With no spread at all (a committee of identical models)
    there is nothing to calibrate: ``slope`` is None.
    """
    x = np.asarray(deviation, dtype=float).ravel()
    y = np.asarray(error, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f'{x.size} deviations for {y.size} errors')
    mask = np.isfinite(x) & np.isfinite(y)
    x, y = x[mask], y[mask]
    denominator = float(np.dot(x, x))
    if x.size == 0 or denominator == 0.0:
        return {'slope': None, 'r2': None, 'n': int(x.size)}
    slope = float(np.dot(x, y) / denominator)
    residual = y - slope * x
    total = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(residual**2)) / total if total > 0 else None
    return {'slope': slope, 'r2': r2, 'n': int(x.size), 'rms_residual': float(np.sqrt(np.mean(residual**2)))}

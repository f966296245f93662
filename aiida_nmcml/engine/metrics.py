"""Parity metrics against DFT and the calibration of committee deviation against true error. Pure numpy, no AiiDA:
the engine (on the compute node) computes the committee deviation with them, the finetune work chain's calibration
and the benchmarks read the same definitions (also re-exported by ``aiida_nmcml.analysis.metrics``).

Definitions (DP-GEN's, so thresholds from the literature carry over):

* per-atom committee deviation ``d_i = sqrt(mean_m |F_mi - <F_i>|^2)``; a frame's deviation is ``max_i d_i``;
* a frame's true force error is ``max_i |<F_i> - F_i^DFT|`` (committee mean against DFT);
* calibration (:func:`calibrate_committee`): *per atom*, a maximum-likelihood scale ``alpha^2 = <|dF_i|^2 / s_i^2>``
  of the unbiased committee variance ``s_i^2 = M/(M-1) d_i^2`` (Musil et al., JCTC 15, 906 (2019); Imbalzano et al.,
  JCP 154, 074102 (2021)), with the small-committee correction, Spearman's rank correlation of ``d_i`` and ``|dF_i|``,
  and a binned reliability curve. It replaced a least-squares slope through the origin of the frame maxima, which is
  dominated by the few largest frames, has no meaningful R^2 without an intercept, and gave a slope of 10^3-10^4 for
  a committee without spread instead of refusing (science review §4).
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


def spearman(x, y) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None when either variable is constant or n < 3."""
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f'{x.size} values against {y.size}')
    mask = np.isfinite(x) & np.isfinite(y)
    x, y = x[mask], y[mask]
    if x.size < 3:
        return None
    rx, ry = _ranks(x), _ranks(y)
    if np.std(rx) == 0 or np.std(ry) == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind='mergesort')
    ranks = np.empty(values.size, dtype=float)
    ranks[order] = np.arange(values.size, dtype=float)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def _chi3_quantile(probability: float) -> float:
    """Quantile of the chi distribution with 3 degrees of freedom (|x| of a 3-vector of unit normals); bisection."""
    import math

    def cdf(r):
        return math.erf(r / math.sqrt(2.0)) - math.sqrt(2.0 / math.pi) * r * math.exp(-r * r / 2.0)

    lo, hi = 0.0, 20.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if cdf(mid) < probability else (lo, mid)
    return 0.5 * (lo + hi)


# Trust levels are the per-atom deviations d_i at which an atom's force error exceeds the tolerance with these
# probabilities (lower: the frame starts to be worth labelling; upper: it is almost surely wrong).
TRUST_PROBABILITIES = {'trust_lower': 0.1, 'trust_upper': 0.9}


def calibrate_committee(
    deviation,
    error,
    n_models: int,
    *,
    n_bins: int = 10,
    min_spread: float = 1.0e-3,
    tolerance: float = 0.1,
    n_components: int = 3,
) -> dict:
    """Per-atom calibration of a committee's spread against its true error.

    ``deviation``: per-atom ``d_i`` (population deviation, see :func:`atomic_force_deviation`); ``error``: per-atom
    ``|<F_i> - F_i^DFT|``; both over the atoms of the held-out frames. Returns a dict with

    * ``alpha2_raw = <|dF_i|^2 / s_i^2>``: the maximum-likelihood variance scale for Gaussian errors whose covariance
      is ``alpha^2 s_i^2 / 3`` per component; ``s_i^2 = M/(M-1) d_i^2`` is the unbiased committee variance;
    * ``alpha2``: with the small-committee correction of Musil et al. (their eq. for scalars,
      ``-1/M + (M-3)/(M-1) <r>``), generalised to ``k = n_components (M-1)`` degrees of freedom of ``s_i^2``:
      ``alpha2 = (k-2)/k <r> - 1/M`` (``E[1/s^2] = k / ((k-2) sigma^2)`` for ``s^2 ~ sigma^2 chi^2_k / k``; the
      ``1/M`` removes the committee mean's own sampling variance). Requires ``k > 2``; not clipped: a negative value
      means the committee *over*-estimates its error so much that the correction breaks down (reported as such);
      ``error_scale = sqrt(alpha2 + 1/M)`` multiplies ``s_i`` to predict the RMS error of the committee *mean*;
    * ``spearman``: rank correlation of ``d_i`` and ``|dF_i|`` (does the spread rank atoms by their error?);
    * ``reliability``: quantile bins of ``d_i`` with the RMS of ``d_i``, of ``s_i``, of ``|dF_i|`` and the fraction
      of atoms with ``|dF_i| > tolerance``. A calibrated committee has ``error_rms ≈ error_scale · s_rms`` in every bin;
    * trust levels (per-atom ``d_i``, eV/Å, the quantity MD and active learning compare): ``trust_lower`` is the
      lower edge of the first bin in which more than 10 % of the atoms have an error above ``tolerance``,
      ``trust_upper`` of the first with more than 90 %; ``*_model`` are the same levels from the calibrated
      Gaussian model (``|dF| / (error_scale s / sqrt 3)`` is chi-distributed with 3 degrees of freedom), used when
      the data do not reach that error. Per-atom levels do not change with the cell size, unlike thresholds on
      frame maxima.
    * ``negligible_spread``: the median ``d_i`` is below ``min_spread`` (eV/Å): the committee's members agree so
      well that their spread measures nothing (e.g. members that differ only by seed); the caller must refuse to
      use this calibration.
    """
    d = np.asarray(deviation, dtype=float).ravel()
    e = np.asarray(error, dtype=float).ravel()
    if d.shape != e.shape:
        raise ValueError(f'{d.size} deviations for {e.size} errors')
    if n_models < 2:
        raise ValueError('a calibration needs a committee of at least 2 models')
    mask = np.isfinite(d) & np.isfinite(e)
    d, e = d[mask], e[mask]
    result = {
        'n_atoms': int(d.size),
        'n_models': int(n_models),
        'tolerance': float(tolerance),
        'min_spread': float(min_spread),
        'definition': (
            'per atom: |<F_i> - F_i^DFT|^2 ~ alpha^2 s_i^2, s_i^2 = M/(M-1) d_i^2, d_i = sqrt(mean_m |F_mi - <F_i>|^2)'
        ),
    }
    if d.size == 0:
        return {**result, 'negligible_spread': None, 'alpha2': None, 'alpha2_raw': None, 'alpha': None}
    median = float(np.median(d))
    result.update(
        {
            'median_deviation': median,
            'mean_deviation': float(np.mean(d)),
            'rms_error': float(np.sqrt(np.mean(e**2))),
            'negligible_spread': bool(median < min_spread),
            'spearman': spearman(d, e),
        }
    )
    variance = d**2 * n_models / (n_models - 1)
    usable = variance > 0
    result['n_zero_deviation'] = int((~usable).sum())
    raw = float(np.mean(e[usable] ** 2 / variance[usable])) if usable.any() else None
    dof = n_components * (n_models - 1)
    alpha2 = (dof - 2) / dof * raw - 1.0 / n_models if raw is not None and dof > 2 else None
    result.update({'alpha2_raw': raw, 'alpha2': alpha2, 'dof': dof})
    result['alpha'] = float(np.sqrt(alpha2)) if alpha2 is not None and alpha2 > 0 else None
    # what multiplies s_i to predict the RMS error of the committee *mean* (alpha^2 plus its sampling variance 1/M)
    result['error_scale'] = float(np.sqrt(alpha2 + 1.0 / n_models)) if alpha2 is not None else None
    result['reliability'] = reliability_curve(d, e, n_models, n_bins=n_bins, tolerance=tolerance)
    result.update(_trust_levels(result, n_models))
    return result


def reliability_curve(deviation, error, n_models: int, *, n_bins: int = 10, tolerance: float = 0.1) -> dict:
    """Quantile bins of the per-atom deviation: edges, counts, RMS deviation / unbiased spread / error per bin."""
    d = np.asarray(deviation, dtype=float)
    e = np.asarray(error, dtype=float)
    edges = np.unique(np.quantile(d, np.linspace(0.0, 1.0, max(int(n_bins), 1) + 1)))
    if edges.size < 2:
        edges = np.array([d.min(), d.max()])
    index = np.clip(np.searchsorted(edges, d, side='right') - 1, 0, edges.size - 2)
    curve = {key: [] for key in ('lower', 'upper', 'count', 'deviation_rms', 's_rms', 'error_rms', 'p_exceed')}
    for b in range(edges.size - 1):
        members = index == b
        if not members.any():
            continue
        curve['lower'].append(float(edges[b]))
        curve['upper'].append(float(edges[b + 1]))
        curve['count'].append(int(members.sum()))
        rms_d = float(np.sqrt(np.mean(d[members] ** 2)))
        curve['deviation_rms'].append(rms_d)
        curve['s_rms'].append(rms_d * float(np.sqrt(n_models / (n_models - 1))))
        curve['error_rms'].append(float(np.sqrt(np.mean(e[members] ** 2))))
        curve['p_exceed'].append(float(np.mean(e[members] > tolerance)))
    return curve


def _trust_levels(result: dict, n_models: int) -> dict:
    curve = result['reliability']
    levels = {}
    for name, probability in TRUST_PROBABILITIES.items():
        empirical = next((lo for lo, p in zip(curve['lower'], curve['p_exceed'], strict=True) if p > probability), None)
        model = None
        if result.get('error_scale'):
            # |dF| = (c s / sqrt 3) chi_3 (c = error_scale) exceeds the tolerance with `probability` at
            # s = sqrt3 tol / (c q), q the chi_3 quantile of 1 - probability
            q = _chi3_quantile(1.0 - probability)
            s = np.sqrt(3.0) * result['tolerance'] / (result['error_scale'] * q)
            model = float(s * np.sqrt((n_models - 1) / n_models))
        levels[f'{name}_empirical'] = empirical
        levels[f'{name}_model'] = model
        levels[name] = empirical if empirical is not None else model
    levels['trust_definition'] = (
        'per-atom deviation d_i (eV/Å) above which P(|dF_i| > tolerance) exceeds 10 % (lower) / 90 % (upper): '
        'from the reliability curve where it reaches that error, else from the calibrated Gaussian model'
    )
    return levels

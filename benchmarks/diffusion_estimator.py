"""Coverage and width of the tracer-D interval: our GLS estimator vs ordinary least squares vs kinisi.

Synthetic Li hopping on a triangular lattice (Poisson hops at a known rate: D_xy = Gamma a^2 / 4) among framework
atoms; scenario ``noisy`` adds white positional noise (0.3 A, like thermal vibration) and a rigid drift. For each
seed we ask whether the 95 % interval of each estimator contains the true D, and how wide it is relative to the truth.
The estimators are never given the answer; the truth only scores them.

* ours: ``aiida_nmcml.analysis.diffusion.analyse_diffusion`` (GLS with the random-walk covariance).
* OLS: straight-line fit over the same lags with the textbook standard error (points treated as independent).
* kinisi 2.x ``DiffusionAnalyzer`` (empirical covariance, MCMC), its default lags, same start time.

Goal: coverage near nominal (>= 13 of 15 at 95 %), width no wider than kinisi's.
Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/diffusion_estimator.py [--seeds 15] [--no-kinisi]``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings

os.environ.setdefault('OMP_NUM_THREADS', '1')

import numpy as np

from aiida_nmcml.analysis import diffusion as dm

SCENARIOS = {
    'lattice': {'n_li': 16, 'n_frames': 200, 'hop_rate_per_fs': 2e-3, 'dt_fs': 10.0},
    'noisy': {
        'n_li': 16,
        'n_frames': 200,
        'hop_rate_per_fs': 2e-3,
        'dt_fs': 10.0,
        'vibration': 0.3,
        'drift_per_frame': (0.02, -0.01, 0.0),
    },
}
START_FS = 100.0


def kinisi_interval(frames, dt_fs: float, seed: int) -> tuple[float, float, float]:
    import scipp as sc
    from kinisi.analyze import DiffusionAnalyzer

    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        analyzer = DiffusionAnalyzer.from_ase(
            frames,
            specie='Li',
            time_step=sc.scalar(dt_fs, unit='fs'),
            step_skip=sc.scalar(1),
            dimension='xy',
            progress=False,
        )
        analyzer.diffusion(sc.scalar(START_FS, unit='fs'), progress=False, random_state=np.random.RandomState(seed))
    lo, med, hi = np.percentile(analyzer.D.values, [2.5, 50, 97.5])
    return float(med), float(lo), float(hi)


def run(scenario: str, seeds: int, with_kinisi: bool) -> dict:
    params = SCENARIOS[scenario]
    scores = {name: {'hits': 0, 'rel_width': [], 'rel_error': [], 'seconds': 0.0} for name in ('ours', 'ols', 'kinisi')}
    if not with_kinisi:
        scores.pop('kinisi')
    for seed in range(seeds):
        frames = dm.synthetic_hopping_trajectory(seed=1000 + seed, **params)
        truth = params['hop_rate_per_fs'] * 2.87**2 / 4 * dm.A2_PER_FS_TO_CM2_PER_S
        t0 = time.perf_counter()
        result = dm.analyse_diffusion(frames, start_fs=START_FS, collective=False, seed=seed)
        fit = result.tracer_xy
        lo, hi = fit.interval(0.95)
        entries = {'ours': (fit.D, lo, hi, time.perf_counter() - t0)}
        t0 = time.perf_counter()
        entries['ols'] = (*dm.ols_msd_fit(fit.msd, fit.lag_fs, 2), time.perf_counter() - t0)
        if with_kinisi:
            t0 = time.perf_counter()
            entries['kinisi'] = (*kinisi_interval(frames, params['dt_fs'], seed), time.perf_counter() - t0)
        for name, (med, lo, hi, seconds) in entries.items():
            score = scores[name]
            score['hits'] += int(lo <= truth <= hi)
            score['rel_width'].append((hi - lo) / truth)
            score['rel_error'].append(abs(med - truth) / truth)
            score['seconds'] += seconds
    return {
        'scenario': scenario,
        'params': {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()},
        'fit_start_fs': START_FS,
        'seeds': seeds,
        'estimators': {
            name: {
                'coverage': f'{s["hits"]}/{seeds}',
                'coverage_fraction': s['hits'] / seeds,
                'mean_relative_width': float(np.mean(s['rel_width'])),
                'median_relative_error': float(np.median(s['rel_error'])),
                'seconds_per_fit': s['seconds'] / seeds,
            }
            for name, s in scores.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seeds', type=int, default=15)
    parser.add_argument('--no-kinisi', action='store_true')
    parser.add_argument('--scenario', choices=sorted(SCENARIOS), action='append')
    args = parser.parse_args()
    report = {
        'benchmark': 'diffusion_estimator',
        'goal': 'coverage >= 13/15 at 95 %, width <= kinisi',
        'results': [run(name, args.seeds, not args.no_kinisi) for name in (args.scenario or sorted(SCENARIOS))],
    }
    for res in report['results']:
        est = res['estimators']
        res['goal_met'] = est['ours']['coverage_fraction'] >= 13 / 15 and (
            'kinisi' not in est or est['ours']['mean_relative_width'] <= est['kinisi']['mean_relative_width']
        )
    print(json.dumps(report, indent=1))


if __name__ == '__main__':
    main()

"""Active-learning selection (pure numpy): trust band, cap, diversity, calibrated thresholds, refusal."""

from __future__ import annotations

import numpy as np
import pytest

from aiida_nmcml.analysis.selection import (
    ACCURATE,
    CANDIDATE,
    DISCARDED,
    NegligibleSpreadError,
    TrustBand,
    classify,
    farthest_point_sampling,
    frame_deviations,
    select_frames,
    trust_band,
)
from aiida_nmcml.engine.metrics import atomic_force_deviation, calibrate_committee


def test_trust_band_classifies_edges_and_nonfinite():
    band = TrustBand(0.05, 0.3)
    d = [0.0, 0.0499, 0.05, 0.2, 0.3, 0.3001, np.nan, np.inf]
    classes = classify(d, band).tolist()
    assert classes == [ACCURATE, ACCURATE, CANDIDATE, CANDIDATE, CANDIDATE, DISCARDED, DISCARDED, DISCARDED]
    with pytest.raises(ValueError, match='above the lower'):
        TrustBand(0.3, 0.3)


def test_discarded_and_accurate_frames_are_never_selected():
    rng = np.random.default_rng(0)
    d = rng.uniform(0.0, 0.6, 200)
    band = TrustBand(0.1, 0.4)
    result = select_frames(d, band, descriptors=rng.normal(size=(200, 5)), max_selected=500)
    selected = np.array(result.selected)
    assert np.all((d[selected] >= 0.1) & (d[selected] <= 0.4))
    # with no cap binding, every candidate is taken, exactly once
    assert sorted(result.selected) == np.flatnonzero((d >= 0.1) & (d <= 0.4)).tolist()
    counts = result.counts
    assert counts[ACCURATE] == int((d < 0.1).sum()) and counts[DISCARDED] == int((d > 0.4).sum())
    assert counts[ACCURATE] + counts[CANDIDATE] + counts[DISCARDED] == counts['total'] == 200


def test_cap_and_per_condition_counts():
    rng = np.random.default_rng(1)
    n = 300
    d = rng.uniform(0.1, 0.2, n)  # all candidates
    conditions = np.repeat(['T300_x0.95', 'T600_x0.50', 'T900_x0.25'], n // 3)
    result = select_frames(d, TrustBand(0.05, 0.5), descriptors=rng.normal(size=(n, 4)), max_selected=7,
                           conditions=conditions)  # fmt: skip
    assert len(result.selected) == 7 and len(set(result.selected)) == 7
    per = result.counts_per_condition
    assert set(per) == {'T300_x0.95', 'T600_x0.50', 'T900_x0.25'}
    assert sum(c['selected'] for c in per.values()) == 7
    assert all(c[CANDIDATE] == 100 and c['total'] == 100 for c in per.values())
    assert select_frames(d, TrustBand(0.05, 0.5), max_selected=0).selected == []


def test_min_step_gap_along_each_trajectory():
    n = 100
    steps = np.tile(np.arange(0, 500, 10), 2)  # two trajectories, 50 frames each, every 10 steps
    trajectories = np.repeat(['a', 'b'], 50)
    rng = np.random.default_rng(2)
    result = select_frames(rng.uniform(0.1, 0.2, n), TrustBand(0.05, 0.5), descriptors=rng.normal(size=(n, 3)),
                           max_selected=100, steps=steps, trajectories=trajectories, min_step_gap=100)  # fmt: skip
    for label in ('a', 'b'):
        picked = np.sort(steps[[i for i in result.selected if trajectories[i] == label]])
        assert picked.size >= 3
        assert np.all(np.diff(picked) >= 100)
    # the gap is per trajectory: the same step may be taken in both
    assert len(result.selected) <= 2 * 5 + 2
    with pytest.raises(ValueError, match='steps'):
        farthest_point_sampling(np.zeros((3, 1)), 2, min_step_gap=5)


def _min_pairwise(x):
    dist = np.linalg.norm(x[:, None, :] - x[None, :, :], axis=-1)
    dist[np.diag_indices_from(dist)] = np.inf
    return dist.min()


@pytest.mark.parametrize('seed', range(5))
def test_fps_is_more_diverse_than_a_random_pick(seed):
    """Candidates in a few dense clusters (consecutive MD frames): FPS spreads over clusters, random picks repeat.

    Diversity = the smallest distance between two selected frames, and the number of clusters covered.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=5.0, size=(8, 6))
    sizes = rng.integers(5, 80, size=8)  # uneven clusters: a random pick over-samples the big ones
    x = np.vstack([c + 0.05 * rng.normal(size=(s, 6)) for c, s in zip(centres, sizes, strict=True)])
    cluster = np.repeat(np.arange(8), sizes)
    d = rng.uniform(0.1, 0.2, x.shape[0])
    k = 8
    fps = select_frames(d, TrustBand(0.05, 0.5), descriptors=x, max_selected=k).selected
    assert len(fps) == k
    assert len(set(cluster[fps])) == 8  # every cluster once
    random_min, random_clusters = [], []
    for trial in range(20):
        pick = np.random.default_rng(100 * seed + trial).choice(x.shape[0], size=k, replace=False)
        random_min.append(_min_pairwise(x[pick]))
        random_clusters.append(len(set(cluster[pick])))
    assert _min_pairwise(x[fps]) > max(random_min)
    assert len(set(cluster[fps])) > np.mean(random_clusters)


def test_fps_starts_away_from_the_reference_set():
    """Frames like those already trained on are taken last: the first pick is the one farthest from the reference."""
    x = np.array([[0.0], [0.1], [5.0], [10.0]])
    picked = farthest_point_sampling(x, 2, reference=np.array([[0.0], [0.05]]))
    assert picked == [3, 2]
    assert farthest_point_sampling(x, 2, start=1) == [1, 3]


def test_thresholds_from_a_calibration():
    """A calibrated committee's trust levels become the band; the classification follows them."""
    rng = np.random.default_rng(3)
    sigma = rng.uniform(0.01, 0.3, 20000)
    members = sigma[None, :, None] * rng.normal(size=(4, sigma.size, 3))
    truth = 1.5 * sigma[:, None] * rng.normal(size=(sigma.size, 3))
    calibration = calibrate_committee(
        atomic_force_deviation(members), np.linalg.norm(members.mean(0) - truth, axis=1), 4, tolerance=0.1
    )
    band = trust_band(calibration)
    assert band.source == 'calibration'
    assert band.lower == calibration['trust_lower'] and band.upper == calibration['trust_upper']
    assert 0.0 < band.lower < band.upper
    # just below / inside / just above
    assert classify([band.lower * 0.99, 0.5 * (band.lower + band.upper), band.upper * 1.01], band).tolist() == [
        ACCURATE, CANDIDATE, DISCARDED,
    ]  # fmt: skip
    # an explicit level wins over the calibration's, the other one is still taken from it
    mixed = trust_band(calibration, lower=0.01)
    assert mixed.lower == 0.01 and mixed.upper == band.upper and mixed.source == 'given+calibration'
    # without an upper level: refused unless a factor is given
    partial = {'trust_lower': 0.05, 'trust_upper': None, 'negligible_spread': False}
    with pytest.raises(ValueError, match='upper'):
        trust_band(partial)
    assert trust_band(partial, upper_factor=4.0).upper == pytest.approx(0.2)
    # both levels in one bin of a small calibration set (seen with 8 held-out atoms): the factor gives the upper one
    same = {'trust_lower': 0.011, 'trust_upper': 0.011, 'negligible_spread': False}
    with pytest.raises(ValueError, match='above the lower'):
        trust_band(same)
    fallback = trust_band(same, upper_factor=6.0)
    assert fallback.upper == pytest.approx(0.066) and 'factor' in fallback.source


def test_refusal_when_the_spread_is_negligible():
    """Members that differ only by seed (B4: ~4e-6 eV/Å): selecting on that spread would be noise -> refused."""
    rng = np.random.default_rng(4)
    forces = [rng.normal(size=(1, 10, 3)) + 4e-6 * rng.normal(size=(4, 10, 3)) for _ in range(30)]
    d = frame_deviations(forces)
    assert d.shape == (30,) and np.all(d < 1e-4)
    with pytest.raises(NegligibleSpreadError, match='min_spread'):
        select_frames(d, TrustBand(0.0, 0.3), max_selected=5)  # even a band that would accept everything
    with pytest.raises(NegligibleSpreadError, match='negligible'):
        trust_band({'negligible_spread': True, 'median_deviation': 4e-6, 'min_spread': 1e-3, 'trust_lower': 1e-6})
    # the same frames with a real spread are accepted
    assert select_frames(d * 1e4, TrustBand(0.0, 0.3), max_selected=5).selected


def test_summary_is_json_ready():
    import json

    rng = np.random.default_rng(5)
    result = select_frames(rng.uniform(0, 0.5, 20), TrustBand(0.1, 0.3), descriptors=rng.normal(size=(20, 2)),
                           max_selected=3, conditions=['c'] * 20)  # fmt: skip
    summary = json.loads(json.dumps(result.summary()))
    assert summary['trust_band'] == {'lower': 0.1, 'upper': 0.3, 'source': 'given'}
    assert summary['counts_per_condition']['c']['selected'] == len(summary['selected']) <= 3

"""Parity and calibration definitions (pure numpy), checked against hand computations and synthetic truths."""

from __future__ import annotations

import numpy as np
import pytest

from aiida_nmcml.engine.metrics import (
    atomic_force_deviation,
    calibrate_committee,
    max_force_deviation,
    max_force_error,
    parity,
    spearman,
)


def test_parity_by_hand():
    result = parity([1.0, 2.0, 4.0], [1.0, 1.0, 1.0])
    assert result['mae'] == pytest.approx(4 / 3)
    assert result['rmse'] == pytest.approx(np.sqrt(10 / 3))
    assert result['max_abs'] == 3.0 and result['n'] == 3
    assert parity([], [])['rmse'] is None
    with pytest.raises(ValueError, match='non-finite'):
        parity([np.nan], [0.0])
    with pytest.raises(ValueError, match='shape'):
        parity([1.0, 2.0], [1.0])


def test_deviation_definition():
    # two models, two atoms: atom 0 agrees, atom 1 differs by (2, 0, 0) -> each is 1 from the mean
    forces = np.zeros((2, 2, 3))
    forces[1, 1, 0] = 2.0
    np.testing.assert_allclose(atomic_force_deviation(forces), [0.0, 1.0])
    assert max_force_deviation(forces) == pytest.approx(1.0)
    assert max_force_error(np.array([[3.0, 4.0, 0.0]]), np.zeros((1, 3))) == pytest.approx(5.0)


def _synthetic_committee(n_models, alpha, n_atoms=20000, seed=0):
    """Members scattered around a centre with per-atom width sigma_i; the truth alpha * sigma_i away from it."""
    rng = np.random.default_rng(seed)
    sigma = rng.uniform(0.01, 0.2, n_atoms)
    members = sigma[None, :, None] * rng.normal(size=(n_models, n_atoms, 3))
    truth = alpha * sigma[:, None] * rng.normal(size=(n_atoms, 3))
    deviation = atomic_force_deviation(members)
    error = np.linalg.norm(members.mean(axis=0) - truth, axis=1)
    return deviation, error


@pytest.mark.parametrize('n_models', [2, 4, 8])
def test_maximum_likelihood_scale_recovers_alpha_for_small_committees(n_models):
    """alpha^2 = <err^2/s^2> with the small-committee correction recovers the true scale even for M = 2.

    The least-squares slope through the origin of frame maxima, which this replaced, has no such property (and the
    uncorrected <err^2/s^2> is biased by a factor k/(k-2) + 1/(M alpha^2): 3x too large at M = 2).
    """
    deviation, error = _synthetic_committee(n_models, alpha=2.0)
    result = calibrate_committee(deviation, error, n_models)
    assert result['alpha'] == pytest.approx(2.0, rel=0.05)
    assert result['alpha2_raw'] > result['alpha2']
    assert result['negligible_spread'] is False
    assert result['spearman'] > 0.5
    curve = result['reliability']
    assert len(curve['lower']) == 10 and sum(curve['count']) == deviation.size
    # the reliability curve rises with the deviation; with 8 members it tracks error_scale * s in every bin (with 2,
    # binning on a noisy s puts the low bins up to 2.7x above the line: regression to the mean, documented)
    assert np.all(np.diff(curve['error_rms']) > 0)
    if n_models >= 8:
        np.testing.assert_allclose(curve['error_rms'], result['error_scale'] * np.array(curve['s_rms']), rtol=0.2)
    assert 0 < result['trust_lower'] < result['trust_upper']


def test_trust_levels_follow_the_tolerance_and_model_levels_agree_with_data():
    deviation, error = _synthetic_committee(8, alpha=1.0)
    tight = calibrate_committee(deviation, error, 8, tolerance=0.05)
    loose = calibrate_committee(deviation, error, 8, tolerance=0.2)
    assert tight['trust_lower'] < loose['trust_lower']
    # with 8 members the spread is a good estimate: the empirical and Gaussian-model levels agree within a bin
    assert tight['trust_upper_model'] == pytest.approx(tight['trust_upper_empirical'], rel=0.3)


def test_negligible_spread_is_flagged():
    """Members that differ only by seed after fine-tuning: d ~ 1e-6 eV/Å against errors of 0.05 eV/Å."""
    rng = np.random.default_rng(1)
    deviation = rng.uniform(0, 2e-6, 500)
    error = rng.uniform(0.01, 0.1, 500)
    result = calibrate_committee(deviation, error, 2)
    assert result['negligible_spread'] is True
    assert calibrate_committee(deviation * 1e4, error, 2)['negligible_spread'] is False
    with pytest.raises(ValueError, match='at least 2'):
        calibrate_committee(deviation, error, 1)


def test_spearman_by_hand():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties get average ranks: x ranks (1, 2.5, 2.5, 4)
    expected = np.corrcoef([1, 2.5, 2.5, 4], [1, 2, 3, 4])[0, 1]
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(expected)
    assert spearman([1, 1, 1], [1, 2, 3]) is None

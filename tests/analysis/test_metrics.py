"""Parity and calibration definitions (pure numpy), checked against hand computations and synthetic truths."""

from __future__ import annotations

import numpy as np
import pytest

from aiida_nmcml.analysis.metrics import (
    atomic_force_deviation,
    fit_through_origin,
    max_force_deviation,
    max_force_error,
    parity,
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


def test_fit_through_origin_recovers_slope():
    rng = np.random.default_rng(0)
    deviation = rng.uniform(0.01, 0.3, 200)
    error = 1.7 * deviation + rng.normal(0, 0.005, 200)
    fit = fit_through_origin(deviation, error)
    assert fit['slope'] == pytest.approx(1.7, abs=0.02)
    assert fit['r2'] > 0.95 and fit['n'] == 200
    # an intercept in the data is *not* absorbed: the fit stays through the origin
    shifted = fit_through_origin(deviation, error + 0.1)
    assert shifted['slope'] > fit['slope']
    assert fit_through_origin(np.zeros(3), np.ones(3))['slope'] is None

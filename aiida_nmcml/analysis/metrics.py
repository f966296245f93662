"""The parity and calibration metrics, re-exported from :mod:`aiida_nmcml.engine.metrics` (their one home).

Why there: the engine computes the committee deviation on the compute node and must import nothing from the
daemon-side layers (``docs/dev/contracts.md``, layer rules); the work chains and benchmarks read the same
definitions through this module or the engine's.
"""

from __future__ import annotations

from aiida_nmcml.engine.metrics import (
    atomic_force_deviation,
    calibrate_committee,
    max_force_deviation,
    max_force_error,
    parity,
    reliability_curve,
    spearman,
)

__all__ = (
    'atomic_force_deviation',
    'calibrate_committee',
    'max_force_deviation',
    'max_force_error',
    'parity',
    'reliability_curve',
    'spearman',
)

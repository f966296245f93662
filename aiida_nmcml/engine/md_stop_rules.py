"""Stop rules of an MD run: each names the engine status the parser turns into its own CalcJob exit code.

A stopped run is not a crash: active learning harvests the frames written before the stop (the frames where the model
was starting to fail are the most informative ones). So each rule returns a :class:`StopReason` and the driver
closes its files cleanly before reporting it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class StopReason:
    status: str  # a key of engine.common.EXIT_CODES
    message: str


@dataclass
class StopRules:
    """Thresholds; ``None`` switches a rule off.

    ``hard_limit`` (eV/Å): max force deviation above which the model has left its domain — DP-GEN's upper trust
    level is typically ~0.15-0.3 eV/Å; the hard limit sits above it. ``min_distance`` (Å): closer pairs mean a
    collapse (Li-O is ~2 Å, nothing physical here is below ~1.2 Å). ``max_temperature`` (K): a run heating far above
    its target is exploding (default: 3x the target).
    """

    hard_limit: float | None = 1.0
    min_distance: float | None = 0.7
    max_temperature: float | None = None

    @classmethod
    def from_config(cls, config: dict, target_temperature: float) -> StopRules:
        stop = config.get('stop', {}) or {}
        max_t = stop.get('max_temperature', 'auto')
        if max_t == 'auto':
            max_t = 3.0 * target_temperature if target_temperature > 0 else None
        return cls(
            hard_limit=stop.get('hard_limit', 1.0),
            min_distance=stop.get('min_distance', 0.7),
            max_temperature=max_t,
        )

    def check_temperature(self, temperature: float, step: int) -> StopReason | None:
        if self.max_temperature is not None and (not np.isfinite(temperature) or temperature > self.max_temperature):
            return StopReason(
                'temperature_runaway',
                f'temperature {temperature:.0f} K at step {step} exceeds {self.max_temperature:.0f} K: the dynamics '
                'are unstable; use a smaller timestep or a better model (more training data near these structures)',
            )
        return None

    def check_deviation(self, max_force_dev: float, step: int) -> StopReason | None:
        if self.hard_limit is not None and max_force_dev > self.hard_limit:
            return StopReason(
                'uncertainty_exceeded',
                f'max committee force deviation {max_force_dev:.3f} eV/Å at step {step} exceeds the hard limit '
                f'{self.hard_limit} eV/Å: the model left its training domain; label the candidate frames and retrain',
            )
        return None

    def check_distances(self, atoms, step: int) -> StopReason | None:
        if self.min_distance is None:
            return None
        from ase.neighborlist import neighbor_list

        distances = neighbor_list('d', atoms, self.min_distance)
        if len(distances):
            return StopReason(
                'atoms_too_close',
                f'atoms {float(np.min(distances)):.2f} Å apart at step {step} (minimum {self.min_distance} Å): the '
                'structure collapsed; the model is unphysical here, add such frames to the training set',
            )
        return None

"""Driver model plus committee: the dynamics use one model every step, the rest of the committee only every k steps.

Evaluating a committee of N every step costs ~N times one model (measured ~2.5x for N=4 on CPU, because graph
construction is shared). The spread only has to be *sampled* to decide whether the run has left the model's domain,
so the driver (committee member 0) integrates, and members 1..N-1 are evaluated on the monitor steps; their forces
are combined with the driver's forces already computed for that step.

Every member is compared in the *same* dtype. When the monitor runs in another precision than the driver
(``committee_dtype: float32`` with a float64 driver, to save memory and time), the driver's float64 forces are not
mixed with float32 members: that mix adds the float32/float64 difference (~1e-6-1e-5 eV/Å for a small MACE) to the
spread, a noise floor as large as the spread of a seed-only committee (science review B4). Member 0 is then
evaluated again in the committee dtype on the monitor steps (one extra model call per monitor step).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .common import make_calculator
from .metrics import atomic_force_deviation


@dataclass
class Deviation:
    max_force_dev: float
    mean_force_dev: float
    energy_std_per_atom: float
    forces_mean: np.ndarray


def force_deviation(forces: np.ndarray, energies: np.ndarray, natoms: int) -> Deviation:
    """DP-GEN's measure: per atom, the RMS distance of member forces from their mean; max and mean over atoms.

    ``forces`` has shape (members, atoms, 3), ``energies`` (members,).
    """
    mean = forces.mean(axis=0)
    per_atom = atomic_force_deviation(forces)
    return Deviation(
        max_force_dev=float(per_atom.max()),
        mean_force_dev=float(per_atom.mean()),
        energy_std_per_atom=float(np.std(energies) / max(natoms, 1)),
        forces_mean=mean,
    )


class Committee:
    """``driver`` is an ASE calculator for member 0; :meth:`deviation` evaluates the others on demand."""

    def __init__(self, models: list, device: str = 'auto', dtype: str = 'float64', committee_dtype: str | None = None):
        self.size = len(models)
        self.driver = make_calculator(models[:1], device=device, dtype=dtype)
        rest_dtype = committee_dtype or dtype
        # same dtype as the driver: reuse the driver's forces; another dtype: all members in the monitor's dtype
        self.reuse_driver = rest_dtype == dtype
        self.dtype = rest_dtype
        monitored = models[1:] if self.reuse_driver else models
        self._rest = make_calculator(monitored, device=device, dtype=rest_dtype) if len(models) > 1 else None

    def deviation(self, atoms) -> Deviation | None:
        """Spread of the committee at the current positions; ``None`` for a single model (nothing to compare)."""
        if self._rest is None:
            return None
        probe = atoms.copy()
        probe.calc = self._rest
        self._rest.calculate(probe, ['energy', 'forces'])
        results = self._rest.results
        if 'forces_comm' in results:
            rest_forces, rest_energies = results['forces_comm'], np.atleast_1d(results['energy_comm'])
        else:
            rest_forces, rest_energies = results['forces'][None], np.array([results['energy']])
        if not self.reuse_driver:
            return force_deviation(np.asarray(rest_forces), np.asarray(rest_energies), len(atoms))
        driver_forces = atoms.get_forces()  # cached by the driver for this step
        driver_energy = atoms.get_potential_energy()
        forces = np.concatenate([driver_forces[None], rest_forces], axis=0)
        energies = np.concatenate([[driver_energy], rest_energies])
        return force_deviation(forces, energies, len(atoms))

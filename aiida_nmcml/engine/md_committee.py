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

Two ways to evaluate the monitor (``uncertainty.evaluation``):

* ``members`` (default): every member is a complete model and is evaluated on its own (one forward and one backward
  pass each). Cost per monitor step: about N model calls, so 1 + N/stride of plain MD at best (measured 1.31x for N = 4
  at stride 10 on CPU).
* ``shared_descriptor``: one forward pass of member 0's descriptor (embeddings, interactions, products); every member's
  *readouts* (and its scale/shift, E0s) are applied to those node features, and the forces of members 1..N-1 come
  from N - 1 backward passes of their energy *differences* to member 0 (member 0's forces are the driver's). A batched
  backward (``is_grads_batched=True``) was slower on CPU than the loop (134 vs 118 ms for N = 4, 128 atoms, float32).
  This is a different committee: members differ only in their readouts, not in their descriptors. It is exact when
  the members really share the descriptor (e.g. made by ``committee_init.initialise_readout`` from one model and
  trained readout-only); for members fine-tuned end to end it is an approximation whose worth is measured, not
  assumed: the calibration (Spearman rho of deviation against true error) of both variants is reported side by side
  in ``benchmarks/md_engine.py`` and docs/md.md. Not the default until that calibration is shown to hold on real data.

Why not vmap over stacked parameters (``torch.func.stack_module_state``): tried on mace-torch 0.3.16 / torch 2.13 on
CPU; MACE needs patches to run under vmap at all (in-place ``requires_grad_`` and ``scatter_add_``), and the vmapped
committee of 4 then cost twice the sequential one (441 vs 219 ms CPU time, 128 atoms, float32).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .common import EngineError, make_calculator
from .metrics import atomic_force_deviation


@dataclass
class Deviation:
    max_force_dev: float
    mean_force_dev: float
    energy_std_per_atom: float


def force_deviation(forces: np.ndarray, energies: np.ndarray, natoms: int) -> Deviation:
    """DP-GEN's measure: per atom, the RMS distance of member forces from their mean; max and mean over atoms.

    ``forces`` has shape (members, atoms, 3), ``energies`` (members,).
    """
    per_atom = atomic_force_deviation(forces)
    return Deviation(
        max_force_dev=float(per_atom.max()),
        mean_force_dev=float(per_atom.mean()),
        energy_std_per_atom=float(np.std(energies) / max(natoms, 1)),
    )


EVALUATIONS = ('members', 'shared_descriptor')


class SharedDescriptorEvaluator:
    """Every member's energy and forces from member 0's descriptor and every member's readouts.

    ``calc`` is a MACECalculator over the committee (it loads the models in the monitor's dtype and builds the
    graph). Member k's energy is ``sum_i [scale_k (pair_i + sum_l R_k^l(h_i^l)) + shift_k] + sum_i E0_k(Z_i)`` for a
    ScaleShiftMACE (``pair_i + sum_l R_k^l(h_i^l) + E0_k(Z_i)`` for a plain MACE), with ``h^l`` the node features of
    member 0's interaction layer ``l``: member 0's own energy is exactly what its full forward pass gives.

    Cost: one forward pass of member 0 and N - 1 backward passes, of the *differences* ``D_k = E_k - E_0``: the spread
    of ``F_k = F_0 - grad D_k`` does not depend on ``F_0``, so member 0's forces are the driver's, already computed
    for this step (in the driver's dtype: a float32 monitor with a float64 driver mixes precisions only in the
    committee *mean*, never in the spread, which comes from the float32 differences alone).
    """

    def __init__(self, calc):
        self.calc = calc
        self.models = list(calc.models)
        base = self.models[0]
        for model in self.models[1:]:
            if len(model.readouts) != len(base.readouts) or type(model) is not type(base):
                raise EngineError(
                    'invalid_input', 'shared_descriptor needs members of one architecture (same readout layout)'
                )

    def __call__(self, atoms) -> tuple[np.ndarray, np.ndarray]:
        """``(energies (members,), forces (members, atoms, 3))`` in eV and eV/Å; ``atoms.calc`` is the driver."""
        import torch

        base = self.models[0]
        model_dtype = next(base.parameters()).dtype
        data = self.calc._atoms_to_batch(atoms).to_dict()
        for key, value in data.items():
            if torch.is_tensor(value) and torch.is_floating_point(value):
                data[key] = value.to(dtype=model_dtype)
        captured: dict = {'features': [], 'pair': None}
        hooks = [product.register_forward_hook(lambda _m, _i, out: captured['features'].append(out))
                 for product in base.products]  # fmt: skip
        if hasattr(base, 'pair_repulsion_fn'):
            hooks.append(base.pair_repulsion_fn.register_forward_hook(lambda _m, _i, out: captured.update(pair=out)))
        try:
            base(data, compute_force=False, compute_stress=False, training=False)
        finally:
            for hook in hooks:
                hook.remove()
        positions = data['positions']  # made to require grad by mace's prepare_graph
        features = captured['features']
        heads = data['head'][data['batch']] if 'head' in data else torch.zeros_like(data['batch'])
        arange = torch.arange(positions.shape[0], device=positions.device)
        pair = captured['pair'] if captured['pair'] is not None else torch.zeros_like(positions[:, 0])

        def energy(model):
            node = [pair]
            for index, readout in enumerate(model.readouts):
                feats = features[-1] if len(model.readouts) == 1 else features[index]
                node.append(readout(feats, heads)[arange, heads])
            node_energy = torch.sum(torch.stack(node, dim=0), dim=0)
            if hasattr(model, 'scale_shift'):
                node_energy = model.scale_shift(node_energy, heads)
            return node_energy.sum() + model.atomic_energies_fn(data['node_attrs'])[arange, heads].sum()

        reference = energy(base)
        differences = [energy(model) - reference for model in self.models[1:]]
        energy_unit, force_unit = (
            self.calc.energy_units_to_eV,
            self.calc.energy_units_to_eV / self.calc.length_units_to_A,
        )
        driver_energy = float(atoms.get_potential_energy())
        driver_forces = np.asarray(atoms.get_forces(), dtype=float)
        energies, forces = [driver_energy], [driver_forces]
        for k, difference in enumerate(differences):
            (gradient,) = torch.autograd.grad(difference, positions, retain_graph=k < len(differences) - 1)
            energies.append(driver_energy + float(difference.detach()) * energy_unit)
            forces.append(driver_forces - gradient.detach().cpu().numpy().astype(float) * force_unit)
        return np.asarray(energies), np.stack(forces)


class Committee:
    """``driver`` is an ASE calculator for member 0; :meth:`deviation` evaluates the others on demand.

    ``evaluation``: ``members`` (each member a full model call) or ``shared_descriptor`` (member 0's descriptor,
    every member's readouts, one batched backward pass; see the module docstring).
    """

    def __init__(
        self,
        models: list,
        device: str = 'auto',
        dtype: str = 'float64',
        committee_dtype: str | None = None,
        evaluation: str = 'members',
    ):
        if evaluation not in EVALUATIONS:
            raise EngineError('invalid_input', f'evaluation must be one of {EVALUATIONS}, not {evaluation!r}')
        self.size = len(models)
        self.evaluation = evaluation
        self.driver = make_calculator(models[:1], device=device, dtype=dtype)
        rest_dtype = committee_dtype or dtype
        # same dtype as the driver: reuse the driver's forces; another dtype: all members in the monitor's dtype.
        # The shared-descriptor pass runs member 0's descriptor again in the monitor's dtype (the driver's
        # calculator keeps no graph) and takes member 0's forces from the driver.
        self.reuse_driver = rest_dtype == dtype and evaluation == 'members'
        self.dtype = rest_dtype
        self._shared = None
        self._rest = None
        if len(models) > 1 and evaluation == 'shared_descriptor':
            self._shared = SharedDescriptorEvaluator(make_calculator(models, device=device, dtype=rest_dtype))
        elif len(models) > 1:
            monitored = models[1:] if self.reuse_driver else models
            self._rest = make_calculator(monitored, device=device, dtype=rest_dtype)

    def member_forces(self, atoms) -> tuple[np.ndarray, np.ndarray]:
        """``(energies, forces)`` of every member at the current positions (shared-descriptor or member by member)."""
        if self._shared is not None:
            return self._shared(atoms)
        probe = atoms.copy()
        probe.calc = self._rest
        self._rest.calculate(probe, ['energy', 'forces'])
        results = self._rest.results
        if 'forces_comm' in results:
            forces, energies = results['forces_comm'], np.atleast_1d(results['energy_comm'])
        else:
            forces, energies = results['forces'][None], np.array([results['energy']])
        if self.reuse_driver:
            forces = np.concatenate([atoms.get_forces()[None], forces], axis=0)
            energies = np.concatenate([[atoms.get_potential_energy()], energies])
        return np.asarray(energies), np.asarray(forces)

    def deviation(self, atoms) -> Deviation | None:
        """Spread of the committee at the current positions; ``None`` for a single model (nothing to compare)."""
        if self._shared is None and self._rest is None:
            return None
        energies, forces = self.member_forces(atoms)
        return force_deviation(forces, energies, len(atoms))

"""``aiida-nmcml-engine md``: MACE molecular dynamics with the committee spread sampled on the fly.

Input (JSON/YAML; every key, range and default in :data:`SCHEMA`; unknown keys and out-of-range values are refused
with ``invalid_input``, naming the closest valid key)::

    structure: structure.extxyz      # starting cell; per-atom initial_magmoms / sublattice are carried to every frame
    models: [{path, sha256}, ...]    # member 0 drives the dynamics; all members form the committee
    ensemble: nvt_langevin | nvt_nose_hoover | nvt_bussi | npt | nve     (npt: barostat full | isotropic)
    steps: 1000                      # total target; a restart continues up to it
    uncertainty: {stride: 10, trust_lower: 0.05, trust_upper: 0.3}
    stop: {hard_limit: 1.0, min_distance: 0.7, max_temperature: auto}

The centre of mass is fixed in every ensemble (see :func:`make_dynamics`). Outputs: see :mod:`.md_io`. A run stopped
by a rule, or because positions/forces stopped being finite (``non_finite``), raises :class:`EngineError` with its
status *after* all files are closed, so everything written before the stop is kept.
"""

from __future__ import annotations

import os
import pathlib
import time

import numpy as np
from ase.calculators.calculator import Calculator, all_changes
from ase.constraints import FixCom
from ase.md.nose_hoover_chain import MTKNPT, IsotropicMTKNPT, NoseHooverChainNVT

from . import md_io
from .common import EngineError, write_json
from .md_committee import Committee
from .md_config import BAROSTATS, DEFAULTS, ENSEMBLES, SCHEMA  # noqa: F401 (public names of the engine)
from .md_stop_rules import StopReason, StopRules


def merged_config(config: dict) -> dict:
    """``config`` checked against :data:`SCHEMA` (every problem in one message) and completed with the defaults."""
    errors = SCHEMA.errors(config, 'md')
    if errors:
        raise EngineError('invalid_input', '; '.join(errors))
    merged = SCHEMA.with_defaults(config)
    if not merged.get('models'):
        raise EngineError('invalid_input', 'no models given: pass at least one MACE model')
    return merged


def read_structure(path: str):
    from ase.io import read

    if not pathlib.Path(path).is_file():
        raise EngineError('invalid_input', f'structure file {path} is missing from the working directory')
    try:
        return read(path)
    except Exception as exc:
        raise EngineError('invalid_input', f'could not read structure {path}: {exc}') from exc


class NonFiniteError(Exception):
    """Positions, momenta, forces, energy or stress stopped being finite: the run cannot go on.

    Raised *before* the model sees NaN positions: MACE's neighbour list does not return on them (a job would spin until
    the scheduler's walltime, or forever without one).
    """


class FiniteGuard(Calculator):
    """Wraps the driver calculator: refuses non-finite positions or cell before the model runs, and non-finite
    results after it, whatever the stop rules say (they can all be switched off)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.implemented_properties = list(inner.implemented_properties)

    def calculate(self, atoms=None, properties=('energy',), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        if not np.all(np.isfinite(atoms.positions)) or not np.all(np.isfinite(atoms.cell.array)):
            raise NonFiniteError('positions or cell became non-finite')
        self.inner.calculate(atoms, properties, system_changes)
        self.results = dict(self.inner.results)
        for key in ('energy', 'forces', 'stress'):
            if key in self.results and not np.all(np.isfinite(self.results[key])):
                raise NonFiniteError(f'the model returned non-finite {key}')


class FixComMD(FixCom):
    """ASE's :class:`~ase.constraints.FixCom` for the dynamics only (Langevin, velocity Verlet).

    Integrators ask for forces with ``md=True``, which skips ``adjust_forces``; everything else (the committee monitor,
    the candidates' ``mlip_forces``) must see the model's own forces too, which the parent's projection would change
    (by ~F/sqrt(N) for mixed masses). So only positions and momenta are adjusted.
    """

    def adjust_forces(self, atoms, forces):
        pass


class _NetForceFree:
    """Mixin for integrators that carry their own positions and momenta and refuse constraints (Nose-Hoover chain,
    MTK NPT). The mass-weighted net force is removed, so the total momentum, zero at the start, stays zero: the centre
    of mass stays fixed (NVT), or fixed in fractional coordinates while the cell deforms (NPT)."""

    def _get_forces(self):
        forces = super()._get_forces()
        return forces - self.masses * (forces.sum(axis=0) / self.masses.sum())


class NoseHooverChainNVTFixCom(_NetForceFree, NoseHooverChainNVT):
    """Nose-Hoover chain NVT with the centre of mass fixed."""


class MTKNPTFixCom(_NetForceFree, MTKNPT):
    """Full-cell (9 degrees of freedom, symmetric cell momentum) MTK NPT with the centre of mass fixed."""


class IsotropicMTKNPTFixCom(_NetForceFree, IsotropicMTKNPT):
    """Isotropic MTK NPT (keeps the starting cell shape) with the centre of mass fixed."""


def make_dynamics(atoms, cfg: dict, rng):
    """The ASE integrator for ``cfg['ensemble']``, with the centre of mass fixed in every ensemble.

    Why fix it: Langevin noise makes the centre of mass random-walk with D = kT / (M gamma), ~1e-7 cm^2/s for 960 atoms
    at 300 K, as large as the Li diffusion coefficient to be measured. ``rng`` feeds Langevin's noise so a checkpoint
    can restore it.
    """
    from ase import units

    dt = float(cfg['timestep_fs']) * units.fs
    temperature = float(cfg['temperature_K'])
    ensemble = cfg['ensemble']
    if ensemble in ('nve', 'nvt_langevin', 'nvt_bussi'):
        atoms.set_constraint(FixComMD())  # fixcm=True in Langevin is deprecated (ASE 3.28) and biased
    if ensemble == 'nve':
        from ase.md.verlet import VelocityVerlet

        return VelocityVerlet(atoms, timestep=dt)
    if ensemble == 'nvt_langevin':
        from ase.md.langevin import Langevin

        return Langevin(
            atoms,
            timestep=dt,
            temperature_K=temperature,
            friction=float(cfg['friction_per_fs']) / units.fs,
            fixcm=False,
            rng=rng,
        )
    tdamp = float(cfg['tdamp_fs'] or 100 * float(cfg['timestep_fs'])) * units.fs
    if ensemble == 'nvt_nose_hoover':
        return NoseHooverChainNVTFixCom(atoms, timestep=dt, temperature_K=temperature, tdamp=tdamp)
    if ensemble == 'nvt_bussi':
        # Bussi-Donadio-Parrinello CSVR: velocity Verlet plus one global stochastic rescaling per step. It samples the
        # canonical ensemble without per-atom friction, so hop rates are not damped (production runs for diffusion;
        # docs/md.md). A uniform rescaling keeps the total momentum zero, so FixCom holds; ``rng`` is the
        # checkpointed generator, so a restart reproduces the noise.
        from ase.md.bussi import Bussi

        if atoms.get_kinetic_energy() <= 1e-12:  # ASE raises a bare ValueError: the rescaling needs motion to scale
            raise EngineError('invalid_input', 'nvt_bussi needs nonzero starting velocities: set init_velocities true')
        return Bussi(atoms, timestep=dt, temperature_K=temperature, taut=tdamp, rng=rng)
    npt = MTKNPTFixCom if cfg['barostat'] == 'full' else IsotropicMTKNPTFixCom
    pdamp = float(cfg['pdamp_fs'] or 1000 * float(cfg['timestep_fs'])) * units.fs
    return npt(
        atoms,
        timestep=dt,
        temperature_K=temperature,
        pressure_au=float(cfg['pressure_gpa']) * units.GPa,
        tdamp=tdamp,
        pdamp=pdamp,
    )


def thermostat_state(dyn) -> dict:
    """The integrator's own extended variables (Nose-Hoover chain, barostat, cell momenta), for an exact restart."""
    state = {}
    for owner, names in (('_thermostat', ('_eta', '_p_eta')), ('_barostat', ('_xi', '_p_xi'))):
        obj = getattr(dyn, owner, None)
        if obj is not None:
            state[owner] = {name: np.asarray(getattr(obj, name)).tolist() for name in names}
    if hasattr(dyn, '_p_eps'):
        state['_p_eps'] = float(dyn._p_eps)
    if hasattr(dyn, '_p_g'):
        state['_p_g'] = np.asarray(dyn._p_g).tolist()
    return state


def restore_thermostat_state(dyn, state: dict) -> None:
    for owner in ('_thermostat', '_barostat'):
        for name, value in state.get(owner, {}).items():
            setattr(getattr(dyn, owner), name, np.asarray(value, dtype=float))
    if '_p_eps' in state:
        dyn._p_eps = state['_p_eps']  # the cell at the checkpoint becomes the new reference, so _eps stays 0
    if '_p_g' in state and hasattr(dyn, '_p_g'):
        dyn._p_g = np.asarray(state['_p_g'], dtype=float)  # full-cell MTK: _h is the checkpoint's cell


def prepare_atoms(cfg: dict, rng):
    """Start from the structure, or from the checkpoint when one exists (then outputs are cut back to its step).

    ``restart_from``: ``'auto'`` continues from ``checkpoint.npz`` when present (a job re-queued in its directory),
    a file name must exist (a restart the user asked for never silently becomes a fresh start), ``None`` starts fresh.
    """
    atoms = read_structure(cfg['structure'])
    restart = cfg.get('restart_from')
    path = md_io.CHECKPOINT if restart == 'auto' else restart
    if path and pathlib.Path(path).is_file():
        ckpt = md_io.load_checkpoint(path)
        if not np.array_equal(ckpt['numbers'], atoms.numbers):
            raise EngineError(
                'invalid_input',
                f'checkpoint {path} holds a different structure ({len(ckpt["numbers"])} atoms) than '
                f'{cfg["structure"]}: restart from the parent run of the same structure',
            )
        atoms.set_cell(ckpt['cell'])
        atoms.set_positions(ckpt['positions'])
        atoms.set_momenta(ckpt['momenta'])
        rng.bit_generator.state = ckpt['rng_state']
        md_io.truncate_after(ckpt['step'])
        return atoms, ckpt['step'], ckpt['thermostat_state']
    if restart and restart != 'auto':
        present = sorted(p.name for p in pathlib.Path('.').iterdir())
        raise EngineError(
            'restart_files_missing',
            f'restart requested from {restart!r} but no such file in the working directory (present: {present}); '
            "the parent folder was cleaned or its files were never written: pass the parent's `checkpoint` output "
            'instead, or start a fresh run without `parent_folder`',
        )
    for name in (md_io.TRAJECTORY, md_io.CANDIDATES, md_io.THERMO, md_io.UNCERTAINTY, md_io.STOP_FRAME):
        pathlib.Path(name).unlink(missing_ok=True)  # a fresh start owns its outputs
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

    if cfg['init_velocities']:
        MaxwellBoltzmannDistribution(atoms, temperature_K=float(cfg['temperature_K']), rng=rng)
    Stationary(atoms)  # zero total momentum: with the centre-of-mass fix it stays zero
    return atoms, 0, {}


class MdRun:
    """One MD run: integrator, committee monitor, writers and stop rules around a plain step loop."""

    def __init__(self, config: dict):
        self.cfg = merged_config(config)
        self.rng = np.random.default_rng(int(self.cfg['seed']))
        self.committee = Committee(
            self.cfg['models'], device=self.cfg['device'], dtype=self.cfg['dtype'],
            committee_dtype=self.cfg['committee_dtype'] or self.cfg['dtype'],
            evaluation=self.cfg['uncertainty']['evaluation'],
        )  # fmt: skip
        self.atoms, self.start_step, state = prepare_atoms(self.cfg, self.rng)
        self.atoms.calc = FiniteGuard(self.committee.driver)
        self.dyn = make_dynamics(self.atoms, self.cfg, self.rng)
        restore_thermostat_state(self.dyn, state)
        self.rules = StopRules.from_config(self.cfg, float(self.cfg['temperature_K']))
        unc = self.cfg['uncertainty']
        self.monitor_stride = int(unc['stride'])
        self.trust_lower = float(unc['trust_lower'])
        self.trust_upper = unc['trust_upper']
        if self.trust_upper is None:
            self.trust_upper = self.rules.hard_limit if self.rules.hard_limit is not None else float('inf')
        self.max_candidates = unc['max_candidates']

    def _thermo(self, step: int) -> dict:
        atoms = self.atoms
        epot = atoms.get_potential_energy()
        ekin = atoms.get_kinetic_energy()
        pressure = float('nan')
        if self.cfg['ensemble'] == 'npt':
            from ase import units

            pressure = -np.trace(atoms.get_stress(voigt=False, include_ideal_gas=True)) / 3 / units.GPa
        return {
            'step': step,
            'time_fs': step * float(self.cfg['timestep_fs']),
            'epot': epot,
            'ekin': ekin,
            'etot': epot + ekin,
            'temperature': atoms.get_temperature(),
            'volume': atoms.get_volume(),
            'pressure_gpa': pressure,
        }

    def run(self) -> dict:
        cfg = self.cfg
        steps = int(cfg['steps'])
        traj = self.traj = md_io.AppendWriter(md_io.TRAJECTORY)
        cands = self.cands = md_io.AppendWriter(md_io.CANDIDATES)
        thermo_log = self.thermo_log = md_io.TableWriter(md_io.THERMO, md_io.THERMO_COLUMNS)
        unc_log = self.unc_log = md_io.TableWriter(md_io.UNCERTAINTY, md_io.UNCERTAINTY_COLUMNS)
        stop: StopReason | None = None
        step = self.start_step
        started = time.perf_counter()
        max_dev_seen = 0.0
        try:
            stop = self._record(step, first=True)
            started = time.perf_counter()  # after the first evaluation (model warm-up), like the bare-loop benchmark
            while stop is None and step < steps:
                step += 1  # the step being integrated: a NaN raised inside dyn.step() belongs to it
                self.dyn.step()
                self.dyn.nsteps = step
                stop = self._record(step)
                if step % int(cfg['checkpoint_stride']) == 0 and stop is None:
                    md_io.save_checkpoint(self.atoms, step, self.rng, thermostat_state(self.dyn))
            if stop is None and step % int(cfg['checkpoint_stride']) != 0:
                md_io.save_checkpoint(self.atoms, step, self.rng, thermostat_state(self.dyn))
        except NonFiniteError as exc:
            stop = StopReason(
                'non_finite',
                f'{exc} at step {step}: the dynamics blew up. Check temperature, timestep and friction; if the model '
                'is at fault (a structure far from its training data), label the candidate frames and retrain',
            )
        finally:
            elapsed = time.perf_counter() - started
            for writer in (traj, cands, thermo_log, unc_log):
                writer.close()
        if stop is not None and stop.status != 'non_finite':  # a NaN frame is nothing to look at
            md_io.AppendWriter(md_io.STOP_FRAME).write(md_io.frame_atoms(self.atoms, {'step': step}))
        if pathlib.Path(md_io.UNCERTAINTY).is_file():
            series = md_io.read_table(md_io.UNCERTAINTY)['max_force_dev']
            max_dev_seen = float(np.nanmax(series)) if len(series) else 0.0
        summary = {
            'start_step': self.start_step,
            'last_step': step,
            'steps_target': steps,
            'steps_run': step - self.start_step,
            'wall_s': elapsed,
            'steps_per_s': (step - self.start_step) / elapsed if elapsed > 0 else None,
            'natoms': len(self.atoms),
            'committee_size': self.committee.size,
            'frames_written': traj.count,
            'candidates_written': cands.count,
            'max_force_dev': max_dev_seen,
            'stopped_by': stop.status if stop else None,
            'stop_message': stop.message if stop else None,
            'ensemble': cfg['ensemble'],
            'barostat': cfg['barostat'] if cfg['ensemble'] == 'npt' else None,
            'temperature_K': float(cfg['temperature_K']),
            # the time axis of the trajectory: frame k is at k * trajectory_stride * timestep_fs (diffusion analysis)
            'timestep_fs': float(cfg['timestep_fs']),
            'trajectory_stride': int(cfg['trajectory_stride']),
            'uncertainty_stride': self.monitor_stride,
            'center_of_mass_fixed': True,
        }
        write_json(md_io.SUMMARY, summary)
        if stop is not None:
            raise EngineError(stop.status, stop.message)
        return summary

    def _record(self, step: int, first: bool = False) -> StopReason | None:
        """Everything that happens between two steps; returns the first stop rule that fires."""
        cfg = self.cfg
        traj, cands, thermo_log, unc_log = self.traj, self.cands, self.thermo_log, self.unc_log
        # On a restart the checkpoint step was already recorded by the killed run.
        skip_write = first and self.start_step > 0
        temperature = self.atoms.get_temperature()
        if not np.isfinite(temperature):  # before the stop rules: they may all be off
            raise NonFiniteError('momenta became non-finite')
        stop = None if first else self.rules.check_temperature(temperature, step)
        deviation = None
        if stop is None and step % self.monitor_stride == 0:
            forces = self.atoms.get_forces()  # the model's own forces (FixComMD leaves them); FiniteGuard checked them
            stop = self.rules.check_distances(self.atoms, step)
            deviation = self.committee.deviation(self.atoms)
            if deviation is not None and not skip_write:
                unc_log.write(
                    step,
                    step * float(cfg['timestep_fs']),
                    deviation.max_force_dev,
                    deviation.mean_force_dev,
                    deviation.energy_std_per_atom,
                )
                if self.trust_lower <= deviation.max_force_dev <= self.trust_upper and (
                    self.max_candidates is None or cands.count < int(self.max_candidates)
                ):
                    cands.write(
                        md_io.frame_atoms(
                            self.atoms,
                            {
                                'step': step,
                                'max_force_dev': deviation.max_force_dev,
                                'mlip_energy': self.atoms.get_potential_energy(),
                                'config_type': 'md_candidate',
                            },
                            {'mlip_forces': forces},
                        )
                    )
            if stop is None and deviation is not None:
                stop = self.rules.check_deviation(deviation.max_force_dev, step)
        if skip_write:
            return stop
        if step % int(cfg['trajectory_stride']) == 0 or stop is not None:
            thermo = self._thermo(step)
            thermo_log.write(*(thermo[c] for c in md_io.THERMO_COLUMNS))
            info = {
                'step': step,
                'time_fs': thermo['time_fs'],
                'energy': thermo['epot'],
                'temperature': thermo['temperature'],
            }
            if deviation is not None:
                info['max_force_dev'] = deviation.max_force_dev
            if stop is None:  # the offending frame goes to stop_frame.extxyz, not into the trajectory
                traj.write(md_io.frame_atoms(self.atoms, info))
        return stop


def run(config: dict) -> dict:
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    return MdRun(config).run()

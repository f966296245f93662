"""``aiida-nmcml-engine md``: MACE molecular dynamics with the committee spread sampled on the fly.

Input (JSON/YAML; defaults in :data:`DEFAULTS`)::

    structure: structure.extxyz      # starting cell
    models: [{path, sha256}, ...]    # member 0 drives the dynamics; all members form the committee
    ensemble: nvt_langevin | nvt_nose_hoover | npt | nve
    steps: 1000                      # total target; a restart continues up to it
    uncertainty: {stride: 10, trust_lower: 0.05, trust_upper: null}
    stop: {hard_limit: 1.0, min_distance: 0.7, max_temperature: auto}

Outputs: see :mod:`.md_io`. A run stopped by a rule raises :class:`EngineError` with the rule's status *after* all
files are closed, so everything written before the stop is kept.
"""

from __future__ import annotations

import os
import pathlib
import time

import numpy as np

from . import md_io
from .common import EngineError, check_finite_forces, write_json
from .md_committee import Committee
from .md_stop_rules import StopReason, StopRules

ENSEMBLES = ('nvt_langevin', 'nvt_nose_hoover', 'npt', 'nve')

DEFAULTS = {
    'structure': 'structure.extxyz',
    'ensemble': 'nvt_langevin',
    'timestep_fs': 1.0,
    'temperature_K': 300.0,
    'friction_per_fs': 0.01,
    'tdamp_fs': None,  # Nose-Hoover: 100 timesteps
    'pressure_gpa': 0.0,
    'pdamp_fs': None,  # MTK barostat: 1000 timesteps
    'steps': 1000,
    'seed': 0,
    'trajectory_stride': 10,
    'checkpoint_stride': 100,
    'restart_from': md_io.CHECKPOINT,
    'init_velocities': True,
    'dtype': 'float64',
    # The spread only flags frames for DFT: single precision is ample and about halves the monitoring cost.
    'committee_dtype': 'float32',
    'device': 'auto',
    'uncertainty': {'stride': 10, 'trust_lower': 0.05, 'trust_upper': None, 'max_candidates': None},
    'stop': {},
}


def merged_config(config: dict) -> dict:
    merged = {**DEFAULTS, **config}
    merged['uncertainty'] = {**DEFAULTS['uncertainty'], **(config.get('uncertainty') or {})}
    if merged['ensemble'] not in ENSEMBLES:
        raise EngineError('invalid_input', f'ensemble {merged["ensemble"]!r} unknown; choose one of {ENSEMBLES}')
    for key in ('steps', 'trajectory_stride', 'checkpoint_stride'):
        if int(merged[key]) < (0 if key == 'steps' else 1):
            raise EngineError('invalid_input', f'{key} must be a positive integer, got {merged[key]!r}')
    if int(merged['uncertainty']['stride']) < 1:
        raise EngineError('invalid_input', 'uncertainty.stride must be >= 1')
    if not config.get('models'):
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


def make_dynamics(atoms, cfg: dict, rng):
    """The ASE integrator for ``cfg['ensemble']``; ``rng`` feeds Langevin's noise so a checkpoint can restore it."""
    from ase import units

    dt = float(cfg['timestep_fs']) * units.fs
    temperature = float(cfg['temperature_K'])
    ensemble = cfg['ensemble']
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
        from ase.md.nose_hoover_chain import NoseHooverChainNVT

        return NoseHooverChainNVT(atoms, timestep=dt, temperature_K=temperature, tdamp=tdamp)
    from ase.md.nose_hoover_chain import IsotropicMTKNPT

    pdamp = float(cfg['pdamp_fs'] or 1000 * float(cfg['timestep_fs'])) * units.fs
    return IsotropicMTKNPT(
        atoms,
        timestep=dt,
        temperature_K=temperature,
        pressure_au=float(cfg['pressure_gpa']) * units.GPa,
        tdamp=tdamp,
        pdamp=pdamp,
    )


def thermostat_state(dyn) -> dict:
    """The integrator's own extended variables (Nose-Hoover chain, barostat), for an exact restart."""
    state = {}
    for owner, names in (('_thermostat', ('_eta', '_p_eta')), ('_barostat', ('_xi', '_p_xi'))):
        obj = getattr(dyn, owner, None)
        if obj is not None:
            state[owner] = {name: np.asarray(getattr(obj, name)).tolist() for name in names}
    if hasattr(dyn, '_p_eps'):
        state['_p_eps'] = float(dyn._p_eps)
    return state


def restore_thermostat_state(dyn, state: dict) -> None:
    for owner in ('_thermostat', '_barostat'):
        for name, value in state.get(owner, {}).items():
            setattr(getattr(dyn, owner), name, np.asarray(value, dtype=float))
    if '_p_eps' in state:
        dyn._p_eps = state['_p_eps']  # the cell at the checkpoint becomes the new reference, so _eps stays 0


def prepare_atoms(cfg: dict, rng):
    """Start from the structure, or from the checkpoint when one exists (then outputs are cut back to its step)."""
    atoms = read_structure(cfg['structure'])
    restart = cfg.get('restart_from')
    if restart and pathlib.Path(restart).is_file():
        ckpt = md_io.load_checkpoint(restart)
        if not np.array_equal(ckpt['numbers'], atoms.numbers):
            raise EngineError(
                'invalid_input',
                f'checkpoint {restart} holds a different structure ({len(ckpt["numbers"])} atoms) than '
                f'{cfg["structure"]}: restart from the parent run of the same structure',
            )
        atoms.set_cell(ckpt['cell'])
        atoms.set_positions(ckpt['positions'])
        atoms.set_momenta(ckpt['momenta'])
        rng.bit_generator.state = ckpt['rng_state']
        md_io.truncate_after(ckpt['step'])
        return atoms, ckpt['step'], ckpt['thermostat_state']
    if restart and restart != md_io.CHECKPOINT:
        raise EngineError('invalid_input', f'restart_from={restart!r} but no such file in the working directory')
    for name in (md_io.TRAJECTORY, md_io.CANDIDATES, md_io.THERMO, md_io.UNCERTAINTY, md_io.STOP_FRAME):
        pathlib.Path(name).unlink(missing_ok=True)  # a fresh start owns its outputs
    if cfg['init_velocities']:
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

        MaxwellBoltzmannDistribution(atoms, temperature_K=float(cfg['temperature_K']), rng=rng)
        Stationary(atoms)
    return atoms, 0, {}


class MdRun:
    """One MD run: integrator, committee monitor, writers and stop rules around a plain step loop."""

    def __init__(self, config: dict):
        self.cfg = merged_config(config)
        self.rng = np.random.default_rng(int(self.cfg['seed']))
        self.committee = Committee(
            self.cfg['models'], device=self.cfg['device'], dtype=self.cfg['dtype'],
            committee_dtype=self.cfg['committee_dtype'] or self.cfg['dtype'],
        )  # fmt: skip
        self.atoms, self.start_step, state = prepare_atoms(self.cfg, self.rng)
        self.atoms.calc = self.committee.driver
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
                self.dyn.step()
                step += 1
                self.dyn.nsteps = step
                stop = self._record(step)
                if step % int(cfg['checkpoint_stride']) == 0 and stop is None:
                    md_io.save_checkpoint(self.atoms, step, self.rng, thermostat_state(self.dyn))
            if stop is None and step % int(cfg['checkpoint_stride']) != 0:
                md_io.save_checkpoint(self.atoms, step, self.rng, thermostat_state(self.dyn))
        finally:
            elapsed = time.perf_counter() - started
            for writer in (traj, cands, thermo_log, unc_log):
                writer.close()
        if stop is not None:
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
            'temperature_K': float(cfg['temperature_K']),
            'timestep_fs': float(cfg['timestep_fs']),
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
        stop = None if first else self.rules.check_temperature(temperature, step)
        deviation = None
        if stop is None and step % self.monitor_stride == 0:
            forces = self.atoms.get_forces()
            check_finite_forces(forces, f'at step {step}')
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

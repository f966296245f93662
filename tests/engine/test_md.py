"""The MD engine on CPU with the tiny MACE committee (32 atoms, <= 200 steps): physics, monitoring, stops, restart."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from ase.io import read, write

from aiida_nmcml.engine import md, md_io
from aiida_nmcml.engine.common import EXIT_CODES, EngineError


def config(n_models=1, **kwargs):
    base = {'models': [f'model_{i}.model' for i in range(n_models)], 'device': 'cpu', 'seed': 3}
    base.update(kwargs)
    return base


def test_nve_conserves_energy(workdir):
    """Velocity Verlet with the driver model: total energy drift over 100 steps of 0.5 fs stays below 1 meV/atom."""
    md.run(config(ensemble='nve', steps=100, timestep_fs=0.5, temperature_K=300, trajectory_stride=5))
    thermo = md_io.read_table('thermo.log')
    natoms = 32
    drift = np.max(np.abs(thermo['etot'] - thermo['etot'][0])) / natoms
    exchange = np.ptp(thermo['epot']) / natoms  # energy really moved between kinetic and potential
    assert len(thermo['step']) == 21
    assert exchange > 5 * drift
    assert drift < 1e-3


@pytest.mark.parametrize('ensemble', ['nvt_langevin', 'nvt_nose_hoover'])
def test_nvt_heats_to_target(workdir, ensemble):
    """Started at 0 K, the thermostat brings the 32-atom cell to 600 K within 25 % (averaged over the second half)."""
    md.run(
        config(
            ensemble=ensemble,
            steps=200,
            timestep_fs=2.0,
            temperature_K=600,
            init_velocities=False,
            friction_per_fs=0.05,
            tdamp_fs=20,
            trajectory_stride=2,
        )
    )
    thermo = md_io.read_table('thermo.log')
    assert thermo['temperature'][0] < 1.0
    late = thermo['temperature'][len(thermo['temperature']) // 2 :]
    assert abs(late.mean() - 600) < 150, late.mean()


def test_uncertainty_series_at_stride(workdir):
    """Committee evaluated at steps 0, 7, 14, ... only; trajectory frames carry step, time, energy, unwrapped."""
    summary = md.run(
        config(
            n_models=2, steps=50, uncertainty={'stride': 7, 'trust_lower': 0.0}, trajectory_stride=10, timestep_fs=1.5
        )
    )
    series = md_io.read_table('uncertainty.dat')
    assert series['step'].tolist() == list(range(0, 51, 7))
    assert np.all(series['max_force_dev'] > 0)  # two different seeds genuinely disagree
    assert np.all(series['max_force_dev'] >= series['mean_force_dev'])
    frames = read('trajectory.extxyz', ':')
    assert [f.info['step'] for f in frames] == list(range(0, 51, 10))
    assert frames[3].info['time_fs'] == pytest.approx(45.0)
    assert 'max_force_dev' in frames[0].info and 'max_force_dev' not in frames[1].info  # 0 is a monitor step, 10 not
    assert frames[-1].get_potential_energy() == pytest.approx(md_io.read_table('thermo.log')['epot'][-1])
    assert np.allclose(
        frames[-1].get_positions(),
        frames[-1].cell.scaled_positions(frames[-1].arrays['unwrapped']) % 1.0 @ frames[-1].cell.array,
        atol=1e-6,
    )
    cands = read('candidates.extxyz', ':')  # trust_lower=0: every monitor step is a candidate, without REF labels
    assert len(cands) == len(series['step']) == summary['candidates_written']
    assert not any(k.startswith('REF_') for k in cands[0].info)
    assert cands[0].arrays['mlip_forces'].shape == (32, 3)


def test_forced_stop_keeps_frames_and_exit_code(workdir):
    """A hard limit between the first and the largest deviation of a free run stops the same run exactly at the first
    monitor step above it; the CLI exits with the rule's code and the frames before the stop stay readable."""
    from aiida_nmcml.engine.cli import main

    cfg = config(
        n_models=2,
        steps=80,
        temperature_K=900,
        uncertainty={'stride': 5},
        trajectory_stride=5,
        stop={'min_distance': None},
    )
    md.run(cfg)
    free = md_io.read_table('uncertainty.dat')
    limit = float(np.median(free['max_force_dev']))
    assert free['max_force_dev'][0] < limit < free['max_force_dev'].max()
    stop_step = int(free['step'][np.argmax(free['max_force_dev'] > limit)])

    cfg['stop'] = {'hard_limit': limit, 'min_distance': None}
    cfg['restart_from'] = None
    (workdir / 'checkpoint.npz').unlink()
    (workdir / 'input.json').write_text(json.dumps(cfg))
    assert main(['md', 'input.json']) == EXIT_CODES['uncertainty_exceeded']
    status = json.loads((workdir / 'engine_status.json').read_text())
    assert status['status'] == 'uncertainty_exceeded' and 'hard limit' in status['message']
    frames = read('trajectory.extxyz', ':')
    assert frames[-1].info['step'] == stop_step - 5
    assert read('stop_frame.extxyz').info['step'] == stop_step
    summary = json.loads((workdir / 'md_summary.json').read_text())
    assert summary['stopped_by'] == 'uncertainty_exceeded' and summary['last_step'] == stop_step


def test_other_stop_rules(workdir):
    """Each rule reports its own status: Li-O pairs (~2 Å) under a 2.5 Å minimum; a 50 K ceiling at 300 K."""
    with pytest.raises(EngineError) as exc:
        md.run(config(steps=20, uncertainty={'stride': 5}, stop={'min_distance': 2.5}))
    assert exc.value.status == 'atoms_too_close'
    with pytest.raises(EngineError) as exc:
        md.run(config(steps=20, temperature_K=300, stop={'max_temperature': 50}))
    assert exc.value.status == 'temperature_runaway'
    assert 'timestep' in exc.value.message


@pytest.mark.parametrize('ensemble', ['nvt_langevin', 'nvt_nose_hoover', 'npt'])
def test_restart_continues_killed_run(workdir, ensemble):
    """A run "killed" at step 35 with its last checkpoint at 20 continues from 20 and reproduces the uninterrupted run:
    same steps in every file (no duplicates), same final positions (RNG and thermostat state restored)."""
    cfg = config(
        n_models=2, ensemble=ensemble, steps=60, checkpoint_stride=20, trajectory_stride=5, uncertainty={'stride': 5}
    )
    if ensemble == 'npt':  # full-cell MTK: the cell momentum is part of the checkpoint
        cfg.update(pdamp_fs=100, tdamp_fs=25, stop={'max_temperature': None})
    md.run(cfg)
    reference = read('trajectory.extxyz', ':')
    reference_unc = md_io.read_table('uncertainty.dat')
    for name in ('trajectory.extxyz', 'uncertainty.dat', 'thermo.log', 'checkpoint.npz'):
        (workdir / name).unlink()

    md.run({**cfg, 'steps': 20})
    shutil.copy('checkpoint.npz', 'checkpoint_20.npz')
    md.run({**cfg, 'steps': 35})  # continues 20 -> 35 and checkpoints at 35
    with open('trajectory.extxyz', 'a') as handle:
        handle.write('32\nstep=40 partial frame cut by the kill\nLi 0 0')  # a half-written frame
    shutil.copy('checkpoint_20.npz', 'checkpoint.npz')  # as if killed at 35 before its final checkpoint

    summary = md.run(cfg)
    assert summary['start_step'] == 20
    frames = read('trajectory.extxyz', ':')
    assert [f.info['step'] for f in frames] == [f.info['step'] for f in reference]
    assert np.allclose(frames[-1].arrays['unwrapped'], reference[-1].arrays['unwrapped'], atol=1e-8)
    assert np.allclose(md_io.read_table('uncertainty.dat')['max_force_dev'], reference_unc['max_force_dev'])


def test_npt_barostat_responds_to_pressure(workdir, monkeypatch):
    """Isotropic MTK NPT: at 20 GPa the cell ends denser than at 0 GPa, and the log reports the pressure.

    The toy model heats up under strong compression, so the temperature stop rule is off here (tested elsewhere).
    """
    volumes = {}
    for pressure in (0.0, 20.0):
        job = workdir / f'p{pressure:g}'
        job.mkdir()
        for item in ('structure.extxyz', 'model_0.model'):
            shutil.copy(workdir / item, job / item)
        monkeypatch.chdir(job)
        md.run(config(ensemble='npt', barostat='isotropic', steps=100, timestep_fs=1.0, temperature_K=300,
                      pressure_gpa=pressure, pdamp_fs=50, tdamp_fs=25, trajectory_stride=10,
                      stop={'max_temperature': None}))  # fmt: skip
        frames = read(job / 'trajectory.extxyz', ':')
        volumes[pressure] = frames[-1].get_volume()
        thermo = md_io.read_table('thermo.log')
        assert np.all(np.isfinite(thermo['pressure_gpa'])) and np.ptp(thermo['volume']) > 0
    v0 = read(workdir / 'structure.extxyz').get_volume()
    assert volumes[0.0] != pytest.approx(v0, rel=1e-4)  # the cell is dynamic
    assert volumes[20.0] < volumes[0.0] * 0.99


def _strained_cell(workdir, z_strain: float):
    """The test cell stretched along the layer normal (z): the toy model's stress becomes clearly anisotropic."""
    atoms = read(workdir / 'structure.extxyz')
    cell = atoms.cell.array.copy()
    cell[:, 2] *= 1 + z_strain
    atoms.set_cell(cell, scale_atoms=True)
    return atoms


def test_full_cell_npt_changes_c_over_a(workdir, monkeypatch, committee_models):
    """Under anisotropic stress the full-cell MTK barostat (the NPT default) changes c/a; the isotropic one cannot.

    c/a is measured as the deformation of the cell along the layer normal (z) over the in-plane one, F_zz / F_xx with
    F = h0^-1 h, so it is exactly 1 for any isotropic scaling.
    """
    from mace.calculators import MACECalculator

    atoms = _strained_cell(workdir, 0.05)
    probe = atoms.copy()
    probe.calc = MACECalculator(model_paths=str(committee_models[0]), device='cpu', default_dtype='float64')
    sigma = np.diag(probe.get_stress(voigt=False)) / 0.006241509  # GPa
    assert abs(sigma[2] - sigma[0]) > 1.0  # the situation is anisotropic (~4 GPa for the toy model)
    ratios = {}
    for barostat in ('isotropic', 'full'):
        job = workdir / barostat
        job.mkdir()
        write(job / 'structure.extxyz', atoms)
        shutil.copy(workdir / 'model_0.model', job / 'model_0.model')
        monkeypatch.chdir(job)
        summary = md.run(config(ensemble='npt', barostat=barostat, steps=40, pdamp_fs=100, tdamp_fs=25,
                                trajectory_stride=10, stop={'max_temperature': None}))  # fmt: skip
        assert summary['barostat'] == barostat
        frames = read(job / 'trajectory.extxyz', ':')
        deform = [np.linalg.solve(atoms.cell.array, f.cell.array) for f in frames[1:]]
        ratios[barostat] = np.array([f[2, 2] / f[0, 0] for f in deform])
    assert np.allclose(ratios['isotropic'], 1.0, atol=1e-9)
    # in-plane is more compressive than the stretched c direction, so a grows relative to c
    assert ratios['full'].min() < 0.98, ratios['full']


@pytest.mark.parametrize('ensemble', ['nvt_langevin', 'nvt_nose_hoover', 'nve', 'npt'])
def test_centre_of_mass_is_fixed(workdir, ensemble):
    """No centre-of-mass random walk: with Langevin noise at 900 K it moved ~0.01-0.1 Å in 60 steps for this 32-atom
    cell (D_COM = kT / (M gamma)). Under NPT the cell deforms, so there the fractional centre of mass is fixed."""
    md.run(config(ensemble=ensemble, steps=60, temperature_K=900, friction_per_fs=0.05, timestep_fs=1.0,
                  pdamp_fs=100, tdamp_fs=25, trajectory_stride=10, stop={'max_temperature': None}))  # fmt: skip
    frames = read('trajectory.extxyz', ':')
    masses = frames[0].get_masses()
    if ensemble == 'npt':
        com = [masses @ np.linalg.solve(f.cell.array.T, f.arrays['unwrapped'].T).T / masses.sum() for f in frames]
        tolerance = 1e-7  # fractional
    else:
        com = [masses @ f.arrays['unwrapped'] / masses.sum() for f in frames]
        tolerance = 1e-6  # Å; positions are written with 8 decimals
    displacement = np.linalg.norm(np.array(com) - com[0], axis=1)
    moved = np.linalg.norm(frames[-1].arrays['unwrapped'] - frames[0].arrays['unwrapped'], axis=1).mean()
    assert moved > 0.05  # the atoms themselves did move
    assert displacement.max() < tolerance, displacement


def test_frames_carry_moments_and_sublattice(workdir):
    """Trajectory, candidate and stop frames keep the structure's initial moments and sublattice labels, also through
    a TrainingSet (what labelling reads), so DFT of an MD candidate starts magnetic."""
    from aiida_nmcml.data.trainingset import TrainingSet
    from aiida_nmcml.structures import dft_ready

    atoms = read('structure.extxyz')
    atoms.arrays['sublattice'] = np.array(
        ['li' if s == 'Li' else 'o' if s == 'O' else 'tm' for s in atoms.get_chemical_symbols()]
    )
    dft_ready(atoms)
    assert np.any(atoms.get_initial_magnetic_moments() > 0)
    write('structure.extxyz', atoms)
    md.run(config(n_models=2, steps=20, uncertainty={'stride': 10, 'trust_lower': 0.0, 'trust_upper': None},
                  stop={'min_distance': None}))  # fmt: skip
    candidates = read('candidates.extxyz', ':')
    written = read('trajectory.extxyz', ':') + candidates
    assert len(candidates) == 3 and len(written) == 6
    for frame in written + TrainingSet.from_frames(candidates).get_frames():
        assert frame.arrays['sublattice'].tolist() == atoms.arrays['sublattice'].tolist()
        assert np.allclose(frame.get_initial_magnetic_moments(), atoms.get_initial_magnetic_moments())
    stop = md.MdRun(config(steps=25, restart_from=None, stop={'max_temperature': 1.0}))
    with pytest.raises(EngineError):
        stop.run()
    assert read('stop_frame.extxyz').arrays['sublattice'].tolist() == atoms.arrays['sublattice'].tolist()

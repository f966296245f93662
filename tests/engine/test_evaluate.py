"""Engine ``evaluate``: committee predictions against direct, independent MACECalculator evaluations of each member."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.io import write

from aiida_nmcml.engine.common import EngineError, sha256sum


@pytest.fixture
def workdir(tmp_path, monkeypatch, toy_frames):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / 'frames.xyz', toy_frames[:6], format='extxyz')
    return tmp_path


def models_config(paths):
    return [{'path': str(p), 'sha256': sha256sum(p)} for p in paths]


def test_committee_matches_direct_evaluation(workdir, committee_models, toy_frames):
    from mace.calculators import MACECalculator

    from aiida_nmcml.engine.evaluate import run

    run({'frames': 'frames.xyz', 'models': models_config(committee_models), 'device': 'cpu'})
    arrays = np.load(workdir / 'evaluate_arrays.npz')
    metrics = json.loads((workdir / 'evaluate_metrics.json').read_text())
    frames = toy_frames[:6]

    direct_e, direct_f = [], []
    for path in committee_models:
        calc = MACECalculator(model_paths=str(path), device='cpu', default_dtype='float64')
        energies, forces = [], []
        for atoms in frames:
            atoms = atoms.copy()
            atoms.calc = calc
            energies.append(atoms.get_potential_energy())
            forces.append(atoms.get_forces())
        direct_e.append(energies)
        direct_f.append(np.concatenate(forces))
    direct_e, direct_f = np.array(direct_e), np.array(direct_f)

    # the engine reads frames back from extxyz (positions rounded in the text): agreement to ~1e-8 eV, not bitwise
    np.testing.assert_allclose(arrays['energy_committee'], direct_e, rtol=0, atol=1e-6)
    np.testing.assert_allclose(arrays['forces_committee'], direct_f, rtol=0, atol=1e-6)
    assert not np.allclose(direct_e[0], direct_e[1])  # the members really differ

    # deviation and error by hand from the direct evaluations
    bounds = np.cumsum([0] + [len(a) for a in frames])
    mean_f = direct_f.mean(axis=0)
    ref_f = np.concatenate([a.arrays['REF_forces'] for a in frames])
    for k in range(len(frames)):
        lo, hi = bounds[k], bounds[k + 1]
        dev = np.sqrt(np.mean(np.sum((direct_f[:, lo:hi] - mean_f[lo:hi]) ** 2, axis=-1), axis=0)).max()
        err = np.linalg.norm(mean_f[lo:hi] - ref_f[lo:hi], axis=-1).max()
        assert arrays['max_force_deviation'][k] == pytest.approx(dev, abs=1e-6)
        assert arrays['max_force_error'][k] == pytest.approx(err, abs=1e-6)
    rmse_f = np.sqrt(np.mean((mean_f - ref_f) ** 2))
    assert metrics['forces']['rmse'] == pytest.approx(rmse_f, rel=1e-6)
    natoms = np.array([len(a) for a in frames])
    ref_e = np.array([a.info['REF_energy'] for a in frames])
    mae_e = np.mean(np.abs(direct_e.mean(0) - ref_e) / natoms)
    assert metrics['energy_per_atom']['mae'] == pytest.approx(mae_e, rel=1e-6)
    rmse_member = np.sqrt(np.mean((direct_f[1] - ref_f) ** 2))
    assert metrics['members'][1]['forces']['rmse'] == pytest.approx(rmse_member, rel=1e-6)
    assert np.isfinite(metrics['stress']['rmse'])

    # per atom: deviation and error by hand; the calibration is the ML scale of these (not a fit of frame maxima)
    per_atom_dev = np.sqrt(np.mean(np.sum((direct_f - mean_f) ** 2, axis=-1), axis=0))
    per_atom_err = np.linalg.norm(mean_f - ref_f, axis=-1)
    np.testing.assert_allclose(arrays['atomic_force_deviation'], per_atom_dev, atol=1e-6)
    np.testing.assert_allclose(arrays['atomic_force_error'], per_atom_err, atol=1e-6)
    calibration = metrics['calibration']
    raw = np.mean(per_atom_err**2 / (2 * per_atom_dev**2))  # s^2 = M/(M-1) d^2 with M = 2
    assert calibration['alpha2_raw'] == pytest.approx(raw, rel=1e-4)
    assert calibration['alpha2'] == pytest.approx(raw / 3 - 0.5, rel=1e-4)  # k = 3: (k-2)/k <r> - 1/M
    assert calibration['n_atoms'] == len(ref_f) and calibration['negligible_spread'] is False
    assert -1 <= calibration['spearman'] <= 1
    assert sum(calibration['reliability']['count']) == len(ref_f)

    # stress in GPa next to meV/atom and meV/Å
    ref_s = np.array([a.info['REF_stress'] for a in frames])
    stress_rmse = np.sqrt(np.mean((arrays['stress'] - ref_s) ** 2)) * 160.21766208
    assert metrics['summary']['stress_rmse_GPa'] == pytest.approx(stress_rmse, rel=1e-6)
    assert metrics['summary']['forces_rmse_meV_per_A'] == pytest.approx(rmse_f * 1e3, rel=1e-6)
    assert metrics['summary']['energy_rmse_meV_per_atom'] == pytest.approx(
        metrics['energy_per_atom']['rmse'] * 1e3, rel=1e-9
    )


def test_committee_without_spread_is_refused_after_writing_its_outputs(workdir, tiny_foundation_model):
    """Two copies of one model (what a seed-only fine-tuned committee nearly is): no calibration, own status."""
    import shutil

    from aiida_nmcml.engine.evaluate import run

    twin = workdir / 'twin.model'
    shutil.copy(tiny_foundation_model, twin)
    with pytest.raises(EngineError) as info:
        run({'frames': 'frames.xyz', 'models': models_config([tiny_foundation_model, twin]), 'device': 'cpu'})
    assert info.value.status == 'negligible_spread'
    assert 'bootstrap' in info.value.message
    metrics = json.loads((workdir / 'evaluate_metrics.json').read_text())
    assert metrics['calibration']['negligible_spread'] is True
    assert metrics['forces']['rmse'] > 0  # the predictions are still there


def test_invalid_calibration_settings_refused(workdir, committee_models):
    from aiida_nmcml.engine.evaluate import run

    with pytest.raises(EngineError, match='tolerance must be a positive'):
        run({'frames': 'frames.xyz', 'models': models_config(committee_models), 'tolerance': -1})


def test_single_model_has_no_calibration(workdir, tiny_foundation_model):
    from aiida_nmcml.engine.evaluate import run

    run({'frames': 'frames.xyz', 'models': models_config([tiny_foundation_model]), 'device': 'cpu'})
    metrics = json.loads((workdir / 'evaluate_metrics.json').read_text())
    assert metrics['calibration'] is None
    assert metrics['forces']['rmse'] > 0
    assert np.all(np.load(workdir / 'evaluate_arrays.npz')['max_force_deviation'] == 0)


def test_hash_mismatch_refused_before_loading(workdir, tiny_foundation_model):
    from aiida_nmcml.engine.evaluate import run

    with pytest.raises(EngineError) as info:
        run({'frames': 'frames.xyz', 'models': [{'path': str(tiny_foundation_model), 'sha256': '0' * 64}]})
    assert info.value.status == 'model_hash_mismatch'


def test_unlabelled_frames_get_deviation_but_no_parity(workdir, committee_models, toy_frames):
    from aiida_nmcml.engine.evaluate import run

    bare = [a.copy() for a in toy_frames[:3]]  # Atoms.copy keeps arrays/info: drop the labels explicitly
    for atoms in bare:
        atoms.info.pop('REF_energy'), atoms.info.pop('REF_stress')
        del atoms.arrays['REF_forces']
    write(workdir / 'bare.xyz', bare, format='extxyz')
    run({'frames': 'bare.xyz', 'models': models_config(committee_models), 'device': 'cpu'})
    metrics = json.loads((workdir / 'evaluate_metrics.json').read_text())
    assert metrics['n_labelled'] == 0 and metrics['forces']['n'] == 0
    assert metrics['max_force_deviation']['max'] > 0

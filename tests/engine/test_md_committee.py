"""MD committee monitor: every member compared in the same dtype (no float32/float64 noise floor in the spread)."""

from __future__ import annotations

import shutil

import numpy as np

from aiida_nmcml.engine.common import sha256sum
from aiida_nmcml.engine.md_committee import Committee


def test_mixed_precision_monitor_has_no_dtype_noise_floor(tmp_path, tiny_foundation_model, small_cell):
    """Two copies of one model, float64 driver, float32 monitor: the spread must be 0, not |F64 - F32|.

    Before the fix the driver's float64 forces were compared with float32 members: a 'spread' of ~1e-6 eV/Å from
    precision alone, the size of a seed-only fine-tuned committee's whole signal.
    """
    twin = tmp_path / 'twin.model'
    shutil.copy(tiny_foundation_model, twin)
    models = [{'path': str(p), 'sha256': sha256sum(p)} for p in (tiny_foundation_model, twin)]
    atoms = small_cell.copy()
    atoms.rattle(0.05, seed=3)
    mixed = Committee(models, device='cpu', dtype='float64', committee_dtype='float32')
    atoms.calc = mixed.driver
    deviation = mixed.deviation(atoms)
    assert deviation.max_force_dev == 0.0
    # the floor the old monitor added: float64 driver against the same model in float32
    f32 = Committee(models[:1], device='cpu', dtype='float32').driver
    probe = atoms.copy()
    probe.calc = f32
    floor = np.abs(atoms.get_forces() - probe.get_forces()).max()
    assert floor > 0
    same = Committee(models, device='cpu', dtype='float64')
    atoms.calc = same.driver
    assert same.deviation(atoms).max_force_dev == 0.0 and same.reuse_driver and not mixed.reuse_driver

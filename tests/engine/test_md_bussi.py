"""The Bussi (CSVR) thermostat of the MD engine: production ensemble of ``nmcml.diffusion`` (no per-atom friction)."""

from __future__ import annotations

import numpy as np
import pytest
from ase.io import read

from aiida_nmcml.engine import md, md_io
from aiida_nmcml.engine.common import EngineError


def config(**kwargs):
    base = {'models': ['model_0.model'], 'device': 'cpu', 'seed': 5, 'ensemble': 'nvt_bussi', 'timestep_fs': 2.0}
    base.update(kwargs)
    return base


def test_bussi_holds_target_keeps_com_and_restarts_exactly(workdir):
    """With a 10 fs coupling time the 32-atom cell stays at 500 K (mean of the second half within 100 K; canonical
    fluctuations of one frame are ~60 K here); the centre of mass does not move; a run continued from its checkpoint
    at step 20 ends where the uninterrupted run does (the rescaling noise comes from the checkpointed generator).
    Short and cool because the toy model collapses within ~100 steps at 700 K."""
    cfg = config(steps=40, temperature_K=500, timestep_fs=1.0, tdamp_fs=10.0, trajectory_stride=2,
                 checkpoint_stride=20)  # fmt: skip
    md.run(cfg | {'restart_from': None})
    thermo = md_io.read_table('thermo.log')
    late = thermo['temperature'][len(thermo['temperature']) // 2 :]
    assert abs(late.mean() - 500) < 100, late.mean()
    frames = read('trajectory.extxyz', ':')
    masses = frames[0].get_masses()
    com = np.array([masses @ f.arrays['unwrapped'] / masses.sum() for f in frames])
    assert np.linalg.norm(com - com[0], axis=1).max() < 1e-6
    reference = frames[-1].arrays['unwrapped']

    md.run({**cfg, 'steps': 20, 'restart_from': None})
    summary = md.run(cfg)  # 'auto': continues from checkpoint.npz at step 20
    assert summary['start_step'] == 20
    assert np.allclose(read('trajectory.extxyz', '-1').arrays['unwrapped'], reference, atol=1e-8)


def test_bussi_refuses_a_cold_start(workdir):
    with pytest.raises(EngineError) as exc:
        md.run(config(steps=5, init_velocities=False))
    assert exc.value.status == 'invalid_input' and 'init_velocities' in exc.value.message

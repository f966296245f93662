"""The diffusion calcfunctions: trajectory files as input nodes, D and Ea as output nodes (provenance)."""

from __future__ import annotations

import io
import math

import pytest
from aiida import orm
from ase.io import write

from aiida_nmcml.analysis import diffusion as dm
from aiida_nmcml.workflows.diffusion import analyse_trajectories, arrhenius


def _file(frames) -> orm.SinglefileData:
    handle = io.StringIO()
    write(handle, frames, format='extxyz')
    return orm.SinglefileData(io.BytesIO(handle.getvalue().encode()), filename='trajectory.extxyz')


def test_analyse_and_arrhenius_store_their_results(aiida_profile):
    ea, samples = 0.3, {}
    for i, temp in enumerate((500, 700, 900, 1100)):
        rate = math.exp(-ea / (dm.K_B_EV * temp))
        dt = 0.03 / rate
        reps = {
            f'r{r}': _file(
                dm.synthetic_hopping_trajectory(n_li=12, n_frames=120, hop_rate_per_fs=rate, dt_fs=dt, seed=10 * i + r)
            )
            for r in range(3)
        }
        params = orm.Dict({'start_fs': 5 * dt, 'n_lags': 25, 'temperature_K': temp, 'n_samples': 1000})
        out = analyse_trajectories(parameters=params, **reps)
        result = out['result'].get_dict()
        truth = rate * 2.87**2 / 4 * dm.A2_PER_FS_TO_CM2_PER_S
        lo, hi = result['D_xy']['D_interval_cm2_s']
        assert lo < truth < hi
        assert result['n_replicas'] == 3 and 'conductivity_tracer' in result
        assert out['samples'].get_array('tracer_xy_D_samples').size == 1000
        assert out['result'].creator.inputs.r0.uuid == reps['r0'].uuid  # the trajectory is an input node
        samples[f't{temp}'] = out['samples']
    fit = arrhenius(**samples)
    _med, lo, hi = fit['result']['Ea_eV']
    assert lo < ea < hi
    assert fit['posterior'].get_array('D_300K_cm2_s').size == 4000


def test_parameters_refused(aiida_profile):
    frames = dm.synthetic_hopping_trajectory(n_li=4, n_frames=30, seed=0)
    with pytest.raises(ValueError, match="did you mean 'start_fs'"):
        analyse_trajectories(parameters=orm.Dict({'start_f': 10.0}), r0=_file(frames))

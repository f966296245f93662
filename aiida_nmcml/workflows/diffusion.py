"""Provenance side of the diffusion analysis: calcfunctions that turn MD trajectories into stored D and Ea nodes.

The science is in :mod:`aiida_nmcml.analysis.diffusion` (no AiiDA); these wrappers exist so that the future
``nmcml.diffusion`` work chain creates its data only through calcfunctions, with each trajectory file an input node:

* :func:`analyse_trajectories` -- one (T, x) point: replicas (``trajectory`` outputs of ``nmcml.md``, extxyz
  SinglefileData) -> ``result`` (Dict: D_xy, D_z, D_iso, D_sigma, Haven ratio, conductivity, warnings) and
  ``samples`` (ArrayData: MSD curves and the D samples that the Arrhenius fit consumes).
* :func:`arrhenius` -- the ``samples`` nodes of several temperatures -> Ea, D(300 K) and their samples.
"""

from __future__ import annotations

import numpy as np
from aiida import orm
from aiida.engine import calcfunction

from ..analysis import diffusion as dm
from ..common.schema import Field, Section

PARAMETERS = Section(
    {
        'timestep_fs': Field(float, default=None, nullable=True, min=0.0, min_exclusive=True, unit='fs',
                             help="null: read from the frames' info['time_fs']"),
        'stride': Field(int, default=1, min=1, help='MD steps between frames (with timestep_fs)'),
        'start_fs': Field(float, default=1000.0, min=0.0, unit='fs', help='ballistic/vibrational start not fitted'),
        'max_lag_fraction': Field(float, default=0.5, min=0.0, min_exclusive=True, max=1.0),
        'n_lags': Field(int, default=60, min=3, max=500),
        'temperature_K': Field(float, default=None, nullable=True, min=0.0, min_exclusive=True, unit='K'),
        'species': Field(str, default='Li'),
        'level': Field(float, default=0.95, min=0.5, max=0.999),
        'n_samples': Field(int, default=4000, min=100, max=100000),
        'seed': Field(int, default=0, min=0),
    }
)  # fmt: skip


def _read_frames(node: orm.SinglefileData):
    from ase.io import read

    with node.as_path() as path:
        return read(path, index=':', format='extxyz')


@calcfunction
def analyse_trajectories(parameters: orm.Dict, **trajectories):
    """D*, D_sigma and the Haven ratio of one (T, x) point from independent replicas (equal length)."""
    errors = PARAMETERS.errors(parameters.get_dict(), 'parameters')
    if errors:
        raise ValueError('\n'.join(errors))
    p = PARAMETERS.with_defaults(parameters.get_dict())
    if not trajectories:
        raise ValueError('give at least one trajectory')
    replicas = [_read_frames(trajectories[key]) for key in sorted(trajectories)]
    result = dm.analyse_diffusion(
        replicas if len(replicas) > 1 else replicas[0],
        p['timestep_fs'],
        p['stride'],
        species=p['species'],
        start_fs=p['start_fs'],
        max_lag_fraction=p['max_lag_fraction'],
        n_lags=p['n_lags'],
        temperature=p['temperature_K'],
        n_samples=p['n_samples'],
        level=p['level'],
        seed=p['seed'],
    )
    samples = orm.ArrayData()
    for name in ('tracer_xy', 'tracer_z', 'tracer_iso', 'collective_xy'):
        fit = getattr(result, name)
        if fit is None:
            continue
        samples.set_array(f'{name}_lag_fs', fit.lag_fs)
        samples.set_array(f'{name}_msd_A2', fit.msd)
        samples.set_array(f'{name}_D_samples', fit.D_samples)
    if result.haven_samples is not None:
        samples.set_array('haven_samples', result.haven_samples)
    summary = result.as_dict()
    for key in ('D_xy', 'D_z', 'D_iso', 'D_collective_xy'):  # the curves live in `samples`
        if summary.get(key):
            for curve in ('lag_fs', 'msd_A2', 'msd_std_A2'):
                summary[key].pop(curve, None)
    samples.base.attributes.set('temperature_K', p['temperature_K'])
    return {'result': orm.Dict(summary), 'samples': samples}


@calcfunction
def arrhenius(**samples):
    """Ea and D(300 K) from the ``samples`` of :func:`analyse_trajectories` at several temperatures (in-plane D*)."""
    temperatures, draws = [], []
    for key in sorted(samples):
        node = samples[key]
        temperature = node.base.attributes.get('temperature_K', None)
        if temperature is None:
            raise ValueError(f'samples `{key}` carry no temperature_K: set it in analyse_trajectories parameters')
        temperatures.append(float(temperature))
        draws.append(np.asarray(node.get_array('tracer_xy_D_samples')))
    fit = dm.arrhenius_fit(temperatures, draws)
    posterior = orm.ArrayData()
    posterior.set_array('Ea_eV', fit.ea_samples)
    posterior.set_array('ln_D0', fit.ln_d0_samples)
    posterior.set_array('D_300K_cm2_s', fit.extrapolate_samples(300.0))
    return {'result': orm.Dict(fit.as_dict()), 'posterior': posterior}

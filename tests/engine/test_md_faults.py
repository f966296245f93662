"""Faults of the MD engine found as a new user would: nonsense settings, NaN dynamics, a restart without its files.

Each used to run silently or hang: ``temperature_K: -300`` gave NaN velocities and MACE's neighbour list never returned
on the NaN positions; ``temprature_K`` ran at 300 K; a restart whose checkpoint was gone started again at step 0.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.calculators.calculator import Calculator, all_changes
from ase.io import read

from aiida_nmcml.engine import md, md_io
from aiida_nmcml.engine.cli import main
from aiida_nmcml.engine.common import EXIT_CODES, EngineError

NO_STOP_RULES = {'hard_limit': None, 'min_distance': None, 'max_temperature': None}


def config(n_models=1, **kwargs):
    return {'models': [f'model_{i}.model' for i in range(n_models)], 'device': 'cpu', 'seed': 3, **kwargs}


class NanAfter(Calculator):
    """The real model for ``good_calls`` evaluations, then NaN forces: a model that breaks mid-run.

    It also records whether it was ever handed non-finite positions (the call that used to hang).
    """

    def __init__(self, inner, good_calls: int):
        super().__init__()
        self.inner = inner
        self.good_calls = good_calls
        self.calls = 0
        self.saw_nonfinite_positions = False
        self.implemented_properties = list(inner.implemented_properties)

    def calculate(self, atoms=None, properties=('energy',), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.calls += 1
        if not np.all(np.isfinite(atoms.positions)):
            self.saw_nonfinite_positions = True
        self.inner.calculate(atoms, properties, system_changes)
        self.results = dict(self.inner.results)
        if self.calls > self.good_calls:
            self.results['forces'] = np.full_like(self.results['forces'], np.nan)


@pytest.mark.timeout(120)
def test_nan_forces_stop_with_own_status_whatever_the_rules(workdir):
    """Every stop rule off; the model returns NaN forces from its 8th call (mid-run, not a monitor step). The run
    stops at once with ``non_finite`` (no hang), never hands NaN positions to the model, and keeps what it wrote."""
    run = md.MdRun(config(steps=50, trajectory_stride=2, stop=NO_STOP_RULES))
    broken = NanAfter(run.atoms.calc.inner, good_calls=7)
    run.atoms.calc.inner = broken
    with pytest.raises(EngineError) as exc:
        run.run()
    assert exc.value.status == 'non_finite'
    assert 'non-finite forces' in exc.value.message and 'timestep' in exc.value.message
    assert not broken.saw_nonfinite_positions
    summary = json.loads((workdir / md_io.SUMMARY).read_text())
    assert summary['stopped_by'] == 'non_finite' and summary['last_step'] < 10
    frames = read(md_io.TRAJECTORY, ':')
    assert frames and all(np.all(np.isfinite(f.positions)) for f in frames)
    assert not (workdir / md_io.STOP_FRAME).exists()  # a NaN frame is not written


@pytest.mark.timeout(120)
def test_nonfinite_positions_never_reach_the_model(workdir):
    """The guard refuses NaN positions before the model (whose neighbour list does not return on them)."""
    run = md.MdRun(config(steps=5, stop=NO_STOP_RULES))
    spy = NanAfter(run.atoms.calc.inner, good_calls=10**6)
    run.atoms.calc.inner = spy
    probe = run.atoms.copy()
    probe.calc = run.atoms.calc
    positions = probe.get_positions()
    positions[3, 1] = np.nan
    probe.set_positions(positions, apply_constraint=False)
    with pytest.raises(md.NonFiniteError, match='positions'):
        probe.get_forces()
    assert spy.calls == 0


@pytest.mark.timeout(120)
def test_nonfinite_momenta_stop_the_cli_with_its_exit_code(workdir):
    """NaN velocities (what a negative temperature used to produce) end as ``non_finite`` with its own process code,
    even with every stop rule off (the temperature rule used to be the only thing that noticed)."""
    from ase.io import write as ase_write

    atoms = read('structure.extxyz')
    momenta = np.zeros((len(atoms), 3))
    momenta[0, 0] = np.nan
    atoms.set_momenta(momenta)
    ase_write('structure.extxyz', atoms)
    (workdir / 'input.json').write_text(json.dumps(config(steps=5, init_velocities=False, stop=NO_STOP_RULES)))
    # Stationary() on a NaN momentum spreads it to every atom: the engine must still stop, not spin
    assert main(['md', 'input.json']) == EXIT_CODES['non_finite']
    status = json.loads((workdir / 'engine_status.json').read_text())
    assert status['status'] == 'non_finite'


@pytest.mark.parametrize(
    ('settings', 'expected'),
    [
        ({'temperature_K': -300}, 'temperature_K: -300 is out of range'),
        ({'temprature_K': 900}, "did you mean 'temperature_K'"),
        ({'timestep_fs': 0}, 'timestep_fs: 0 is out of range'),
        ({'steps': 'ten'}, "steps: 'ten' (str) is not an integer"),
        ({'friction_per_fs': -1}, 'friction_per_fs: -1 is out of range'),
        ({'ensemble': 'npt', 'barostat': 'anisotropic'}, 'Allowed: one of'),
        ({'uncertainty': {'strid': 5}}, "did you mean 'stride'"),
        ({'stop': {'max_temperature': 'hot'}}, "only 'auto' or a temperature"),
    ],
)
def test_engine_refuses_nonsense_before_loading_a_model(workdir, settings, expected):
    """The engine validates its input.json with the same schema as the CalcJob, before anything runs."""
    with pytest.raises(EngineError) as exc:
        md.run(config(**settings))
    assert exc.value.status == 'invalid_input'
    assert expected in exc.value.message
    assert not (workdir / md_io.THERMO).exists()


def test_restart_without_its_checkpoint_is_refused(workdir):
    """A restart that names its checkpoint (what nmcml.md writes for parent_folder/checkpoint inputs) and does not find
    it stops with ``restart_files_missing``; it used to start again at step 0 with exit 0."""
    (workdir / 'input.json').write_text(json.dumps(config(steps=5, restart_from=md_io.CHECKPOINT)))
    assert main(['md', 'input.json']) == EXIT_CODES['restart_files_missing']
    status = json.loads((workdir / 'engine_status.json').read_text())
    assert status['status'] == 'restart_files_missing'
    assert 'checkpoint.npz' in status['message'] and 'fresh run' in status['message']
    assert not (workdir / md_io.TRAJECTORY).exists()

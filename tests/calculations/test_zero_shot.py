"""nmcml.evaluate with a universal potential by name (zero-shot baseline): the real engine, CHGNet from its wheel."""

from __future__ import annotations

import numpy as np
import pytest
from aiida import orm
from aiida.engine import run_get_node

from aiida_nmcml.calculations.evaluate import EvaluateCalculation
from aiida_nmcml.data.trainingset import TrainingSet
from aiida_nmcml.engine.teacher import label_atoms, load_teacher, sample_configurations


@pytest.fixture(scope='module')
def frames():
    """Two NMC811 cells of one composition rattled differently, and LiNiO2/NiO end members."""
    return sample_configurations(
        {
            'x_li': [1.0],
            'cell_atoms': [12],
            'frames_per_x': 2,
            'antisite_frames': 0,
            'end_member_frames': 1,
            'md_seeds': 0,
        }
    )[:4]


def builder_for(code, trainingset, **extra):
    builder = EvaluateCalculation.get_builder()
    builder.code = code
    builder.frames = trainingset
    builder.universal_potential = orm.Str('chgnet')
    builder.device = orm.Str('cpu')
    builder.metadata.options.max_wallclock_seconds = 600
    for key, value in extra.items():
        setattr(builder, key, value)
    return builder


def test_zero_shot_reports_per_frame_errors(nmcml_codes, frames, toy_frames):
    """Against other labels (here the toy pair potential's, standing in for DFT) every frame gets its own errors;
    against CHGNet's own labels the errors vanish, which shows the engine really evaluated CHGNet."""
    from aiida_nmcml.testing.toymodel import toy_calculator

    other = []
    for atoms in frames:  # re-label with a different "reference" (pair potential)
        atoms = atoms.copy()
        atoms.calc = toy_calculator()
        atoms.info['REF_energy'] = atoms.get_potential_energy()
        atoms.arrays['REF_forces'] = atoms.get_forces()
        atoms.info['REF_stress'] = atoms.get_stress()
        atoms.calc = None
        other.append(atoms)
    _, node = run_get_node(builder_for(nmcml_codes['engine'], TrainingSet.from_frames(other).store()))
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    metrics = node.outputs.metrics.get_dict()
    per_frame = metrics['per_frame']['force_rmse_eV_per_A']
    assert len(per_frame) == len(frames) and all(v > 0.05 for v in per_frame)
    assert len(metrics['per_frame']['stress_max_abs_error_GPa']) == len(frames)
    assert metrics['energy_per_atom'] is None  # absolute energies are not compared (MP corrections)
    assert metrics['energy_differences']['n'] == 2  # the two NMC cells share a composition
    assert metrics['universal_potential']['name'] == 'chgnet'

    calc, identity = load_teacher('chgnet', 'cpu')
    own = TrainingSet.from_frames([label_atoms(a, calc, identity) for a in frames]).store()
    _, node = run_get_node(builder_for(nmcml_codes['engine'], own))
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    metrics = node.outputs.metrics.get_dict()
    assert max(metrics['per_frame']['force_rmse_eV_per_A']) < 1e-4
    assert max(metrics['per_frame']['stress_max_abs_error_GPa']) < 1e-3
    assert metrics['energy_differences']['rmse'] < 1e-6
    predictions = node.outputs.predictions
    assert predictions.get_array('forces').shape == (sum(len(a) for a in frames), 3)
    assert np.all(np.isfinite(predictions.get_array('stress')))


def test_models_and_universal_potential_are_exclusive(nmcml_codes, frames, tiny_foundation_model):
    from aiida_nmcml.data.model import MaceModel

    trainingset = TrainingSet.from_frames(frames).store()
    builder = builder_for(
        nmcml_codes['engine'], trainingset, models={'m0': MaceModel.get_or_create(tiny_foundation_model)}
    )
    with pytest.raises(ValueError, match='not both'):
        run_get_node(builder)
    builder = builder_for(nmcml_codes['engine'], trainingset, universal_potential=orm.Str('mace-mp-0'))
    with pytest.raises(ValueError, match='unknown universal_potential'):
        run_get_node(builder)

"""EvaluateCalculation end to end on localhost: the engine runs for real on a committee of two tiny models."""

from __future__ import annotations

import math

import numpy as np
import pytest
from aiida import orm
from aiida.engine import run_get_node

from aiida_nmcml.calculations.evaluate import EvaluateCalculation
from aiida_nmcml.data.model import MaceModel
from aiida_nmcml.data.trainingset import TrainingSet


def builder_for(code, models, frames):
    builder = EvaluateCalculation.get_builder()
    builder.code = code
    builder.models = models
    builder.frames = frames
    builder.device = orm.Str('cpu')
    builder.metadata.options.max_wallclock_seconds = 600
    return builder


def test_committee_evaluation(nmcml_codes, scratch_training, tiny_foundation_model, train_sets):
    models = {'a': MaceModel.get_or_create(tiny_foundation_model), 'b': scratch_training.outputs.model}
    frames = train_sets['valid']
    _, node = run_get_node(builder_for(nmcml_codes['engine'], models, frames))
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    predictions = node.outputs.predictions
    n = frames.num_frames
    assert predictions.get_array('energy_committee').shape == (2, n)
    assert predictions.get_array('max_force_deviation').shape == (n,)
    assert np.all(predictions.get_array('max_force_deviation') > 0)
    natoms = predictions.get_array('natoms')
    assert predictions.get_array('forces').shape == (natoms.sum(), 3)
    metrics = node.outputs.metrics.get_dict()
    assert metrics['n_models'] == 2 and metrics['n_labelled'] == n
    for key in ('energy_per_atom', 'forces', 'stress'):
        assert math.isfinite(metrics[key]['rmse']) and 0 < metrics[key]['mae'] <= metrics[key]['rmse']
    calibration = node.outputs.calibration.get_dict()
    deviation, error = predictions.get_array('atomic_force_deviation'), predictions.get_array('atomic_force_error')
    assert calibration['alpha2_raw'] == pytest.approx(float(np.mean(error**2 / (2 * deviation**2))), rel=1e-6)
    assert calibration['n_atoms'] == natoms.sum()
    assert sum(node.outputs.reliability.get_array('count')) == natoms.sum()
    assert metrics['summary']['stress_rmse_GPa'] == pytest.approx(metrics['stress']['rmse'] * 160.21766208)
    # input.json names the model files with the hashes of their nodes
    config = node.base.repository.get_object_content('input.json')
    assert models['a'].sha256 in config and models['b'].sha256 in config


def test_model_lacking_elements_is_refused(nmcml_codes, tiny_foundation_model, toy_frames):
    frames = [a.copy() for a in toy_frames[:2]]
    symbols = frames[0].get_chemical_symbols()
    symbols[1] = 'Fe'
    frames[0].set_chemical_symbols(symbols)
    for atoms in frames:  # Atoms.copy kept the labels; the Fe frame's labels are toy values anyway
        atoms.info.pop('REF_stress', None)
    builder = builder_for(
        nmcml_codes['engine'],
        {'a': MaceModel.get_or_create(tiny_foundation_model)},
        TrainingSet.from_frames(frames).store(),
    )
    with pytest.raises(ValueError, match=r"model a has no \['Fe'\]"):
        run_get_node(builder)


def test_calibration_parameters_have_a_schema(nmcml_codes, tiny_foundation_model, toy_frames):
    """Unknown keys name the closest valid one; out-of-range values are refused before submission."""
    builder = builder_for(
        nmcml_codes['engine'],
        {'a': MaceModel.get_or_create(tiny_foundation_model)},
        TrainingSet.from_frames(toy_frames[:2]).store(),
    )
    builder.parameters = orm.Dict({'tolerence': 0.1})
    with pytest.raises(ValueError, match="did you mean 'tolerance'"):
        run_get_node(builder)
    builder.parameters = orm.Dict({'min_spread': 0.0})
    with pytest.raises(ValueError, match='min_spread'):
        run_get_node(builder)

"""Helpers of the training tests (imported by test modules; conftest.py only holds fixtures)."""

from __future__ import annotations

# ~1-3 epochs of the tiny architecture (aiida_nmcml/testing/toymodel.py): a real training run in ~10 s.
TINY_PARAMETERS = {
    'model': 'MACE',
    'num_channels': 8,
    'max_L': 0,
    'correlation': 2,
    'num_interactions': 2,
    'r_max': 4.0,
    'num_radial_basis': 4,
    'num_cutoff_basis': 3,
    'max_num_epochs': 2,
    'batch_size': 4,
    'valid_batch_size': 8,
}


def toy_set(n: int, seed: int):
    from aiida_nmcml.data.trainingset import TrainingSet
    from aiida_nmcml.testing.toymodel import toy_frames

    return TrainingSet.from_frames(toy_frames(n, seed=seed)).store()


def train_builder(code, training_set, seed=1, parameters=None, **inputs):
    from aiida import orm

    from aiida_nmcml.calculations.train import MaceTrainCalculation

    builder = MaceTrainCalculation.get_builder()
    builder.code = code
    builder.training_set = training_set
    builder.seed = orm.Int(seed)
    builder.parameters = orm.Dict(parameters if parameters is not None else TINY_PARAMETERS)
    builder.metadata.options.max_wallclock_seconds = 600
    for key, value in inputs.items():
        setattr(builder, key, value)
    return builder

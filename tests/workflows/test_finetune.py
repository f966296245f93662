"""FinetuneWorkChain: protocol builders, GPU options, and a real committee of 2 on the daemon with its evaluation."""

from __future__ import annotations

import datetime
import math

import numpy as np
import pytest
from aiida import orm

from aiida_nmcml.data.model import MaceModel
from aiida_nmcml.data.trainingset import TrainingSet
from aiida_nmcml.testing.toymodel import toy_frames
from aiida_nmcml.workflows.finetune import FinetuneWorkChain


@pytest.fixture(scope='module')
def sets(aiida_profile):
    return {
        'train': TrainingSet.from_frames(toy_frames(20, seed=31)).store(),
        'valid': TrainingSet.from_frames(toy_frames(6, seed=32)).store(),
    }


@pytest.mark.parametrize('protocol', ['demo', 'fast', 'moderate', 'precise'])
def test_protocol_builders(protocol, nmcml_codes, sets, tiny_foundation_model):
    builder = FinetuneWorkChain.get_builder_from_protocol(
        nmcml_codes['mace_train'],
        sets['train'],
        foundation_model=str(tiny_foundation_model),
        protocol=protocol,
    )
    assert isinstance(builder.foundation_model, MaceModel) and builder.foundation_model.is_stored
    expected = FinetuneWorkChain.get_protocol_inputs(protocol)
    assert builder.committee_size.value == expected['committee_size']
    assert builder.train.parameters['max_num_epochs'] == expected['train']['parameters']['max_num_epochs']
    assert builder.train.device.value == 'cpu'
    assert 'custom_scheduler_commands' not in builder.train.metadata.options


def test_overrides_and_gpu_options(nmcml_codes, sets):
    builder = FinetuneWorkChain.get_builder_from_protocol(
        nmcml_codes['mace_train'],
        sets['train'],
        evaluate_code=nmcml_codes['engine'],
        device='cuda',
        protocol='fast',
        overrides={'committee_size': 3, 'train': {'parameters': {'lr': 0.001}}},
    )
    assert builder.committee_size.value == 3
    assert builder.train.parameters['lr'] == 0.001
    assert builder.train.parameters['max_num_epochs'] == 20  # the rest of the level is kept
    assert builder.train.device.value == 'cuda'
    assert builder.train.metadata.options['custom_scheduler_commands'] == '#SBATCH --gres=gpu:1'
    assert builder.evaluate.metadata.options['custom_scheduler_commands'] == '#SBATCH --gres=gpu:1'
    with pytest.raises(ValueError, match='unknown protocol'):
        FinetuneWorkChain.get_builder_from_protocol(nmcml_codes['mace_train'], sets['train'], protocol='ultra')


def _stamp(line: str) -> datetime.datetime:
    return datetime.datetime.strptime(line[:23], '%Y-%m-%d %H:%M:%S.%f')


def _run_window(calc) -> tuple:
    """First and last time stamps mace_run_train itself logged."""
    lines = [ln for ln in calc.outputs.retrieved.get_object_content('mace_train.out').splitlines() if ln[:2] == '20']
    return _stamp(lines[0]), _stamp(lines[-1])


@pytest.mark.daemon
def test_committee_of_two_on_the_daemon(nmcml_codes, sets, tiny_foundation_model, submit_and_await):
    """Naive fine-tuning of two seeds concurrently, then the committee evaluated on the validation set."""
    from mace.calculators import MACECalculator

    builder = FinetuneWorkChain.get_builder_from_protocol(
        nmcml_codes['mace_train'],
        sets['train'],
        validation_set=sets['valid'],
        foundation_model=MaceModel.get_or_create(tiny_foundation_model),
        evaluate_code=nmcml_codes['engine'],
        protocol='demo',
        overrides={'train': {'parameters': {'max_num_epochs': 1}}},
    )
    node = submit_and_await(builder, timeout=600)
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    models = node.outputs.models
    assert sorted(models) == ['member_0', 'member_1']
    assert models['member_0'].sha256 != models['member_1'].sha256

    calcs = sorted(
        (c for c in node.called if c.process_type.endswith('nmcml.mace.train')), key=lambda c: c.inputs.seed.value
    )
    assert [c.inputs.seed.value for c in calcs] == [1, 2]
    # members differ only by seed: same data nodes and parameters
    assert calcs[0].inputs.training_set.uuid == calcs[1].inputs.training_set.uuid
    assert calcs[0].inputs.parameters.get_dict() == calcs[1].inputs.parameters.get_dict()
    windows = [_run_window(c) for c in calcs]
    assert max(w[0] for w in windows) < min(w[1] for w in windows), windows  # they overlapped in time

    metrics = node.outputs.metrics.get_dict()
    assert metrics['committee_size'] == 2
    for member in metrics['members'].values():
        assert math.isfinite(member['valid']['rmse_f'])
    committee = metrics['committee_validation']
    calibration = node.outputs.calibration.get_dict()
    assert calibration['slope'] > 0 and calibration['n'] == sets['valid'].num_frames

    # the evaluation agrees with a direct MACECalculator evaluation of the two output models
    paths = []
    for key in ('member_0', 'member_1'):
        paths.append(str(models[key].copy_to(pytest.importorskip('tempfile').mkdtemp())))
    calc = MACECalculator(model_paths=paths, device='cpu', default_dtype='float64')
    mean_forces, ref_forces = [], []
    for atoms in sets['valid'].get_frames():
        ref_forces.append(atoms.arrays['REF_forces'])
        atoms.calc = calc
        mean_forces.append(atoms.get_forces())
    rmse = float(np.sqrt(np.mean((np.concatenate(mean_forces) - np.concatenate(ref_forces)) ** 2)))
    assert committee['forces']['rmse'] == pytest.approx(rmse, rel=1e-5)
    assert committee['n_models'] == 2


def test_committee_size_validated(nmcml_codes, sets):
    from aiida.engine import run_get_node

    builder = FinetuneWorkChain.get_builder_from_protocol(
        nmcml_codes['mace_train'], sets['train'], protocol='demo', overrides={'committee_size': 0}
    )
    with pytest.raises(ValueError, match='committee_size'):
        run_get_node(builder)
    assert orm.QueryBuilder().append(FinetuneWorkChain).count() >= 0

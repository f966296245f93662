"""MaceTrainBaseWorkChain (``nmcml.mace.train.base``): one test per handler on a mock failed child.

The fault is injected as a finished ``nmcml.mace.train`` node with the failing exit status (the NaN case also with
the recorded outputs of a real NaN run, parsed by the real parser); the tests assert the inputs of the next run.
The restart input itself (``parent_folder`` -> mace's ``restart_latest`` with the parent's checkpoints) is checked
on the calcjob's dry run.
"""

from __future__ import annotations

import pytest
import yaml
from aiida import orm
from aiida.engine import ProcessHandlerReport

from aiida_nmcml.calculations.train import MaceTrainCalculation
from aiida_nmcml.workflows.train_base import MaceTrainBaseWorkChain

EXIT = MaceTrainCalculation.exit_codes


@pytest.fixture
def training_set(toy_frames):
    from aiida_nmcml.data.trainingset import TrainingSet

    return TrainingSet.from_frames(toy_frames[:8]).store()


@pytest.fixture
def train_inputs(fake_engine_code, training_set):
    def make(parameters=None):
        return {
            'train': {
                'code': fake_engine_code,
                'training_set': training_set,
                'parameters': orm.Dict(parameters if parameters is not None else {'default_dtype': 'float32'}),
                'metadata': {'options': {'max_wallclock_seconds': 600}},
            }
        }

    return make


@pytest.fixture
def process_with_child(generate_workchain, generate_calc_job_node, attach_failed_child, train_inputs):
    def make(exit_status=None, parameters=None, **node_kwargs):
        process = generate_workchain('nmcml.mace.train.base', train_inputs(parameters))
        process.setup()
        child = generate_calc_job_node('nmcml.mace.train', exit_status=exit_status, **node_kwargs)
        attach_failed_child(process, child)
        return process, child

    return make


def test_nan_loss_float64_then_lower_lr_then_gives_up(process_with_child, training_set):
    """Recorded NaN run (lr 1e12, parsed for real): float64 and lr/10, then lr/10 again, then 420."""
    process, child = process_with_child(
        parameters={'default_dtype': 'float32', 'lr': 0.02},
        case='nan_loss',
        inputs={'seed': orm.Int(4), 'training_set': training_set},
        parse=True,
    )
    assert child.exit_status == EXIT.ERROR_NAN_LOSS.status
    process.ctx.inputs.parent_folder = child.outputs.remote_folder  # as after a walltime restart
    assert process.inspect_process().status == 0
    parameters = process.ctx.inputs.parameters
    assert parameters['default_dtype'] == 'float64'
    assert parameters['lr'] == pytest.approx(0.002)
    assert 'parent_folder' not in process.ctx.inputs  # NaN weights in the checkpoints: from scratch

    assert process.handle_nan_loss(child).exit_code.status == 0
    assert parameters['lr'] == pytest.approx(0.0002)
    report = process.handle_nan_loss(child)
    assert report.exit_code.status == EXIT.ERROR_NAN_LOSS.status == 420


def test_nan_loss_without_lr_starts_from_mace_default(process_with_child):
    process, child = process_with_child(exit_status=EXIT.ERROR_NAN_LOSS.status, parameters={})
    assert isinstance(process.handle_nan_loss(child), ProcessHandlerReport)
    assert process.ctx.inputs.parameters['lr'] == pytest.approx(0.001)


def test_out_of_memory_halves_batch_sizes(process_with_child):
    process, child = process_with_child(exit_status=EXIT.ERROR_OUT_OF_MEMORY.status, parameters={'batch_size': 4})
    assert process.inspect_process().status == 0
    parameters = process.ctx.inputs.parameters
    assert (parameters['batch_size'], parameters['valid_batch_size']) == (2, 4)  # valid from the plugin default 8
    process.handle_out_of_memory(child)
    process.handle_out_of_memory(child)
    assert (parameters['batch_size'], parameters['valid_batch_size']) == (1, 1)
    assert process.handle_out_of_memory(child).exit_code.status == EXIT.ERROR_OUT_OF_MEMORY.status == 410


def test_walltime_continues_from_the_parent_checkpoints(process_with_child):
    process, child = process_with_child(exit_status=120)
    assert process.inspect_process().status == 0
    assert process.ctx.inputs.parent_folder.uuid == child.outputs.remote_folder.uuid
    assert process.ctx.inputs.parameters == {'default_dtype': 'float32'}  # same epoch budget and hyperparameters


def test_device_unavailable_stops_with_210(process_with_child):
    process, _ = process_with_child(
        exit_status=EXIT.ERROR_DEVICE_UNAVAILABLE.status, exit_message='device=cuda but the job saw no GPU'
    )
    result = process.inspect_process()
    assert result.status == 210
    assert 'no GPU' in result.message


def test_unrecoverable_child_code_is_passed_on(process_with_child):
    process, _ = process_with_child(exit_status=EXIT.ERROR_FOUNDATION_MISSING_ELEMENTS.status)
    assert process.inspect_process().status == 203


def test_restart_input_reaches_mace(fake_engine_code, training_set, generate_calc_job_node):
    """A ``parent_folder`` makes the calcjob copy the parent's checkpoints/ and set restart_latest (dry run)."""
    import pathlib

    from aiida.engine import run_get_node

    parent = generate_calc_job_node('nmcml.mace.train', exit_status=120, remote_path='/tmp/killed-training')
    builder = MaceTrainCalculation.get_builder()
    builder.code = fake_engine_code
    builder.training_set = training_set
    builder.parent_folder = parent.outputs.remote_folder
    builder.metadata.dry_run = True
    builder.metadata.store_provenance = False
    _, node = run_get_node(builder)
    folder = pathlib.Path(node.dry_run_info['folder'])
    assert yaml.safe_load((folder / 'config.yaml').read_text())['restart_latest'] is True
    with pytest.raises(ValueError, match='restart_latest'):
        builder = MaceTrainCalculation.get_builder()
        builder.code = fake_engine_code
        builder.training_set = training_set
        builder.parameters = orm.Dict({'restart_latest': True})  # reserved: set from the parent_folder input
        builder.metadata.dry_run = True
        run_get_node(builder)


def test_protocol_builder(fake_engine_code, training_set):
    for level in MaceTrainBaseWorkChain.get_available_protocols():
        builder = MaceTrainBaseWorkChain.get_builder_from_protocol(
            fake_engine_code, training_set, protocol=level, overrides={'parameters': {'lr': 1e-3}}, seed=orm.Int(3)
        )
        assert builder.train.parameters['lr'] == 1e-3
        assert builder.train.seed.value == 3
    gpu = MaceTrainBaseWorkChain.get_protocol_inputs('fast', {'device': 'cuda'})
    assert 'gres' in gpu['metadata']['options']['custom_scheduler_commands']


@pytest.mark.slow
def test_real_out_of_memory_then_real_training(aiida_localhost, training_set, tmp_path):
    """Fault injected by a fake executable: it prints torch's CUDA out-of-memory error while the config asks for a
    batch larger than 2 and runs the real ``mace_run_train`` otherwise. The handler halves the batches once; the
    second run trains for real and its model is the work chain's output."""
    import pathlib
    import sys

    from aiida.engine import run_get_node

    trainer = pathlib.Path(sys.executable).parent / 'mace_run_train'
    script = tmp_path / 'mace_run_train_oom'
    script.write_text(
        '#!/bin/bash\n'
        "if grep -qE '^batch_size: ([3-9]|[1-9][0-9]+)$' config.yaml; then\n"
        "  echo 'torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB' >&2; exit 1\n"
        'fi\n'
        f'exec {trainer} "$@"\n'
    )
    script.chmod(0o755)
    code = orm.InstalledCode(computer=aiida_localhost, filepath_executable=str(script), label='mace-oom').store()
    builder = MaceTrainBaseWorkChain.get_builder_from_protocol(
        code, training_set, protocol='demo', overrides={'parameters': {'batch_size': 4, 'valid_batch_size': 4}}
    )
    _, node = run_get_node(builder)
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    first, second = sorted(node.called, key=lambda n: n.ctime)
    assert first.exit_status == EXIT.ERROR_OUT_OF_MEMORY.status
    assert first.inputs.parameters['batch_size'] == 4
    assert (second.inputs.parameters['batch_size'], second.inputs.parameters['valid_batch_size']) == (2, 2)
    assert second.is_finished_ok
    assert node.outputs.model.uuid == second.outputs.model.uuid

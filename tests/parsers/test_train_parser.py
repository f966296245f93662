"""MaceTrainParser on outputs recorded from real mace_run_train runs (parsers/fixtures/nmcml.mace.train/README.md).

Only the out-of-memory stderr is hand-made (no GPU here): it is torch's CUDA OOM message, the one line the parser
looks for.
"""

from __future__ import annotations

import math

import pytest
from aiida import orm
from factories import fixture_folder, make_calc_job_node

from aiida_nmcml.calculations.train import MaceTrainCalculation
from aiida_nmcml.data.model import MaceModel
from aiida_nmcml.data.trainingset import TrainingSet
from aiida_nmcml.parsers.train import MaceTrainParser, parse_error_table
from aiida_nmcml.testing.toymodel import toy_frames

FIXTURES = fixture_folder('nmcml.mace.train', 'multihead_ok').parent
EXIT = MaceTrainCalculation.exit_codes


def make_node(files: dict[str, bytes], seed: int, computer, foundation: MaceModel | None = None, frames=None):
    """A train job with the inputs the parser may consult and ``files`` as ``retrieved`` (tests/factories.py)."""
    inputs = {'seed': orm.Int(seed), 'training_set': TrainingSet.from_frames(frames or toy_frames(4))}
    if foundation is not None:
        inputs['foundation_model'] = foundation
    return make_calc_job_node('nmcml.mace.train', computer, files=files, inputs=inputs)


def recorded(case: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in fixture_folder('nmcml.mace.train', case).iterdir()}


def parse(node):
    results, calcfunction = MaceTrainParser.parse_from_node(node, store_provenance=False)
    return results, calcfunction


def test_error_table_units_and_rows():
    table = parse_error_table((FIXTURES / 'multihead_ok' / 'mace_train.out').read_text())
    assert table['train']['rmse_e_per_atom'] == pytest.approx(0.4735)
    assert table['valid']['rmse_f'] == pytest.approx(0.1329)
    assert table['valid']['rmse_stress'] == pytest.approx(0.2332)
    assert table['train']['head'] == 'Default'


def test_successful_multihead_run(aiida_localhost, tiny_foundation_model):
    files = recorded('multihead_ok')
    files['nmcml.model'] = tiny_foundation_model.read_bytes()
    node = make_node(files, seed=3, computer=aiida_localhost)
    results, calcfunction = parse(node)
    assert calcfunction.is_finished_ok, calcfunction.exit_message
    metrics = results['metrics'].get_dict()
    assert metrics['head'] == 'Default'  # the fitted head, not pt_head
    assert metrics['epochs'] == 2
    assert metrics['valid']['mae_stress'] == pytest.approx(0.13603719438494774)
    assert metrics['valid']['rmse_f'] == pytest.approx(0.13294573877263352)  # from the results file (exact)
    assert metrics['train']['rmse_stress'] == pytest.approx(0.2343)
    assert metrics['train']['rmse_stress_GPa'] == pytest.approx(0.2343 * 160.21766208)  # next to eV/Å^3
    curve = results['learning_curve']
    assert list(curve.get_array('epoch')) == [0, 1]
    assert all(math.isfinite(v) for v in curve.get_array('rmse_stress'))
    assert results['model'].source == 'training'
    assert results['model'].sha256 == MaceModel.from_file(tiny_foundation_model).sha256


def test_model_node_from_the_jobs_metadata_json_without_unpickling(aiida_localhost, tiny_foundation_model, monkeypatch):
    """With the model_metadata.json the job writes (engine/model_metadata.py, the same code the job runs), the parser
    stores the model without unpickling it; a JSON describing other bytes is refused with 320."""
    import json

    from aiida_nmcml.data import model as model_module
    from aiida_nmcml.engine.model_metadata import write_metadata

    summary = write_metadata(str(tiny_foundation_model), str(tiny_foundation_model.parent / 'model_metadata.json'))
    expected = MaceModel.from_file(tiny_foundation_model)

    def no_unpickling(data):
        raise AssertionError('the parser unpickled the model')

    monkeypatch.setattr(model_module, 'read_model_metadata', no_unpickling)
    files = recorded('multihead_ok')
    files['nmcml.model'] = tiny_foundation_model.read_bytes()
    files['model_metadata.json'] = json.dumps(summary).encode()
    results, calcfunction = parse(make_node(files, seed=3, computer=aiida_localhost))
    assert calcfunction.is_finished_ok, calcfunction.exit_message
    model = results['model']
    assert model.sha256 == expected.sha256
    for key in ('elements', 'r_max', 'dtype', 'heads', 'e0s', 'architecture'):
        assert model.base.attributes.get(key) == expected.base.attributes.get(key), key

    files['model_metadata.json'] = json.dumps({**summary, 'sha256': '0' * 64}).encode()
    results, calcfunction = parse(make_node(files, seed=3, computer=aiida_localhost))
    assert calcfunction.exit_status == EXIT.ERROR_MODEL_HASH_MISMATCH.status
    assert 'model' not in results


@pytest.mark.parametrize(
    ('case', 'expected'),
    [
        ('nan_loss', (4, EXIT.ERROR_NAN_LOSS, 'epoch 0')),
        ('empty_dataset', (5, EXIT.ERROR_EMPTY_DATASET, 'Empty file')),
        ('missing_elements', (3, EXIT.ERROR_FOUNDATION_MISSING_ELEMENTS, "['Fe']")),
    ],
)
def test_recorded_failures(case, expected, aiida_localhost, tiny_foundation_model):
    seed, exit_code, extra = expected
    foundation = frames = None
    if case == 'missing_elements':
        foundation = MaceModel.get_or_create(tiny_foundation_model)
        frames = toy_frames(3)
        symbols = frames[0].get_chemical_symbols()
        symbols[1] = 'Fe'
        frames[0].set_chemical_symbols(symbols)
    files = recorded(case)
    if case == 'nan_loss':
        files['nmcml.model'] = tiny_foundation_model.read_bytes()  # mace-torch writes one anyway
    node = make_node(files, seed=seed, computer=aiida_localhost, foundation=foundation, frames=frames)
    results, calcfunction = parse(node)
    assert calcfunction.exit_status == exit_code.status
    assert extra in calcfunction.exit_message
    assert 'model' not in results


def test_out_of_memory(aiida_localhost):
    stderr = b'torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total)\n'
    node = make_node({'mace_train.err': stderr, 'mace_train.out': b''}, seed=1, computer=aiida_localhost)
    _, calcfunction = parse(node)
    assert calcfunction.exit_status == EXIT.ERROR_OUT_OF_MEMORY.status
    assert 'batch_size' in calcfunction.exit_message


def test_hash_check_failure_on_the_compute_node(aiida_localhost):
    node = make_node(
        {'hash_check.err': b'foundation.model does not match sha256 abc\n', 'mace_train.out': b''},
        seed=1,
        computer=aiida_localhost,
    )
    _, calcfunction = parse(node)
    assert calcfunction.exit_status == EXIT.ERROR_MODEL_HASH_MISMATCH.status


def test_unknown_crash_reports_the_tail(aiida_localhost):
    node = make_node(
        {'mace_train.err': b'Traceback ...\nRuntimeError: something new\n', 'mace_train.out': b''},
        seed=1,
        computer=aiida_localhost,
    )
    _, calcfunction = parse(node)
    assert calcfunction.exit_status == EXIT.ERROR_TRAINING_FAILED.status
    assert 'something new' in calcfunction.exit_message


def test_scheduler_walltime_wins_over_a_generic_failure(aiida_localhost):
    """Killed by the scheduler (120 set on the node before parsing, as aiida-core does): no model, no stderr reason."""
    node = make_node({'mace_train.err': b'', 'mace_train.out': b'epoch 3 ...\n'}, seed=1, computer=aiida_localhost)
    node.set_exit_status(120)
    node.set_exit_message('out of walltime')
    _, calcfunction = parse(node)
    assert calcfunction.exit_status == 120


@pytest.mark.parametrize('loaded', [True, False])
def test_a_continued_training_says_which_checkpoint_it_loaded(loaded, aiida_localhost, tiny_foundation_model):
    """A job with ``parent_folder`` (a walltime continuation): the metrics record the checkpoint mace loaded, or
    None when the parent's ``checkpoints/`` was gone (AiiDA skips the copy with a warning; mace starts at epoch 0)."""
    files = recorded('multihead_ok')
    files['nmcml.model'] = tiny_foundation_model.read_bytes()
    if loaded:  # the line mace's CheckpointHandler logs when restart_latest finds one, before training starts
        line = b'2026-11-25 22:34:26.500 INFO: Loading checkpoint: checkpoints/nmcml_run-3_epoch-1.pt\n'
        files['mace_train.out'] = line + files['mace_train.out']
    # (the recorded run has its own 'Loading checkpoint' line after training: the best model, which does not count)
    inputs = {'seed': orm.Int(3), 'training_set': TrainingSet.from_frames(toy_frames(4))}
    inputs['parent_folder'] = orm.RemoteData(computer=aiida_localhost, remote_path='/tmp/purged')
    node = make_calc_job_node('nmcml.mace.train', aiida_localhost, files=files, inputs=inputs)
    results, calcfunction = parse(node)
    assert calcfunction.is_finished_ok, calcfunction.exit_message
    restart = results['metrics'].get_dict()['restart']
    assert restart['checkpoint'] == ('checkpoints/nmcml_run-3_epoch-1.pt' if loaded else None)
    assert restart['start_epoch'] == 0  # the recorded curve of this fixture starts at epoch 0

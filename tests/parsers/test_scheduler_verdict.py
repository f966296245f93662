"""A job killed by SLURM's walltime is 120 whatever the job printed to stderr before SLURM's line.

The stderr is recorded from the test cluster (fixtures/scheduler/README.md): the engine's e3nn warning comes first,
SLURM's ``CANCELLED AT ... DUE TO TIME LIMIT`` line last. aiida-core's ``core.slurm`` reads only the first line, so
the parsers read the retrieved file themselves (aiida_nmcml/parsers/scheduler.py).
"""

from __future__ import annotations

import pathlib

import pytest

from aiida_nmcml.calculations.md import MdCalculation
from aiida_nmcml.calculations.train import MaceTrainCalculation
from aiida_nmcml.parsers.md import MdParser
from aiida_nmcml.parsers.train import MaceTrainParser

RECORDED = pathlib.Path(__file__).parent / 'fixtures' / 'scheduler' / 'slurm_walltime_after_warnings.txt'
STDERR = '_scheduler-stderr.txt'
WALLTIME = MdCalculation.exit_codes.ERROR_SCHEDULER_OUT_OF_WALLTIME.status  # 120, aiida-core's
MEMORY = MdCalculation.exit_codes.ERROR_SCHEDULER_OUT_OF_MEMORY.status  # 110


def test_recorded_stderr_has_the_kill_after_a_warning_and_core_slurm_misses_it():
    """Why the parsers look themselves: aiida-core's parse_output finds the line only when it comes first.
    (If this starts failing, aiida-core reads every line now and parsers/scheduler.py is a harmless double check.)"""
    from aiida.schedulers.plugins.slurm import SlurmScheduler

    text = RECORDED.read_text()
    lines = text.splitlines()
    assert 'UserWarning' in lines[0] and 'DUE TO TIME LIMIT' in lines[-1]
    scheduler = SlurmScheduler()
    assert scheduler.parse_output(None, '', text) is None
    assert scheduler.parse_output(None, '', lines[-1] + '\n').status == WALLTIME


def test_md_killed_by_slurm_is_walltime_not_missing_status(generate_calc_job_node):
    """The recorded killed MD (checkpoint, no status file) plus SLURM's stderr: 120, so nmcml.md.base's walltime
    handler continues it; the same files without SLURM's line stay 310 (killed by something else)."""
    node = generate_calc_job_node('nmcml.md', case='killed', files={STDERR: RECORDED.read_bytes()})
    _, calcfunction = MdParser.parse_from_node(node, store_provenance=False)
    assert calcfunction.exit_status == WALLTIME

    warning_only = RECORDED.read_text().splitlines()[0].encode()
    node = generate_calc_job_node('nmcml.md', case='killed', files={STDERR: warning_only})
    _, calcfunction = MdParser.parse_from_node(node, store_provenance=False)
    assert calcfunction.exit_status == MdCalculation.exit_codes.ERROR_MISSING_STATUS_FILE.status


def test_training_killed_by_slurm_is_walltime_not_a_crash(generate_calc_job_node):
    """No model, mace's own stderr with a warning, SLURM's line after the engine's warning: 120 (the training
    restart handler's code), not ERROR_TRAINING_FAILED."""
    from aiida import orm

    from aiida_nmcml.data.trainingset import TrainingSet
    from aiida_nmcml.testing.toymodel import toy_frames

    inputs = {'seed': orm.Int(1), 'training_set': TrainingSet.from_frames(toy_frames(4))}
    files = {
        STDERR: RECORDED.read_bytes(),
        'mace_train.err': b'UserWarning: TorchScript type system does not support instance and class attributes\n',
        'mace_train.out': b'INFO: Epoch 3: loss=0.0123\n',
    }
    node = generate_calc_job_node('nmcml.mace.train', files=files, inputs=inputs)
    _, calcfunction = MaceTrainParser.parse_from_node(node, store_provenance=False)
    assert calcfunction.exit_status == WALLTIME

    del files[STDERR]
    node = generate_calc_job_node('nmcml.mace.train', files=files, inputs=inputs)
    _, calcfunction = MaceTrainParser.parse_from_node(node, store_provenance=False)
    assert calcfunction.exit_status == MaceTrainCalculation.exit_codes.ERROR_TRAINING_FAILED.status


@pytest.mark.parametrize(
    ('line', 'expected'),
    [
        ('slurmstepd: error: *** STEP 41.0 ON n1 CANCELLED AT 2026-01-01T00:00:00 DUE TO TIME LIMIT ***', WALLTIME),
        ('slurmstepd: error: Detected 1 oom-kill event(s) in StepId=41.batch.', MEMORY),
        ('slurmstepd: error: Exceeded job memory limit', MEMORY),
        ('WARNING: the run may be stopped due to time limit settings', None),
    ],
)
def test_scheduler_lines_anywhere_in_stderr(generate_calc_job_node, line, expected):
    stderr = f'{RECORDED.read_text().splitlines()[0]}\nsome engine output\n{line}\n'.encode()
    node = generate_calc_job_node('nmcml.md', files={STDERR: stderr})
    _, calcfunction = MdParser.parse_from_node(node, store_provenance=False)
    assert calcfunction.exit_status == (expected or MdCalculation.exit_codes.ERROR_MISSING_STATUS_FILE.status)

"""nmcml.finetune's policy when committee members fail for good (each member is an nmcml.mace.train.base run).

Mock children (tests/factories.py): finished members with exit 0 or a failure status; nothing is trained here. The
real committee runs through the restart work chains in tests/workflows/test_finetune.py.
"""

from __future__ import annotations

import pytest
from aiida import orm

from aiida_nmcml.workflows.finetune import FinetuneWorkChain, collect_metrics


@pytest.fixture
def finetune_process(generate_workchain, fake_engine_code, toy_frames):
    from aiida_nmcml.data.trainingset import TrainingSet

    def make(committee_size=4, min_members=None):
        inputs = {
            'training_set': TrainingSet.from_frames(toy_frames[:10]),
            'committee_size': orm.Int(committee_size),
            'train': {'code': fake_engine_code, 'metadata': {'options': {'max_wallclock_seconds': 600}}},
        }
        if min_members is not None:
            inputs['min_members'] = orm.Int(min_members)
        return generate_workchain('nmcml.finetune', inputs)

    return make


@pytest.fixture
def with_members(generate_calc_job_node):
    """Put finished members with the given exit statuses into the process context, as ToContext would."""

    def attach(process, statuses):
        for index, status in enumerate(statuses):
            message = None if status == 0 else 'the loss is still NaN'
            node = generate_calc_job_node('nmcml.mace.train', exit_status=status, exit_message=message)
            process.ctx[f'member_{index}'] = node
        return process

    return attach


def test_one_failed_member_is_left_out_and_reported(finetune_process, with_members):
    process = with_members(finetune_process(), [0, 420, 0, 0])
    assert process.min_members() == 2  # default: half the committee, at least 2
    assert process.inspect_training() is None
    assert process.ctx.members == ['member_0', 'member_2', 'member_3']
    assert process.ctx.failed_members['member_1']['exit_status'] == 420
    assert 'NaN' in process.ctx.failed_members['member_1']['exit_message']


def test_too_few_members_fail_the_committee(finetune_process, with_members):
    process = with_members(finetune_process(), [420, 410, 0, 350])
    result = process.inspect_training()
    assert result.status == FinetuneWorkChain.exit_codes.ERROR_MEMBERS_FAILED.status == 510
    assert '1 of 4 trained, min_members is 2' in result.message


def test_min_members_is_an_input(finetune_process, with_members):
    process = with_members(finetune_process(min_members=4), [0, 0, 0, 420])
    assert process.inspect_training().status == 510
    process = with_members(finetune_process(committee_size=2), [0, 420])
    assert process.inspect_training().status == 510  # a committee of one has no spread
    with pytest.raises(ValueError, match='min_members must be between 1 and committee_size'):
        finetune_process(min_members=5)


def test_failed_members_reach_the_metrics_output():
    metrics = collect_metrics(
        member_0=orm.Dict({'valid': {'rmse_f': 0.1}}),
        failed_members=orm.Dict({'member_1': {'pk': 7, 'exit_status': 420, 'exit_message': 'NaN'}}),
    )
    result = metrics.get_dict()
    assert result['committee_size'] == 1
    assert result['failed_members']['member_1']['exit_status'] == 420

"""Training fixtures: a tiny model trained *through the calcjob* from scratch, shared by the fine-tuning tests."""

from __future__ import annotations

import pytest
from train_helpers import toy_set, train_builder


@pytest.fixture(scope='session')
def train_sets(aiida_profile):
    """A first toy set (the 'foundation' data) and a second, different one to fine-tune on (≤ 30 frames each)."""
    return {'first': toy_set(24, seed=4), 'second': toy_set(20, seed=21), 'valid': toy_set(6, seed=22)}


@pytest.fixture(scope='session')
def scratch_training(nmcml_codes, train_sets):
    """Real from-scratch training through MaceTrainCalculation (run in-process on localhost)."""
    from aiida.engine import run_get_node

    _, node = run_get_node(train_builder(nmcml_codes['mace_train'], train_sets['first'], seed=5))
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    return node

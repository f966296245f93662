"""The session profile is the one asked for, and its daemon runs submitted work: SQLite + ZeroMQ by default, and
PostgreSQL + RabbitMQ in ``.ci/run``'s production pass (``NMCML_TEST_PROFILE=production``, tests/production.py)."""

from __future__ import annotations

import os

import pytest


@pytest.mark.daemon
@pytest.mark.production
def test_session_profile_backends_and_daemon(aiida_profile, aiida_localhost, submit_and_await):
    """A work chain with a calcfunction and a calcjob (bash) through the daemon of the session profile."""
    from aiida import orm
    from aiida.plugins import WorkflowFactory

    production = os.environ.get('NMCML_TEST_PROFILE') == 'production'
    expected = ('core.psql_dos', 'core.rabbitmq') if production else ('core.sqlite_dos', 'core.zeromq')
    assert (aiida_profile.storage_backend, aiida_profile.process_control_backend) == expected
    code = orm.InstalledCode(
        label='bash-add',
        computer=aiida_localhost,
        filepath_executable='/bin/bash',
        default_calc_job_plugin='core.arithmetic.add',
    ).store()
    multiply_add = WorkflowFactory('core.arithmetic.multiply_add')
    node = submit_and_await(multiply_add, x=orm.Int(2), y=orm.Int(3), z=orm.Int(4), code=code, timeout=300)
    assert node.is_finished_ok and node.outputs.result.value == 10

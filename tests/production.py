"""The production profile of the test session (``NMCML_TEST_PROFILE=production``): PostgreSQL + RabbitMQ.

Why a second pass and not a parametrised fixture: AiiDA loads one profile per process and the daemon tests start
the daemon of the loaded profile; a whole pytest session on the production profile runs the *same* test functions
(marker ``production``) exactly as on the embedded default (SQLite + ZeroMQ). ``.ci/run`` and the GitHub workflow
run that pass after the main one; with ``CI=true`` it fails, not skips, when PostgreSQL or RabbitMQ is absent.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket

import pytest

SERVICES = {'PostgreSQL': 5432, 'RabbitMQ': 5672}


def services_problem() -> str | None:
    """None when PostgreSQL and RabbitMQ listen on 127.0.0.1, else which is missing."""
    for name, port in SERVICES.items():
        with socket.socket() as sock:
            sock.settimeout(2)
            if sock.connect_ex(('127.0.0.1', port)) != 0:
                return f'{name} is not listening on 127.0.0.1:{port}'
    return None


def require_services() -> None:
    problem = services_problem()
    if problem is None:
        return
    message = f'{problem}: start it (`.ci/run` does) or run without NMCML_TEST_PROFILE=production'
    if os.environ.get('CI', '').lower() == 'true':
        pytest.fail(f'CI=true and the production profile cannot be made ({message})', pytrace=False)
    pytest.skip(message)


def delete_task_queue(profile) -> None:
    """Delete the profile's durable RabbitMQ task queue (``aiida-<uuid>.process.queue``), which would otherwise
    outlive the temporary profile; a queue that is already gone is fine."""
    import asyncio

    import aio_pika
    from aiida.brokers.rabbitmq.broker import RabbitmqBroker
    from aiida.brokers.rabbitmq.utils import get_launch_queue_name

    broker = RabbitmqBroker(profile)

    async def delete():
        connection = await aio_pika.connect(broker.get_url())
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(get_launch_queue_name(f'aiida-{profile.uuid}'))

    asyncio.run(delete())


@contextlib.contextmanager
def production_profile(aiida_config, aiida_profile_factory, tmp_path_factory):
    """A temporary profile on a fresh PostgreSQL database (dropped afterwards) and the RabbitMQ broker.

    The profile is *not* flagged as a test profile: for a test profile aiida-core (kiwipy's testing mode) makes the
    task queue non-durable and deleted by RabbitMQ after 10 s without a consumer (``x-expires``), so a daemon
    SIGKILLed and restarted more than 10 s later found the queue, and every task of the running work chains in it,
    gone: the work chains stayed `Waiting` for ever (seen in the daemon-SIGKILL test at load ~10). A production
    profile's task queue is durable and keeps the tasks while no worker runs, which is what the daemon tests must
    exercise. The durable queue is deleted at the end.
    """
    from aiida_nmcml.setup.profile import drop_postgres_database, ensure_postgres_database

    require_services()
    name = f'nmcmltest{secrets.token_hex(4)}'
    db = ensure_postgres_database(name, echo=lambda *_: None)
    storage_config = {
        'database_engine': 'postgresql_psycopg',
        'database_hostname': db['host'],
        'database_port': db['port'],
        'database_username': db['user'],
        'database_password': db['password'],
        'database_name': db['name'],
        'repository_uri': tmp_path_factory.mktemp('repository').as_uri(),
    }
    try:
        with aiida_profile_factory(
            aiida_config,
            storage_backend='core.psql_dos',
            storage_config=storage_config,
            broker_backend='core.rabbitmq',
            name=name,
        ) as profile:
            aiida_config.set_option('warnings.rabbitmq_version', False, scope=profile.name)
            profile.is_test_profile = False  # before anything talks to RabbitMQ: durable task queue (docstring)
            aiida_config.update_profile(profile)
            aiida_config.store()
            try:
                yield profile
            finally:
                delete_task_queue(profile)
    finally:
        drop_postgres_database(name)  # WITH (FORCE): closes what the session left connected

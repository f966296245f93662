"""Profiles: reuse the current one, or create the embedded default (SQLite + ZeroMQ) or the production one.

The embedded default needs no services, so ``aiida-nmcml setup`` works on a laptop or a bare CI machine; the
production profile (PostgreSQL + RabbitMQ) is what a group server runs. Both are created with ``verdi presto``, the
route aiida-core maintains, rather than by reimplementing profile creation here.
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

EMBEDDED_PROFILE = 'nmcml'
PRODUCTION_PROFILE = 'nmcml-production'


def _verdi() -> list[str]:
    local = shutil.which('verdi', path=str(pathlib.Path(sys.executable).parent))
    return [local] if local else [sys.executable, '-m', 'aiida.cmdline.commands.cmd_verdi']


def current_profile_name() -> str | None:
    from aiida.manage.configuration import get_config

    try:
        config = get_config(create=True)
        return config.default_profile_name
    except Exception:
        return None


def profile_exists(name: str) -> bool:
    from aiida.manage.configuration import get_config

    return name in get_config(create=True).profile_names


def create_profile(name: str, postgres: bool = False, rabbitmq: bool = False, echo=print) -> None:
    """Create ``name`` with ``verdi presto`` and make it the default."""
    cmd = [*_verdi(), 'presto', '--profile-name', name, '--non-interactive']
    if postgres:
        cmd += ['--use-postgres', '--postgres-hostname', '127.0.0.1', '--postgres-username', 'postgres']
    if not rabbitmq:
        cmd += ['--use-zeromq']
    echo(f'creating profile {name!r}: {" ".join(cmd[1:])}')
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(
            f'`verdi presto` failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n'
            + ('Is PostgreSQL running and reachable as user postgres on 127.0.0.1? ' if postgres else '')
            + ('Is RabbitMQ running on 127.0.0.1:5672? ' if rabbitmq else '')
        )
    if rabbitmq:
        _check_rabbitmq_broker(name)
    subprocess.run([*_verdi(), 'profile', 'set-default', name], capture_output=True, check=False)
    subprocess.run([*_verdi(), 'config', 'set', 'warnings.rabbitmq_version', 'False'], capture_output=True, check=False)


def _check_rabbitmq_broker(name: str) -> None:
    from aiida.manage.configuration import load_config

    profile = load_config().get_profile(name)
    if profile.process_control_backend != 'core.rabbitmq':
        raise RuntimeError(
            f'profile {name!r} was created without RabbitMQ (presto did not find it on 127.0.0.1:5672); start '
            'RabbitMQ (`rabbitmq-server -detached`) and run setup again.'
        )


def ensure_profile(postgres: bool = False, rabbitmq: bool = False, name: str | None = None, echo=print) -> str:
    """Return the name of the profile to use, creating it when needed (idempotent).

    Without options the current default profile is reused; if there is none, the embedded default is created.
    ``postgres``/``rabbitmq`` ask for the production profile (created if missing).
    """
    if postgres or rabbitmq:
        name = name or PRODUCTION_PROFILE
    elif name is None:
        name = current_profile_name() or EMBEDDED_PROFILE
    if not profile_exists(name):
        create_profile(name, postgres=postgres, rabbitmq=rabbitmq, echo=echo)
    return name

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
    """Create ``name`` and make it the default: ``verdi presto`` for SQLite, ``verdi profile setup`` for PostgreSQL.

    Why not ``verdi presto --use-postgres``: it creates the database with the locale ``en_US.UTF-8``, which minimal
    Debian images lack; we create role and database ourselves with ``C.UTF-8``.
    """
    if postgres:
        db = ensure_postgres_database(name, echo=echo)
        repository = pathlib.Path(_config_dir()) / 'repository' / name
        cmd = [
            *_verdi(),
            'profile',
            'setup',
            'core.psql_dos',
            '--non-interactive',
            '--profile-name',
            name,
            '--email',
            'aiida@localhost',
            '--first-name',
            'aiida',
            '--last-name',
            'nmcml',
            '--institution',
            'localhost',
            '--broker',
            'core.rabbitmq' if rabbitmq else 'core.zeromq',
            '--database-hostname',
            db['host'],
            '--database-port',
            str(db['port']),
            '--database-username',
            db['user'],
            '--database-password',
            db['password'],
            '--database-name',
            db['name'],
            '--repository-uri',
            f'file://{repository}',
            '--set-as-default',
        ]
    else:
        cmd = [*_verdi(), 'presto', '--profile-name', name, '--non-interactive']
        cmd += [] if rabbitmq else ['--use-zeromq']
    echo(f'creating profile {name!r}: verdi {" ".join(cmd[1:3])} ...')
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(
            f'creating the profile failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n'
            + ('Is RabbitMQ running on 127.0.0.1:5672 (`rabbitmq-server -detached`)? ' if rabbitmq else '')
        )
    if rabbitmq:
        _check_rabbitmq_broker(name)
    subprocess.run([*_verdi(), 'profile', 'set-default', name], capture_output=True, check=False)
    subprocess.run([*_verdi(), 'config', 'set', 'warnings.rabbitmq_version', 'False'], capture_output=True, check=False)
    if postgres:
        # a presto-made profile gets localhost for free; a `profile setup` one does not
        subprocess.run(
            [*_verdi(), '-p', name, 'config', 'set', 'warnings.development_version', 'False'],
            capture_output=True,
            check=False,
        )


def _config_dir() -> str:
    from aiida.manage.configuration import get_config

    return get_config(create=True).dirpath


def ensure_postgres_database(
    name: str, host: str = '127.0.0.1', port: int = 5432, admin: str = 'postgres', echo=print
) -> dict:
    """Create role and database ``aiida_<name>`` if missing (idempotent); return the connection parameters."""
    import secrets

    import psycopg
    from psycopg import sql

    ident = 'aiida_' + ''.join(c if c.isalnum() else '_' for c in name)
    password = secrets.token_hex(12)
    try:
        conn = psycopg.connect(host=host, port=port, user=admin, dbname='postgres', autocommit=True)
    except psycopg.OperationalError as exc:
        raise RuntimeError(
            f'cannot connect to PostgreSQL at {host}:{port} as {admin!r}: {exc}. Start PostgreSQL or use the '
            'embedded default (omit --postgres).'
        ) from exc
    with conn:
        role_exists = conn.execute('SELECT 1 FROM pg_roles WHERE rolname=%s', (ident,)).fetchone()
        if role_exists:
            conn.execute(sql.SQL('ALTER ROLE {} WITH LOGIN PASSWORD {}').format(sql.Identifier(ident), password))
        else:
            conn.execute(sql.SQL('CREATE ROLE {} WITH LOGIN PASSWORD {}').format(sql.Identifier(ident), password))
        if not conn.execute('SELECT 1 FROM pg_database WHERE datname=%s', (ident,)).fetchone():
            echo(f'creating PostgreSQL database {ident}')
            conn.execute(
                sql.SQL(
                    "CREATE DATABASE {} OWNER {} ENCODING 'UTF8' LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8' "
                    'TEMPLATE template0'
                ).format(sql.Identifier(ident), sql.Identifier(ident))
            )
    return {'host': host, 'port': port, 'user': ident, 'password': password, 'name': ident}


def drop_postgres_database(name: str, host: str = '127.0.0.1', port: int = 5432, admin: str = 'postgres') -> None:
    """Remove what :func:`ensure_postgres_database` made (tests clean up after themselves)."""
    import psycopg
    from psycopg import sql

    ident = 'aiida_' + ''.join(c if c.isalnum() else '_' for c in name)
    with psycopg.connect(host=host, port=port, user=admin, dbname='postgres', autocommit=True) as conn:
        conn.execute(sql.SQL('DROP DATABASE IF EXISTS {} WITH (FORCE)').format(sql.Identifier(ident)))
        conn.execute(sql.SQL('DROP ROLE IF EXISTS {}').format(sql.Identifier(ident)))


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


def ensure_default_user(echo=print) -> str | None:
    """Give the loaded profile back a default user if its configuration lost it; return the e-mail set, or None.

    Why: two ``aiida-nmcml setup`` runs at the same moment on a fresh machine both create the profile, and the later
    write of the configuration file drops ``default_user_email``; every node then fails with a TypeError ('expecting
    User'). The user itself is in the storage: reattach the one ``verdi presto`` makes, else the first, else create it.
    """
    from aiida import orm
    from aiida.manage import get_manager

    if orm.User.collection.get_default() is not None:
        return None
    emails = [user.email for user in orm.User.collection.all()]
    if not emails:
        orm.User(email='aiida@localhost', first_name='aiida', last_name='nmcml', institution='localhost').store()
        emails = ['aiida@localhost']
    email = 'aiida@localhost' if 'aiida@localhost' in emails else emails[0]
    manager = get_manager()
    manager.set_default_user_email(manager.get_profile(), email)
    echo(f'the profile had no default user (its configuration was written concurrently): set {email}')
    return email

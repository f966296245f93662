"""``aiida-nmcml setup``: profile, computer, codes and pseudopotentials in one idempotent command."""

import sys

import click

from .root import cmd_root


@cmd_root.command('setup')
@click.option('--postgres', is_flag=True, help='Production profile: PostgreSQL storage (core.psql_dos).')
@click.option('--rabbitmq', is_flag=True, help='Production profile: RabbitMQ broker (core.rabbitmq).')
@click.option('--profile-name', default=None, help='Name of the profile to create or reuse.')
@click.option(
    '--family',
    default=None,
    help='Use this installed aiida-pseudo family instead of the offline default; nmcml.label then uses it unless its '
    'overrides name another.',
)
@click.option('--computer', default='localhost', show_default=True, help='Computer label to create or reuse.')
@click.option(
    '--computer-template',
    default=None,
    help='Also set up a SLURM-over-SSH computer (and the codes on it) from a template: `slurm-gpu` (the one-node '
    'test cluster of scripts/start_hpc_services.sh) or a YAML file for your cluster (docs/hpc.md).',
)
@click.option('--daemon/--no-daemon', default=False, show_default=True, help='Start the daemon at the end.')
@click.option('--check', is_flag=True, help='Only report what is present/missing; exit 1 if anything is missing.')
def cmd_setup(postgres, rabbitmq, profile_name, family, computer, computer_template, daemon, check):
    """Make (or reuse) everything aiida-nmcml needs; safe to run again."""
    from aiida import load_profile
    from aiida.manage import get_manager

    from ..setup import DEFAULT_FAMILY, check_environment, enable_dft_caching, ensure_environment
    from ..setup.profile import ensure_default_user, ensure_profile

    family = family or DEFAULT_FAMILY
    if check:
        if get_manager().get_profile() is None:
            click.secho('✗ profile: none configured; run `aiida-nmcml setup`', fg='red')
            sys.exit(1)
        rows = check_environment(family=family, computer=computer)
        for item, ok, detail in rows:
            click.secho(f'{"✓" if ok else "✗"} {item}: {detail}', fg='green' if ok else 'red')
        missing = [item for item, ok, _ in rows if not ok]
        if missing:
            click.secho(f'{len(missing)} missing: run `aiida-nmcml setup`', fg='red', err=True)
            sys.exit(1)
        click.echo('everything present')
        return

    current = get_manager().get_profile()
    if current is not None and not (postgres or rabbitmq or profile_name):
        name = current.name
    else:
        name = ensure_profile(postgres=postgres, rabbitmq=rabbitmq, name=profile_name, echo=click.echo)
    from aiida.manage.configuration import reset_config

    if current is None or current.name != name:
        reset_config()  # the profile was just created by a subprocess: re-read the config file
    load_profile(name, allow_switch=True)
    click.echo(f'profile: {name}')
    ensure_default_user(echo=click.echo)
    from ..setup.pseudos import PseudoSetupError

    try:
        env = ensure_environment(family=family, computer=computer, echo=click.echo)
    except PseudoSetupError as exc:  # a message, not a traceback: the family is not installed
        raise click.ClickException(str(exc)) from exc
    if computer_template:
        from ..setup.computer import ensure_slurm_computer

        try:
            hpc, new = ensure_slurm_computer(computer_template)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
        kind = f'{hpc.transport_type} + {hpc.scheduler_type}'
        click.echo(
            f'{"created" if new else "reused"} computer {hpc.label} ({kind}),'
            f' codes on it: nmcml-pw@{hpc.label}, nmcml-mace-train@{hpc.label}, nmcml-engine@{hpc.label}; '
            f'check it with `verdi computer test {hpc.label}`'
        )
    for entry in enable_dft_caching(name):
        click.echo(f'caching enabled for {entry}')
    if not env['created']:
        click.echo('nothing to create: everything was already set up')
    click.echo(f'codes: {", ".join(env[k].full_label for k in ("pw", "neb", "mace_train", "engine"))}')
    click.echo(f'pseudopotential family: {env["pseudo_family"]}')
    if daemon:
        from aiida.engine.daemon.client import get_daemon_client

        client = get_daemon_client()
        if not client.is_daemon_running:
            client.start_daemon(number_workers=1)
            click.echo('daemon started')
        else:
            click.echo(
                'daemon already running (after upgrading aiida-nmcml, `verdi daemon restart` loads the new code)'
            )

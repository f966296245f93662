"""``aiida-nmcml foundation``: the offline foundation model, distilled from a universal potential in a wheel."""

import click

from .root import cmd_root


@cmd_root.group('foundation')
def cmd_foundation():
    """Foundation models that work offline (distilled from CHGNet; see docs/foundation.md)."""


@cmd_foundation.command('distill')
@click.option(
    '--protocol',
    type=click.Choice(['demo', 'fast', 'moderate', 'precise']),
    default='demo',
    show_default=True,
    help='demo: <= 15 min on 2 CPU cores, reused by the demo; moderate/precise: for a GPU.',
)
@click.option('--teacher', type=click.Choice(['chgnet', 'sevennet-0']), default='chgnet', show_default=True)
@click.option('--device', default='cpu', show_default=True, help='cpu or cuda.')
@click.option('--force', is_flag=True, help='Distil again even if a model of this recipe exists.')
@click.option('--no-wait', is_flag=True, help='Submit and return (the daemon runs it).')
def cmd_distill(protocol, teacher, device, force, no_wait):
    """Distil (or reuse) a MACE foundation model: sample -> label with the teacher -> train from scratch.

    Prints the model's pk, uuid and sha256. Needs the daemon (`aiida-nmcml setup --daemon`).
    """
    from ..engine.teacher import teacher_available
    from ..workflows.distill import get_or_distill_foundation

    if not teacher_available(teacher):
        raise click.ClickException(f'{teacher} is not installed: pip install "aiida-nmcml[sevennet]"')
    if force:
        from ..workflows.distill import EXTRAS_KEY, distill_key, find_distilled

        while (old := find_distilled(protocol, teacher)) is not None:  # forget the recipe key, keep the node
            old.base.extras.delete(EXTRAS_KEY)
        click.echo(f'--force: distilling anew (recipe {distill_key(protocol, teacher)})')
        import os

        os.environ['NMCML_SKIP_MACHINE_CACHE'] = '1'
    node = get_or_distill_foundation(protocol, teacher=teacher, device=device, echo=click.echo, wait=not no_wait)
    if no_wait:
        click.echo(f'submitted DistillWorkChain <{node.pk}>; check with `verdi process show {node.pk}`')
        return
    click.echo(f'model pk: {node.pk}')
    click.echo(f'model uuid: {node.uuid}')
    click.echo(f'model sha256: {node.sha256}')

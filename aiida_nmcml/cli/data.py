"""Data commands for ``TrainingSet`` and ``MaceModel``: ``show`` and ``export``.

Registered twice, with the same click objects: where verdi looks for data plugins (``verdi data nmcml.trainingset``,
``verdi data nmcml.model``, through aiida-core's ``aiida.cmdline.data`` entry points) and under
``aiida-nmcml data trainingset|model``.
"""

from __future__ import annotations

import json
import pathlib

import click
from aiida.cmdline.params import arguments, types
from aiida.cmdline.utils import decorators, echo

from .root import cmd_root

TRAININGSET = types.DataParamType(sub_classes=('aiida.data:nmcml.trainingset',))
MODEL = types.DataParamType(sub_classes=('aiida.data:nmcml.model',))
FORCE = click.option('-f', '--force', is_flag=True, help='Overwrite OUTPUT if it exists.')


def _target(output: str, force: bool) -> pathlib.Path:
    path = pathlib.Path(output)
    if path.exists() and not force:
        echo.echo_critical(f'{path} exists: pass --force to overwrite it')
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@click.group('nmcml.trainingset')
def cmd_trainingset():
    """Inspect and export TrainingSet nodes (labelled frames as one extxyz file)."""


@cmd_trainingset.command('show')
@arguments.DATUM(type=TRAININGSET)
@click.option('--json', 'as_json', is_flag=True, help='Print the summary as JSON.')
@decorators.with_dbenv()
def trainingset_show(datum, as_json):
    """Frames, labels, elements, compositions and the DFT settings of a TrainingSet."""
    summary = {
        'pk': datum.pk,
        'uuid': datum.uuid,
        'frames': datum.num_frames,
        'labelled': datum.num_labelled,
        'atoms': datum.base.attributes.get('num_atoms_total', None),
        'elements': datum.elements,
        'sha256': datum.sha256,
        'compositions': datum.counts_by_composition(),
        'dft_settings': datum.dft_settings,
        'creator': None if datum.creator is None else f'{datum.creator.process_label}<{datum.creator.pk}>',
    }
    if as_json:
        echo.echo(json.dumps(summary, indent=2, sort_keys=True))
        return
    for key in ('pk', 'uuid', 'frames', 'labelled', 'atoms', 'elements', 'sha256', 'creator'):
        echo.echo(f'{key:<13} {summary[key]}')
    echo.echo('compositions  ' + ', '.join(f'{k}: {v}' for k, v in sorted(summary['compositions'].items())))
    settings = summary['dft_settings'] or {}
    echo.echo('dft_settings  ' + (', '.join(f'{k}={v}' for k, v in settings.items() if v is not None) or 'none'))


@cmd_trainingset.command('export')
@arguments.DATUM(type=TRAININGSET)
@click.argument('output', type=click.Path(dir_okay=False))
@FORCE
@decorators.with_dbenv()
def trainingset_export(datum, output, force):
    """Write the frames to OUTPUT as extended XYZ, byte-identical to the stored file (REF_* labels)."""
    path = _target(output, force)
    datum.write_extxyz(path)
    echo.echo_success(f'{datum.num_frames} frames of TrainingSet<{datum.pk}> written to {path} (sha256 {datum.sha256})')


@click.group('nmcml.model')
def cmd_model():
    """Inspect and export MaceModel nodes (a MACE model file identified by its sha256)."""


@cmd_model.command('show')
@arguments.DATUM(type=MODEL)
@click.option('--json', 'as_json', is_flag=True, help='Print the summary as JSON.')
@decorators.with_dbenv()
def model_show(datum, as_json):
    """sha256, elements, cutoff, dtype, heads, E0s and where the model came from."""
    summary = {
        'pk': datum.pk,
        'uuid': datum.uuid,
        'filename': datum.filename,
        'sha256': datum.sha256,
        'size': datum.base.attributes.get('size', None),
        'elements': datum.elements,
        'r_max': datum.r_max,
        'dtype': datum.dtype,
        'heads': datum.heads,
        'source': datum.source,
        'creator': None if datum.creator is None else f'{datum.creator.process_label}<{datum.creator.pk}>',
    }
    if as_json:
        echo.echo(json.dumps(summary, indent=2, sort_keys=True))
        return
    for key, value in summary.items():
        echo.echo(f'{key:<9} {value}')


@cmd_model.command('export')
@arguments.DATUM(type=MODEL)
@click.argument('output', type=click.Path(dir_okay=False))
@FORCE
@decorators.with_dbenv()
def model_export(datum, output, force):
    """Write the model file to OUTPUT after checking its sha256 against the node (never a different file)."""
    from ..data.model import ModelHashMismatch

    path = _target(output, force)
    try:
        datum.copy_to(path)
    except ModelHashMismatch as exc:
        echo.echo_critical(str(exc))
    echo.echo_success(f'MaceModel<{datum.pk}> written to {path} (sha256 {datum.sha256})')


@cmd_root.group('data')
def cmd_data():
    """Data of aiida-nmcml (also under `verdi data nmcml.trainingset` / `verdi data nmcml.model`)."""


cmd_data.add_command(cmd_trainingset, name='trainingset')
cmd_data.add_command(cmd_model, name='model')

"""``aiida-nmcml campaign``: launch, watch, continue, report and export a whole study (``nmcml.campaign``).

Bad input (unknown protocol, a Li content outside [0, 1], a code that does not exist, a model file that cannot be
read) ends with one ``Critical:`` line and exit status 1, before anything is stored.
"""

from __future__ import annotations

import datetime
import logging
import pathlib
import sys
import time

import click
from aiida.cmdline.utils import decorators, echo

from .root import cmd_root

PROTOCOLS = ('demo', 'fast', 'moderate', 'precise')
ENGINES = ('qe', 'vasp')


@cmd_root.group('campaign')
def cmd_campaign():
    """A whole study: DFT set, committee, search, active learning, diffusion, barriers, report (nmcml.campaign)."""


# ------------------------------------------------------------------------------------------------------ helpers
def load_campaign(identifier: str):
    """A campaign node from a pk, a uuid (or its start) or a campaign name (the newest of that name)."""
    from aiida import orm

    node = None
    try:
        node = orm.load_node(identifier)
    except Exception:  # NotExistent, MultipleObjectsError, ValueError: try it as a name
        qb = orm.QueryBuilder().append(
            orm.WorkflowNode, filters={'label': identifier, 'process_type': process_type()}, tag='c'
        )
        qb.order_by({'c': {'ctime': 'desc'}})
        node = qb.first(flat=True)
    if node is None:
        echo.echo_critical(f'no campaign {identifier!r} (a pk, uuid or campaign name; see `aiida-nmcml campaign list`)')
    if getattr(node, 'process_type', None) != process_type():
        label = getattr(node, 'process_label', None) or type(node).__name__
        echo.echo_critical(f'<{node.pk}> is a {label}, not a campaign (CampaignWorkChain)')
    return node


def process_type() -> str:
    return 'aiida.workflows:nmcml.campaign'


def parse_overrides(path) -> dict:
    if path is None:
        return {}
    import yaml

    try:
        data = yaml.safe_load(pathlib.Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        echo.echo_critical(f'cannot read overrides {path}: {exc}'.splitlines()[0])
    if not isinstance(data, dict):
        echo.echo_critical(f'overrides {path}: expected a mapping of campaign.yaml keys')
    return data


def elapsed(node) -> str:
    start = node.ctime
    end = node.mtime if node.is_terminated else datetime.datetime.now(datetime.UTC)
    seconds = int((end - start).total_seconds())
    return str(datetime.timedelta(seconds=max(seconds, 0)))


DFT_TYPES = ('aiida.calculations:quantumespresso.pw', 'aiida.calculations:vasp.vasp')
MARKS = {'done': '✓', 'running': '▶', 'pending': '·'}


def dft_counts(node) -> dict:
    """DFT calculations under the campaign: finished OK, running, failed (cached ones count as done)."""
    from aiida import orm

    counts = {'done': 0, 'running': 0, 'failed': 0, 'cached': 0}
    for child in node.called_descendants:
        if not isinstance(child, orm.CalcJobNode) or child.process_type not in DFT_TYPES:
            continue
        if not child.is_terminated:
            counts['running'] += 1
        elif child.is_finished_ok:
            counts['done'] += 1
            counts['cached'] += bool(child.base.caching.is_created_from_cache)
        else:
            counts['failed'] += 1
    return counts


def _committee_size(calc) -> int:
    """How many models an ``nmcml.evaluate`` job was given (0 for a universal potential by name, zero-shot)."""
    return len(calc.base.links.get_incoming(link_label_filter='models__%').all())


def latest_uncertainty(node) -> str | None:
    """The newest committee evaluation under the campaign: its force-deviation statistics and held-out errors.

    Only evaluations of a committee (two or more models) count: the barrier stage's zero-shot CHGNet evaluation,
    newer than any committee one, has no deviation to show (it printed a median of 0.000 eV/Å).
    """
    from aiida import orm

    evaluations = [
        n
        for n in node.called_descendants
        if isinstance(n, orm.CalcJobNode)
        and n.process_type == 'aiida.calculations:nmcml.evaluate'
        and 'metrics' in n.outputs
        and _committee_size(n) >= 2
    ]
    if not evaluations:
        return None
    last = max(evaluations, key=lambda n: n.ctime)
    metrics = last.outputs.metrics.get_dict()
    deviation = metrics.get('max_force_deviation') or {}
    summary = metrics.get('summary') or {}
    parts = []
    if deviation:
        parts.append(
            f'committee max force deviation per frame: median {deviation.get("median", float("nan")):.3f}, '
            f'max {deviation.get("max", float("nan")):.3f} eV/Å'
        )
    if summary.get('forces_rmse_meV_per_A') is not None:
        parts.append(f'force RMSE {summary["forces_rmse_meV_per_A"]:.0f} meV/Å')
    if summary.get('energy_rmse_meV_per_atom') is not None:
        parts.append(f'energy RMSE {summary["energy_rmse_meV_per_atom"]:.1f} meV/atom')
    return f'{"; ".join(parts)} (nmcml.evaluate <{last.pk}>)' if parts else None


def al_iteration(node) -> str | None:
    """The active-learning stage's progress: iterations finished (its ``iteration_metrics``) and the stop rule."""
    from aiida import orm

    chains = [
        n
        for n in node.called_descendants
        if isinstance(n, orm.WorkflowNode) and n.process_type == 'aiida.workflows:nmcml.active_learning'
    ]
    if not chains:
        return None
    chain = max(chains, key=lambda n: n.ctime)
    done = sorted(chain.outputs.iteration_metrics) if 'iteration_metrics' in chain.outputs else []
    text = f'{len(done)} iteration(s) finished'
    if done:
        record = chain.outputs.iteration_metrics[done[-1]].get_dict()
        if 'n_dft_labels' in record:
            text += f', {record["n_dft_labels"]} AL DFT labels'
    if 'convergence' in chain.outputs:
        convergence = chain.outputs.convergence.get_dict()
        text += f'; stopped by {convergence.get("rule")!r}'
    elif not chain.is_terminated:
        text += ', running'
    return f'{text} (<{chain.pk}>)'


def status_lines(node) -> list[str]:
    """The progress view of ``campaign status``: readable at a glance."""
    from ..workflows.campaign import EXTRAS_KEY, STAGES

    extras = node.base.extras.get(EXTRAS_KEY, {})
    stages = extras.get('stages', {})
    state = node.process_state.value if node.process_state else 'unknown'
    if node.is_finished:
        state = 'finished OK' if node.is_finished_ok else f'failed (exit {node.exit_status}: {node.exit_message})'
    lines = [
        f'campaign   {node.label or "?"}  <{node.pk}>  {node.description or ""}'.rstrip(),
        f'state      {state}; stage {extras.get("stage", "-")}; elapsed {elapsed(node)}',
    ]
    for stage in STAGES:
        value = stages.get(stage, 'pending')
        mark = MARKS.get(value, '✗' if value.startswith('failed') else '–')
        lines.append(f'  {mark} {stage:<16} {value}')
    counts = dft_counts(node)
    planned = extras.get('dft_planned')
    dft = f'DFT        {counts["done"]} done'
    if counts['cached']:
        dft += f' ({counts["cached"]} from cache)'
    dft += f', {counts["running"]} running, {counts["failed"]} failed'
    if planned is not None:
        dft += f' / about {planned} planned'
    lines.append(dft)
    iteration = al_iteration(node)
    if iteration:
        lines.append(f'AL         {iteration}')
    uncertainty = latest_uncertainty(node)
    if uncertainty:
        lines.append(f'committee  {uncertainty}')
    if extras.get('reused'):
        lines.append(f'reused     {", ".join(sorted(extras["reused"]))} (from the campaign it continues)')
    if extras.get('report'):
        lines.append(f'report     {extras["report"]}')
    return lines


class CampaignReportHandler(logging.Handler):
    """Echo the campaign's own report lines (not every child's) while it runs in the foreground."""

    def emit(self, record):
        message = record.getMessage()
        if '|CampaignWorkChain|' in message:
            click.echo(f'{datetime.datetime.now():%H:%M:%S} {message.split("]: ", 1)[-1]}')


def run_foreground(builder):
    from aiida.engine import run_get_node

    aiida_logger = logging.getLogger('aiida')
    handler = CampaignReportHandler(level=logging.INFO)
    quiet = [(h, h.level) for h in aiida_logger.handlers]
    for h, _ in quiet:  # the children's reports go to the database (verdi process report), not to the terminal
        h.setLevel(logging.WARNING)
    aiida_logger.addHandler(handler)
    try:
        _, node = run_get_node(builder)
    finally:
        aiida_logger.removeHandler(handler)
        for h, level in quiet:
            h.setLevel(level)
    return node


def wait_and_show(node, poll: float = 10.0) -> None:
    """Poll a daemon-run campaign, printing a line whenever its stage, stage states or DFT count change."""
    from ..workflows.campaign import EXTRAS_KEY

    last = None
    while True:
        terminated = node.is_terminated
        extras = node.base.extras.get(EXTRAS_KEY, {})
        counts = dft_counts(node)
        key = (extras.get('stage'), tuple(sorted(extras.get('stages', {}).items())), counts['done'], counts['running'])
        if key != last:
            running = [s for s, v in extras.get('stages', {}).items() if v == 'running']
            stage = ', '.join(running) or extras.get('stage', '-')
            click.echo(
                f'{datetime.datetime.now():%H:%M:%S} [{elapsed(node)}] stage {stage}'
                f'; DFT {counts["done"]} done, {counts["running"]} running / about {extras.get("dft_planned", "?")}'
            )
            last = key
        if terminated:
            return
        time.sleep(poll)


def finish(node) -> None:
    click.echo('')
    for line in status_lines(node):
        click.echo(line)
    from ..workflows.campaign import EXTRAS_KEY

    report = node.base.extras.get(EXTRAS_KEY, {}).get('report')
    if report:
        click.echo(f'the report is at {report}')
    click.echo(f'groups: `verdi group list -C -s {node.label}/`; progress: `aiida-nmcml campaign status {node.pk}`')
    if not node.is_finished_ok:
        sys.exit(1)


# ------------------------------------------------------------------------------------------------------ commands
@cmd_campaign.command('launch')
@click.option(
    '-P', '--protocol', default='demo', show_default=True, help=f'One of {", ".join(PROTOCOLS)} (campaign.yaml).'
)
@click.option('--engine', default='qe', show_default=True, help='DFT engine: qe or vasp.')
@click.option(
    '--foundation',
    default=None,
    help='Foundation model: a name (mace-mp-0-small ..., online) or a .model file. Default: the MACE distilled '
    'offline from CHGNet (made once per machine, then reused).',
)
@click.option(
    '-x', '--li-content', 'li_contents', type=float, multiple=True, help='Li content x in [0, 1]; repeat for several.'
)
@click.option('-T', '--temperature', 'temperatures', type=float, multiple=True, help='Diffusion MD temperature (K).')
@click.option(
    '--name', default=None, help='Campaign name, the group prefix (default nmcml/campaign/<protocol>/<time>).'
)
@click.option('--overrides', 'overrides_file', default=None, help='YAML file of campaign.yaml overrides.')
@click.option('--dft-code', default=None, help='DFT code (default nmcml-pw@localhost for qe).')
@click.option('--train-code', default=None, help='mace_run_train code (default nmcml-mace-train@localhost).')
@click.option('--engine-code', default=None, help='aiida-nmcml-engine code (default nmcml-engine@localhost).')
@click.option('--training-set', default=None, help='A TrainingSet (pk/uuid): skips the labels stage.')
@click.option('--committee', default=None, help='Comma-separated MaceModel pks/uuids: skips fine-tuning.')
@click.option('--daemon', is_flag=True, help='Submit to the daemon and return (see --wait).')
@click.option('--wait', is_flag=True, help='With --daemon: follow the campaign until it ends.')
@decorators.with_dbenv()
def cmd_launch(
    protocol, engine, foundation, li_contents, temperatures, name, overrides_file, dft_code, train_code,
    engine_code, training_set, committee, daemon, wait,
):  # fmt: skip
    """Launch a campaign; without --daemon it runs here in the foreground, printing its progress."""
    from ..workflows.campaign import CampaignWorkChain, resolve_codes, resolve_parameters

    if protocol not in PROTOCOLS:
        echo.echo_critical(f'unknown protocol {protocol!r}: choose one of {", ".join(PROTOCOLS)}')
    if engine not in ENGINES:
        echo.echo_critical(f'unknown engine {engine!r}: choose one of {", ".join(ENGINES)}')
    bad = [x for x in li_contents if not 0.0 <= x <= 1.0]
    if bad:
        echo.echo_critical(f'Li content {bad[0]} is outside [0, 1]')
    bad = [t for t in temperatures if not t > 0.0]
    if bad:
        echo.echo_critical(f'temperature {bad[0]} K is not positive')
    overrides = parse_overrides(overrides_file)
    if li_contents:
        overrides['li_contents'] = sorted(set(li_contents), reverse=True)
    if temperatures:
        overrides['temperatures_K'] = sorted(set(temperatures))
    try:  # everything checked before anything is stored
        resolve_parameters(protocol, overrides)
        codes = resolve_codes({'dft': dft_code, 'train': train_code, 'engine': engine_code}, engine)
    except ValueError as exc:
        echo.echo_critical(str(exc))
    if daemon:
        check_daemon()
    skip = load_skip_inputs(training_set, committee)
    if foundation is not None:
        model = load_foundation(foundation)
    elif skip.get('committee'):
        model = None
    else:
        model = distilled_foundation(daemon)
    try:
        builder = CampaignWorkChain.get_builder_from_protocol(
            codes, engine=engine, protocol=protocol, overrides=overrides, foundation_model=model, name=name, **skip
        )
    except ValueError as exc:
        echo.echo_critical(str(exc))
    launch(builder, daemon, wait)


def launch(builder, daemon: bool, wait: bool) -> None:
    from aiida.engine import submit

    label = builder.metadata.label
    if daemon:
        check_daemon()
        try:
            node = submit(builder)
        except ValueError as exc:
            echo.echo_critical(str(exc).splitlines()[0])
        echo.echo_success(f'submitted campaign {label} <{node.pk}>')
        if not wait:
            click.echo(f'follow it with `aiida-nmcml campaign status {node.pk}`')
            return
        wait_and_show(node)
    else:
        click.echo(f'campaign {label}: running in the foreground (Ctrl-C kills it; `campaign continue` resumes)')
        try:
            node = run_foreground(builder)
        except ValueError as exc:  # input validation of the process spec
            echo.echo_critical(str(exc).splitlines()[0])
    finish(node)


def check_daemon() -> None:
    from aiida.engine.daemon.client import get_daemon_client

    if not get_daemon_client().is_daemon_running:
        echo.echo_critical('the daemon is not running: `verdi daemon start` (or run without --daemon)')


def load_foundation(foundation: str):
    from ..data.model import resolve_foundation_model

    try:
        return resolve_foundation_model(foundation)
    except Exception as exc:  # FoundationModelUnavailable, a pickle that does not load, a truncated file
        echo.echo_critical(f'foundation model {foundation!r} cannot be used: {exc}'.splitlines()[0])


def distilled_foundation(daemon: bool):
    """The offline foundation (distilled from CHGNet): reused when made before, else distilled on the daemon now."""
    from aiida.engine.daemon.client import get_daemon_client

    from ..workflows.distill import find_distilled, get_or_distill_foundation, importable_model_files

    if find_distilled('demo') is None and not importable_model_files('demo'):
        if not get_daemon_client().is_daemon_running:
            echo.echo_critical(
                'no foundation model: give --foundation FILE|NAME, or start the daemon (`verdi daemon start`) so the '
                'offline one can be distilled (`aiida-nmcml foundation distill`)'
            )
    try:
        return get_or_distill_foundation('demo', echo=lambda message: click.echo(f'  {message}'))
    except Exception as exc:
        echo.echo_critical(f'no foundation model: {exc}'.splitlines()[0])


def load_skip_inputs(training_set, committee) -> dict:
    from aiida import orm

    from ..data.model import MaceModel
    from ..data.trainingset import TrainingSet

    skip = {}
    try:
        if training_set:
            node = orm.load_node(training_set)
            if not isinstance(node, TrainingSet):
                raise ValueError(f'<{node.pk}> is a {type(node).__name__}, not a TrainingSet')
            skip['training_set'] = node
        if committee:
            models = {}
            for i, identifier in enumerate(part.strip() for part in committee.split(',') if part.strip()):
                node = orm.load_node(identifier)
                if not isinstance(node, MaceModel):
                    raise ValueError(f'<{node.pk}> is a {type(node).__name__}, not a MaceModel')
                models[f'member_{i}'] = node
            skip['committee'] = models
    except Exception as exc:  # NotExistent and friends
        echo.echo_critical(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return skip


@cmd_campaign.command('list')
@click.option('-a', '--all', 'show_all', is_flag=True, help='Also campaigns that finished more than a week ago.')
@decorators.with_dbenv()
def cmd_list(show_all):
    """Campaigns with their state, current stage and age."""
    from aiida import orm

    from ..workflows.campaign import EXTRAS_KEY

    filters = {'process_type': process_type()}
    if not show_all:
        filters['ctime'] = {'>': datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=7)}
    qb = orm.QueryBuilder().append(orm.WorkflowNode, filters=filters, tag='c').order_by({'c': {'ctime': 'asc'}})
    nodes = qb.all(flat=True)
    if not nodes:
        click.echo('no campaigns' + ('' if show_all else ' in the last week (-a for all)'))
        return
    from tabulate import tabulate

    rows = []
    for node in nodes:
        extras = node.base.extras.get(EXTRAS_KEY, {})
        state = node.process_state.value if node.process_state else '?'
        if node.is_finished:
            state = 'finished' if node.is_finished_ok else f'failed [{node.exit_status}]'
        rows.append(
            [node.pk, node.label, state, extras.get('stage', '-'), elapsed(node), node.ctime.strftime('%F %H:%M')]
        )
    click.echo(tabulate(rows, headers=['pk', 'name', 'state', 'stage', 'elapsed', 'created']))


@cmd_campaign.command('status')
@click.argument('identifier')
@decorators.with_dbenv()
def cmd_status(identifier):
    """Stage, iteration, DFT calculations done / planned, uncertainty, elapsed time."""
    node = load_campaign(identifier)
    for line in status_lines(node):
        click.echo(line)


@cmd_campaign.command('continue')
@click.argument('identifier')
@click.option('--daemon', is_flag=True, help='Submit to the daemon and return.')
@click.option('--wait', is_flag=True, help='With --daemon: follow it until it ends.')
@decorators.with_dbenv()
def cmd_continue(identifier, daemon, wait):
    """Continue a killed or failed campaign: finished stages are reused, the DFT already done is not repeated."""
    from ..workflows.campaign import continue_builder

    node = load_campaign(identifier)
    if not node.is_terminated:
        echo.echo_critical(
            f'campaign <{node.pk}> is still {node.process_state.value}: kill it first (`verdi process kill {node.pk}`)'
        )
    if node.is_finished_ok:
        echo.echo_critical(f'campaign <{node.pk}> finished OK: nothing to continue')
    builder, reuse = continue_builder(node)
    click.echo(f'continuing <{node.pk}> ({node.label}); reused: {", ".join(sorted(reuse)) or "nothing"}')
    launch(builder, daemon, wait)


@cmd_campaign.command('report')
@click.argument('identifier')
@click.option('--folder', default=None, help='Where to write it (default ~/aiida-nmcml/reports/<name>).')
@click.option('--open', 'open_it', is_flag=True, help='Open it in the browser.')
@decorators.with_dbenv()
def cmd_report(identifier, folder, open_it):
    """Write the campaign's HTML report (every stage it has so far)."""
    from ..workflows.campaign import default_report_directory, report_entry_point

    node = load_campaign(identifier)
    writer = report_entry_point()
    if writer is None:
        echo.echo_critical('the report is not available in this version (aiida_nmcml.report.build_report is missing)')
    path = writer(node, pathlib.Path(folder) if folder else default_report_directory(node.label))
    echo.echo_success(f'report written: {path}')
    if open_it:
        click.launch(str(path))


@cmd_campaign.command('export')
@click.argument('identifier')
@click.option(
    '--folder', default=None, help='Where to write the archive and the FAIR bundle (default ./<name>-export).'
)
@click.option('--force', is_flag=True, help='Replace an archive that is already there.')
@decorators.with_dbenv()
def cmd_export(identifier, folder, force):
    """Export the campaign: an AiiDA archive of its groups and a FAIR bundle (Materials Cloud Archive layout)."""
    node = load_campaign(identifier)
    exporter = export_entry_point()
    if exporter is None:
        echo.echo_critical('export is not available in this version (aiida_nmcml.report.export_campaign is missing)')
    target = pathlib.Path(folder) if folder else pathlib.Path.cwd() / f'{node.label.replace("/", "_")}-export'
    try:
        path = exporter(node, target, overwrite=force)
    except FileExistsError as exc:
        echo.echo_critical(f'{exc}'.replace('overwrite=True (CLI: --force)', '--force'))
    echo.echo_success(f'exported to {path.parent} (metadata: {path})')


def export_entry_point():
    try:
        from .. import report
    except ImportError:
        return None
    return getattr(report, 'export_campaign', None)

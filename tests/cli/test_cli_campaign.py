"""``aiida-nmcml campaign`` with click's CliRunner: refused input (one line, exit 1, nothing stored), the status view,
list, continue refusals, report/export when their writer is missing. The launch itself runs in tests/test_demo.py."""

from __future__ import annotations

import pytest
from aiida import orm
from aiida.plugins import WorkflowFactory
from click.testing import CliRunner
from plumpy import ProcessState

from aiida_nmcml.cli import cmd_root
from aiida_nmcml.workflows import campaign as cw


def invoke(*args):
    return CliRunner().invoke(cmd_root, ['campaign', *args])


def n_nodes() -> int:
    return orm.QueryBuilder().append(orm.Node).count()


@pytest.mark.parametrize(
    ('args', 'message'),
    [
        (['-P', 'ultra'], "unknown protocol 'ultra'"),
        (['--engine', 'cp2k'], "unknown engine 'cp2k'"),
        (['-x', '1.5'], 'Li content 1.5 is outside [0, 1]'),
        (['-x', '-0.1'], 'Li content -0.1 is outside [0, 1]'),
        (['-T', '0'], 'temperature 0.0 K is not positive'),
        (['--dft-code', 'nope@nowhere'], "code 'nope@nowhere' not found"),
        (['--engine', 'vasp'], 'no dft code for engine vasp'),
        (['--training-set', '999999'], 'no Node found with ID<999999>'),
    ],
)
def test_launch_refuses_bad_input_in_one_line(nmcml_codes, args, message):
    before = n_nodes()
    result = invoke('launch', '--foundation', '/dev/null', *args)
    assert result.exit_code == 1, result.output
    assert 'Traceback' not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith('Critical:') and message in lines[0], result.output
    assert n_nodes() == before  # nothing half-created


def test_launch_refuses_an_unreadable_model_file(nmcml_codes, tmp_path):
    bad = tmp_path / 'broken.model'
    bad.write_bytes(b'not a pickle')
    before = n_nodes()
    for model in (str(bad), str(tmp_path / 'missing.model'), 'no-such-foundation-name'):
        result = invoke('launch', '--foundation', model)
        assert result.exit_code == 1 and 'Traceback' not in result.output
        assert result.output.startswith(f"Critical: foundation model '{model}' cannot be used"), result.output
    assert n_nodes() == before


def test_launch_refuses_bad_overrides(nmcml_codes, tmp_path):
    path = tmp_path / 'o.yaml'
    path.write_text('stages: {search: {enabeld: false}}\n')
    result = invoke('launch', '--foundation', '/dev/null', '--overrides', str(path))
    assert result.exit_code == 1
    assert "unknown key 'enabeld'; did you mean 'enabled'?" in result.output
    result = invoke('launch', '--overrides', str(tmp_path / 'missing.yaml'))
    assert result.exit_code == 1 and result.output.startswith('Critical: cannot read overrides')


def test_launch_without_daemon_refuses_daemon_mode(nmcml_codes, monkeypatch):
    """--daemon with no daemon running: one line, checked before any model is read or node stored."""
    from aiida.engine.daemon.client import DaemonClient

    monkeypatch.setattr(DaemonClient, 'is_daemon_running', property(lambda self: False))
    before = n_nodes()
    result = invoke('launch', '--foundation', '/dev/null', '--daemon')
    assert result.exit_code == 1 and result.output.startswith('Critical: the daemon is not running'), result.output
    assert n_nodes() == before


@pytest.fixture
def campaign_node(generate_workchain, nmcml_codes, tiny_foundation_model):
    """A campaign instantiated (not run), with its setup step done and one stage marked, as status reads it."""
    builder = WorkflowFactory('nmcml.campaign').get_builder_from_protocol(
        {'dft': nmcml_codes['pw'], 'train': nmcml_codes['mace_train'], 'engine': nmcml_codes['engine']},
        protocol='demo', foundation_model=str(tiny_foundation_model), name='test/cli/campaign',
    )  # fmt: skip
    inputs = {key: builder[key] for key in ('name', 'engine', 'parameters', 'codes', 'foundation_model')}
    process = generate_workchain('nmcml.campaign', {**inputs, 'metadata': {'label': 'test/cli/campaign'}})
    process.setup()
    process._set_stage('labels', 'done')
    process._set_stage('committee', 'running')
    return process.node


def test_status_list_and_continue_refusals(campaign_node):
    result = invoke('status', str(campaign_node.pk))
    assert result.exit_code == 0, result.output
    out = result.output
    assert f'campaign   test/cli/campaign  <{campaign_node.pk}>' in out
    assert 'stage committee' in out and 'elapsed' in out
    assert '✓ labels' in out and '▶ committee' in out and '· search' in out
    planned = campaign_node.base.extras.get(cw.EXTRAS_KEY)['dft_planned']
    assert planned > 0 and f'DFT        0 done, 0 running, 0 failed / about {planned} planned' in out
    assert invoke('status', 'test/cli/campaign').output.splitlines()[0] == out.splitlines()[0]  # by name too

    listing = invoke('list')
    assert listing.exit_code == 0 and 'test/cli/campaign' in listing.output and 'committee' in listing.output

    running = invoke('continue', str(campaign_node.pk))
    assert running.exit_code == 1 and 'still created: kill it first' in running.output
    campaign_node.set_process_state(ProcessState.FINISHED)
    campaign_node.set_exit_status(0)
    done = invoke('continue', str(campaign_node.pk))
    assert done.exit_code == 1 and 'finished OK: nothing to continue' in done.output

    code = invoke('status', str(orm.load_code('nmcml-pw@localhost').pk))
    assert code.exit_code == 1 and 'not a campaign' in code.output
    assert invoke('status', 'no/such/campaign').exit_code == 1


def test_report_and_export_say_when_unavailable(campaign_node, monkeypatch):
    from aiida_nmcml import report

    for name in ('build_report', 'export_campaign'):
        monkeypatch.delattr(report, name, raising=False)
    result = invoke('report', str(campaign_node.pk))
    assert result.exit_code == 1 and 'report is not available' in result.output
    result = invoke('export', str(campaign_node.pk))
    assert result.exit_code == 1 and 'export is not available' in result.output


def test_report_calls_the_report_writer(campaign_node, monkeypatch, tmp_path):
    from aiida_nmcml import report

    calls = []

    def fake(node, folder):  # the report's own tests build real ones; here: the CLI passes the node and folder
        calls.append((node.pk, folder))
        return folder / 'index.html'

    monkeypatch.setattr(report, 'build_report', fake, raising=False)
    result = invoke('report', str(campaign_node.pk), '--folder', str(tmp_path))
    assert result.exit_code == 0 and f'report written: {tmp_path / "index.html"}' in result.output
    assert calls == [(campaign_node.pk, tmp_path)]


def test_export_calls_the_exporter_and_refuses_to_overwrite(campaign_node, monkeypatch, tmp_path):
    from aiida_nmcml import report

    def fake(node, folder, overwrite=False):  # the export's own tests round-trip a real archive
        if (folder / 'campaign.aiida').exists() and not overwrite:
            raise FileExistsError(
                f'{folder / "campaign.aiida"} exists: pass overwrite=True (CLI: --force) to replace it'
            )
        folder.mkdir(parents=True, exist_ok=True)
        (folder / 'campaign.aiida').write_text('')
        return folder / 'metadata.json'

    monkeypatch.setattr(report, 'export_campaign', fake, raising=False)
    assert invoke('export', str(campaign_node.pk), '--folder', str(tmp_path)).exit_code == 0
    again = invoke('export', str(campaign_node.pk), '--folder', str(tmp_path))
    assert again.exit_code == 1 and 'exists: pass --force to replace it' in again.output
    assert invoke('export', str(campaign_node.pk), '--folder', str(tmp_path), '--force').exit_code == 0


def test_foreground_launch_with_every_result_given(nmcml_codes, tiny_foundation_model, tmp_path):
    """The foreground path end to end in seconds: training set and committee given, optional stages switched off.
    The campaign's own report lines are printed live; its outputs are the given nodes; the summary says why each
    stage was skipped."""
    from aiida_nmcml.data.model import MaceModel
    from aiida_nmcml.data.trainingset import TrainingSet
    from aiida_nmcml.testing.toymodel import toy_frames

    training_set = TrainingSet.from_frames(toy_frames(3, seed=5)).store()
    model = MaceModel.get_or_create(tiny_foundation_model)
    overrides = tmp_path / 'off.yaml'
    overrides.write_text(
        'stages: {search: {enabled: false}, active_learning: {enabled: false}, diffusion: {enabled: false},'
        ' barriers: {enabled: false}, report: {enabled: false}}\n'
    )
    result = invoke(
        'launch', '-P', 'demo', '--name', 'test/cli/foreground', '--overrides', str(overrides),
        '--training-set', str(training_set.pk), '--committee', f'{model.pk},{model.pk}',
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert 'running in the foreground' in result.output
    assert 'stage labels: skipped (training_set given)' in result.output  # live report line of the campaign
    node = orm.QueryBuilder().append(orm.WorkflowNode, filters={'label': 'test/cli/foreground'}).one()[0]
    assert node.is_finished_ok
    stages = node.outputs.summary.get_dict()['stages']
    assert stages['labels'] == 'skipped: training_set given' and stages['committee'] == 'skipped: committee given'
    assert {stages[s] for s in ('search', 'active_learning', 'diffusion', 'barriers', 'report')} == {
        'skipped: disabled'
    }
    assert node.outputs.training_set.uuid == training_set.uuid
    assert {m.uuid for m in node.outputs.committee.values()} == {model.uuid}
    assert '✓' not in result.output.split('state')[1].split('DFT')[0]  # nothing ran


def test_status_uncertainty_is_the_newest_committee_evaluation(aiida_localhost, tiny_foundation_model):
    """`campaign status` shows the newest evaluation *of a committee*: the barrier stage's zero-shot evaluation (a
    universal potential by name, no models), which comes later, has no deviation to show (it printed 0.000)."""
    from aiida.common.links import LinkType
    from factories import make_calc_job_node

    from aiida_nmcml.cli.campaign import latest_uncertainty
    from aiida_nmcml.data.model import MaceModel

    caller = orm.WorkflowNode().store()  # stands in for the campaign (unsealed, so it can CALL)
    model = MaceModel.get_or_create(tiny_foundation_model)

    def evaluation(models: dict, median: float) -> None:
        node = make_calc_job_node('nmcml.evaluate', aiida_localhost, inputs={'models': models}, caller=caller)
        metrics = orm.Dict({'max_force_deviation': {'median': median, 'max': median}})
        metrics.base.links.add_incoming(node, link_type=LinkType.CREATE, link_label='metrics')
        metrics.store()

    evaluation({'m0': model, 'm1': model}, 0.25)
    evaluation({}, 0.0)  # newer: zero-shot
    line = latest_uncertainty(caller)
    assert 'median 0.250' in line and '0.000' not in line, line

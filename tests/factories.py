"""Factories of the fast test level (aiida-quantumespresso's ``generate_calc_job_node`` / ``generate_workchain``).

Parsers and work-chain handlers are tested here without running any code: a mock ``CalcJobNode`` gets a
``retrieved`` folder (recorded outputs from ``tests/parsers/fixtures/<entry point>/<case>/`` or given bytes) and a
``remote_folder``; a work chain is instantiated on its inputs and its handlers are called on such a node.
Loaded by ``tests/conftest.py`` (``pytest_plugins``).
"""

from __future__ import annotations

import io
import pathlib

import pytest

FIXTURES = pathlib.Path(__file__).parent / 'parsers' / 'fixtures'


def fixture_folder(entry_point: str, case: str) -> pathlib.Path:
    """``tests/parsers/fixtures/<entry_point>/<case>``: recorded ``retrieved`` files of one job."""
    folder = FIXTURES / entry_point / case
    if not folder.is_dir():
        raise FileNotFoundError(f'no recorded outputs {folder}: see tests/parsers/fixtures/README.md')
    return folder


def _flatten(inputs: dict, prefix: str = ''):
    for key, value in inputs.items():
        if isinstance(value, dict):
            yield from _flatten(value, f'{prefix}{key}__')
        else:
            yield f'{prefix}{key}', value


def make_calc_job_node(
    entry_point: str,
    computer,
    *,
    case: str | None = None,
    files: dict[str, bytes] | None = None,
    inputs: dict | None = None,
    exit_status: int | None = None,
    exit_message: str | None = None,
    remote_path: str = '/tmp',
    parse: bool = False,
    caller=None,
    call_link_label: str = 'CALL',
    options: dict | None = None,
):
    """A stored ``CalcJobNode`` of ``entry_point`` (e.g. ``'nmcml.md'``) with ``retrieved`` and ``remote_folder``.

    :param case: recorded outputs to put in ``retrieved`` (``tests/parsers/fixtures/<entry_point>/<case>``).
    :param files: extra (or replacing) retrieved files, name -> bytes; ``case`` and ``files`` may be combined.
    :param inputs: input nodes linked to the node (nested dicts become ``a__b`` link labels); stored if needed.
    :param exit_status: makes the node a *finished* process with that status (for handler tests).
    :param caller: an unsealed WorkflowNode that called this job (``call_link_label``), as a work chain would.
    :param options: more ``metadata.options`` (e.g. pw.x's ``output_filename``, which its parser reads).
    :param parse: run the entry point's parser on ``retrieved`` and attach its outputs to the node, as the engine
        would; without ``exit_status`` the parser's exit status is used. A mock child with real parsed outputs.
    """
    from aiida import orm
    from aiida.common.links import LinkType
    from plumpy import ProcessState

    node = orm.CalcJobNode(computer=computer, process_type=f'aiida.calculations:{entry_point}')
    node.set_option('resources', {'num_machines': 1, 'num_mpiprocs_per_machine': 1})
    node.set_option('max_wallclock_seconds', 1800)
    for key, value in (options or {}).items():
        node.set_option(key, value)
    for label, value in _flatten(inputs or {}):
        if not value.is_stored:
            value.store()
        node.base.links.add_incoming(value, link_type=LinkType.INPUT_CALC, link_label=label)
    if caller is not None:
        node.base.links.add_incoming(caller, link_type=LinkType.CALL_CALC, link_label=call_link_label)
    # Never from the cache: a profile with caching on (``aiida-nmcml setup`` enables it for DFT calcjobs, and a setup
    # test does so on the test profile) would clone an equal mock's outputs, and 'retrieved' below would then clash.
    from aiida.manage.caching import disable_caching

    with disable_caching():
        node.store()

    content = {}
    if case is not None:
        content.update({p.name: p.read_bytes() for p in sorted(fixture_folder(entry_point, case).iterdir())})
    content.update(files or {})
    retrieved = orm.FolderData()
    for name, data in content.items():
        retrieved.base.repository.put_object_from_filelike(io.BytesIO(data), name)
    retrieved.base.links.add_incoming(node, link_type=LinkType.CREATE, link_label='retrieved')
    retrieved.store()
    remote = orm.RemoteData(computer=computer, remote_path=remote_path)
    remote.base.links.add_incoming(node, link_type=LinkType.CREATE, link_label='remote_folder')
    remote.store()

    if parse:
        from aiida.plugins import ParserFactory

        results, calcfunction = ParserFactory(entry_point).parse_from_node(node, store_provenance=False)
        for label, output in _flatten(dict(results)):
            output.base.links.add_incoming(node, link_type=LinkType.CREATE, link_label=label)
            output.store()
        if exit_status is None:
            exit_status, exit_message = calcfunction.exit_status, calcfunction.exit_message

    if exit_status is not None:
        node.set_process_state(ProcessState.FINISHED)
        node.set_exit_status(exit_status)
        node.set_exit_message(exit_message)
    return node


@pytest.fixture
def generate_calc_job_node(aiida_localhost):
    """``generate_calc_job_node(entry_point, case=..., files=..., inputs=..., exit_status=...)`` on localhost."""

    def factory(entry_point: str, **kwargs):
        return make_calc_job_node(entry_point, aiida_localhost, **kwargs)

    return factory


@pytest.fixture
def generate_workchain():
    """``generate_workchain(entry_point, inputs)``: an instantiated (not run) work chain, for calling its steps."""

    def factory(entry_point: str, inputs: dict):
        from aiida.engine.utils import instantiate_process
        from aiida.manage import get_manager
        from aiida.plugins import WorkflowFactory

        return instantiate_process(get_manager().get_runner(), WorkflowFactory(entry_point), **inputs)

    return factory


@pytest.fixture
def attach_failed_child():
    """``attach_failed_child(process, node)``: make ``node`` the last child of ``process`` (as run_process would)."""

    def attach(process, node):
        process.ctx.iteration = getattr(process.ctx, 'iteration', 0) + 1
        process.ctx.children = [*getattr(process.ctx, 'children', []), node]
        return node

    return attach


@pytest.fixture
def fake_engine_code(aiida_localhost):
    """An ``InstalledCode`` that is never run: the handler tests only need a valid ``code`` input."""
    from aiida import orm

    code = orm.InstalledCode(computer=aiida_localhost, filepath_executable='/bin/true', label='never-run')
    return code.store()


def kill_daemon_hard(client) -> list[int]:
    """SIGKILL the daemon's circus arbiter first (no respawn), then every worker: a crashed login node.

    Shared by the crash-safety tests (tests/hpc/test_slurm.py, tests/workflows/test_active_learning_kill.py).
    """
    import signal

    import psutil

    pid = client.get_daemon_pid()
    assert pid, 'daemon not running'
    arbiter = psutil.Process(pid)
    procs = [arbiter, *arbiter.children(recursive=True)]
    for proc in procs:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=30)
    return [p.pid for p in procs]


def active_learning_daemon_builder(nmcml_codes, tiny_foundation_model, max_iterations: int):
    """The AL daemon tests' loop (tests/workflows/test_active_learning_daemon.py, test_active_learning_kill.py):
    ``demo`` protocol, a committee of two tiny MACE models, one 8-atom LiNiO2 cell (Ni3+), two selected frames and one
    held-out frame an iteration, 50 MD steps, one fine-tuning epoch, the code's pseudo family."""
    from aiida_nmcml.data.model import MaceModel
    from aiida_nmcml.structures import build_nmc, to_structure_data
    from aiida_nmcml.testing import toymodel
    from aiida_nmcml.workflows.active_learning import ActiveLearningWorkChain

    committee = [MaceModel.get_or_create(tiny_foundation_model), MaceModel.get_or_create(toymodel.cached_tiny_mace(2))]
    cell = to_structure_data(build_nmc([2, 1, 1], x_li=1.0, composition={'Ni': 1.0}, seed=0))  # 8 atoms, Ni3+
    overrides = {
        'parameters': {
            'max_iterations': max_iterations, 'max_selected': 2, 'held_out_per_condition': 1, 'min_step_gap': 10,
        },
        'md': {'parameters': {'steps': 50, 'trajectory_stride': 10}},
        'label': {'qe': {'pseudo_family': nmcml_codes['pseudo_family']}},
        'finetune': {'train': {'parameters': {'max_num_epochs': 1}}},
    }  # fmt: skip
    return ActiveLearningWorkChain.get_builder_from_protocol(
        engine_code=nmcml_codes['engine'], dft_code=nmcml_codes['pw'], train_code=nmcml_codes['mace_train'],
        committee=committee, structures={'linio2': cell}, foundation_model=committee[0], protocol='demo',
        overrides=overrides,
    )  # fmt: skip

"""``nmcml.active_learning`` on the daemon, the daemon SIGKILLed mid-iteration and restarted: the loop completes and
no DFT calculation is repeated (issue 11's third test).

Real MD (engine), real pw.x (``plumbing``: Gamma point, 30 Ry), real MACE fine-tuning, as in
tests/workflows/test_active_learning_daemon.py, one iteration. The daemon (circus arbiter first, then its workers) is
SIGKILLed as soon as the iteration's first pw.x calculation has finished while the loop is still running, i.e. with
labelling, retraining and evaluation still to come: a crashed login node. After a restart the work chain continues
from its last checkpoint. Checked: it finishes with the iteration budget's 760 and every output; the number of pw.x
calculations equals the number of DFT labels the loop counted (selected + held-out), none came from the cache and each
structure was computed once; the calculations finished before the kill are among them. The run also gives the
optional lattice check an end-to-end pass (one 12-atom cell relaxed with the final committee's member).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from aiida import orm
from factories import active_learning_daemon_builder, kill_daemon_hard

PW = 'aiida.calculations:quantumespresso.pw'

# On demand (`pytest -m extended`). It failed once, in a fresh-clone CI run on two xdist workers (2026-11-26: after
# the restart the iteration's nmcml.finetune ended without an exit status, loop 572); not reproduced since (alone
# 270 s, under -n 2 beside test_active_learning_daemon.py 486 s and 298 s, after two other daemon tests 128 s), cause
# unknown. Four passes against one unexplained failure is not enough to make every CI run depend on it, so it stays
# out of .ci/run until the cause is known; should it fail again, the message below gives the state of every process
# that did not finish 0, the traceback of the excepted ones and the daemon and broker log tails
# (docs/active_learning.md, "Tests and measured numbers").
pytestmark = [pytest.mark.slow, pytest.mark.extended]


def _pw_calcs(node) -> list:
    return sorted((n for n in node.called_descendants if n.process_type == PW), key=lambda n: n.ctime)


def _diagnosis(node, daemon_client) -> str:
    """For a failure message: the state of every process in the tree that did not finish 0 (a child read before it
    terminated shows up as running), the reports and traceback of the excepted ones, the daemon and broker log tails.
    """
    from aiida.manage import get_config

    lines = []
    for child in [node, *node.called_descendants]:
        if not child.is_finished_ok:
            state = f'{child.process_state} {child.exit_status} {child.exit_message}'
            lines.append(f'--- {child.process_label} <{child.pk}>: {state}')
        if child.is_excepted:
            lines += [f'{log.levelname} {log.message}' for log in orm.Log.collection.get_logs_for(child)]
            lines.append(child.exception or '(no exception recorded)')

    broker_log = get_config().filepaths(daemon_client.profile)['broker_service']['log']
    for title, path, count in (('daemon log', daemon_client.daemon_log_file, 150), ('broker log', broker_log, 40)):
        try:
            with open(path, encoding='utf-8', errors='replace') as handle:
                lines += [f'--- {title} (tail)', *handle.read().splitlines()[-count:]]
        except OSError as error:
            lines.append(f'{title} unreadable: {error}')
    return '\n'.join(lines)


def test_daemon_killed_mid_iteration_repeats_no_dft(nmcml_codes, tiny_foundation_model, started_daemon_client):
    from aiida.engine import submit

    from aiida_nmcml.structures import layered_parent, to_structure_data

    builder = active_learning_daemon_builder(nmcml_codes, tiny_foundation_model, max_iterations=1)
    builder.lattice_structures = {'x1': to_structure_data(layered_parent(primitive=False))}
    builder.lattice_check = {'reference': {'x1': {'a': 2.87, 'c': 14.2}}, 'fmax': 0.03, 'max_steps': 100}
    node = submit(builder)

    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        if any(c.is_finished_ok for c in _pw_calcs(node)):
            break
        assert not node.is_terminated, (node.exit_status, node.exit_message, 'ended before any pw.x finished')
        time.sleep(0.5)
    else:
        pytest.fail('no pw.x calculation finished within 30 min')
    assert not node.is_terminated, 'the loop ended before the kill'
    finished_before = {c.uuid for c in _pw_calcs(node) if c.is_finished_ok}
    submitted_before = {c.uuid for c in _pw_calcs(node)}

    import psutil

    killed = kill_daemon_hard(started_daemon_client)
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != 'zombie' for pid in killed)
    started_daemon_client.start_daemon()  # removes the stale pid file the SIGKILLed arbiter left behind
    assert started_daemon_client.get_daemon_pid() not in killed

    deadline = time.monotonic() + 3600
    while not node.is_terminated:
        assert time.monotonic() < deadline, 'no end within 60 min of the restart\n' + _diagnosis(
            node, started_daemon_client
        )
        time.sleep(2)
    # the iteration budget: the loop completed (on failure: reports and tracebacks of every excepted process)
    assert node.exit_status == 760, _diagnosis(node, started_daemon_client)
    convergence = node.outputs.convergence.get_dict()
    assert convergence['rule'] == 'max_iterations' and convergence['iteration'] == 1
    metrics = node.outputs.iteration_metrics['iter_01'].get_dict()
    assert metrics['n_dft_labels'] == 3  # 2 selected + 1 held-out

    pws = _pw_calcs(node)
    # no DFT calculation repeated: one pw.x per DFT label, none taken from the cache, each structure once
    assert len(pws) == convergence['n_dft_labels'] == 3, [(c.pk, c.exit_status) for c in pws]
    assert all(c.is_finished_ok for c in pws)
    assert not [c.pk for c in pws if c.base.caching.get_cache_source()]
    positions = [np.round(c.inputs.structure.get_ase().positions, 5).tobytes() for c in pws]
    assert len(set(positions)) == len(pws)
    assert finished_before <= {c.uuid for c in pws} and submitted_before <= {c.uuid for c in pws}
    assert node.outputs.training_set.num_frames == 2 and node.outputs.held_out_set.num_frames == 1

    # the optional lattice check ran on the final committee and is recorded
    lattice = node.outputs.lattice_check.get_dict()
    assert set(lattice['per_structure']) == {'x1'} and lattice['model']['x1']['layers'] == 3
    reports = [entry.message for entry in orm.Log.collection.get_logs_for(node)]
    assert any('lattice check:' in message for message in reports)  # report() prefixes '[pk|class|step]: '

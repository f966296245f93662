"""``nmcml.active_learning`` end to end on the daemon: real MD (engine), real pw.x 6.7 (``plumbing`` protocol: Gamma
point, 30 Ry; this checks the loop's bookkeeping, not DFT accuracy) and real MACE fine-tuning (tiny models).

One 8-atom LiNiO2 cell at 300 K, two iterations of two selected frames each, one held-out frame: 5 pw.x runs, two
committees of two, three held-out evaluations. Then the finished run is continued: nothing is repeated.
"""

from __future__ import annotations

import numpy as np
import pytest
from aiida import orm
from aiida.common.links import LinkType
from factories import active_learning_daemon_builder

from aiida_nmcml.workflows.active_learning import ActiveLearningWorkChain

# In .ci/run since its first pass runs on two xdist workers (8 min here under load, on demand before).
pytestmark = [pytest.mark.slow]


def _positions(training_set):
    return [np.round(a.positions, 6) for a in training_set.get_frames()]


def test_two_iterations_then_continuation_repeats_nothing(nmcml_codes, tiny_foundation_model, submit_and_await):
    builder = active_learning_daemon_builder(nmcml_codes, tiny_foundation_model, max_iterations=2)
    group_label = f'al_test_{orm.Str("x").store().uuid[:8]}'
    builder.group_label = orm.Str(group_label)
    node = submit_and_await(builder, timeout=3600)
    # iteration budget exhausted: 760 with every output attached
    assert node.exit_status == 760, (node.exit_status, node.exit_message)
    convergence = node.outputs.convergence.get_dict()
    assert convergence['rule'] == 'max_iterations' and convergence['iteration'] == 2

    metrics = {key: node.outputs.iteration_metrics[key].get_dict() for key in node.outputs.iteration_metrics}
    assert sorted(metrics) == ['iter_01', 'iter_02']
    # the dataset grows by exactly the selected frames (no spin rejection in the demo: magnetic_check flag)
    sets = {key: node.outputs.iteration_metrics[key].creator.inputs.training_set for key in metrics}
    assert sets['iter_01'].num_frames == metrics['iter_01']['n_selected'] == 2
    assert sets['iter_02'].num_frames == 2 + metrics['iter_02']['n_selected'] == 4
    assert node.outputs.training_set.uuid == sets['iter_02'].uuid
    first, second = _positions(sets['iter_01']), _positions(sets['iter_02'])
    assert all(np.array_equal(a, b) for a, b in zip(first, second[:2], strict=True))
    selected = [c for c in node.called if c.process_label == 'select_explored_frames']
    assert len(selected) == 2
    for call, added in zip(selected, (second[:2], second[2:]), strict=True):
        chosen = _positions(call.outputs.selected)
        assert all(np.array_equal(a, b) for a, b in zip(chosen, added, strict=True))
        # the held-out frame is never a candidate
        if 'held_out' in call.outputs:
            held = _positions(call.outputs.held_out)
            assert not any(np.array_equal(h, c) for h in held for c in chosen)
    # DFT count: 2 + 1 held-out, then 2; counts per condition recorded
    assert metrics['iter_01']['n_dft_labels'] == 3 and metrics['iter_02']['n_dft_labels'] == 5
    counts = metrics['iter_01']['selection']['counts_per_condition']['linio2_T300']
    assert counts['selected'] == 2 and counts['total'] == counts['candidate'] + counts['accurate'] + counts['discarded']
    assert metrics['iter_02']['selection']['trust_band']['source'] == 'given'
    assert metrics['iter_01']['selection']['descriptors'] == 'mace'  # FPS on the MACE descriptors of member 0
    # held-out: labelled once, evaluated for the starting committee and after each retraining
    assert node.outputs.held_out_set.num_frames == 1
    labels = [c for c in node.called if c.process_label == 'LabelWorkChain']
    assert sorted(c.base.links.get_incoming(link_type=LinkType.CALL_WORK).one().link_label for c in labels) == [
        'label_held_out', 'label_iter_01', 'label_iter_02',
    ]  # fmt: skip
    curve = node.outputs.learning_curve.get_dict()
    assert curve['n_dft_labels'] == [0, 3, 5] and curve['n_training_frames'] == [0, 2, 4]
    assert all(v is not None and v > 0 for v in curve['forces_rmse_meV_per_A'])
    # the final committee is the second retraining's
    finetunes = sorted((c for c in node.called if c.process_label == 'FinetuneWorkChain'), key=lambda c: c.ctime)
    assert len(finetunes) == 2
    assert {m.uuid for m in node.outputs.committee.values()} == {m.uuid for m in finetunes[1].outputs.models.values()}
    # groups
    for key in ('iter_01', 'iter_02'):
        group = orm.load_group(f'{group_label}/active_learning/{key}')
        uuids = {n.uuid for n in group.nodes}
        assert node.outputs.iteration_metrics[key].uuid in uuids and sets[key].uuid in uuids

    # continuation from the finished run with the same budget: no MD, no DFT, no training, no evaluation
    restart = ActiveLearningWorkChain.get_builder_restart(node)
    again = submit_and_await(restart, timeout=300)
    assert again.exit_status == 760, again.exit_message
    assert not [c for c in again.called if c.process_label not in ('learning_curve', 'convergence_record')]
    assert again.outputs.training_set.uuid == node.outputs.training_set.uuid
    assert again.outputs.learning_curve.get_dict() == curve
    assert again.outputs.convergence['iteration'] == 2

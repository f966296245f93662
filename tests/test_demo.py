"""README command 1 end to end: the demo pipeline on the test profile, with the real daemon, pw.x and MACE."""

import pathlib
import sys

import pytest
from aiida import orm

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.daemon
def test_demo_pipeline_runs_every_stage(nmcml_codes, started_daemon_client, capsys):
    sys.path.insert(0, str(ROOT / 'examples'))
    import demo_pipeline

    assert demo_pipeline.main(['--md-steps', '40']) == 0
    out = capsys.readouterr().out
    for stage in ('1. structures', '2. DFT+U', '3. fine-tuning', '4. MD', '5. genetic search', 'done:'):
        assert stage in out
    group = orm.load_group(out.split('demo campaign: group ')[1].split()[0])
    processes = {node.process_label: node for node in group.nodes}
    # MD goes through its restart work chain (nmcml.md.base), which exposes the calcjob's outputs
    assert set(processes) == {'LabelWorkChain', 'FinetuneWorkChain', 'MdBaseWorkChain', 'SearchWorkChain'}
    assert all(node.is_finished_ok for node in processes.values())
    md = processes['MdBaseWorkChain'].outputs.output_parameters.get_dict()
    assert md['steps_run'] == 40 and md['committee_size'] == 2

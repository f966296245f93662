"""MdParser on outputs recorded from real engine runs (tests/parsers/fixtures/record_engine_outputs.py).

The parsed outputs are compared with data_regression, so a change of the output format or of the parser shows up
as a diff of the ``.yml`` files next to this module.
"""

from __future__ import annotations

import pytest

from aiida_nmcml.calculations.md import MdCalculation
from aiida_nmcml.parsers.md import MdParser

EXIT = MdCalculation.exit_codes


def summarise(results: dict) -> dict:
    """What the parser made of the files: link labels, array names and shapes, frames, the run summary."""
    from ase.io import read

    out = {'outputs': sorted(results)}
    for label in ('thermo', 'uncertainty'):
        if label in results:
            node = results[label]
            out[label] = {name: list(node.get_array(name).shape) for name in sorted(node.get_arraynames())}
            out[f'{label}_steps'] = [int(s) for s in node.get_array('step')]
    if 'trajectory' in results:
        with results['trajectory'].open(mode='r') as handle:
            out['trajectory_steps'] = [int(a.info['step']) for a in read(handle, ':', format='extxyz')]
    if 'candidates' in results:
        out['candidates'] = results['candidates'].num_frames
    if 'stop_structure' in results:
        out['stop_structure'] = results['stop_structure'].get_formula()
    if 'output_parameters' in results:
        summary = results['output_parameters'].get_dict()
        out['summary'] = {k: v for k, v in sorted(summary.items()) if k not in {'wall_s', 'steps_per_s'}}
    return out


@pytest.mark.parametrize(('case', 'exit_label'), [('finished', None), ('stopped', 'ERROR_ATOMS_TOO_CLOSE')])
def test_recorded_runs(case, exit_label, generate_calc_job_node, data_regression):
    node = generate_calc_job_node('nmcml.md', case=case)
    results, calcfunction = MdParser.parse_from_node(node, store_provenance=False)
    expected = EXIT[exit_label].status if exit_label else 0
    assert calcfunction.exit_status == expected, calcfunction.exit_message
    data_regression.check(summarise(results))


def test_stopped_run_keeps_its_frames(generate_calc_job_node):
    """A stop rule is not a crash: the stop frame and the logs are outputs, and the message says why."""
    node = generate_calc_job_node('nmcml.md', case='stopped')
    results, calcfunction = MdParser.parse_from_node(node, store_provenance=False)
    assert {'stop_structure', 'thermo', 'output_parameters'} <= set(results)
    assert 'apart' in calcfunction.exit_message
    assert calcfunction.exit_status // 100 == 7


def test_killed_run_without_status_file(generate_calc_job_node):
    """No engine_status.json and no scheduler verdict: 310; the checkpoint is in retrieved for the restart handler."""
    node = generate_calc_job_node('nmcml.md', case='killed')
    assert 'checkpoint.npz' in node.outputs.retrieved.base.repository.list_object_names()
    _, calcfunction = MdParser.parse_from_node(node, store_provenance=False)
    assert calcfunction.exit_status == EXIT.ERROR_MISSING_STATUS_FILE.status


def test_killed_by_scheduler_walltime_keeps_the_scheduler_code(generate_calc_job_node):
    """The scheduler's 120 (set on the node before the parser runs) is more specific than 'no status file'."""
    node = generate_calc_job_node('nmcml.md', case='killed')
    node.set_exit_status(120)
    node.set_exit_message('The job ran out of walltime.')
    _, calcfunction = MdParser.parse_from_node(node, store_provenance=False)
    assert calcfunction.exit_status == 120
    assert 'walltime' in calcfunction.exit_message


def test_success_without_trajectory_is_missing_output(generate_calc_job_node):
    import json

    node = generate_calc_job_node('nmcml.md', files={'engine_status.json': json.dumps({'status': 'ok'}).encode()})
    _, calcfunction = MdParser.parse_from_node(node, store_provenance=False)
    assert calcfunction.exit_status == EXIT.ERROR_MISSING_OUTPUT_FILES.status

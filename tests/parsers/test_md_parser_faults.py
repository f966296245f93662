"""MdParser on the two MD faults with their own exit codes: NaN dynamics (frames kept) and a restart without files.

The retrieved files are the recorded ``stopped`` run with the status replaced by what the engine writes for the
fault (the engine side is tested in tests/engine/test_md_faults.py).
"""

from __future__ import annotations

import json

from aiida_nmcml.calculations.md import MdCalculation
from aiida_nmcml.parsers.md import MdParser

EXIT = MdCalculation.exit_codes


def status_file(status: str, message: str) -> dict[str, bytes]:
    return {'engine_status.json': json.dumps({'status': status, 'message': message}).encode()}


def test_non_finite_keeps_the_frames_and_has_its_own_exit_code(generate_calc_job_node):
    message = 'the model returned non-finite forces at step 9: the dynamics blew up'
    node = generate_calc_job_node('nmcml.md', case='stopped', files=status_file('non_finite', message))
    results, calcfunction = MdParser.parse_from_node(node, store_provenance=False)
    assert calcfunction.exit_status == EXIT.ERROR_NON_FINITE.status
    assert EXIT.ERROR_NON_FINITE.status not in {e.status for e in (EXIT.ERROR_NAN_FORCES, EXIT.ERROR_INVALID_INPUT)}
    assert 'non-finite forces at step 9' in calcfunction.exit_message
    assert {'thermo', 'output_parameters', 'candidates'} <= set(results)


def test_restart_files_missing_has_its_own_exit_code(generate_calc_job_node):
    message = "restart requested from 'checkpoint.npz' but no such file in the working directory"
    node = generate_calc_job_node('nmcml.md', files=status_file('restart_files_missing', message))
    results, calcfunction = MdParser.parse_from_node(node, store_provenance=False)
    assert calcfunction.exit_status == EXIT.ERROR_RESTART_FILES_MISSING.status
    assert 'checkpoint.npz' in calcfunction.exit_message
    assert set(results) == {'engine_status'}


def test_calcjob_res_shows_the_summary(generate_calc_job_node):
    """``verdi calcjob res`` needs a default output node (it used to fail for nmcml.md)."""
    from aiida.common.links import LinkType

    assert MdCalculation.spec().default_output_node == 'output_parameters'
    node = generate_calc_job_node('nmcml.md', case='finished')
    results, _ = MdParser.parse_from_node(node, store_provenance=False)
    summary = results['output_parameters'].clone()
    summary.base.links.add_incoming(node, link_type=LinkType.CREATE, link_label='output_parameters')
    summary.store()
    assert node.res.steps_run == 20 and node.res.trajectory_stride == 5

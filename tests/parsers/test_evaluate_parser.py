"""EvaluateParser: engine status names become exit codes; success needs both output files (from ``retrieved``)."""

from __future__ import annotations

import io
import json

from factories import make_calc_job_node

from aiida_nmcml.calculations.evaluate import EvaluateCalculation
from aiida_nmcml.parsers.evaluate import EvaluateParser

EXIT = EvaluateCalculation.exit_codes


def make_node(files: dict[str, bytes], computer):
    return make_calc_job_node('nmcml.evaluate', computer, files=files)  # tests/factories.py


def status(name: str, message: str = '') -> bytes:
    return json.dumps({'status': name, 'message': message}).encode()


def test_engine_status_maps_to_exit_codes(aiida_localhost):
    for name, code in [
        ('model_hash_mismatch', EXIT.ERROR_MODEL_HASH_MISMATCH),
        ('device_unavailable', EXIT.ERROR_DEVICE_UNAVAILABLE),
        ('out_of_memory', EXIT.ERROR_OUT_OF_MEMORY),
    ]:
        node = make_node({'engine_status.json': status(name, 'detail here')}, aiida_localhost)
        _, calcfunction = EvaluateParser.parse_from_node(node, store_provenance=False)
        assert calcfunction.exit_status == code.status, name
        assert 'detail here' in calcfunction.exit_message


def test_missing_outputs_and_missing_status(aiida_localhost):
    node = make_node({'engine_status.json': status('ok')}, aiida_localhost)
    _, calcfunction = EvaluateParser.parse_from_node(node, store_provenance=False)
    assert calcfunction.exit_status == EXIT.ERROR_MISSING_OUTPUT_FILES.status
    node = make_node({}, aiida_localhost)
    _, calcfunction = EvaluateParser.parse_from_node(node, store_provenance=False)
    assert calcfunction.exit_status == EXIT.ERROR_MISSING_STATUS_FILE.status


def _engine_files(calibration: dict, status_name: str = 'ok') -> dict[str, bytes]:
    import numpy as np

    arrays = io.BytesIO()
    np.savez(arrays, natoms=np.array([2]), max_force_deviation=np.array([0.1]))
    metrics = {'n_models': 2, 'forces': {'rmse': 0.1}, 'calibration': calibration}
    return {
        'engine_status.json': status(status_name, 'median deviation 1e-06 eV/Å'),
        'evaluate_arrays.npz': arrays.getvalue(),
        'evaluate_metrics.json': json.dumps(metrics).encode(),
    }


def test_calibration_and_reliability_curve_are_nodes(aiida_localhost):
    curve = {'lower': [0.0, 0.1], 'upper': [0.1, 0.2], 'count': [5, 5], 'error_rms': [0.05, 0.2]}
    calibration = {'n_atoms': 10, 'alpha': 1.5, 'negligible_spread': False, 'reliability': curve}
    node = make_node(_engine_files(calibration), aiida_localhost)
    results, calcfunction = EvaluateParser.parse_from_node(node, store_provenance=False)
    assert calcfunction.is_finished_ok
    assert results['calibration'].get_dict()['alpha'] == 1.5
    assert 'reliability' not in results['calibration'].get_dict()
    assert list(results['reliability'].get_array('error_rms')) == [0.05, 0.2]


def test_negligible_spread_keeps_predictions_but_refuses_calibration(aiida_localhost):
    """A committee whose members agree to 1e-6 eV/Å: its own exit code, metrics kept, no calibration output."""
    calibration = {'n_atoms': 10, 'alpha': 3000.0, 'negligible_spread': True, 'reliability': {'lower': [0.0]}}
    node = make_node(_engine_files(calibration, 'negligible_spread'), aiida_localhost)
    results, calcfunction = EvaluateParser.parse_from_node(node, store_provenance=False)
    assert calcfunction.exit_status == EXIT.ERROR_NEGLIGIBLE_SPREAD.status
    assert '1e-06' in calcfunction.exit_message
    assert 'metrics' in results and 'predictions' in results
    assert 'calibration' not in results and 'reliability' not in results

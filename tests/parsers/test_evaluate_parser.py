"""EvaluateParser: engine status names become exit codes; success needs both output files (from ``retrieved``)."""

from __future__ import annotations

import io
import json

from aiida import orm
from aiida.common.links import LinkType

from aiida_nmcml.calculations.evaluate import EvaluateCalculation
from aiida_nmcml.parsers.evaluate import EvaluateParser

EXIT = EvaluateCalculation.exit_codes


def make_node(files: dict[str, bytes], computer):
    node = orm.CalcJobNode(computer=computer, process_type='aiida.calculations:nmcml.evaluate')
    node.set_option('resources', {'num_machines': 1, 'num_mpiprocs_per_machine': 1})
    node.store()
    retrieved = orm.FolderData()
    for name, content in files.items():
        retrieved.base.repository.put_object_from_filelike(io.BytesIO(content), name)
    retrieved.base.links.add_incoming(node, link_type=LinkType.CREATE, link_label='retrieved')
    retrieved.store()
    return node


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

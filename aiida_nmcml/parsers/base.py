"""Base parser for engine calcjobs: reads ``engine_status.json`` from ``retrieved`` only, never the remote folder."""

from __future__ import annotations

import json

from aiida import orm
from aiida.parsers import Parser

from ..engine.common import STATUS_FILENAME

STATUS_TO_EXIT_CODE = {
    'invalid_input': 'ERROR_INVALID_INPUT',
    'model_hash_mismatch': 'ERROR_MODEL_HASH_MISMATCH',
    'model_corrupt': 'ERROR_MODEL_CORRUPT',
    'nan_forces': 'ERROR_NAN_FORCES',
    'out_of_memory': 'ERROR_OUT_OF_MEMORY',
    'device_unavailable': 'ERROR_DEVICE_UNAVAILABLE',
    'internal_error': 'ERROR_ENGINE_INTERNAL',
}


class EngineParser(Parser):
    """Subclasses implement :meth:`parse_outputs` and may extend ``status_to_exit_code`` (e.g. MD stop rules).

    ``parse_outputs`` runs also for statuses in ``keep_outputs_on`` (a stopped MD keeps its frames), and its
    return value, if an exit code, wins.
    """

    status_to_exit_code: dict[str, str] = {}
    keep_outputs_on: tuple[str, ...] = ()

    def read_json(self, name: str):
        with self.retrieved.base.repository.open(name) as handle:
            return json.load(handle)

    def has_file(self, name: str) -> bool:
        return name in self.retrieved.base.repository.list_object_names()

    def parse(self, **kwargs):
        if not self.has_file(STATUS_FILENAME):
            return self.exit_codes.ERROR_MISSING_STATUS_FILE
        status = self.read_json(STATUS_FILENAME)
        self.out('engine_status', orm.Dict(status))
        name = status.get('status', 'internal_error')
        mapping = {**STATUS_TO_EXIT_CODE, **self.status_to_exit_code}
        if name != 'ok' and name not in self.keep_outputs_on:
            exit_code = getattr(self.exit_codes, mapping.get(name, 'ERROR_ENGINE_INTERNAL'))
            return exit_code.format(message=status.get('message', ''))
        result = self.parse_outputs(status)
        if result is not None:
            return result
        if name != 'ok':
            return getattr(self.exit_codes, mapping[name]).format(message=status.get('message', ''))
        return None

    def parse_outputs(self, status: dict):
        raise NotImplementedError

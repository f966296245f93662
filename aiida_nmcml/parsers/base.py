"""Base parser for engine calcjobs: reads ``engine_status.json`` from ``retrieved`` only, never the remote folder."""

from __future__ import annotations

import json

from aiida import orm
from aiida.parsers import Parser

from ..common.exit_codes import ENGINE_STATUS_TO_LABEL
from ..engine.common import STATUS_FILENAME
from .scheduler import scheduler_exit_code

# Engine status names -> exit-code labels, from the one table (aiida_nmcml/common/exit_codes.py).
STATUS_TO_EXIT_CODE = dict(ENGINE_STATUS_TO_LABEL)


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
            # Killed before the engine could write its status: the scheduler's own verdict (e.g. 120 out of
            # walltime) is more specific than ours, as in aiida-qe's PwParser; read from any line of the retrieved
            # scheduler stderr, not only the first (parsers/scheduler.py says why).
            return scheduler_exit_code(self) or self.exit_codes.ERROR_MISSING_STATUS_FILE
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

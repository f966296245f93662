"""Parser of ``nmcml.evaluate``: arrays and metrics from ``retrieved`` only."""

from __future__ import annotations

import io

import numpy as np
from aiida import orm

from ..engine.evaluate import ARRAY_KEYS, ARRAYS_FILENAME, METRICS_FILENAME
from .base import EngineParser


class EvaluateParser(EngineParser):
    def parse_outputs(self, status: dict):
        missing = [name for name in (ARRAYS_FILENAME, METRICS_FILENAME) if not self.has_file(name)]
        if missing:
            return self.exit_codes.ERROR_MISSING_OUTPUT_FILES.format(files=', '.join(missing))
        content = self.retrieved.base.repository.get_object_content(ARRAYS_FILENAME, mode='rb')
        predictions = orm.ArrayData()
        with np.load(io.BytesIO(content)) as data:
            for key in ARRAY_KEYS:
                if key in data:
                    predictions.set_array(key, data[key])
        metrics = self.read_json(METRICS_FILENAME)
        calibration = metrics.pop('calibration', None)
        self.out('predictions', predictions)
        self.out('metrics', orm.Dict(metrics))
        if calibration and calibration.get('slope') is not None:
            self.out('calibration', orm.Dict(calibration))
        return None

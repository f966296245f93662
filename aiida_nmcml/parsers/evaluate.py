"""Parser of ``nmcml.evaluate``: arrays and metrics from ``retrieved`` only.

The calibration (a Dict) and its reliability curve (an ArrayData) are outputs of their own so that active learning
reads the scale and trust levels from the graph. A committee without spread (engine status ``negligible_spread``)
keeps its predictions and metrics but gets no calibration, and the job fails with its own exit code.
"""

from __future__ import annotations

import io

import numpy as np
from aiida import orm

from ..engine.evaluate import ARRAY_KEYS, ARRAYS_FILENAME, METRICS_FILENAME
from .base import EngineParser


class EvaluateParser(EngineParser):
    status_to_exit_code = {'negligible_spread': 'ERROR_NEGLIGIBLE_SPREAD'}
    keep_outputs_on = ('negligible_spread',)

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
        if calibration and not calibration.get('negligible_spread') and calibration.get('n_atoms'):
            curve = calibration.pop('reliability', None) or {}
            self.out('calibration', orm.Dict(calibration))
            if curve.get('lower'):
                self.out('reliability', reliability_array(curve))
        return None


def reliability_array(curve: dict) -> orm.ArrayData:
    """The binned reliability curve (see ``analysis.metrics.reliability_curve``) as one array per column."""
    array = orm.ArrayData()
    for key, values in curve.items():
        array.set_array(key, np.asarray(values))
    return array

"""``nmcml.evaluate``: a committee's predictions on a TrainingSet, parity against DFT and the deviation calibration.

The calibration (true force error ≈ k · committee deviation, fit through the origin) is an output of its own so the
active-learning selection can read ``k`` from the graph instead of trusting literature thresholds blindly.
"""

from __future__ import annotations

from ..data.trainingset import TrainingSet
from ..engine.evaluate import ARRAYS_FILENAME, METRICS_FILENAME
from .base import EngineCalculation

FRAMES_FILENAME = 'frames.xyz'


class EvaluateCalculation(EngineCalculation):
    _subcommand = 'evaluate'
    _retrieve = (ARRAYS_FILENAME, METRICS_FILENAME)

    @classmethod
    def define(cls, spec):
        from aiida import orm

        super().define(spec)
        spec.input('frames', valid_type=TrainingSet, help='Frames to predict; REF_* labels enable parity metrics.')
        spec.inputs['models'].required = True
        spec.inputs.validator = cls.validate_inputs
        spec.output('predictions', valid_type=orm.ArrayData, help='Per-frame and per-atom committee predictions.')
        spec.output('metrics', valid_type=orm.Dict, help='Parity (RMSE/MAE) of the committee mean and each member.')
        spec.output(
            'calibration',
            valid_type=orm.Dict,
            required=False,
            help='error ≈ slope · max force deviation (through the origin); committees of ≥ 2 only.',
        )
        spec.default_output_node = 'metrics'

    @staticmethod
    def validate_inputs(inputs, ctx):
        if 'models' not in ctx or 'frames' not in ctx:  # exposed in a work chain that supplies them later
            return None
        models = inputs.get('models', {})
        if not models:
            return 'give at least one model in the `models` namespace'
        frames = inputs.get('frames')
        if frames is not None:
            if not frames.num_frames:
                return 'the frames TrainingSet is empty'
            for key, model in models.items():
                missing = model.missing_elements(frames.elements) if hasattr(model, 'missing_elements') else []
                if missing:
                    return f'model {key} has no {missing}, present in the frames: it cannot predict them'
        return None

    def write_inputs(self, folder, config: dict) -> dict:
        config['frames'] = FRAMES_FILENAME
        return config

    def prepare_for_submission(self, folder):
        calcinfo = super().prepare_for_submission(folder)
        frames = self.inputs.frames
        calcinfo.local_copy_list.append((frames.uuid, frames.filename, FRAMES_FILENAME))
        return calcinfo

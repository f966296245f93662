"""``nmcml.evaluate``: a committee's predictions on a TrainingSet, parity against DFT and the deviation calibration.

The calibration (per atom: the maximum-likelihood scale of the committee variance, Spearman's rho, trust levels) and
its binned reliability curve are outputs of their own so the active-learning selection reads them from the graph
instead of trusting literature thresholds blindly. A committee whose spread is negligible is refused (exit code
``ERROR_NEGLIGIBLE_SPREAD``) rather than calibrated: see ``aiida_nmcml.analysis.metrics.calibrate_committee``.
"""

from __future__ import annotations

from ..data.trainingset import TrainingSet
from ..engine.evaluate import ARRAYS_FILENAME, METRICS_FILENAME
from .base import EngineCalculation


def declare_negligible_spread(spec) -> None:
    """The exit code of a committee whose spread is too small to calibrate (shared with nmcml.finetune)."""
    from ..common import exit_codes

    exit_codes.declare(spec, 'ERROR_NEGLIGIBLE_SPREAD')


FRAMES_FILENAME = 'frames.xyz'


class EvaluateCalculation(EngineCalculation):
    _subcommand = 'evaluate'
    _retrieve = (ARRAYS_FILENAME, METRICS_FILENAME)

    @classmethod
    def define(cls, spec):
        from aiida import orm

        super().define(spec)
        spec.input('frames', valid_type=TrainingSet, help='Frames to predict; REF_* labels enable parity metrics.')
        spec.inputs['models'].required = False  # a universal potential by name replaces the models (zero-shot)
        spec.input(
            'universal_potential',
            valid_type=orm.Str,
            required=False,
            help='Zero-shot baseline instead of `models`: chgnet, or sevennet-0 when installed. Its energies carry '
            'Materials Project corrections, so they are compared only as differences (metrics `energy_differences`).',
        )
        spec.inputs.validator = cls.validate_inputs
        spec.output('predictions', valid_type=orm.ArrayData, help='Per-frame and per-atom committee predictions.')
        spec.output('metrics', valid_type=orm.Dict, help='Parity (RMSE/MAE) of the committee mean and each member.')
        spec.output(
            'calibration',
            valid_type=orm.Dict,
            required=False,
            help='Per-atom calibration of the spread: alpha (ML scale), Spearman rho, trust levels; committees of ≥ 2.',
        )
        spec.output(
            'reliability',
            valid_type=orm.ArrayData,
            required=False,
            help='Binned RMS force error against binned committee deviation (per atom), with P(error > tolerance).',
        )
        spec.default_output_node = 'metrics'
        declare_negligible_spread(spec)

    @staticmethod
    def validate_inputs(inputs, ctx):
        if 'parameters' in inputs:
            from ..engine.evaluate import parameters_schema

            errors = parameters_schema().errors(inputs['parameters'])
            if errors:
                return '; '.join(errors)
        if 'models' not in ctx or 'frames' not in ctx:  # exposed in a work chain that supplies them later
            return None
        models = inputs.get('models', {})
        universal = inputs.get('universal_potential')
        if universal is not None:
            from ..engine.teacher import TEACHERS

            if models:
                return 'give either `models` or `universal_potential`, not both'
            if universal.value not in TEACHERS:
                return f'unknown universal_potential {universal.value!r}: choose one of {", ".join(TEACHERS)}'
            return None
        if not models:
            return 'give at least one model in the `models` namespace (or a `universal_potential` by name)'
        frames = inputs.get('frames')
        if frames is not None:
            if not frames.num_frames:
                return 'the frames TrainingSet is empty'
            for key, model in models.items():
                missing = model.missing_elements(frames.elements)
                if missing:
                    return f'model {key} has no {missing}, present in the frames: it cannot predict them'
        return None

    def write_inputs(self, folder, config: dict) -> dict:
        config['frames'] = FRAMES_FILENAME
        if 'universal_potential' in self.inputs:
            config['universal_potential'] = self.inputs.universal_potential.value
        return config

    def prepare_for_submission(self, folder):
        calcinfo = super().prepare_for_submission(folder)
        frames = self.inputs.frames
        calcinfo.local_copy_list.append((frames.uuid, frames.filename, FRAMES_FILENAME))
        return calcinfo

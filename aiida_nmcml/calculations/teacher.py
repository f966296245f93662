"""``nmcml.teacher.label``: frames labelled by a universal potential (CHGNet, SevenNet-0) in an engine job.

The job runs ``aiida-nmcml-engine label`` (:mod:`aiida_nmcml.engine.teacher`). Its output TrainingSet records the
teacher's name, version and weights sha256 on every frame and in the node's ``teacher`` attribute, and the ``teacher``
Dict output is the same identity as a node, so a model trained on it names its teacher through the graph.
Teacher labels are never DFT: ``engine='teacher'`` in every frame keeps them out of DFT TrainingSets.

With one ``models`` entry (a student MACE model) and ``parameters.explore``, the student runs NPT MD from every
frame and the teacher labels what it visits (:mod:`aiida_nmcml.engine.teacher_explore`): the refinement rounds of
``nmcml.distill``.
"""

from __future__ import annotations

from aiida import orm

from ..common import exit_codes
from ..common.schema import Field, Section, port_validator
from ..data.trainingset import TrainingSet
from ..engine.teacher import (
    EXPLORE_SCHEMA,
    IDENTITY_FILENAME,
    LABELLED_FILENAME,
    MD_SCHEMA,
    SUMMARY_FILENAME,
    TEACHERS,
)
from ..engine.teacher_explore import explore_requested
from .base import EngineCalculation

FRAMES_FILENAME = 'frames.xyz'

#: What a user may set in ``parameters`` (``frames``, ``teacher``, ``models`` and ``device`` come from input nodes).
PARAMETERS_SCHEMA = Section(
    {
        'max_force': Field(
            float,
            default=50.0,
            min=0.0,
            min_exclusive=True,
            unit='eV/Å',
            help='frames with a larger teacher force are dropped and listed',
        ),
        'md': MD_SCHEMA,
        'explore': EXPLORE_SCHEMA,
    }
)


class TeacherLabelCalculation(EngineCalculation):
    _subcommand = 'label'
    _retrieve = (LABELLED_FILENAME, IDENTITY_FILENAME, SUMMARY_FILENAME)

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.inputs['metadata']['options']['parser_name'].default = 'nmcml.teacher.label'
        spec.input(
            'frames', valid_type=TrainingSet, help='Structures to label; info md_seed=True also seeds teacher MD.'
        )
        spec.input(
            'teacher',
            valid_type=orm.Str,
            default=lambda: orm.Str('chgnet'),
            validator=lambda value, _: (
                None
                if value.value in TEACHERS
                else f'unknown teacher {value.value!r}: choose one of {", ".join(TEACHERS)}'
            ),
            help='Universal potential whose weights ship in its wheel: chgnet, or sevennet-0 (pip extra [sevennet]).',
        )
        spec.inputs['parameters'].validator = port_validator(PARAMETERS_SCHEMA)
        spec.inputs.validator = cls.validate_inputs
        spec.output('labelled', valid_type=TrainingSet, help='The frames with the teacher labels (REF_*).')
        spec.output('teacher_identity', valid_type=orm.Dict, help='Teacher name, versions and weights sha256.')
        spec.output('summary', valid_type=orm.Dict, help='Counts, dropped frames and timings.')
        spec.default_output_node = 'summary'
        exit_codes.declare(spec, 'ERROR_TEACHER_UNAVAILABLE', 'ERROR_MIXED_LABELS')  # docs/dev/exit_codes.md

    @staticmethod
    def validate_inputs(inputs, ctx):
        if 'frames' not in ctx:
            return None
        models = inputs.get('models') or {}
        if len(models) > 1:
            return 'give at most one model: the student whose NPT runs the teacher labels (`parameters.explore`)'
        explore = (inputs['parameters'].get_dict() if 'parameters' in inputs else {}).get('explore', {})
        if explore_requested(explore) and not models:
            return '`parameters.explore` needs the student: give it as `models`'
        frames = inputs.get('frames')
        if frames is not None and not frames.num_frames:
            return 'the frames TrainingSet is empty'
        return None

    def write_inputs(self, folder, config: dict) -> dict:
        config['frames'] = FRAMES_FILENAME
        config['teacher'] = self.inputs.teacher.value
        return config

    def prepare_for_submission(self, folder):
        calcinfo = super().prepare_for_submission(folder)
        frames = self.inputs.frames
        calcinfo.local_copy_list.append((frames.uuid, frames.filename, FRAMES_FILENAME))
        return calcinfo

"""Parser of ``nmcml.teacher.label``: a TrainingSet that names its teacher, from ``retrieved`` only."""

from __future__ import annotations

import io

from aiida import orm

from ..data.trainingset import MixedSettingsError, TrainingSet
from ..engine.teacher import IDENTITY_FILENAME, LABELLED_FILENAME, SUMMARY_FILENAME
from .base import EngineParser


class TeacherLabelParser(EngineParser):
    status_to_exit_code = {'teacher_unavailable': 'ERROR_TEACHER_UNAVAILABLE'}

    def parse_outputs(self, status: dict):
        from ase.io import read

        missing = [n for n in (LABELLED_FILENAME, IDENTITY_FILENAME, SUMMARY_FILENAME) if not self.has_file(n)]
        if missing:
            return self.exit_codes.ERROR_MISSING_OUTPUT_FILES.format(files=', '.join(missing))
        identity = self.read_json(IDENTITY_FILENAME)
        text = self.retrieved.base.repository.get_object_content(LABELLED_FILENAME, mode='r')
        frames = read(io.StringIO(text), index=':', format='extxyz')
        try:
            labelled = TrainingSet.from_frames(frames)
        except (MixedSettingsError, ValueError) as exc:
            return self.exit_codes.ERROR_MIXED_LABELS.format(message=str(exc))
        # the identity on the node too, so a query finds teacher-labelled sets without reading files
        labelled.base.attributes.set('teacher', identity)
        self.out('labelled', labelled)
        self.out('teacher_identity', orm.Dict(identity))
        self.out('summary', orm.Dict(self.read_json(SUMMARY_FILENAME)))
        return None

"""Parser of ``nmcml.md``: trajectory, uncertainty and thermo series, candidate frames, checkpoint, summary.

Reads only ``retrieved``. A run stopped by a stop rule keeps its outputs (``keep_outputs_on``) and then gets the
rule's exit code, so a work chain can harvest the frames and still see why the run ended.
"""

from __future__ import annotations

import io

from aiida import orm

from ..engine import md_io
from .base import EngineParser

STOP_STATUSES = {
    'uncertainty_exceeded': 'ERROR_UNCERTAINTY_EXCEEDED',
    'atoms_too_close': 'ERROR_ATOMS_TOO_CLOSE',
    'temperature_runaway': 'ERROR_TEMPERATURE_RUNAWAY',
    # not a rule (it fires whatever the rules say), but the frames written before the blow-up are kept the same way
    'non_finite': 'ERROR_NON_FINITE',
}


def table_to_arraydata(text: str) -> orm.ArrayData:
    node = orm.ArrayData()
    for name, column in md_io.parse_table(text).items():
        node.set_array(name, column.astype(int) if name == 'step' else column)
    return node


class MdParser(EngineParser):
    status_to_exit_code = STOP_STATUSES
    keep_outputs_on = tuple(STOP_STATUSES)

    def _text(self, name: str) -> str:
        return self.retrieved.base.repository.get_object_content(name, mode='r')

    def _bytes(self, name: str) -> bytes:
        return self.retrieved.base.repository.get_object_content(name, mode='rb')

    def parse_outputs(self, status: dict):
        from ase.io import read

        missing = [n for n in (md_io.SUMMARY, md_io.THERMO) if not self.has_file(n)]
        if status['status'] == 'ok' and not self.has_file(md_io.TRAJECTORY):
            missing.append(md_io.TRAJECTORY)
        if missing:
            return self.exit_codes.ERROR_MISSING_OUTPUT_FILES.format(files=', '.join(missing))
        self.out('output_parameters', orm.Dict(self.read_json(md_io.SUMMARY)))
        self.out('thermo', table_to_arraydata(self._text(md_io.THERMO)))
        if self.has_file(md_io.UNCERTAINTY):
            self.out('uncertainty', table_to_arraydata(self._text(md_io.UNCERTAINTY)))
        if self.has_file(md_io.TRAJECTORY):
            self.out(
                'trajectory', orm.SinglefileData(io.BytesIO(self._bytes(md_io.TRAJECTORY)), filename=md_io.TRAJECTORY)
            )
        if self.has_file(md_io.CHECKPOINT):
            self.out(
                'checkpoint', orm.SinglefileData(io.BytesIO(self._bytes(md_io.CHECKPOINT)), filename=md_io.CHECKPOINT)
            )
        if self.has_file(md_io.CANDIDATES):
            from ..data.trainingset import TrainingSet

            frames = read(io.StringIO(self._text(md_io.CANDIDATES)), ':', format='extxyz')
            if frames:
                self.out('candidates', TrainingSet.from_frames(frames))
        if self.has_file(md_io.STOP_FRAME):
            from ..structures import to_structure_data

            atoms = read(io.StringIO(self._text(md_io.STOP_FRAME)), format='extxyz')
            # keep moments and sublattice labels; a plain structure stays plain (no invented zero moments)
            labelled = any(key in atoms.arrays for key in md_io.CARRIED_ARRAYS)
            self.out('stop_structure', to_structure_data(atoms) if labelled else orm.StructureData(ase=atoms))
        return None

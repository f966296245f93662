"""Parser of ``nmcml.mace.train``: reads only the ``retrieved`` folder.

Sources, in the order they are trusted:

* ``results/<name>_run-<seed>_train.txt`` — one JSON line per optimiser step / evaluation, written by mace-torch:
  the per-epoch validation curve, and the NaN detector (mace-torch keeps training through a NaN loss and exits 0).
* the error table at the end of stdout — final RMSE on train and valid (meV units there, eV here).
* stderr — the reason for a crash (out of memory, no CUDA device, empty data file).
"""

from __future__ import annotations

import io
import json
import math
import re

import numpy as np
from aiida import orm
from aiida.parsers import Parser

from ..calculations.train import (
    HASH_CHECK_FILENAME,
    METADATA_FILENAME,
    MODEL_NAME,
    STDERR_FILENAME,
    STDOUT_FILENAME,
)
from ..data.model import MaceModel, ModelHashMismatch
from .scheduler import scheduler_exit_code

EV_PER_A3_TO_GPA = 160.21766208  # stress RMSE reported in GPa next to eV/Å^3

# Error-table column headers of mace-torch -> (metric key, factor to eV units)
TABLE_COLUMNS = {
    'RMSE E / meV / atom': ('rmse_e_per_atom', 1e-3),
    'RMSE F / meV / A': ('rmse_f', 1e-3),
    'relative F RMSE %': ('rel_rmse_f', 1.0),
    'RMSE Stress (Virials) / meV / A (A^3)': ('rmse_stress', 1e-3),
    'MAE E / meV / atom': ('mae_e_per_atom', 1e-3),
    'MAE F / meV / A': ('mae_f', 1e-3),
    'relative F MAE %': ('rel_mae_f', 1.0),
    'MAE Stress (Virials) / meV / A (A^3)': ('mae_stress', 1e-3),
    'RMSE E / meV': ('rmse_e', 1e-3),
    'MAE E / meV': ('mae_e', 1e-3),
}
CURVE_KEYS = ('loss', 'rmse_e_per_atom', 'mae_e_per_atom', 'rmse_f', 'mae_f', 'rmse_stress', 'mae_stress')


def parse_results_lines(text: str) -> list[dict]:
    """mace-torch writes bare ``NaN`` tokens; Python's json accepts them, so NaN survives as float('nan')."""
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def parse_error_table(text: str) -> dict[str, dict[str, float]]:
    """The last ``Error-table`` block of the log as ``{'train': {...}, 'valid': {...}}`` (head suffix dropped)."""
    start = text.rfind('Error-table')
    if start < 0:
        return {}
    header, result = None, {}
    for line in text[start:].splitlines()[1:]:
        if line.startswith('+'):
            continue
        if not line.startswith('|'):
            if header is not None:
                break
            continue
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if header is None:
            header = cells
            continue
        label = cells[0]
        subset, _, head = label.partition('_')
        row = {}
        for name, cell in zip(header[1:], cells[1:], strict=False):
            if name in TABLE_COLUMNS:
                key, factor = TABLE_COLUMNS[name]
                try:
                    row[key] = float(cell) * factor
                except ValueError:
                    row[key] = None
        row['head'] = head
        result.setdefault(subset, row)
    return result


def _finite(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


class MaceTrainParser(Parser):
    def _names(self) -> list[str]:
        return self.retrieved.base.repository.list_object_names()

    def _read(self, name: str, mode: str = 'r'):
        return self.retrieved.base.repository.get_object_content(name, mode=mode)

    def parse(self, **kwargs):
        names = self._names()
        stderr = self._read(STDERR_FILENAME) if STDERR_FILENAME in names else ''
        stdout = self._read(STDOUT_FILENAME) if STDOUT_FILENAME in names else ''
        seed = int(self.node.inputs.seed.value)
        results_name = f'{MODEL_NAME}_run-{seed}_train.txt'
        rows = parse_results_lines(self._read(results_name)) if results_name in names else []

        if HASH_CHECK_FILENAME in names:
            return self.exit_codes.ERROR_MODEL_HASH_MISMATCH.format(detail=self._read(HASH_CHECK_FILENAME).strip())

        evals = [r for r in rows if r.get('mode') == 'eval']
        head = self._fitted_head(evals)
        curve = [r for r in evals if r.get('epoch') is not None and r.get('head', 'Default') == head]
        metrics = {'valid': self._last_valid(curve), 'epochs': len(curve), 'head': head}
        table = parse_error_table(stdout)
        if 'train' in table:
            metrics['train'] = table['train']
        if 'valid' in table:
            metrics['valid'] = {**table['valid'], **metrics['valid']}
        if curve:
            self.out('learning_curve', self._curve_array(curve))
        if 'parent_folder' in self.node.inputs:
            metrics['restart'] = self._restart_record(stdout, curve)
        if 'e0s' in self.node.inputs:
            # what the model's energy reference rests on, next to its errors (rank deficiency, absent elements)
            e0s = self.node.inputs.e0s.get_dict()
            metrics['e0s_warning'] = e0s.get('warning')
            metrics['e0s_rank_deficient'] = e0s.get('rank_deficient')
        for subset in ('train', 'valid'):
            stress = metrics.get(subset, {}).get('rmse_stress')
            if isinstance(stress, int | float) and math.isfinite(stress):
                metrics[subset]['rmse_stress_GPa'] = stress * EV_PER_A3_TO_GPA

        nan_rows = [r for r in rows if not _finite(r.get('loss'))]
        if nan_rows:
            # The model file exists (mace-torch exits 0) but holds NaN weights: keep the metrics, not the model.
            self.out('metrics', orm.Dict(self._clean(metrics)))
            return self.exit_codes.ERROR_NAN_LOSS.format(epoch=nan_rows[0].get('epoch'))

        model_name = f'{MODEL_NAME}.model'
        if model_name not in names:
            return self._diagnose_failure(stderr, stdout)

        metadata = json.loads(self._read(METADATA_FILENAME)) if METADATA_FILENAME in names else None
        if metadata is None:  # the job could not summarise it (no Python found next to mace_run_train)
            self.logger.warning(f'no {METADATA_FILENAME} retrieved: reading the model file itself for its metadata')
        try:
            model = MaceModel.from_bytes(
                self._read(model_name, mode='rb'), filename=model_name, source='training', metadata=metadata
            )
        except ModelHashMismatch as exc:  # the summary describes other bytes than the retrieved model
            return self.exit_codes.ERROR_MODEL_HASH_MISMATCH.format(detail=str(exc))
        self.out('model', model)
        compiled = f'{MODEL_NAME}_compiled.model'
        if compiled in names:
            content = io.BytesIO(self._read(compiled, mode='rb'))
            self.out('compiled_model', orm.SinglefileData(content, filename=compiled))
        self.out('metrics', orm.Dict(self._clean(metrics)))
        return None

    def _restart_record(self, stdout: str, curve: list[dict]) -> dict:
        """Which checkpoint a continued training loaded, and from which epoch it went on.

        Why: AiiDA skips a parent ``checkpoints/`` that is gone (a purged scratch) with only a warning, and mace's
        ``restart_latest`` then starts from epoch 0 without complaint: a model that is still valid, but a restart that
        redid the work. The metrics say so, and the job's log warns.
        """
        before_training = stdout.split('Started training', 1)[0]  # after training mace loads its best checkpoint too
        found = re.search(r'Loading checkpoint: (\S+)', before_training)
        record = {
            'checkpoint': found.group(1) if found else None,
            'start_epoch': curve[0].get('epoch') if curve else None,
        }
        if found is None:
            self.logger.warning(
                'restart from parent_folder requested but mace found no checkpoint there (scratch purged?): '
                'this job trained from epoch 0'
            )
        return record

    @staticmethod
    def _fitted_head(evals: list[dict]) -> str:
        """The head trained on the user's data: ``Default`` unless mace-torch named it otherwise (never pt_head)."""
        heads = [r.get('head', 'Default') for r in evals if r.get('head') != 'pt_head']
        return heads[-1] if heads else 'Default'

    @staticmethod
    def _last_valid(curve: list[dict]) -> dict:
        if not curve:
            return {}
        last = curve[-1]
        return {k: last.get(k) for k in CURVE_KEYS if k in last}

    @staticmethod
    def _curve_array(curve: list[dict]) -> orm.ArrayData:
        array = orm.ArrayData()
        array.set_array('epoch', np.array([int(r['epoch']) for r in curve]))
        for key in CURVE_KEYS:
            if all(key in r and r[key] is not None for r in curve):
                array.set_array(key, np.array([float(r[key]) for r in curve]))
        return array

    @staticmethod
    def _clean(obj):
        if isinstance(obj, float) and not math.isfinite(obj):
            return None
        if isinstance(obj, dict):
            return {k: MaceTrainParser._clean(v) for k, v in obj.items()}
        return obj

    def _diagnose_failure(self, stderr: str, stdout: str):
        """No model file: name the reason from stderr, or from the inputs when they explain it."""
        tail = '\n'.join((stderr or stdout).strip().splitlines()[-5:])
        lowered = stderr.lower()
        if 'out of memory' in lowered or 'outofmemoryerror' in lowered:
            return self.exit_codes.ERROR_OUT_OF_MEMORY.format(detail=tail)
        if 'no cuda device available' in lowered or 'no cuda gpus are available' in lowered:
            return self.exit_codes.ERROR_DEVICE_UNAVAILABLE.format(detail=tail)
        scheduler = scheduler_exit_code(self)
        if scheduler is not None:
            # Killed by the scheduler (e.g. 120 out of walltime): its verdict, as in aiida-qe's PwParser.
            return scheduler
        inputs = self.node.inputs
        if 'foundation_model' in inputs:
            needed = set(inputs.training_set.elements)
            if 'validation_set' in inputs:
                needed |= set(inputs.validation_set.elements)
            missing = inputs.foundation_model.missing_elements(needed)
            if missing:
                return self.exit_codes.ERROR_FOUNDATION_MISSING_ELEMENTS.format(missing=missing)
        if re.search(r'empty file|no training data|0 configurations', stderr, flags=re.IGNORECASE):
            return self.exit_codes.ERROR_EMPTY_DATASET.format(detail=tail)
        if not stderr and not stdout:
            return self.exit_codes.ERROR_MISSING_OUTPUT_FILES.format(files=f'{STDOUT_FILENAME}, {STDERR_FILENAME}')
        return self.exit_codes.ERROR_TRAINING_FAILED.format(detail=tail)

"""The one exit-code table: unique numbers, nothing aiida-core reserves, every process agrees, docs generated."""

from __future__ import annotations

import pathlib

import pytest

from aiida_nmcml.common import exit_codes

DOC = pathlib.Path(__file__).parents[2] / 'docs' / 'dev' / 'exit_codes.md'


def test_doc_matches_code():
    """docs/dev/exit_codes.md is generated: regenerate with `python -m aiida_nmcml.common.exit_codes`."""
    assert DOC.read_text() == exit_codes.markdown()


def test_ranges_by_meaning():
    for entry in exit_codes.TABLE.values():
        assert entry.status not in exit_codes.RESERVED
        assert 200 <= entry.status < 800
    ranges = {label: entry.status // 100 for label, entry in exit_codes.TABLE.items()}
    assert ranges['ERROR_INVALID_INPUT'] == 2
    assert ranges['ERROR_MISSING_STATUS_FILE'] == 3
    assert ranges['ERROR_OUT_OF_MEMORY'] == ranges['ERROR_NAN_LOSS'] == 4
    assert ranges['ERROR_UNCERTAINTY_EXCEEDED'] == ranges['ERROR_GA_NOT_CONVERGED'] == 7


def test_every_engine_status_is_in_the_table():
    """Every status name the engine can write maps to a calcjob exit code (no silent fallback to 'internal')."""
    import re

    engine = pathlib.Path(exit_codes.__file__).parents[1] / 'engine'
    names = set()
    for path in engine.glob('*.py'):
        names |= set(re.findall(r"(?:EngineError|write_status)\(\s*'([a-z_]+)'", path.read_text()))
    names.discard('ok')
    assert names, 'no engine status found: the scan is broken'
    assert names <= set(exit_codes.ENGINE_STATUS_TO_LABEL), names - set(exit_codes.ENGINE_STATUS_TO_LABEL)


def _processes():
    """Every calcjob and work chain of the plugin, from its entry points (a new one is checked without edits here)."""
    from aiida.plugins.entry_point import get_entry_point_names, load_entry_point

    out = {}
    for group in ('aiida.calculations', 'aiida.workflows'):
        for name in get_entry_point_names(group):
            if name.startswith('nmcml.'):
                out[name] = load_entry_point(group, name)
    assert {'nmcml.md', 'nmcml.mace.train', 'nmcml.md.base', 'nmcml.finetune'} <= set(out)
    return out


def test_same_label_same_number_in_every_process():
    """Every process declares table labels with the table's number (aiida-core's own codes aside)."""
    seen = {}
    for name, process in _processes().items():
        for label, code in process.exit_codes.items():
            if code.status < 200 or code.status in exit_codes.RESERVED:
                continue
            assert label in exit_codes.TABLE, f'{name} declares {label}={code.status} outside the table'
            assert code.status == exit_codes.TABLE[label].status, (name, label)
            seen.setdefault(code.status, set()).add(label)
    assert all(len(labels) == 1 for labels in seen.values()), seen


@pytest.mark.parametrize('family', [None, 'train'])
def test_declare_uses_family_messages(family):
    class Spec:
        def __init__(self):
            self.codes = {}

        def exit_code(self, status, label, message):
            self.codes[label] = (status, message)

    spec = Spec()
    exit_codes.declare(spec, 'ERROR_OUT_OF_MEMORY', family=family)
    status, message = spec.codes['ERROR_OUT_OF_MEMORY']
    assert status == 410
    assert ('batch_size' in message) == (family == 'train')

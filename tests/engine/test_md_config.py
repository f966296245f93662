"""One source of truth for the MD settings: the engine's SCHEMA, the md.yaml protocols and the docs table agree."""

from __future__ import annotations

import pathlib
import re

import pytest
import yaml

from aiida_nmcml.engine.md_config import DEFAULTS, SCHEMA

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROTOCOLS = yaml.safe_load((ROOT / 'aiida_nmcml' / 'workflows' / 'protocols' / 'md.yaml').read_text())


def _flat(d: dict, prefix: str = '') -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flat(value, f'{prefix}{key}.'))
        else:
            out[f'{prefix}{key}'] = value
    return out


def test_protocol_defaults_do_not_restate_the_engine():
    """md.yaml's default_inputs carry no MD parameter (they used to disagree with the engine on dtype, checkpoint
    stride and the upper trust level), and no level sets a value equal to the engine default (it would be a second
    copy of the default)."""
    assert PROTOCOLS['default_inputs']['parameters'] == {}
    defaults = _flat(DEFAULTS)
    for name, level in PROTOCOLS['protocols'].items():
        for key, value in _flat(level.get('parameters', {})).items():
            assert defaults[key] != value, f'{name}: {key}={value} is the engine default; drop it from md.yaml'


@pytest.mark.parametrize('level', ['demo', 'fast', 'moderate', 'precise'])
def test_protocol_levels_are_valid_and_say_their_output_interval(level):
    """Each level passes the schema; a description that states an output interval states the true one
    (trajectory_stride x timestep_fs; 'moderate' once said 2 fs for a 20 fs interval)."""
    spec = PROTOCOLS['protocols'][level]
    parameters = spec.get('parameters', {})
    assert SCHEMA.errors(parameters) == []
    merged = SCHEMA.with_defaults(parameters)
    match = re.search(r'output every (\d+(?:\.\d+)?) fs', spec['description'])
    if match:
        assert float(match.group(1)) == merged['trajectory_stride'] * merged['timestep_fs']


def test_docs_table_is_generated_from_the_schema():
    text = (ROOT / 'docs' / 'md.md').read_text()
    table = text.split('<!-- md-schema-table: start -->\n', 1)[1].split('\n<!-- md-schema-table: end -->', 1)[0]
    assert table.strip() == SCHEMA.markdown().strip(), 'regenerate the table in docs/md.md with SCHEMA.markdown()'


def test_engine_defaults_are_physical():
    """The bare defaults pass their own schema (with a model), and the candidate band sits below the hard limit."""
    assert SCHEMA.errors({**DEFAULTS, 'models': ['m.model']}) == []
    assert DEFAULTS['uncertainty']['trust_upper'] < DEFAULTS['stop']['hard_limit']

"""The parameters schema helper: unknown keys name the closest valid key, values are checked against declared ranges."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from aiida_nmcml.common.schema import Field, SchemaError, Section, closest_key, port_validator

SCHEMA = Section(
    {
        'temperature_K': Field(float, default=300.0, min=0.0, min_exclusive=True, unit='K', help='thermostat'),
        'steps': Field(int, default=100, min=1),
        'ensemble': Field(str, default='nvt', choices=('nve', 'nvt', 'npt')),
        'seed': Field(int, nullable=True, default=None),
        'label': Field(str, default=''),
        'species': Field(list, items=str, default=[], min_length=0, max_length=3),
        'model': Field(str),
        'stop': Section(
            {
                'max_uncertainty': Field(float, min=0.0, nullable=True, default=None),
                'patience': Field(int, min=0, default=2),
            }
        ),
        'extra': Section({}, open=True),
    }
)


def test_valid_dict_has_no_errors():
    assert SCHEMA.errors({'model': 'm', 'temperature_K': 900, 'stop': {'patience': 0}}) == []


def test_unknown_key_names_closest():
    (message,) = SCHEMA.errors({'model': 'm', 'temprature_K': 900})
    assert "unknown key 'temprature_K'" in message
    assert "did you mean 'temperature_K'?" in message
    assert message.startswith('parameters:')


def test_unknown_key_nested_path_and_case():
    (message,) = SCHEMA.errors({'model': 'm', 'stop': {'Patience': 3}})
    assert message.startswith('parameters.stop:')
    assert "did you mean 'patience'?" in message


def test_unknown_key_without_close_match_lists_valid_keys():
    (message,) = SCHEMA.errors({'model': 'm', 'zzzzzz': 1})
    assert 'did you mean' not in message
    assert 'Valid keys:' in message and 'temperature_K' in message


@pytest.mark.parametrize(
    ('params', 'needle'),
    [
        ({'temperature_K': -300}, 'parameters.temperature_K: -300 is out of range; allowed: a number > 0 (K)'),
        ({'temperature_K': 0}, 'out of range'),
        ({'temperature_K': math.nan}, 'not finite'),
        ({'temperature_K': True}, 'is not a number'),
        ({'steps': 'ten'}, "parameters.steps: 'ten' (str) is not an integer"),
        ({'steps': 10.0}, 'is not an integer'),
        ({'steps': 0}, 'allowed: an integer >= 1'),
        ({'ensemble': 'nvtt'}, "did you mean 'nvt'?"),
        ({'seed': 'x'}, 'or null'),
        ({'label': None}, 'null is not allowed'),
        ({'species': ['Li', 3]}, 'parameters.species[1]: 3 (int) is not a string'),
        ({'species': ['Li', 'Ni', 'Co', 'Mn']}, 'length 4 is out of range'),
        ({'stop': {'max_uncertainty': -1}}, 'parameters.stop.max_uncertainty'),
        ({'stop': [1]}, 'is not a dict'),
    ],
)
def test_bad_values_name_key_and_range(params, needle):
    messages = SCHEMA.errors({'model': 'm', **params})
    assert len(messages) == 1, messages
    assert needle in messages[0]


def test_required_key_and_all_errors_reported():
    messages = SCHEMA.errors({'steps': 0, 'tempK': 1})
    assert len(messages) == 3
    assert any('parameters.model: required key is missing' in m for m in messages)


def test_open_section_accepts_anything():
    assert SCHEMA.errors({'model': 'm', 'extra': {'whatever': [1, 2]}}) == []


def test_not_a_dict_and_dict_node_duck_typing():
    assert SCHEMA.errors([1, 2]) == ['parameters: [1, 2] (list) is not a dict']

    class FakeDict:
        def get_dict(self):
            return {'model': 'm', 'temprature_K': 1}

    assert 'temprature_K' in SCHEMA.errors(FakeDict())[0]


def test_check_raises_with_all_messages():
    with pytest.raises(SchemaError) as info:
        SCHEMA.check_value({'model': 'm', 'steps': -1, 'ensemble': 'x'})
    assert len(info.value.errors) == 2


def test_cross_key_check():
    schema = Section(
        {'lo': Field(float, default=0.0), 'hi': Field(float, default=1.0)},
        check=lambda d: 'lo must be below hi' if d.get('lo', 0.0) >= d.get('hi', 1.0) else None,
    )
    assert schema.errors({'lo': 2.0}) == ['parameters: lo must be below hi']
    assert schema.errors({'lo': 0.5}) == []


def test_defaults_and_with_defaults():
    defaults = SCHEMA.defaults()
    assert defaults['temperature_K'] == 300.0
    assert defaults['stop'] == {'max_uncertainty': None, 'patience': 2}
    assert 'model' not in defaults
    full = SCHEMA.with_defaults({'model': 'm', 'stop': {'patience': 5}})
    assert full['stop'] == {'max_uncertainty': None, 'patience': 5}
    assert full['ensemble'] == 'nvt'
    assert full['model'] == 'm'


def test_port_validator_and_markdown():
    validator = port_validator(SCHEMA, 'md.parameters')
    assert validator(None, None) is None
    assert validator({'model': 'm'}, None) is None
    assert validator({'model': 'm', 'temprature_K': 1}, None).startswith('md.parameters: unknown key')
    table = SCHEMA.markdown()
    assert '| `stop.patience` | an integer >= 0 | `2` |' in table


def test_closest_key():
    assert closest_key('kpoint_distance', ['kpoints_distance', 'ecutwfc']) == 'kpoints_distance'
    assert closest_key('ECUTWFC', ['kpoints_distance', 'ecutwfc']) == 'ecutwfc'
    assert closest_key('xyz', ['kpoints_distance']) is None


def test_module_imports_without_aiida():
    """The engine may use the schema on the compute node: importing it must not import AiiDA."""
    code = 'import sys; import aiida_nmcml.common.schema; print("aiida" in sys.modules)'
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == 'False'

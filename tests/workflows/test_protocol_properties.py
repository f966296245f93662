"""Property test over the builders × protocols × overrides: only validation errors, never a deep traceback.

Hypothesis picks a work chain, a protocol level and overrides made by mutating the real protocol: one or two keys of
the resolved inputs (top level or nested) get a random value of any type (numbers out of range, strings, lists,
dicts, None), or a key is misspelt or invented. Whatever comes out must be one of

* a ``ValueError`` raised by the builder (the schemas, the override-key check, the builder's own refusals); or
* a builder whose inputs, validated as the engine validates them at submission (``spec().inputs.validate``), give
  either no error or a validation message; a validator must never raise.

and nothing may be stored on the way (no half-result). Nothing is submitted.
"""

from __future__ import annotations

import copy
import difflib

import pytest
from aiida import orm
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**6), max_value=10**6)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=6),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=2),
    max_leaves=4,
)


def _paths(inputs: dict, prefix=()) -> list[tuple]:
    """Every key path of the resolved protocol (dict values are also descended into)."""
    paths = []
    for key, value in inputs.items():
        paths.append((*prefix, key))
        if isinstance(value, dict) and len(prefix) < 2:
            paths.extend(_paths(value, (*prefix, key)))
    return paths


def _nest(path: tuple, value) -> dict:
    out = value
    for key in reversed(path):
        out = {key: out}
    return out


def _misspell(key: str, draw) -> str:
    if len(key) > 3 and draw(st.booleans()):
        i = draw(st.integers(min_value=1, max_value=len(key) - 2))
        return key[:i] + key[i + 1 :]  # a letter dropped: temprature_K
    return key + draw(st.sampled_from(['s', '_', 'x']))


@st.composite
def overrides_for(draw, inputs: dict) -> dict:
    paths = _paths(inputs)
    overrides: dict = {}
    for _ in range(draw(st.integers(min_value=1, max_value=2))):
        path = draw(st.sampled_from(paths))
        if draw(st.integers(min_value=0, max_value=3)) == 0:  # a misspelt key, same value
            path = (*path[:-1], _misspell(str(path[-1]), draw))
        value = draw(VALUES)
        overrides = _merge(overrides, _nest(path, value))
    return overrides


def _merge(left: dict, right: dict) -> dict:
    merged = copy.deepcopy(left)
    for key, value in right.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _count_nodes() -> int:
    return orm.QueryBuilder().append(orm.Node).count()


@pytest.fixture(scope='module')
def builders(nmcml_codes, toy_frames):
    """``name -> (work chain class, protocol inputs of a level, build(protocol, overrides))``."""
    from aiida_nmcml.data.trainingset import TrainingSet
    from aiida_nmcml.structures import layered_parent
    from aiida_nmcml.workflows.finetune import FinetuneWorkChain
    from aiida_nmcml.workflows.ga_base import GaBaseWorkChain
    from aiida_nmcml.workflows.label import LabelWorkChain
    from aiida_nmcml.workflows.md_base import MdBaseWorkChain
    from aiida_nmcml.workflows.search import SearchWorkChain
    from aiida_nmcml.workflows.train_base import MaceTrainBaseWorkChain

    engine, train, pw = nmcml_codes['engine'], nmcml_codes['mace_train'], nmcml_codes['pw']
    family = nmcml_codes['pseudo_family']
    structure = orm.StructureData(ase=layered_parent()).store()
    training_set = TrainingSet.from_frames(toy_frames[:6]).store()
    lattice = {'supercell': [2, 2, 1], 'x_li': 1.0, 'composition': {'Ni': 1.0}, 'seed': 0}

    def label(protocol, overrides):
        overrides = _merge({'qe': {'pseudo_family': family}}, overrides)
        return LabelWorkChain.get_builder_from_protocol(pw, [structure], protocol=protocol, overrides=overrides)

    return {
        'nmcml.md.base': (
            MdBaseWorkChain,
            lambda p, o: MdBaseWorkChain.get_builder_from_protocol(engine, structure, protocol=p, overrides=o),
        ),
        'nmcml.ga.base': (
            GaBaseWorkChain,
            lambda p, o: GaBaseWorkChain.get_builder_from_protocol(engine, lattice, protocol=p, overrides=o),
        ),
        'nmcml.mace.train.base': (
            MaceTrainBaseWorkChain,
            lambda p, o: MaceTrainBaseWorkChain.get_builder_from_protocol(train, training_set, protocol=p, overrides=o),
        ),
        'nmcml.finetune': (
            FinetuneWorkChain,
            lambda p, o: FinetuneWorkChain.get_builder_from_protocol(train, training_set, protocol=p, overrides=o),
        ),
        'nmcml.search': (
            SearchWorkChain,
            lambda p, o: SearchWorkChain.get_builder_from_protocol(engine, protocol=p, overrides=o),
        ),
        'nmcml.label': (LabelWorkChain, label),
    }


NAMES = ('nmcml.md.base', 'nmcml.ga.base', 'nmcml.mace.train.base', 'nmcml.finetune', 'nmcml.search', 'nmcml.label')


@pytest.mark.parametrize('name', NAMES)
def test_builders_refuse_with_validation_errors_only(builders, name):
    cls, build = builders[name]
    levels = sorted(cls.get_available_protocols())

    @settings(
        max_examples=10,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        phases=(Phase.explicit, Phase.generate),  # no shrinking: the failing example is printed as drawn
    )
    @given(data=st.data())
    def check(data):
        level = data.draw(st.sampled_from(levels))
        overrides = data.draw(overrides_for(cls.get_protocol_inputs(level)))
        before = _count_nodes()
        try:
            builder = build(level, overrides)
        except ValueError:
            return  # refused by a schema or the override-key check, with a message
        finally:
            assert _count_nodes() == before, f'{name}: the builder stored nodes for {overrides}'
        message = cls.spec().inputs.validate(builder._inputs(prune=True))  # what submit() would check; no raise
        assert message is None or str(message)

    check()


@pytest.mark.parametrize('name', NAMES)
def test_misspelt_top_level_override_is_refused_naming_the_key(builders, name):
    """A misspelt top-level key is never merged silently: the error names the closest valid key."""
    cls, build = builders[name]
    inputs = cls.get_protocol_inputs()
    key = sorted(inputs)[0]
    typo = key[:-1] if len(key) > 3 else key + 'x'
    with pytest.raises(ValueError, match=rf"unknown key '{typo}'.*did you mean '{key}'") as info:
        build(None, {typo: inputs[key]})
    assert difflib.get_close_matches(typo, [key])  # the hint is a real neighbour, not any key
    assert info.value

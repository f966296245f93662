"""Every script in examples/ compiles, and each stage example's ``build()`` gives a builder that would be accepted.

Why: the examples are documentation that runs; nothing else imports them, so an API change (a renamed builder
argument, an override key a schema now refuses) would break them silently. Building is cheap: nothing is submitted
and nothing but the fixtures' inputs is stored. The inputs are the tests' tiny committee and toy frames, not DFT.
"""

from __future__ import annotations

import importlib
import pathlib
import py_compile
import sys

import pytest
from aiida import orm

EXAMPLES = pathlib.Path(__file__).parents[1] / 'examples'
STAGES = (
    'label_dft',
    'finetune_committee',
    'md_committee',
    'genetic_search',
    'active_learning',
    'diffusion',
    'barrier',
    'campaign',
)


def test_every_example_compiles_and_has_a_docstring():
    scripts = sorted(EXAMPLES.glob('*.py'))
    assert {f'{name}.py' for name in STAGES} <= {p.name for p in scripts}
    for path in scripts:
        py_compile.compile(str(path), doraise=True)
        if not path.name.startswith('_'):
            source = path.read_text()
            assert source.lstrip().startswith('"""'), f'{path.name}: no docstring saying what it runs'
            assert "if __name__ == '__main__':" in source, f'{path.name}: not runnable as a script'


@pytest.fixture(scope='module')
def examples():
    sys.path.insert(0, str(EXAMPLES))
    try:
        yield {name: importlib.import_module(name) for name in (*STAGES, 'scf_linio2')}
    finally:
        sys.path.remove(str(EXAMPLES))
        for name in (*STAGES, 'scf_linio2', '_common'):
            sys.modules.pop(name, None)


@pytest.fixture(scope='module')
def inputs(nmcml_codes, tiny_foundation_model, toy_frames):
    from aiida_nmcml.data.model import MaceModel
    from aiida_nmcml.data.trainingset import TrainingSet
    from aiida_nmcml.testing import toymodel

    committee = {
        'member_0': MaceModel.get_or_create(tiny_foundation_model),
        'member_1': MaceModel.get_or_create(toymodel.cached_tiny_mace(seed=2)),
    }
    training_set = TrainingSet.from_frames(toy_frames[:6]).store()
    return {'codes': nmcml_codes, 'committee': committee, 'training_set': training_set}


def _nodes() -> int:
    return orm.QueryBuilder().append(orm.Node).count()


@pytest.mark.parametrize('name', (*STAGES, 'scf_linio2'))
def test_example_builds_a_valid_builder_without_submitting(examples, inputs, name):
    codes, committee, training_set = inputs['codes'], inputs['committee'], inputs['training_set']
    calls = {
        'label_dft': lambda m: m.build(codes),
        'finetune_committee': lambda m: m.build(codes, training_set, committee['member_0']),
        'md_committee': lambda m: m.build(codes, committee, steps=20),
        'genetic_search': lambda m: m.build(codes, committee, verify=True),
        'active_learning': lambda m: m.build(codes, committee, training_set, committee['member_0']),
        'diffusion': lambda m: m.build(codes, committee),
        'barrier': lambda m: m.build(codes, committee, dft_check=True),
        'campaign': lambda m: m.build(codes, committee['member_0'], name='test/examples'),
        'scf_linio2': lambda m: m.build(codes),
    }
    before = _nodes()
    builder = calls[name](examples[name])
    ports = builder.process_class.spec().inputs
    # as the engine does at submission: defaults filled in (pre_process), then validated
    assert ports.validate(ports.pre_process(builder._inputs(prune=True))) is None
    assert _nodes() == before, f'{name}.build() stored nodes'
    assert f'python examples/{name}.py' in examples[name].__doc__  # the docstring says how to run it

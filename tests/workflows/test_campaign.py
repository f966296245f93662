"""``nmcml.campaign`` without running it: protocols, parameter checks, the initial set, skip inputs and groups, the
continuation (which stages a killed campaign hands on). The whole chain runs in tests/test_demo.py."""

from __future__ import annotations

import numpy as np
import pytest
from aiida import orm
from aiida.common.links import LinkType
from aiida.plugins import WorkflowFactory
from plumpy import ProcessState

from aiida_nmcml.data.model import MaceModel
from aiida_nmcml.data.trainingset import TrainingSet
from aiida_nmcml.protocols import PROTOCOL_LEVELS
from aiida_nmcml.testing.toymodel import toy_frames
from aiida_nmcml.workflows import campaign as cw


@pytest.mark.parametrize('protocol', PROTOCOL_LEVELS)
def test_every_protocol_resolves(protocol):
    parameters = cw.resolve_parameters(protocol, None)
    assert cw.PARAMETERS.errors(parameters) == []
    assert all(0.0 <= x <= 1.0 for x in parameters['li_contents'])
    assert set(parameters['stages']) == set(cw.STAGES)


def test_overrides_replace_lists_and_composition():
    demo = cw.resolve_parameters('demo', None)
    assert demo['initial']['composition'] == {'Ni': 1.0}  # replaced, not merged with the NMC811 default
    custom = cw.resolve_parameters(
        'moderate', {'li_contents': [0.5], 'initial': {'composition': {'Ni': 0.5, 'Co': 0.5}}}
    )
    assert custom['li_contents'] == [0.5]
    assert custom['initial']['composition'] == {'Ni': 0.5, 'Co': 0.5}
    assert custom['stages']['search']['protocol'] == 'moderate'


@pytest.mark.parametrize(
    ('protocol', 'overrides', 'message'),
    [
        ('ultra', None, "unknown protocol 'ultra'"),
        ('demo', {'li_contents': [1.2]}, r'li_contents\[0\]: 1.2 is out of range'),
        ('demo', {'initail': {}}, "did you mean 'initial'"),
        ('demo', {'stages': {'labels': {'protocol': 'nope'}}}, 'stages.labels.protocol'),
        ('demo', {'initial': {'rattled_per_content': 0, 'strains': []}}, 'no initial cells'),
    ],
)
def test_bad_parameters_are_refused(protocol, overrides, message):
    with pytest.raises(ValueError, match=message):
        cw.resolve_parameters(protocol, overrides)


def test_initial_structures_across_li_contents(aiida_profile):
    """Per content: rattled copies and strained copies; Li count follows x; the set is reproducible (cache hits)."""
    parameters = {
        'supercell': 8, 'composition': {'Ni': 1.0}, 'li_contents': [1.0, 0.5], 'rattled_per_content': 2,
        'rattle_stdev': 0.05, 'strains': [0.03], 'seed': 0,
    }  # fmt: skip
    out = cw.initial_structures(orm.Dict(parameters))
    assert sorted(out) == sorted(
        f'{k}_{kind}' for k in ('x1_0000', 'x0_5000') for kind in ('rattle_0', 'rattle_1', 'strain_0')
    )
    n_li = {key: out[key].get_ase().get_chemical_symbols().count('Li') for key in out}
    assert n_li['x1_0000_rattle_0'] == 2 * n_li['x0_5000_rattle_0']
    volume = {key: out[key].get_cell_volume() for key in out}
    assert volume['x1_0000_strain_0'] / volume['x1_0000_rattle_0'] == pytest.approx(1.03**3)
    a, b = out['x1_0000_rattle_0'].get_ase(), out['x1_0000_rattle_1'].get_ase()
    assert 0.01 < np.abs(a.positions - b.positions).max() < 0.5  # rattled, differently
    assert out['x1_0000_rattle_0'].base.attributes.get('nmcml_sublattice')  # DFT starts from the builder's moments
    again = cw.initial_structures(orm.Dict(parameters))
    assert again['x0_5000_strain_0'].base.caching.get_hash() == out['x0_5000_strain_0'].base.caching.get_hash()


def test_builder_and_input_validation(nmcml_codes, tiny_foundation_model):
    Campaign = WorkflowFactory('nmcml.campaign')
    builder = Campaign.get_builder_from_protocol(
        {'dft': nmcml_codes['pw'], 'train': nmcml_codes['mace_train'], 'engine': nmcml_codes['engine']},
        protocol='demo', foundation_model=str(tiny_foundation_model), name='test/campaign/builder',
    )  # fmt: skip
    assert builder.name.value == 'test/campaign/builder' and builder.metadata.label == 'test/campaign/builder'
    assert builder.parameters['stages']['committee']['protocol'] == 'demo'
    assert isinstance(builder.foundation_model, MaceModel)
    with pytest.raises(ValueError, match='no dft code for engine vasp'):
        Campaign.get_builder_from_protocol(protocol='demo', engine='vasp')
    with pytest.raises(ValueError, match='unknown engine'):
        Campaign.get_builder_from_protocol(protocol='demo', engine='cp2k')

    inputs = {
        'name': orm.Str('n'), 'engine': orm.Str('vasp'), 'parameters': builder.parameters,
        'codes': {'dft': nmcml_codes['pw'], 'train': nmcml_codes['mace_train'], 'engine': nmcml_codes['engine']},
    }  # fmt: skip
    assert 'give a foundation_model' in cw.validate_inputs({**inputs, 'engine': orm.Str('qe')}, None)
    inputs['foundation_model'] = builder.foundation_model
    assert 'engine' in cw.validate_inputs(inputs, None) and 'vasp.vasp' in cw.validate_inputs(inputs, None)
    inputs['engine'] = orm.Str('qe')
    assert cw.validate_inputs(inputs, None) is None
    assert 'unknown stage' in cw.validate_inputs({**inputs, 'reuse': orm.Dict({'labelz': 'x'})}, None)
    unfinished = orm.WorkflowNode().store()
    message = cw.validate_inputs({**inputs, 'reuse': orm.Dict({'labels': unfinished.uuid})}, None)
    assert 'not a finished nmcml.label' in message


@pytest.fixture
def campaign_inputs(nmcml_codes, tiny_foundation_model):
    def make(name, **extra):
        builder = WorkflowFactory('nmcml.campaign').get_builder_from_protocol(
            {'dft': nmcml_codes['pw'], 'train': nmcml_codes['mace_train'], 'engine': nmcml_codes['engine']},
            protocol='demo', foundation_model=str(tiny_foundation_model), name=name,
        )  # fmt: skip
        inputs = {key: builder[key] for key in ('name', 'engine', 'parameters', 'codes', 'foundation_model')}
        return {**inputs, 'metadata': {'label': name}, **extra}

    return make


def test_given_results_skip_their_stages_and_land_in_groups(generate_workchain, campaign_inputs, tiny_foundation_model):
    """training_set + committee given: labels and fine-tuning are skipped, the given nodes are put in the groups, the
    DFT plan no longer counts the initial set."""
    training_set = TrainingSet.from_frames(toy_frames(4, seed=3)).store()
    model = MaceModel.get_or_create(tiny_foundation_model)
    inputs = campaign_inputs('test/campaign/skip', training_set=training_set, committee={'m0': model, 'm1': model})
    process = generate_workchain('nmcml.campaign', inputs)
    process.setup()
    assert process.should_run_labels() is False
    assert process.should_run_committee() is False
    stages = process.node.base.extras.get(cw.EXTRAS_KEY)['stages']
    assert stages['labels'] == 'skipped: training_set given'
    assert stages['committee'] == 'skipped: committee given'
    assert training_set.uuid in {n.uuid for n in orm.load_group('test/campaign/skip/labels').nodes}
    assert {n.uuid for n in orm.load_group('test/campaign/skip/committee').nodes} == {model.uuid}
    without = generate_workchain('nmcml.campaign', campaign_inputs('test/campaign/plan'))
    without.setup()
    planned = without.node.base.extras.get(cw.EXTRAS_KEY)['dft_planned']
    # demo: 2 contents x (1 rattled + 1 strained) initial cells more than with the training set given
    assert planned - process.node.base.extras.get(cw.EXTRAS_KEY)['dft_planned'] == 4


def _child(parent, label: str, entry_point: str, exit_status: int | None, outputs: dict):
    node = orm.WorkflowNode()
    node.set_process_type(f'aiida.workflows:{entry_point}')
    node.base.links.add_incoming(parent, LinkType.CALL_WORK, label)
    node.store()
    for key, data in outputs.items():
        data.base.links.add_incoming(node, LinkType.RETURN, key)
    if exit_status is None:
        node.set_process_state(ProcessState.KILLED)
    else:
        node.set_process_state(ProcessState.FINISHED)
        node.set_exit_status(exit_status)
    return node


def test_continue_reuses_the_finished_stages(generate_workchain, campaign_inputs, tiny_foundation_model):
    """A killed campaign: labels finished, committee finished with 730 (usable), search failed with a GA error
    (not usable), active learning killed after one iteration (continued, not restarted)."""
    process = generate_workchain('nmcml.campaign', campaign_inputs('test/campaign/continue'))
    node = process.node
    node.set_process_state(ProcessState.KILLED)
    training_set = TrainingSet.from_frames(toy_frames(3, seed=4)).store()
    model = MaceModel.get_or_create(tiny_foundation_model)
    labels = _child(node, 'labels', 'nmcml.label', 0, {'labelled': training_set})
    committee = _child(node, 'committee', 'nmcml.finetune', 730, {'models__member_0': model})
    _child(node, 'search', 'nmcml.search', 520, {})
    al = _child(
        node, 'active_learning', 'nmcml.active_learning', None, {'iteration_metrics__iter_01': orm.Dict({}).store()}
    )
    builder, reuse = cw.continue_builder(node)
    assert reuse == {'labels': labels.uuid, 'committee': committee.uuid, 'active_learning_continue': al.uuid}
    assert builder.reuse.get_dict() == reuse
    assert builder.name.value == 'test/campaign/continue'  # same groups
    assert builder.metadata.label == 'test/campaign/continue'
    assert cw.validate_inputs({**campaign_inputs('x'), 'reuse': builder.reuse}, None) is None
    with pytest.raises(ValueError, match='is not a campaign'):
        cw.continue_builder(labels)


def test_disabled_and_reused_stages_are_skipped(generate_workchain, campaign_inputs, tiny_foundation_model):
    """Search and active learning disabled, diffusion reused from an earlier run, barriers disabled: each is skipped
    with its reason and the reused node is handed on."""
    model = MaceModel.get_or_create(tiny_foundation_model)
    process = generate_workchain('nmcml.campaign', campaign_inputs('test/campaign/disabled', committee={'m0': model}))
    process.setup()
    for stage in ('search', 'active_learning', 'barriers'):
        process.ctx.parameters['stages'][stage]['enabled'] = False
    earlier = orm.WorkflowNode().store()
    process.ctx.reuse['diffusion'] = earlier.uuid
    assert process.should_run_search() is False
    assert process.should_run_active_learning() is False
    process.run_transport()
    assert process.ctx.diffusion_node.uuid == earlier.uuid
    assert 'barriers_node' not in process.ctx
    stages = process.node.base.extras.get(cw.EXTRAS_KEY)['stages']
    assert stages['search'] == stages['active_learning'] == stages['barriers'] == 'skipped: disabled'
    assert stages['diffusion'] == f'skipped: reused from <{earlier.pk}>'

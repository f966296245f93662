"""GaBaseWorkChain (``nmcml.ga.base``): its handlers on mock failed children (recorded GA outputs, real parser)."""

from __future__ import annotations

import pytest
from aiida import orm

from aiida_nmcml.calculations.ga import GaCalculation
from aiida_nmcml.workflows.ga_base import GaBaseWorkChain

EXIT = GaCalculation.exit_codes
LATTICE = {'supercell': [2, 2, 1], 'x_li': 0.5, 'composition': {'Ni': 0.5, 'Mn': 0.25, 'Co': 0.25}, 'seed': 1}


@pytest.fixture
def model_node(tiny_foundation_model):
    from aiida_nmcml.data.model import MaceModel

    return MaceModel.get_or_create(tiny_foundation_model)


@pytest.fixture
def process_with_child(generate_workchain, generate_calc_job_node, attach_failed_child, fake_engine_code, model_node):
    def make(parameters=None, **node_kwargs):
        inputs = {
            'ga': {
                'code': fake_engine_code,
                'lattice': orm.Dict(LATTICE),
                'models': {'m0': model_node},
                'parameters': orm.Dict(parameters or {'fitness': 'mace'}),
                'metadata': {'options': {'max_wallclock_seconds': 600}},
            }
        }
        process = generate_workchain('nmcml.ga.base', inputs)
        process.setup()
        child = generate_calc_job_node('nmcml.ga', **node_kwargs)
        attach_failed_child(process, child)
        return process, child

    return make


def test_not_converged_finishes_with_candidates_exposed(process_with_child):
    process, child = process_with_child(case='not_converged', parse=True)
    assert child.exit_status == EXIT.ERROR_GA_NOT_CONVERGED.status
    result = process.inspect_process()
    assert result.status == GaBaseWorkChain.exit_codes.ERROR_GA_NOT_CONVERGED.status == 720
    assert {'rank_0', 'rank_1', 'rank_2'} <= set(process.outputs['candidates'])


def test_out_of_memory_float32_once(process_with_child):
    process, child = process_with_child(exit_status=EXIT.ERROR_OUT_OF_MEMORY.status)
    assert process.inspect_process().status == 0
    assert process.ctx.inputs.parameters['dtype'] == 'float32'
    assert process.handle_out_of_memory(child).exit_code.status == 410


def test_protocol_builder(fake_engine_code):
    for level in GaBaseWorkChain.get_available_protocols():
        builder = GaBaseWorkChain.get_builder_from_protocol(fake_engine_code, LATTICE, protocol=level)
        assert builder.ga.lattice.get_dict() == LATTICE
        assert builder.ga.parameters.get_dict()['fitness'] == 'mace'  # the production fitness

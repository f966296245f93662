"""NebCalculation on localhost: the engine runs for real (tiny MACE committee) on an ODH hop in a 47-atom cell."""

from __future__ import annotations

import numpy as np
import pytest
from aiida import orm
from aiida.engine import run_get_node

from aiida_nmcml.calculations.neb import NebCalculation
from aiida_nmcml.data.model import MaceModel
from aiida_nmcml.hops import build_hop, hexagonal_supercell
from aiida_nmcml.structures import to_structure_data


@pytest.fixture
def hop():
    return build_hop('odh', supercell=hexagonal_supercell(2, 2, 1), seed=0)


def builder_for(code, models, hop, **parameters):
    builder = NebCalculation.get_builder()
    builder.code = code
    builder.models = models
    builder.initial_structure = to_structure_data(hop.initial)
    builder.final_structure = to_structure_data(hop.final)
    builder.parameters = orm.Dict(parameters)
    builder.device = orm.Str('cpu')
    builder.metadata.options.max_wallclock_seconds = 900
    return builder


def test_neb_calcjob_keeps_outputs_when_not_converged(nmcml_codes, tiny_foundation_model, hop):
    """The toy model is cut after a few steps with an unreachable fmax: exit 740, and every output attached."""
    models = {'a': MaceModel.get_or_create(tiny_foundation_model)}
    builder = builder_for(
        nmcml_codes['engine'], models, hop, n_images=3, fmax=0.001, max_steps=6, endpoint_max_steps=20
    )
    _, node = run_get_node(builder)
    assert node.exit_status == 740, (node.exit_status, node.exit_message)
    assert 'NEB not converged' in node.exit_message
    images = node.outputs.images
    assert images.numsteps == 5
    energies = images.get_array('energies')
    params = node.outputs.output_parameters.get_dict()
    assert params['barrier_forward'] == pytest.approx(energies.max() - energies[0])
    assert params['climbing_image'] == int(np.argmax(energies[1:-1])) + 1
    ts = node.outputs.transition_state
    assert len(ts.sites) == len(hop.initial)
    # the starting moments travel with the path (DFT single points start every image alike)
    assert ts.base.attributes.get('nmcml_magmoms') == pytest.approx(list(hop.initial.get_initial_magnetic_moments()))
    # every image as a structure with the same starting moments and sublattice labels (nmcml.barrier's DFT check)
    structures = node.outputs.image_structures
    assert sorted(structures) == [f'image_{i:02d}' for i in range(5)]
    for name, structure in structures.items():
        index = int(name.split('_')[1])
        np.testing.assert_allclose(structure.get_ase().positions, images.get_step_structure(index).get_ase().positions)
        assert structure.base.attributes.get('nmcml_magmoms') == ts.base.attributes.get('nmcml_magmoms')
        assert structure.base.attributes.get('nmcml_sublattice') == list(hop.initial.arrays['sublattice'])
    config = node.base.repository.get_object_content('input.json')
    assert models['a'].sha256 in config and '"initial": "initial.extxyz"' in config


def test_parameters_refused_before_submission(nmcml_codes, tiny_foundation_model, hop):
    models = {'a': MaceModel.get_or_create(tiny_foundation_model)}
    with pytest.raises(ValueError, match="did you mean 'n_images'"):
        run_get_node(builder_for(nmcml_codes['engine'], models, hop, n_imags=3))
    with pytest.raises(ValueError, match='may not set `initial`'):
        run_get_node(builder_for(nmcml_codes['engine'], models, hop, initial='x.extxyz'))
    other = build_hop('tsh', supercell=hexagonal_supercell(2, 2, 1), seed=0)
    builder = builder_for(nmcml_codes['engine'], models, hop)
    builder.final_structure = to_structure_data(other.final)
    with pytest.raises(ValueError, match='other atoms'):
        run_get_node(builder)

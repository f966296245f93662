"""``nmcml.md`` end to end on localhost: inputs from nodes, parser outputs, restart from a parent, a stopped run."""

from __future__ import annotations

import io
import json
import pathlib

import numpy as np
import pytest
from aiida import orm
from aiida.engine import run_get_node
from ase.build import make_supercell
from ase.io import read

from aiida_nmcml.calculations.md import MdCalculation
from aiida_nmcml.data.model import MaceModel
from aiida_nmcml.data.trainingset import TrainingSet


@pytest.fixture(scope='module')
def committee(tiny_foundation_model):
    """Two MaceModel nodes trained with different seeds (the second cached like the engine tests' one)."""
    from aiida_nmcml.testing import toymodel

    second = toymodel.cached_tiny_mace(seed=2)
    return {'m0': MaceModel.get_or_create(tiny_foundation_model), 'm1': MaceModel.get_or_create(second)}


@pytest.fixture(scope='module')
def labelled_atoms():
    """32-atom LiNiO2 cell with sublattice labels and the builder's starting moments (Ni 1 µB), as from build_nmc."""
    from aiida_nmcml.structures import dft_ready, layered_parent

    atoms = make_supercell(layered_parent(), np.diag([2, 2, 2]))
    atoms.arrays['sublattice'] = np.array([{'Li': 'li', 'O': 'o'}.get(s, 'tm') for s in atoms.get_chemical_symbols()])
    return dft_ready(atoms)


@pytest.fixture(scope='module')
def structure(aiida_profile, labelled_atoms):
    from aiida_nmcml.structures import to_structure_data

    return to_structure_data(labelled_atoms).store()


def builder_for(code, committee, structure_node, /, **parameters):
    builder = MdCalculation.get_builder()
    builder.code = code
    builder.models = committee
    builder.structure = structure_node
    builder.device = orm.Str('cpu')
    builder.parameters = orm.Dict(
        {
            'steps': 20,
            'trajectory_stride': 5,
            'checkpoint_stride': 10,
            'seed': 1,
            'uncertainty': {'stride': 10, 'trust_lower': 0.0},
            **parameters,
        }
    )
    builder.metadata.options.max_wallclock_seconds = 300
    return builder


def test_inputs_written_from_nodes(nmcml_codes, committee, structure):
    builder = builder_for(nmcml_codes['engine'], committee, structure)
    builder.metadata.dry_run = True
    builder.metadata.store_provenance = False
    _, node = run_get_node(builder)
    folder = pathlib.Path(node.dry_run_info['folder'])
    config = json.loads((folder / 'input.json').read_text())
    assert config['structure'] == 'structure.extxyz' and config['restart_from'] == 'auto'
    assert [m['sha256'] for m in config['models']] == [committee['m0'].sha256, committee['m1'].sha256]
    assert (folder / 'model_m1.model').read_bytes() == committee['m1'].get_content(mode='rb')
    written = read(folder / 'structure.extxyz')
    assert len(written) == 32
    # the StructureData's nmcml_* site data reach the engine as per-atom arrays (they used to be dropped)
    assert written.arrays['sublattice'].tolist() == structure.base.attributes.get('nmcml_sublattice')
    assert written.get_initial_magnetic_moments().tolist() == structure.base.attributes.get('nmcml_magmoms')
    assert max(written.get_initial_magnetic_moments()) > 0
    assert 'aiida-nmcml-engine' in (folder / '_aiidasubmit.sh').read_text()


def test_parameters_may_not_override_node_inputs(nmcml_codes, committee, structure):
    builder = builder_for(nmcml_codes['engine'], committee, structure, **{'structure': 'other.xyz'})
    with pytest.raises(ValueError, match='comes from the input nodes'):
        run_get_node(builder)


@pytest.mark.parametrize(
    ('parameters', 'expected'),
    [
        ({'temperature_K': -300}, r'temperature_K: -300 is out of range; allowed: a number > 0'),
        ({'temprature_K': 900}, r"unknown key 'temprature_K'; did you mean 'temperature_K'\?"),
        ({'timestep_fs': 0}, r'timestep_fs: 0 is out of range'),
        ({'steps': 'ten'}, r"steps: 'ten' \(str\) is not an integer"),
        ({'friction_per_fs': -1}, r'friction_per_fs: -1 is out of range'),
        ({'uncertainty': {'trust_lower': 0.2, 'trust_upper': 0.1}}, r'trust_upper \(0.1\) is below trust_lower'),
        ({'uncertainty': [10]}, r'is not a dict'),
    ],
)
def test_nonsense_parameters_refused_before_submission(nmcml_codes, committee, structure, parameters, expected):
    """Refused by the input validator (nothing is stored or run), with the closest valid key named for a typo."""
    from aiida.orm import QueryBuilder

    before = QueryBuilder().append(MdCalculation).count()
    builder = builder_for(nmcml_codes['engine'], committee, structure, **parameters)
    with pytest.raises(ValueError, match=expected):
        run_get_node(builder)
    assert QueryBuilder().append(MdCalculation).count() == before


def test_structure_with_elements_the_models_lack_is_refused(nmcml_codes, committee):
    """A model that cannot see an element must be refused before submission, not crash in the engine."""
    from aiida_nmcml.structures import layered_parent

    atoms = layered_parent()
    atoms.symbols[1] = 'Fe'
    builder = builder_for(nmcml_codes['engine'], committee, orm.StructureData(ase=atoms))
    with pytest.raises(ValueError, match=r"cannot evaluate \['Fe'\]"):
        run_get_node(builder)


def test_run_restart_and_stop(nmcml_codes, committee, structure, labelled_atoms):
    """Run 20 steps; continue the same trajectory to 40 from the parent folder; then a tiny hard limit stops the
    continuation at once with exit 710 while the trajectory, logs and stop frame are still outputs."""
    code = nmcml_codes['engine']
    _, first = run_get_node(builder_for(code, committee, structure))
    assert first.is_finished_ok, (first.exit_status, first.exit_message)
    out = first.outputs
    assert out.uncertainty.get_array('step').tolist() == [0, 10, 20]
    assert np.all(out.uncertainty.get_array('max_force_dev') > 0)
    assert isinstance(out.candidates, TrainingSet) and out.candidates.num_frames == 3
    assert out.candidates.num_labelled == 0
    # contract with labelling: candidate frames carry the sublattice labels and starting moments of the input
    for frame in out.candidates.get_frames():
        assert frame.arrays['sublattice'].tolist() == labelled_atoms.arrays['sublattice'].tolist()
        assert np.allclose(frame.get_initial_magnetic_moments(), labelled_atoms.get_initial_magnetic_moments())
    assert out.output_parameters['trajectory_stride'] == 5 and out.output_parameters['timestep_fs'] == 1.0
    assert out.output_parameters['committee_size'] == 2

    builder = builder_for(code, committee, structure, steps=40)
    builder.parent_folder = first.outputs.remote_folder
    _, second = run_get_node(builder)
    assert second.is_finished_ok, (second.exit_status, second.exit_message)
    frames = read(io.StringIO(second.outputs.trajectory.get_content()), ':', format='extxyz')
    assert [f.info['step'] for f in frames] == list(range(0, 41, 5))
    assert second.outputs.output_parameters['start_step'] == 20
    first_frames = read(io.StringIO(first.outputs.trajectory.get_content()), ':', format='extxyz')
    assert np.allclose(frames[4].arrays['unwrapped'], first_frames[4].arrays['unwrapped'])  # the parent's frames

    builder = builder_for(code, committee, structure, steps=60, stop={'hard_limit': 1e-4})
    builder.parent_folder = second.outputs.remote_folder
    _, third = run_get_node(builder)
    assert third.exit_status == MdCalculation.exit_codes.ERROR_UNCERTAINTY_EXCEEDED.status
    assert 'hard limit' in third.exit_message
    assert 'trajectory' in third.outputs and 'stop_structure' in third.outputs
    assert third.outputs.output_parameters['stopped_by'] == 'uncertainty_exceeded'
    assert third.outputs.stop_structure.base.attributes.get('nmcml_sublattice') == structure.base.attributes.get(
        'nmcml_sublattice'
    )
    assert len(read(io.StringIO(third.outputs.trajectory.get_content()), ':', format='extxyz')) == 9


def test_restart_from_a_cleaned_parent_folder_is_refused(nmcml_codes, committee, structure, tmp_path):
    """A parent folder whose files are gone (cleaned work directory) ends with its own exit code instead of silently
    starting again at step 0 with exit 0."""
    empty = orm.RemoteData(computer=nmcml_codes['computer'], remote_path=str(tmp_path)).store()
    builder = builder_for(nmcml_codes['engine'], committee, structure, steps=40)
    builder.parent_folder = empty
    _, node = run_get_node(builder)
    assert node.exit_status == MdCalculation.exit_codes.ERROR_RESTART_FILES_MISSING.status
    assert 'checkpoint.npz' in node.exit_message
    assert 'trajectory' not in node.outputs

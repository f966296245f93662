"""``nmcml.ga`` end to end on localhost with a real (tiny) MACE committee: lattice from the Dict, parsed candidates
with the committee mean energy and spread; the pair test doubles are refused by the calcjob."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from aiida import orm
from aiida.engine import run_get_node
from ase.io import read

from aiida_nmcml.calculations.ga import GaCalculation
from aiida_nmcml.data.model import MaceModel

LATTICE = {'supercell': 40, 'x_li': 0.4, 'seed': 1}  # 10 Li sites, NMC811 exact: Ni8 Mn1 Co1
SMALL_GA = {'islands': 2, 'agree': 1, 'population_size': 4, 'elitism': 1, 'generations': 3, 'top_k': 3}


@pytest.fixture(scope='module')
def committee(tiny_foundation_model):
    """Two MaceModel nodes trained with different seeds (the second cached like the engine tests' one)."""
    from aiida_nmcml.testing import toymodel

    second = toymodel.cached_tiny_mace(seed=2)
    return {'m0': MaceModel.get_or_create(tiny_foundation_model), 'm1': MaceModel.get_or_create(second)}


def builder_for(code, committee, **parameters):
    builder = GaCalculation.get_builder()
    builder.code = code
    builder.lattice = orm.Dict(LATTICE)
    builder.models = committee
    builder.device = orm.Str('cpu')
    builder.parameters = orm.Dict({'fitness': 'mace', **SMALL_GA, **parameters})
    builder.metadata.options.max_wallclock_seconds = 300
    return builder


def test_lattice_written_from_the_dict(nmcml_codes, committee):
    builder = builder_for(nmcml_codes['engine'], committee)
    builder.metadata.dry_run = True
    builder.metadata.store_provenance = False
    _, node = run_get_node(builder)
    folder = pathlib.Path(node.dry_run_info['folder'])
    atoms = read(folder / 'lattice.extxyz')
    assert atoms.get_chemical_symbols().count('X') == 6  # 10 Li sites, 4 Li
    assert sorted(set(atoms.arrays['sublattice'])) == ['li', 'o', 'tm']
    assert json.loads((folder / 'input.json').read_text())['lattice'] == 'lattice.extxyz'


@pytest.mark.parametrize(
    ('lattice', 'message'),
    [
        ({'supercell': 40, 'x_li': 1.5}, 'x_li must be within'),
        ({'supercell': 40, 'colour': 'red'}, 'unknown key'),
    ],
)
def test_bad_lattice_refused(nmcml_codes, committee, lattice, message):
    builder = builder_for(nmcml_codes['engine'], committee)
    builder.lattice = orm.Dict(lattice)
    with pytest.raises(ValueError, match=message):
        run_get_node(builder)


@pytest.mark.parametrize('fitness', ['pair', 'random_pair'])
def test_test_double_fitness_is_refused(nmcml_codes, committee, fitness):
    """The pair energies are test doubles: the production calcjob refuses them (the engine keeps them for tests)."""
    with pytest.raises(ValueError, match='test doubles'):
        run_get_node(builder_for(nmcml_codes['engine'], committee, fitness=fitness))


@pytest.mark.parametrize(
    ('parameters', 'message'),
    [
        ({'populaton_size': 3}, "did you mean 'population_size'"),
        ({'max_evaluations': 0}, 'max_evaluations'),
        ({'islands': 2, 'agree': 3}, 'could never agree'),
    ],
)
def test_bad_parameters_refused_before_submission(nmcml_codes, committee, parameters, message):
    """The engine's own schema (engine/ga_config.py) checks `parameters` in the calcjob's validator."""
    with pytest.raises(ValueError, match=message):
        run_get_node(builder_for(nmcml_codes['engine'], committee, **parameters))


def test_mace_fitness_needs_a_model(nmcml_codes, committee):
    builder = builder_for(nmcml_codes['engine'], committee)
    builder.models = {}
    with pytest.raises(ValueError, match='needs a model'):
        run_get_node(builder)


def test_run_and_parse_with_a_committee(nmcml_codes, committee):
    """Candidates ranked by the committee mean, each with its spread (std of the two members' energies) and the
    per-member energies; a spanning set over the energy range; DFT-ready moments."""
    _, node = run_get_node(builder_for(nmcml_codes['engine'], committee, spanning_k=3))
    assert node.is_finished_ok or node.exit_status == GaCalculation.exit_codes.ERROR_GA_NOT_CONVERGED.status, (
        node.exit_status,
        node.exit_message,
    )
    candidates = node.outputs.candidates
    assert sorted(candidates) == ['rank_0', 'rank_1', 'rank_2']
    energies = [candidates[f'rank_{i}'].base.attributes.get('nmcml_ga_energy') for i in range(3)]
    assert energies == sorted(energies)
    assert len({candidates[k].base.attributes.get('nmcml_canonical_key') for k in candidates}) == 3
    for rank in candidates.values():
        members = rank.base.attributes.get('nmcml_ga_member_energies')
        assert len(members) == 2
        assert rank.base.attributes.get('nmcml_ga_energy') == pytest.approx(np.mean(members))
        assert rank.base.attributes.get('nmcml_ga_spread') == pytest.approx(np.std(members))
        assert rank.base.attributes.get('nmcml_ga_spread') > 0  # two differently seeded members disagree
    best = candidates['rank_0']
    assert best.get_formula(mode='hill_compact') == 'CoLi4MnNi8O20'
    assert np.any(np.array(best.base.attributes.get('nmcml_magmoms')) > 0)  # DFT-ready magnetic start
    spanning = node.outputs.spanning
    span_energies = [spanning[f'span_{i}'].base.attributes.get('nmcml_ga_energy') for i in range(3)]
    assert span_energies == sorted(span_energies) and span_energies[0] == pytest.approx(energies[0])
    params = node.outputs.output_parameters.get_dict()
    assert params['best_energy'] == pytest.approx(energies[0])
    assert node.outputs.history.get_array('evaluations')[-1] == params['evaluations']


def test_not_converged_keeps_candidates(nmcml_codes, committee):
    _, node = run_get_node(builder_for(nmcml_codes['engine'], committee, generations=1, require_convergence=True))
    assert node.exit_status == GaCalculation.exit_codes.ERROR_GA_NOT_CONVERGED.status
    assert 'rank_0' in node.outputs.candidates

"""``nmcml.ga`` end to end on localhost with the pair test double: lattice from the Dict, parsed candidates."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from aiida import orm
from aiida.engine import run_get_node
from ase.io import read

from aiida_nmcml.calculations.ga import GaCalculation

LATTICE = {'supercell': [3, 3, 1], 'x_li': 4 / 9, 'composition': {'Ni': 7 / 9, 'Mn': 1 / 9, 'Co': 1 / 9}, 'seed': 1}


def builder_for(code, **parameters):
    builder = GaCalculation.get_builder()
    builder.code = code
    builder.lattice = orm.Dict(LATTICE)
    builder.parameters = orm.Dict({'fitness': 'pair', 'generations': 5, 'top_k': 3, **parameters})
    builder.metadata.options.max_wallclock_seconds = 120
    return builder


def test_lattice_written_from_the_dict(nmcml_codes):
    builder = builder_for(nmcml_codes['engine'])
    builder.metadata.dry_run = True
    builder.metadata.store_provenance = False
    _, node = run_get_node(builder)
    folder = pathlib.Path(node.dry_run_info['folder'])
    atoms = read(folder / 'lattice.extxyz')
    assert atoms.get_chemical_symbols().count('X') == 5  # 9 Li sites, 4 Li
    assert sorted(set(atoms.arrays['sublattice'])) == ['li', 'o', 'tm']
    assert json.loads((folder / 'input.json').read_text())['lattice'] == 'lattice.extxyz'


@pytest.mark.parametrize(
    ('lattice', 'message'),
    [
        ({'supercell': [3, 3, 1], 'x_li': 1.0, 'composition': {'Ni': 1.0}}, 'single ordering'),
        ({'supercell': [3, 3, 1], 'x_li': 1.5}, 'x_li must be within'),
        ({'supercell': [3, 3, 1], 'colour': 'red'}, 'unknown key'),
    ],
)
def test_bad_lattice_refused(nmcml_codes, lattice, message):
    builder = builder_for(nmcml_codes['engine'])
    builder.lattice = orm.Dict(lattice)
    with pytest.raises(ValueError, match=message):
        run_get_node(builder)


def test_mace_fitness_needs_a_model(nmcml_codes):
    with pytest.raises(ValueError, match='needs a model'):
        run_get_node(builder_for(nmcml_codes['engine'], fitness='mace'))


def test_run_and_parse(nmcml_codes):
    _, node = run_get_node(builder_for(nmcml_codes['engine']))
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    candidates = node.outputs.candidates
    assert sorted(candidates) == ['rank_0', 'rank_1', 'rank_2']
    energies = [candidates[f'rank_{i}'].base.attributes.get('nmcml_ga_energy') for i in range(3)]
    assert energies == sorted(energies)
    assert len({candidates[k].base.attributes.get('nmcml_canonical_key') for k in candidates}) == 3
    best = candidates['rank_0']
    assert best.get_formula(mode='hill_compact') == 'CoLi4MnNi7O18'
    assert np.any(np.array(best.base.attributes.get('nmcml_magmoms')) > 0)  # DFT-ready magnetic start
    params = node.outputs.output_parameters.get_dict()
    assert params['best_energy'] == pytest.approx(energies[0])
    assert node.outputs.history.get_array('evaluations')[-1] == params['evaluations']


def test_not_converged_keeps_candidates(nmcml_codes):
    _, node = run_get_node(builder_for(nmcml_codes['engine'], generations=1, patience=5, require_convergence=True))
    assert node.exit_status == GaCalculation.exit_codes.ERROR_GA_NOT_CONVERGED.status
    assert 'rank_0' in node.outputs.candidates

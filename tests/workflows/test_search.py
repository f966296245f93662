"""``nmcml.search``: protocol builders; a real run (tiny MACE committee) of two Li contents and the end members through
the daemon-free runner, with formation energies and the hull; the MLIP-vs-DFT verification numbers."""

from __future__ import annotations

import pytest
from aiida import orm
from aiida.engine import run_get_node

from aiida_nmcml.data.model import MaceModel
from aiida_nmcml.workflows.search import (
    SearchWorkChain,
    content_key,
    lower_hull,
    spearman,
    verification_entry,
)


@pytest.fixture(scope='module')
def committee(tiny_foundation_model):
    """Two tiny MACE members trained with different seeds (a committee with a nonzero spread)."""
    from aiida_nmcml.testing import toymodel

    return [MaceModel.get_or_create(tiny_foundation_model), MaceModel.get_or_create(toymodel.cached_tiny_mace(seed=2))]


def test_protocol_levels_build(nmcml_codes):
    for level in ('demo', 'fast', 'moderate', 'precise'):
        builder = SearchWorkChain.get_builder_from_protocol(nmcml_codes['engine'], protocol=level)
        assert builder.li_contents.get_list()
        assert builder.ga.parameters['fitness'] == 'mace'
        assert 'x_li' not in builder.lattice.get_dict()
    with pytest.raises(ValueError, match='unknown protocol'):
        SearchWorkChain.get_builder_from_protocol(nmcml_codes['engine'], protocol='ultra')


R_MAX = 6.0  # Å, the MACE-MP foundation models' cutoff


@pytest.mark.parametrize('level', ['demo', 'fast', 'moderate', 'precise'])
def test_protocol_cells_are_exact_nmc811(nmcml_codes, level):
    """Every level's cell holds exact Ni:Mn:Co = 8:1:1 and a whole number of Li at every listed content (no rounding
    warning); the production levels are at least 2 r_max wide in every direction."""
    import warnings

    import numpy as np

    from aiida_nmcml.calculations.ga import build_lattice_atoms
    from aiida_nmcml.structures import NmcLattice, NmcStructureWarning, _perpendicular_widths

    builder = SearchWorkChain.get_builder_from_protocol(nmcml_codes['engine'], protocol=level)
    lattice = builder.lattice.get_dict()
    for x_li in builder.li_contents.get_list():
        with warnings.catch_warnings():
            warnings.simplefilter('error', NmcStructureWarning)
            atoms = build_lattice_atoms({**lattice, 'x_li': x_li})
        tm = np.array(atoms.get_chemical_symbols())[atoms.arrays['sublattice'] == 'tm']
        counts = {el: int(np.sum(tm == el)) for el in ('Ni', 'Mn', 'Co')}
        assert len(tm) % 10 == 0 and counts == {'Ni': len(tm) * 8 // 10, 'Mn': len(tm) // 10, 'Co': len(tm) // 10}
    if level in ('moderate', 'precise'):
        widths = _perpendicular_widths(NmcLattice.from_supercell(lattice['supercell']).cell)
        assert widths.min() >= 2 * R_MAX, widths


def test_dft_code_switches_verification_on(nmcml_codes):
    builder = SearchWorkChain.get_builder_from_protocol(
        nmcml_codes['engine'], protocol='demo', dft_code=nmcml_codes['pw']
    )
    assert builder.verify_with_dft.value is True
    assert builder.label.engine.value == 'qe' and 'qe' in builder.label.settings.get_dict()


def test_verification_without_label_inputs_is_refused(nmcml_codes, committee):
    builder = SearchWorkChain.get_builder_from_protocol(nmcml_codes['engine'], models=committee, protocol='demo')
    builder.verify_with_dft = orm.Bool(True)
    with pytest.raises(ValueError, match='needs the `label` inputs'):
        run_get_node(builder)


def test_search_two_li_contents_and_end_members_without_dft(nmcml_codes, committee):
    """Two concurrent GAs plus the end members x=0 and x=1 (added for the hull) on the 40-atom NMC811 demo cell: each
    content gets its own distinct candidates with fewer Li at lower x; the hull has E_f = 0 at the end members, every
    content on or above the hull, E_f recomputed from the GA energies, and a committee spread per content."""
    builder = SearchWorkChain.get_builder_from_protocol(nmcml_codes['engine'], models=committee, protocol='demo')
    builder.ga.parameters = orm.Dict({**builder.ga.parameters.get_dict(), 'max_evaluations': 24})
    _, node = run_get_node(builder)
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    contents = builder.li_contents.get_list()
    summary = node.outputs.summary.get_dict()
    assert sorted(summary) == sorted(content_key(x) for x in contents)
    n_li = {}
    for x in contents:
        key = content_key(x)
        ranks = node.outputs.candidates[key]
        assert sorted(ranks) == ['rank_0', 'rank_1', 'rank_2']
        n_li[x] = ranks['rank_0'].get_ase().get_chemical_symbols().count('Li')
        assert summary[key]['top_energies'] == sorted(summary[key]['top_energies'])
        assert all(spread > 0 for spread in summary[key]['top_spreads'])
        assert 'verification' not in summary[key]
    assert n_li == {0.5: 5, 0.4: 4}

    hull = node.outputs.hull.get_dict()
    rows = hull['contents']
    assert hull['formula_units'] == 10
    assert sorted(rows) == sorted([*(content_key(x) for x in contents), 'x0_0000', 'x1_0000'])
    for end in ('x0_0000', 'x1_0000'):
        assert rows[end]['formation_energy_eV_per_fu'] == pytest.approx(0.0, abs=1e-9)
        assert rows[end]['on_hull']
    e0, e1 = rows['x0_0000']['energy_eV'], rows['x1_0000']['energy_eV']
    for x in contents:
        row = rows[content_key(x)]
        assert row['x_li'] == pytest.approx(x)
        assert row['formation_energy_eV_per_fu'] == pytest.approx((row['energy_eV'] - x * e1 - (1 - x) * e0) / 10)
        assert row['formation_energy_spread_eV_per_fu'] > 0
        assert row['above_hull_eV_per_fu'] >= 0 and (row['above_hull_eV_per_fu'] == 0) == row['on_hull']
    assert hull['hull_x_li'][0] == 0.0 and hull['hull_x_li'][-1] == 1.0


def test_lower_hull():
    points = [(0.0, 0.0), (0.25, -0.1), (0.5, -0.05), (0.75, -0.2), (1.0, 0.0)]
    assert lower_hull(points) == [0, 1, 3, 4]
    assert lower_hull([(0.0, 0.0), (0.5, 0.1), (1.0, 0.0)]) == [0, 2]


def test_verification_numbers():
    """Relative energies per formula unit (each set about its own mean), MAE in meV/f.u., and the ground states."""
    params = {
        'composition': {'li': {'Li': 5, 'X': 5}, 'tm': {'Ni': 8, 'Mn': 1, 'Co': 1}, 'o': {'O': 20}},
        'top': [{'rank': 0, 'energy': -10.0}],
        'spanning': [{'rank': i, 'energy': e} for i, e in enumerate([-10.0, -9.5, -9.0, -8.0, -7.0])],
    }
    dft = {f'x0_5000__span_{i}': e for i, e in enumerate([-500.0, -499.4, -499.1, -498.0, -497.0])}
    entry = verification_entry(params, 'x0_5000', dft)
    assert entry['keys'] == [f'x0_5000__span_{i}' for i in range(5)]
    # MLIP - DFT about the means: 0, -0.1, +0.1, 0, 0 eV per 10 f.u. -> mean |.| = 0.2/5/10 eV = 4 meV/f.u.
    assert entry['mae_relative_meV_per_fu'] == pytest.approx(4.0)
    assert entry['dft_ground_state_is_mlip'] and entry['spearman'] == pytest.approx(1.0)
    dft['x0_5000__span_1'] = -501.0  # DFT now puts another ordering lowest
    assert not verification_entry(params, 'x0_5000', dft)['dft_ground_state_is_mlip']


def test_spearman_ranking():
    assert spearman([1.0, 2.0, 3.0], [10.0, 20.0, 30.0]) == pytest.approx(1.0)
    assert spearman([1.0, 2.0], [2.0, 1.0]) == pytest.approx(-1.0)
    assert spearman([1.0], [1.0]) is None

"""``nmcml.search``: protocol builders, and a real run of two GAs (pair test double) through the daemon-free runner."""

from __future__ import annotations

import pytest
from aiida import orm
from aiida.engine import run_get_node

from aiida_nmcml.workflows.search import SearchWorkChain, content_key, spearman


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


def test_verification_without_label_inputs_is_refused(nmcml_codes):
    builder = SearchWorkChain.get_builder_from_protocol(
        nmcml_codes['engine'], protocol='demo', overrides={'ga': {'parameters': {'fitness': 'pair'}}}
    )
    builder.verify_with_dft = orm.Bool(True)
    with pytest.raises(ValueError, match='needs the `label` inputs'):
        run_get_node(builder)


def test_search_two_li_contents_without_dft(nmcml_codes):
    """Two concurrent GAs; every content gets its own distinct candidates, fewer Li at lower x_li, and a summary."""
    builder = SearchWorkChain.get_builder_from_protocol(
        nmcml_codes['engine'], protocol='demo', overrides={'ga': {'parameters': {'fitness': 'pair'}}}
    )
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
        assert 'verification' not in summary[key]
    assert n_li == {contents[0]: 5, contents[1]: 4}


def test_spearman_ranking():
    assert spearman([1.0, 2.0, 3.0], [10.0, 20.0, 30.0]) == pytest.approx(1.0)
    assert spearman([1.0, 2.0], [2.0, 1.0]) == pytest.approx(-1.0)
    assert spearman([1.0], [1.0]) is None

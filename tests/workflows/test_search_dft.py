"""``nmcml.search`` with DFT verification: real pw.x 6.7 (demo protocol) on two tiny GA candidates (7 and 8 atoms)."""

from __future__ import annotations

import pytest
from aiida.engine import run_get_node

from aiida_nmcml.workflows.search import SearchWorkChain

pytestmark = pytest.mark.slow


def test_search_verifies_best_candidates_with_pw(nmcml_codes):
    """Two Li contents on an 8-site Ni/Co cell (one distinct ordering each, so the GA's best is the ground state):
    each best candidate is labelled by pw.x and the summary pairs its MLIP energy (here the pair test double) with the
    DFT energy of the same structure."""
    overrides = {
        'lattice': {'supercell': [2, 1, 1], 'composition': {'Ni': 0.5, 'Co': 0.5}},
        'li_contents': [1.0, 0.5],
        'n_verify': 1,
        'ga': {'parameters': {'fitness': 'pair', 'population_size': 2, 'elitism': 1, 'generations': 1, 'top_k': 1}},
        'label': {'qe': {'pseudo_family': nmcml_codes['pseudo_family']}},
    }
    builder = SearchWorkChain.get_builder_from_protocol(
        nmcml_codes['engine'], protocol='demo', overrides=overrides, dft_code=nmcml_codes['pw']
    )
    _, node = run_get_node(builder)
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    frames = {f.info['label_key']: f for f in node.outputs.labelled.get_frames()}
    assert sorted(frames) == ['x0_5000__rank_0', 'x1_0000__rank_0']
    summary = node.outputs.summary.get_dict()
    for key, n_atoms in (('x1_0000', 8), ('x0_5000', 7)):
        verification = summary[key]['verification']
        assert verification['keys'] == [f'{key}__rank_0']
        assert verification['dft_energy'] == [pytest.approx(frames[f'{key}__rank_0'].info['REF_energy'])]
        assert verification['mlip_energy'] == [pytest.approx(summary[key]['best_energy'])]
        assert len(frames[f'{key}__rank_0']) == n_atoms

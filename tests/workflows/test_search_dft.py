"""``nmcml.search`` with DFT verification: real pw.x 6.7 on tiny GA candidates (7 and 8 atoms), ranked by a real
(tiny) two-member MACE committee. The labels use the ``plumbing`` protocol (Gamma point, 30 Ry): this test checks
the verification bookkeeping, not DFT accuracy, and the ``demo`` k-mesh would cost minutes per cell here."""

from __future__ import annotations

import pytest
from aiida.engine import run_get_node

from aiida_nmcml.data.model import MaceModel
from aiida_nmcml.workflows.search import SearchWorkChain

pytestmark = pytest.mark.slow


def test_search_verifies_best_candidates_with_pw(nmcml_codes, tiny_foundation_model):
    """Two Li contents on an 8-site LiNiO2 cell (one distinct ordering each, so the GA's best is the ground state; a
    Ni3+ in both, so the spin-only start is magnetic), plus the x=0 end member for the hull: each verified candidate is
    labelled by pw.x and the summary pairs its MLIP energy (committee mean) with the DFT energy of that structure."""
    from aiida_nmcml.testing import toymodel

    committee = [MaceModel.get_or_create(tiny_foundation_model), MaceModel.get_or_create(toymodel.cached_tiny_mace(2))]
    overrides = {
        'lattice': {'supercell': 8, 'composition': {'Ni': 1.0}},
        'li_contents': [1.0, 0.5],
        'n_verify': 1,
        'label_protocol': 'plumbing',
        'ga': {'parameters': {'islands': 1, 'agree': 1, 'population_size': 2, 'elitism': 1, 'top_k': 1}},
        'label': {'qe': {'pseudo_family': nmcml_codes['pseudo_family']}},
    }
    builder = SearchWorkChain.get_builder_from_protocol(
        nmcml_codes['engine'], models=committee, protocol='demo', overrides=overrides, dft_code=nmcml_codes['pw']
    )
    _, node = run_get_node(builder)
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    frames = {f.info['label_key']: f for f in node.outputs.labelled.get_frames()}
    assert sorted(frames) == ['x0_5000__span_0', 'x1_0000__span_0']
    summary = node.outputs.summary.get_dict()
    for key, n_atoms in (('x1_0000', 8), ('x0_5000', 7)):
        verification = summary[key]['verification']
        assert verification['keys'] == [f'{key}__span_0']
        assert verification['dft_energy'] == [pytest.approx(frames[f'{key}__span_0'].info['REF_energy'])]
        assert verification['mlip_energy'] == [pytest.approx(summary[key]['best_energy'])]
        assert verification['mae_relative_meV_per_fu'] == pytest.approx(0.0)  # one candidate: nothing relative
        assert len(frames[f'{key}__span_0']) == n_atoms
    assert sorted(node.outputs.hull.get_dict()['contents']) == ['x0_0000', 'x0_5000', 'x1_0000']

"""E0 fit (pure numpy): rank deficiency of NMC811 data, absent elements shifted (never 0), isolated-atom energies."""

from __future__ import annotations

import numpy as np
import pytest

from aiida_nmcml.analysis.e0s import fit_e0s, mace_e0s_argument

FOUNDATION = {'Li': -1.0, 'O': -2.0, 'Ni': -3.0, 'Mn': -4.0, 'Co': -5.0}
ORDER = ['Li', 'O', 'Ni', 'Mn', 'Co']
TRUE = {'Li': -10.0, 'O': -20.0, 'Ni': -30.0, 'Mn': -40.0, 'Co': -50.0}  # the new DFT's references


def residuals(counts, elements):
    return np.array([sum(n * (TRUE[e] - FOUNDATION[e]) for n, e in zip(row, elements, strict=True)) for row in counts])


def test_nmc811_data_resolve_li_and_flag_the_transition_metals():
    """Ni:Mn:Co:O always 8:1:1:20 per 10 TM: only Li and the 'TMO2' sum are determined."""
    counts = np.array([[n_li, 20, 8, 1, 1] for n_li in range(5, 11)])
    result = fit_e0s(FOUNDATION, counts, residuals(counts, ORDER), ORDER)
    assert result['rank'] == 2 and result['rank_deficient'] is True
    assert result['unresolved_elements'] == ['O', 'Ni', 'Mn', 'Co']
    assert 'cannot separate' in result['warning']
    assert result['e0s']['Li'] == pytest.approx(TRUE['Li'])
    # energies on the data's manifold are exact whatever the split
    tmo2 = sum(n * result['e0s'][e] for n, e in zip([20, 8, 1, 1], ORDER[1:], strict=True))
    assert tmo2 == pytest.approx(sum(n * TRUE[e] for n, e in zip([20, 8, 1, 1], ORDER[1:], strict=True)))


def test_absent_elements_get_the_common_shift_and_isolated_atoms_win():
    counts = np.array([[1, 2, 1], [2, 4, 2], [3, 6, 3]])  # LiNiO2 only
    shifted = {e: FOUNDATION[e] - 5.0 for e in FOUNDATION}
    r = np.array([sum(n * -5.0 for n in row) for row in counts])
    result = fit_e0s(FOUNDATION, counts, r, ['Li', 'O', 'Ni'])
    assert result['absent_elements'] == ['Co', 'Mn']
    for symbol in FOUNDATION:
        assert result['e0s'][symbol] == pytest.approx(shifted[symbol])  # Mn, Co: foundation + shift, not 0
    assert result['source']['Mn'] == 'shift' and 'absent' in result['warning']
    assert result['heads']['Default'] == result['e0s'] and result['heads']['pt_head'] == FOUNDATION

    with_atoms = fit_e0s(FOUNDATION, counts, r, ['Li', 'O', 'Ni'], isolated_atoms={'Mn': -123.0, 'Li': -7.0})
    assert with_atoms['e0s']['Mn'] == -123.0 and with_atoms['source']['Mn'] == 'isolated_atom'
    assert with_atoms['e0s']['Li'] == -7.0 and with_atoms['absent_elements'] == ['Co']
    with pytest.raises(ValueError, match='foundation model lacks'):
        fit_e0s(FOUNDATION, counts, r, ['Li', 'O', 'Ni'], isolated_atoms={'Fe': -1.0})


def test_mace_argument_is_a_dict_of_atomic_numbers():
    import ast

    parsed = ast.literal_eval(mace_e0s_argument({'Li': -1.5, 'O': -2.25}))
    assert parsed == {3: -1.5, 8: -2.25}

"""Model lattice parameters (aiida_nmcml/engine/lattice.py): a and c of layered supercells, and the model relaxation
that the active-learning loop's lattice check runs. Cheap: geometry on built cells, two 12-atom relaxations with the
tiny MACE."""

from __future__ import annotations

import numpy as np
import pytest

from aiida_nmcml.engine.lattice import hexagonal_parameters, model_lattice_parameters
from aiida_nmcml.structures import A_NMC811, C_NMC811, build_nmc, layered_parent


@pytest.mark.parametrize(('natoms', 'x_li'), [(40, 1.0), (80, 0.5), (80, 0.25), (160, 0.5)])
def test_hexagonal_parameters_of_built_supercells(natoms, x_li):
    """Every layer-aligned supercell of the builder maps back to the a and c it was built with, whatever x."""
    atoms = build_nmc(natoms, x_li=x_li, seed=3, magnetic=False)
    values = hexagonal_parameters(atoms)
    assert values['a'] == pytest.approx(A_NMC811, rel=1e-9)
    assert values['c'] == pytest.approx(C_NMC811, rel=1e-9)


def test_hexagonal_parameters_follow_a_strain_and_refuse_unlayered_cells():
    atoms = build_nmc(80, x_li=0.5, seed=1, magnetic=False, antisite_fraction=0.05)
    atoms.set_cell(atoms.cell.array @ np.diag([1.02, 1.02, 0.97]), scale_atoms=True)  # z: the stacking axis
    atoms.rattle(0.02, seed=1)  # MD-like noise does not split an oxygen layer
    values = hexagonal_parameters(atoms)
    assert values['a'] == pytest.approx(A_NMC811 * 1.02, rel=1e-9)
    assert values['c'] == pytest.approx(C_NMC811 * 0.97, rel=1e-9)
    from ase.build import bulk

    with pytest.raises(ValueError, match='not a layered'):
        hexagonal_parameters(bulk('Cu', 'fcc', a=3.6, cubic=True))  # no oxygen
    odd = layered_parent(primitive=False)
    del odd[odd.get_chemical_symbols().index('O')]  # one oxygen layer of six removed
    with pytest.raises(ValueError, match='not a layered'):
        hexagonal_parameters(odd)


def test_model_relaxation_finds_the_same_cell_from_both_sides(tiny_foundation_model):
    """The model's a and c do not depend on where the relaxation starts (+-3 % strain), and differ from the start."""
    from mace.calculators import MACECalculator

    calculator = MACECalculator(model_paths=str(tiny_foundation_model), device='cpu', default_dtype='float64')
    cells = {}
    for name, factor in (('stretched', 1.03), ('compressed', 0.97)):
        atoms = layered_parent(primitive=False)  # 12-atom hexagonal LiNiO2 cell, ab in the layer plane
        atoms.set_cell(atoms.cell.array * factor, scale_atoms=True)
        cells[name] = atoms
    result = model_lattice_parameters(calculator, cells, fmax=0.02, steps=300)
    stretched, compressed = result['stretched'], result['compressed']
    assert stretched['converged'] and compressed['converged']
    assert stretched['x_li'] == compressed['x_li'] == 1.0
    for name in ('a', 'c'):
        assert stretched[name] == pytest.approx(compressed[name], rel=3e-3)
        assert abs(stretched[name] / stretched[f'{name}_start'] - 1) > 0.005  # it moved
    assert stretched['max_stress_GPa'] < 1.0

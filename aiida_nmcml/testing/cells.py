"""Small test cells shared by the engine tests (tests/engine/conftest.py) and the parser-fixture recorder
(tests/parsers/fixtures/record_engine_outputs.py)."""

from __future__ import annotations


def small_cell():
    """A 32-atom LiNiO2-type cell (2x2x2 rhombohedral) with a little Mn and Co: the size the tests run MD on."""
    from ase.build import make_supercell

    from aiida_nmcml.structures import layered_parent

    atoms = make_supercell(layered_parent(), [[2, 0, 0], [0, 2, 0], [0, 0, 2]])
    symbols = atoms.get_chemical_symbols()
    tm = [i for i, s in enumerate(symbols) if s == 'Ni']
    symbols[tm[0]] = 'Mn'
    symbols[tm[3]] = 'Co'
    atoms.set_chemical_symbols(symbols)
    return atoms

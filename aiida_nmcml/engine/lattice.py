"""Model lattice parameters a and c of layered Li_x(Ni,Mn,Co)O2 cells after a cell relaxation with a MACE model.

Why: the active-learning issue asks that a(x) and c(x) after a model relaxation be within 1 % of DFT at x = 1, 0.5
and 0.25. Force and stress RMSE on MD snapshots do not show it: c(x) (the Li slab spacing, which collapses at low x)
is a property of the model's minimum, not of its errors near the sampled frames. The relaxation reuses the NEB
engine's :func:`aiida_nmcml.engine.neb.relax_cell` (ASE ``FrechetCellFilter`` + FIRE, positions and all six cell
components), so the same code relaxes cells for barriers and for this check.

a and c are those of the parent hexagonal cell (R-3m, three layers per c): for a supercell whose first two vectors
lie in the layer plane (every cell of :func:`aiida_nmcml.structures.build_nmc`), ``k`` TM layers stacked along the
third vector (counted as oxygen layers / 2 along the layer normal) and ``N_O / 2`` formula units,

    a = sqrt(2 * area * k / (sqrt(3) * N_O / 2)),     c = 3 * height / k,

i.e. the in-plane area per TM site and the interlayer spacing, averaged over the cell: what a supercell with Li
vacancy or TM ordering has instead of one a and c, and what a DFT vc-relax of the same cell gives for comparison.

Pure ASE/numpy; the model enters as any ASE calculator (energy, forces, stress).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

__all__ = ('hexagonal_parameters', 'model_lattice_parameters')

#: two oxygen layers closer than this (Å, along the layer normal) are one layer (relaxed cells: a few 0.01 Å apart)
LAYER_GAP = 0.6


def _count_layers(heights: np.ndarray, period: float, gap: float = LAYER_GAP) -> int:
    """Number of clusters of ``heights`` on a circle of circumference ``period`` separated by more than ``gap``."""
    if heights.size == 0:
        return 0
    h = np.sort(np.mod(heights, period))
    steps = np.diff(np.append(h, h[0] + period))  # the last step wraps around the period
    return max(1, int(np.sum(steps > gap)))


def hexagonal_parameters(atoms) -> dict:
    """a and c (Å) of the parent hexagonal cell of a layered LiMO2 supercell (module docstring), plus ``layers``.

    Raises ``ValueError`` when the oxygen does not form an even number of layers along the normal of the ab plane
    (no oxygen, an odd count): such a cell is refused rather than given a meaningless a and c. Whether the ab plane
    is the layer plane is the caller's to ensure (true of every :func:`aiida_nmcml.structures.build_nmc` cell).
    """
    cell = np.asarray(atoms.cell.array, dtype=float)
    normal = np.cross(cell[0], cell[1])
    area = float(np.linalg.norm(normal))
    if area <= 0:
        raise ValueError('the first two cell vectors are parallel: not a layered cell')
    normal /= area
    height = abs(float(cell[2] @ normal))
    oxygen = np.asarray(atoms.get_chemical_symbols()) == 'O'
    n_oxygen = int(oxygen.sum())
    o_layers = _count_layers(atoms.positions[oxygen] @ normal, height)
    if n_oxygen == 0 or n_oxygen % 2 or o_layers % 2:
        raise ValueError(
            f'{n_oxygen} O atoms in {o_layers} layers along the normal of the ab plane: not a layered LiMO2 cell '
            'with its layers in the ab plane'
        )
    layers = o_layers // 2
    a = math.sqrt(2.0 * area * layers / (math.sqrt(3.0) * n_oxygen / 2))
    return {'a': a, 'c': 3.0 * height / layers, 'layers': layers}


def model_lattice_parameters(
    calculator, structures: Mapping, fmax: float = 0.02, steps: int = 300, mode: str = 'full'
) -> dict:
    """Relax every structure (positions and cell) with ``calculator``; a and c before and after, per key.

    ``structures``: key -> ASE Atoms (layered, ab in the layer plane). Each result: ``a``, ``c``, ``a_start``,
    ``c_start``, ``converged`` (FIRE reached ``fmax`` on forces and cell within ``steps``), ``steps``,
    ``max_stress_GPa`` (left after the relaxation), ``energy_per_atom``, ``x_li`` (Li per TM). A relaxation that
    does not converge still reports its last cell, flagged, so the caller decides.
    """
    from .common import li_per_tm
    from .neb import relax_cell

    results = {}
    for key in sorted(structures):
        atoms = structures[key]
        start = hexagonal_parameters(atoms)
        relaxed, record = relax_cell(atoms, calculator, mode=mode, fmax=fmax, steps=steps)
        end = hexagonal_parameters(relaxed)
        results[key] = {
            'a': end['a'],
            'c': end['c'],
            'a_start': start['a'],
            'c_start': start['c'],
            'layers': end['layers'],
            'x_li': li_per_tm(atoms.get_chemical_symbols()),
            'converged': record['converged'],
            'steps': record['steps'],
            'max_stress_GPa': record['max_stress_GPa'],
            'energy_per_atom': record['energy'] / len(atoms),
        }
    return results

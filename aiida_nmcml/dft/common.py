"""What every DFT engine shares: element-level settings read from a structure and the settings fingerprint.

Kinds are split by initial moment (``Ni``, ``Ni1``, ...), so moments and U values are resolved per kind from the
kind's element; the structure attribute ``nmcml_magmoms`` (per site, set by ``structures.to_structure_data``) wins
over the protocol's per-element defaults, because the builder knows the intended magnetic order.
"""

from __future__ import annotations

import json

ENGINES = ('qe', 'vasp')


class LabelInputError(ValueError):
    """Raised before anything is submitted: the inputs cannot give a valid DFT calculation."""


def check_structure(key: str, structure) -> None:
    """Refuse a structure that DFT with periodic plane waves cannot treat, naming the frame."""
    import numpy as np

    cell = np.asarray(structure.cell, dtype=float)
    if not all(structure.pbc) or abs(np.linalg.det(cell)) < 1e-6:
        raise LabelInputError(
            f'structure {key!r} has no periodic 3D cell (pbc={structure.pbc}, volume={abs(np.linalg.det(cell)):.3g} '
            'Å^3): plane-wave DFT needs one; set the cell and pbc=(True, True, True) before labelling.'
        )
    if not structure.sites:
        raise LabelInputError(f'structure {key!r} has no atoms.')


def kind_magmoms(structure, defaults: dict[str, float]) -> dict[str, float]:
    """Initial moment (µB) per kind: from the ``nmcml_magmoms`` attribute when present, else per element."""
    site_moments = structure.base.attributes.get('nmcml_magmoms', None)
    moments: dict[str, float] = {}
    if site_moments is not None and len(site_moments) == len(structure.sites):
        for site, moment in zip(structure.sites, site_moments, strict=True):
            moments.setdefault(site.kind_name, float(moment))
    for kind in structure.kinds:
        moments.setdefault(kind.name, float(defaults.get(kind.symbol, 0.0)))
    return moments


def site_magmoms(structure, defaults: dict[str, float]) -> list[float]:
    """Initial moment (µB) per site, in site order (VASP's MAGMOM)."""
    per_kind = kind_magmoms(structure, defaults)
    return [per_kind[site.kind_name] for site in structure.sites]


def kind_hubbard_u(structure, hubbard_u: dict[str, float]) -> dict[str, float]:
    """U (eV) per kind whose element has a non-zero U in ``hubbard_u``."""
    return {kind.name: float(hubbard_u[kind.symbol]) for kind in structure.kinds if hubbard_u.get(kind.symbol)}


def settings_fingerprint(
    engine: str,
    functional: str,
    hubbard_u: dict,
    cutoff: float,
    kpoints_distance: float,
    *,
    ecutrho: float | None = None,
    pseudos: dict | str | None = None,
    smearing: str | None = None,
    hubbard_projector: str | None = None,
) -> dict:
    """Per-frame DFT settings in the keys of the frames contract (``docs/dev/contracts.md``).

    Everything that can make two labels incompatible: besides functional, U, cutoff and k-points, the
    pseudopotentials (md5 per element for QE, family and mapping for VASP), the density cutoff, the smearing and the
    U projectors (a U on atomic projectors is a different Hamiltonian from the same U on ortho-atomic ones).
    """
    fingerprint = {
        'engine': engine,
        'functional': functional,
        'hubbard_u': json.dumps({k: float(v) for k, v in sorted(hubbard_u.items()) if v}, sort_keys=True),
        'ecutwfc': float(cutoff),
        'kpoints_distance': float(kpoints_distance),
        'ecutrho': None if ecutrho is None else float(ecutrho),
        'pseudos': pseudos if isinstance(pseudos, str) or pseudos is None else json.dumps(pseudos, sort_keys=True),
        'smearing': smearing,
        'hubbard_projector': hubbard_projector,
    }
    return {key: value for key, value in fingerprint.items() if value is not None}  # extxyz cannot store None

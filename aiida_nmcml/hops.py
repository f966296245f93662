"""End points of the two canonical Li hops in layered Li_x(Ni,Mn,Co)O2, for NEB (no AiiDA import).

* **ODH** (oxygen-dumbbell hop): a Li moves into an adjacent single vacancy through the shared O-O edge of the two
  octahedra. The straight line between the sites passes through the edge centre, so an IDPP path needs no guide.
* **TSH** (tetrahedral-site hop): a Li moves into one vacancy of a *divacancy* through the tetrahedral site that
  shares faces with its own octahedron and both vacant ones (so no Li blocks the tetrahedron's other faces). A
  straight-line path would go over the O-O edge instead, so the builder also returns ``via``: the same cell with the
  moving Li in the tetrahedral site, which the NEB engine uses to guide the starting path (IDPP in two halves).

Why a 4x4 in-plane hexagonal cell (192 sites, 190 atoms with a divacancy): the Devi et al. LiNiO2 setup
(Li47Ni48O96), large enough that periodic images of the hop do not interact (science review section 8.3).

``environment`` picks the hop by the transition metal nearest to its transition point (the edge centre for ODH, the
tetrahedral site for TSH): ``'Ni'`` for a Ni-rich environment, ``'Mn'``/``'Co'`` for Mn/Co adjacent. The chosen
environment and the nearest TM symbols are recorded in ``info``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

HOP_KINDS = ('odh', 'tsh')


def hexagonal_supercell(n1: int = 4, n2: int = 4, n3: int = 1) -> np.ndarray:
    """Integer matrix (on the rhombohedral primitive cell) of ``n1 x n2 x n3`` conventional hexagonal cells."""
    hexagonal_in_primitive = np.array([[1, -1, 0], [0, 1, -1], [1, 1, 1]])
    return np.diag([n1, n2, n3]) @ hexagonal_in_primitive


@dataclass
class Hop:
    kind: str
    initial: object  # ase.Atoms
    final: object
    via: object | None
    moving_index: int
    info: dict = field(default_factory=dict)


def _mic_vectors(atoms, origin: np.ndarray, indices: np.ndarray) -> np.ndarray:
    from ase.geometry import find_mic

    vectors, _ = find_mic(atoms.positions[indices] - origin, atoms.cell, pbc=True)
    return vectors


def _li_neighbours(atoms, li: np.ndarray, index: int, a_max: float) -> np.ndarray:
    """Li sites in the same layer within ``a_max`` of ``index``."""
    vec = _mic_vectors(atoms, atoms.positions[index], li)
    dist = np.linalg.norm(vec, axis=1)
    same_layer = np.abs(vec[:, 2]) < 0.5
    return li[(dist > 0.1) & (dist < a_max) & same_layer]


def tetrahedral_site(atoms, triangle: tuple[int, int, int]) -> np.ndarray:
    """Centre of the O4 tetrahedron sharing faces with the three Li octahedra of ``triangle`` (atom indices).

    The in-plane centroid of the triangle has one O straight above or below it (the apex) and three O of the other O
    layer around it; the tetrahedral site is the centroid of those four nearest O.
    """
    first = atoms.positions[triangle[0]]
    others = _mic_vectors(atoms, first, np.array(triangle))
    centre = first + others.mean(axis=0)
    oxygen = np.flatnonzero(np.array(atoms.get_chemical_symbols()) == 'O')
    vec = _mic_vectors(atoms, centre, oxygen)
    nearest = np.argsort(np.linalg.norm(vec, axis=1))[:4]
    return centre + vec[nearest].mean(axis=0)


def _nearest_tm(atoms, point: np.ndarray, count: int = 3) -> list[str]:
    symbols = np.array(atoms.get_chemical_symbols())
    tm = np.flatnonzero(np.isin(symbols, ['Ni', 'Mn', 'Co']) & (atoms.arrays.get('sublattice', symbols) != 'li'))
    if 'sublattice' not in atoms.arrays:
        tm = np.flatnonzero(np.isin(symbols, ['Ni', 'Mn', 'Co']))
    dist = np.linalg.norm(_mic_vectors(atoms, point, tm), axis=1)
    return [str(symbols[tm[i]]) for i in np.argsort(dist)[:count]]


def build_hop(
    kind: str,
    host=None,
    *,
    supercell=None,
    composition: dict | None = None,
    x_li: float = 1.0,
    seed: int = 0,
    environment: str | None = None,
    moving: int | None = None,
    near_antisite: bool = False,
) -> Hop:
    """The initial and final structures of one Li hop (and the TSH guide ``via``), same atoms in the same order.

    ``host``: a structure from :func:`aiida_nmcml.structures.build_nmc` (layers in xy); without it one is built with
    ``supercell`` (default 4x4x1 hexagonal), ``composition`` (default LiNiO2: ``{'Ni': 1}``), ``x_li`` and ``seed``.
    The hop's vacancies are made by removing Li from the host. ``moving`` forces the index (in the host) of the Li
    that hops; otherwise the first Li whose neighbourhood fits (and whose environment matches) is used.
    ``near_antisite``: take the hop whose transition point is closest to a Ni on the Li layer (a Ni_Li antisite, from
    ``build_nmc(..., antisite_fraction=...)``); its distance is recorded as ``info['antisite_distance_A']``.
    """
    if kind not in HOP_KINDS:
        raise ValueError(f'unknown hop kind {kind!r}: use one of {HOP_KINDS}')
    if host is None:
        from .structures import build_nmc

        host = build_nmc(
            hexagonal_supercell() if supercell is None else supercell,
            x_li=x_li,
            composition={'Ni': 1.0} if composition is None else composition,
            seed=seed,
        )
    host = host.copy()
    symbols = np.array(host.get_chemical_symbols())
    li = np.flatnonzero(symbols == 'Li')
    if li.size < 3:
        raise ValueError('the host holds fewer than 3 Li: no hop can be built')
    a = float(np.sort(np.linalg.norm(_mic_vectors(host, host.positions[li[0]], li[1:]), axis=1))[0])
    candidates = [moving] if moving is not None else list(li)
    if near_antisite:
        return _hop_near_antisite(kind, host, candidates, environment)
    for m in candidates:
        if symbols[m] != 'Li':
            raise ValueError(f'atom {m} is {symbols[m]}, not Li')
        neighbours = _li_neighbours(host, li, m, 1.2 * a)
        for j in neighbours:
            if kind == 'odh':
                midpoint = host.positions[m] + _mic_vectors(host, host.positions[m], np.array([j]))[0] / 2
                remove, via_point, transition = [j], None, midpoint
            else:
                common = [k for k in neighbours if k != j and k in _li_neighbours(host, li, j, 1.2 * a)]
                if not common:
                    continue
                k = common[0]
                via_point = tetrahedral_site(host, (m, j, k))
                remove, transition = [j, k], via_point
            near = _nearest_tm(host, transition)
            if environment is not None and near[0] != environment:
                continue
            return _make_hop(kind, host, m, j, remove, via_point, near, environment, a)
    raise ValueError(
        f'no {kind.upper()} hop found in this host'
        + (f' with a {environment} nearest the transition point' if environment else '')
    )


def antisite_indices(atoms) -> np.ndarray:
    """Indices of Ni on the Li layer (``sublattice == 'li'``): the Ni_Li antisites."""
    if 'sublattice' not in atoms.arrays:
        return np.array([], dtype=int)
    symbols = np.array(atoms.get_chemical_symbols())
    return np.flatnonzero((symbols == 'Ni') & (np.asarray(atoms.arrays['sublattice']) == 'li'))


def _hop_near_antisite(kind, host, candidates, environment) -> Hop:
    """Every hop of ``kind`` from the candidates, the one whose transition point is closest to a Ni_Li."""
    antisites = antisite_indices(host)
    if antisites.size == 0:
        raise ValueError('near_antisite: the host has no Ni on the Li layer; build it with antisite_fraction > 0')
    best = None
    # nearest Li first; the transition point lies within ~2 Å of the moving Li, so farther Li cannot do better
    li_distance = {
        int(m): float(np.min(np.linalg.norm(_mic_vectors(host, host.positions[m], antisites), axis=1)))
        for m in candidates
    }
    for m in sorted(candidates, key=lambda i: li_distance[int(i)]):
        if best is not None and li_distance[int(m)] > best[0] + 2.5:
            break
        try:
            hop = build_hop(kind, host, moving=int(m), environment=environment)
        except ValueError:
            continue
        removed = sorted(hop.info['vacancies_removed_from_host'])
        point = _transition_point(hop)
        kept = np.array([i - int(np.searchsorted(removed, i)) for i in antisites if i not in removed])
        distance = float(np.min(np.linalg.norm(_mic_vectors(hop.initial, point, kept), axis=1)))
        if best is None or distance < best[0] - 1e-6:
            best = (distance, hop)
    if best is None:
        raise ValueError(f'no {kind.upper()} hop found in this host')
    distance, hop = best
    for atoms in (hop.initial, hop.final, hop.via):
        if atoms is not None:
            atoms.info['nmcml_hop']['antisite_distance_A'] = distance
            atoms.info['nmcml_hop']['environment'] = 'Ni_Li'
    hop.info.update({'antisite_distance_A': distance, 'environment': 'Ni_Li'})
    return hop


def _transition_point(hop) -> np.ndarray:
    """Edge centre (ODH) or the tetrahedral site (TSH, the moving Li in ``via``)."""
    m = hop.moving_index
    if hop.via is not None:
        return hop.via.positions[m]
    return (hop.initial.positions[m] + hop.final.positions[m]) / 2  # final = initial + the hop vector, unwrapped


def _make_hop(kind, host, m, j, remove, via_point, near_tm, environment, a) -> Hop:
    target = host.positions[m] + _mic_vectors(host, host.positions[m], np.array([j]))[0]
    keep = np.ones(len(host), dtype=bool)
    keep[remove] = False
    new_index = int(np.sum(keep[:m]))
    initial = host[keep]
    final = initial.copy()
    final.positions[new_index] = target
    via = None
    if via_point is not None:
        via = initial.copy()
        via.positions[new_index] = via_point
    info = {
        'kind': kind,
        'moving_index': new_index,
        'vacancies_removed_from_host': [int(r) for r in remove],
        'hop_distance_A': float(np.linalg.norm(target - host.positions[m])),
        'li_li_distance_A': a,
        'nearest_tm_to_transition_point': near_tm,
        'environment': environment or near_tm[0],
        'formula': initial.get_chemical_formula(),
    }
    for atoms in (initial, final, via):
        if atoms is not None:
            atoms.info['nmcml_hop'] = dict(info)
    return Hop(kind, initial, final, via, new_index, info)

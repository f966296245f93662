"""Checks on MD frames that decide whether a diffusion run stays in the model's (and the material's) domain.

No AiiDA: the ``nmcml.diffusion`` work chain calls these through a calcfunction (``inspect_run``), and they work on
any ASE frames of a layered cell (layers in xy, which :mod:`aiida_nmcml.structures` guarantees). Why each check
(docs/diffusion.md):

* **Committee deviation outside the trust band.** A run whose max force deviation leaves the band the committee was
  calibrated for is extrapolating: its D is not the model's prediction of the material, so it is flagged and left out
  of the fits (reported, never silently used).
* **Transition-metal migration into the Li layer.** A TM ion that leaves its layer along the layer normal by more than
  ``migration_fraction`` of the TM-Li interlayer distance (half the TM-plane spacing, ~2.4 Å in NMC811) has moved
  towards (or into) the Li slab: a degradation path (layered -> spinel/rock salt) or a model artefact, either way not
  the Li hopping in an intact host that D(T, x) is meant to measure.
* **O-O contacts below 1.5 Å.** The O-O distance in the intact oxide is ~2.6-2.9 Å; a peroxide-like O-O bond is ~1.5 Å
  and O2 is 1.21 Å. A contact below 1.5 Å means oxygen dimerisation (O loss at low x) or a collapsed model.

:func:`msd_curve` gives the per-run in-plane and out-of-plane Li MSD (relative to the framework centre of mass, all
time origins): the raw curve of each run is stored, next to the pooled fit of each (T, x).
"""

from __future__ import annotations

import numpy as np

TM_ELEMENTS = ('Ni', 'Mn', 'Co')
FRAMEWORK = ('O', 'Ni', 'Mn', 'Co')


def _unwrapped(frame) -> np.ndarray:
    return np.asarray(frame.arrays['unwrapped'] if 'unwrapped' in frame.arrays else frame.get_positions(), dtype=float)


def tm_indices(frame) -> np.ndarray:
    """TM ions that belong to the TM layer: by ``arrays['sublattice']`` when the frame has it (a Ni_Li antisite sits in
    the Li layer from the start and is not a migration), else every Ni, Mn, Co."""
    symbols = np.array(frame.get_chemical_symbols())
    is_tm = np.isin(symbols, TM_ELEMENTS)
    if 'sublattice' in frame.arrays:
        is_tm &= np.asarray(frame.arrays['sublattice']).astype(str) == 'tm'
    return np.flatnonzero(is_tm)


def tm_plane_spacing(frame, tolerance: float = 1.0) -> float:
    """Distance (Å, along z) between neighbouring TM planes of ``frame``: gaps between clusters of TM heights."""
    idx = tm_indices(frame)
    height = abs(np.linalg.det(frame.cell.array)) / np.linalg.norm(np.cross(frame.cell[0], frame.cell[1]))
    if idx.size == 0:
        return float('nan')
    z = np.sort(np.mod(frame.get_positions()[idx, 2], height))
    levels = [z[0]]
    for value in z[1:]:
        if value - levels[-1] > tolerance:
            levels.append(value)
    if len(levels) > 1 and levels[0] + height - levels[-1] < tolerance:
        levels.pop()  # the same plane seen across the periodic boundary
    return float(height / len(levels))


def check_frames(
    frames, oo_min_distance: float = 1.5, migration_fraction: float = 0.5, stride: int = 1, o_cutoff: float = 3.0
) -> dict:
    """TM migration along the layer normal and the shortest O-O distance over ``frames[::stride]``.

    Displacements are unwrapped and taken relative to the framework centre of mass (as in the diffusion analysis).
    Returns plain numbers: ``tm_migrated`` (atom indices), ``max_tm_normal_displacement_A``, ``migration_threshold_A``,
    ``min_oo_distance_A`` (None when no two O are within ``o_cutoff``), ``oo_contact_frames`` (frame indices).
    """
    from ase import Atoms
    from ase.neighborlist import neighbor_list

    frames = list(frames)
    if not frames:
        raise ValueError('no frames to check')
    stride = max(1, int(stride))
    first = frames[0]
    symbols = np.array(first.get_chemical_symbols())
    host = np.flatnonzero(np.isin(symbols, FRAMEWORK))
    masses = first.get_masses()[host]
    tm = tm_indices(first)
    spacing = tm_plane_spacing(first)
    threshold = migration_fraction * spacing / 2  # TM-Li interlayer distance = half the TM-plane spacing
    checked = list(range(0, len(frames), stride))
    if checked[-1] != len(frames) - 1:
        checked.append(len(frames) - 1)
    start = _unwrapped(first)
    com0 = masses @ start[host] / masses.sum() if host.size else np.zeros(3)
    max_dz = np.zeros(tm.size)
    oxygen = np.flatnonzero(symbols == 'O')
    min_oo, contact_frames = None, []
    for i in checked:
        frame = frames[i]
        pos = _unwrapped(frame)
        com = masses @ pos[host] / masses.sum() if host.size else np.zeros(3)
        if tm.size:
            dz = np.abs((pos[tm, 2] - start[tm, 2]) - (com[2] - com0[2]))
            max_dz = np.maximum(max_dz, dz)
        if oxygen.size > 1:
            o_atoms = Atoms('O' * oxygen.size, positions=frame.get_positions()[oxygen], cell=frame.cell, pbc=frame.pbc)
            distances = neighbor_list('d', o_atoms, o_cutoff)
            if distances.size:
                shortest = float(distances.min())
                min_oo = shortest if min_oo is None else min(min_oo, shortest)
                if shortest < oo_min_distance:
                    contact_frames.append(int(i))
    migrated = tm[max_dz > threshold] if tm.size else np.array([], dtype=int)
    return {
        'frames_checked': len(checked),
        'n_tm_checked': int(tm.size),
        'tm_plane_spacing_A': spacing,
        'migration_threshold_A': float(threshold),
        'max_tm_normal_displacement_A': float(max_dz.max()) if tm.size else 0.0,
        'tm_migrated': [int(i) for i in migrated],
        'min_oo_distance_A': min_oo,
        'oo_min_distance_A': float(oo_min_distance),
        'oo_contact_frames': contact_frames,
    }


def check_uncertainty(max_force_dev, trust_upper: float, max_fraction_above: float = 0.0) -> dict:
    """Fraction of monitored frames whose max force deviation is above ``trust_upper``; outside the domain when it
    exceeds ``max_fraction_above`` (0: a single frame above the band flags the run)."""
    series = np.asarray(max_force_dev, dtype=float)
    series = series[np.isfinite(series)]
    if series.size == 0:
        return {'monitored': 0, 'fraction_above': None, 'max_force_dev': None, 'outside': False}
    fraction = float(np.mean(series > trust_upper))
    return {
        'monitored': int(series.size),
        'fraction_above': fraction,
        'max_force_dev': float(series.max()),
        'trust_upper': float(trust_upper),
        'outside': fraction > max_fraction_above,
    }


def msd_curve(frames, species: str = 'Li', n_lags: int = 50, max_lag_fraction: float = 0.5) -> dict:
    """Li MSD of one run against lag (Å², in-plane xy and out-of-plane z), all time origins, relative to the framework
    centre of mass. The raw curve only; the fit with its interval is the pooled one of each (T, x)."""
    frames = list(frames)
    symbols = np.array(frames[0].get_chemical_symbols())
    mobile = np.flatnonzero(symbols == species)
    host = np.flatnonzero(np.isin(symbols, FRAMEWORK))
    positions = np.array([_unwrapped(f) for f in frames])
    rel = positions[:, mobile]
    if host.size:
        masses = frames[0].get_masses()[host]
        com = np.einsum('tna,n->ta', positions[:, host], masses) / masses.sum()
        rel = rel - com[:, None, :]
    times = np.array([float(f.info.get('time_fs', np.nan)) for f in frames])
    last = max(1, int(max_lag_fraction * (len(frames) - 1)))
    lags = np.unique(np.linspace(1, last, min(n_lags, last)).round().astype(int))
    msd_xy, msd_z = [], []
    for k in lags:
        d = rel[k:] - rel[:-k]
        msd_xy.append(float(np.mean(np.sum(d[..., :2] ** 2, axis=-1))) if mobile.size else 0.0)
        msd_z.append(float(np.mean(d[..., 2] ** 2)) if mobile.size else 0.0)
    dt = float(times[1] - times[0]) if len(times) > 1 and np.all(np.isfinite(times[:2])) else float('nan')
    return {'lag_fs': (lags * dt).tolist(), 'msd_xy_A2': msd_xy, 'msd_z_A2': msd_z, 'n_li': int(mobile.size)}

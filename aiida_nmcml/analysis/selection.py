"""Active-learning frame selection: which explored frames go to DFT. Pure numpy, no AiiDA.

The work chain ``nmcml.active_learning`` wraps :func:`select_frames` in a calcfunction; the in-process benchmark
(``benchmarks/al_efficiency.py``) calls it directly, so both select with the same rules.

The rules (DP-GEN's, with the trust levels of this plugin's committee calibration, science review §8.1 item 4):

1. **Deviation.** A frame's committee deviation is ``max_i d_i``, the largest per-atom deviation
   ``d_i = sqrt(mean_m |F_mi - <F_i>|^2)`` (:func:`aiida_nmcml.engine.metrics.atomic_force_deviation`; the MD
   engine writes it as ``max_force_dev`` on every monitored frame).
2. **Trust band** ``[lower, upper]`` (eV/Å, per-atom levels): below ``lower`` the frame is *accurate* (nothing to
   learn), inside the band it is a *candidate*, above ``upper`` it is *discarded* as unphysical (counted, never
   labelled: a frame the committee disagrees on by that much is usually a structure MD should not have reached, and
   DFT on it is wasted or fails to converge). The levels are given, or read from a committee calibration
   (:func:`aiida_nmcml.engine.metrics.calibrate_committee`: ``trust_lower`` / ``trust_upper``, the deviations at
   which more than 10 % / 90 % of atoms have a force error above the calibration's tolerance). Per-atom levels do
   not depend on the cell size; calibrate at the size where they are applied (DFT-sized exploration cells).
3. **Refusal.** A committee whose spread is negligible (members that differ only by seed, science review B4) ranks
   nothing: all frames would be "accurate" and the loop would converge without learning. :func:`select_frames`
   raises :class:`NegligibleSpreadError` (the work chain's exit code 730, ``ERROR_NEGLIGIBLE_SPREAD``) when the median
   frame deviation is below ``min_spread`` or when the calibration it was given says ``negligible_spread``.
4. **Diversity.** Among the candidates, greedy farthest-point sampling (FPS) on per-frame descriptors (MACE
   invariant descriptors, :func:`mace_frame_descriptors`, or any ``(n_frames, n_features)`` array): start from the
   most uncertain candidate (or from the frames already in the training set, ``reference``), then repeatedly take
   the candidate farthest from everything taken. Consecutive MD frames are nearly identical; a **minimum step gap**
   along each trajectory makes a frame within ``min_step_gap`` steps of a selected frame of the same trajectory
   ineligible. At most ``max_selected`` frames per call (``~20-50`` per iteration in production).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = (
    'ACCURATE',
    'CANDIDATE',
    'DISCARDED',
    'NegligibleSpreadError',
    'SelectionResult',
    'TrustBand',
    'classify',
    'farthest_point_sampling',
    'frame_deviations',
    'mace_frame_descriptors',
    'select_frames',
    'trust_band',
)

ACCURATE, CANDIDATE, DISCARDED = 'accurate', 'candidate', 'discarded'

#: default refusal level (eV/Å), the same as ``nmcml.evaluate``'s ``min_spread``
DEFAULT_MIN_SPREAD = 1.0e-3


class NegligibleSpreadError(ValueError):
    """The committee's spread is too small to rank frames by it (exit code 730 in the work chains)."""


@dataclass(frozen=True)
class TrustBand:
    """Per-atom deviation levels (eV/Å); ``source`` says where they came from (``given`` or ``calibration``)."""

    lower: float
    upper: float
    source: str = 'given'

    def __post_init__(self):
        if not (np.isfinite(self.lower) and self.lower >= 0):
            raise ValueError(f'trust lower level must be finite and >= 0, got {self.lower}')
        if not self.upper > self.lower:
            raise ValueError(f'trust upper level {self.upper} must be above the lower level {self.lower}')

    def as_dict(self) -> dict:
        return {'lower': float(self.lower), 'upper': float(self.upper), 'source': self.source}


def trust_band(
    calibration: Mapping | None = None,
    *,
    lower: float | None = None,
    upper: float | None = None,
    upper_factor: float | None = None,
) -> TrustBand:
    """The trust band: explicit levels win; missing ones come from ``calibration`` (``trust_lower``/``trust_upper``).

    ``upper_factor``: when the calibration has no ``trust_upper`` (its data never reach a 90 % failure rate and it has
    no Gaussian model), or one not above its ``trust_lower`` (both levels in one bin of a small calibration set),
    ``upper = upper_factor * lower``; without it such a calibration is refused.
    A calibration flagged ``negligible_spread`` raises :class:`NegligibleSpreadError`: its levels mean nothing.
    """
    source = 'given'
    if calibration is not None and (lower is None or upper is None):
        if calibration.get('negligible_spread'):
            raise NegligibleSpreadError(
                'the calibration says the committee spread is negligible (median per-atom deviation '
                f'{calibration.get("median_deviation")} < min_spread {calibration.get("min_spread")} eV/Å): '
                'its trust levels rank nothing; retrain a committee whose members differ in data and initial condition'
            )
        source = 'calibration' if lower is None and upper is None else 'given+calibration'
        if lower is None:
            lower = calibration.get('trust_lower')
        if upper is None:
            upper = calibration.get('trust_upper')
    if lower is None:
        raise ValueError('no lower trust level: give `lower` or a calibration with `trust_lower`')
    if upper is not None and upper <= lower and source != 'given' and upper_factor is not None:
        # a calibration on few atoms can put both levels in the same reliability bin (seen: 8 held-out atoms gave
        # trust_lower == trust_upper); the band would be empty, so the upper level falls back to the factor
        upper = None
    if upper is None:
        if upper_factor is None:
            raise ValueError('no upper trust level: give `upper`, `upper_factor`, or a calibration with `trust_upper`')
        upper = float(upper_factor) * float(lower)
        source += ' (upper = factor x lower)' if source != 'given' else ''
    return TrustBand(float(lower), float(upper), source)


def frame_deviations(forces_committee: Sequence) -> np.ndarray:
    """Per-frame ``max_i d_i`` from a sequence of per-frame committee forces, each ``(n_models, n_atoms, 3)``."""
    from ..engine.metrics import atomic_force_deviation

    return np.array([float(np.max(atomic_force_deviation(forces))) for forces in forces_committee], dtype=float)


def classify(deviations, band: TrustBand) -> np.ndarray:
    """``accurate`` (``d < lower``), ``candidate`` (``lower <= d <= upper``) or ``discarded`` (``d > upper``).

    A non-finite deviation is ``discarded`` (the frame's forces blew up).
    """
    d = np.asarray(deviations, dtype=float).ravel()
    classes = np.full(d.shape, CANDIDATE, dtype=object)
    finite = np.isfinite(d)
    classes[finite & (d < band.lower)] = ACCURATE
    classes[~finite | (d > band.upper)] = DISCARDED
    return classes


def check_spread(deviations, min_spread: float = DEFAULT_MIN_SPREAD) -> float:
    """The median frame deviation; :class:`NegligibleSpreadError` if it is below ``min_spread``.

    The median frame *maximum* is an upper bound of the median per-atom deviation the calibration refuses on: a
    committee refused here would certainly be refused by the calibration too.
    """
    d = np.asarray(deviations, dtype=float).ravel()
    d = d[np.isfinite(d)]
    if d.size == 0:
        raise ValueError('no finite frame deviations to select from')
    median = float(np.median(d))
    if median < min_spread:
        raise NegligibleSpreadError(
            f'median frame deviation {median:.2e} eV/Å is below min_spread {min_spread:.1e} eV/Å: the committee '
            'members agree too well for their spread to rank frames (members differing only by seed?); nothing is '
            'selected. Retrain with bootstrap resampling / perturbed readouts (nmcml.finetune `diversity`)'
        )
    return median


def farthest_point_sampling(
    descriptors,
    n_select: int,
    *,
    eligible=None,
    start: int | None = None,
    reference=None,
    steps=None,
    trajectories=None,
    min_step_gap: int = 0,
) -> list[int]:
    """Greedy FPS: indices of up to ``n_select`` rows of ``descriptors`` (``(n, d)``), each farthest (Euclidean)
    from all rows taken so far and from ``reference`` (``(m, d)``, e.g. the training set's descriptors).

    ``eligible``: boolean mask of rows that may be taken (default all). ``start``: the first row when there is no
    reference (default: row 0 of the eligible ones). ``steps``/``trajectories``: the MD step and trajectory id of
    each row; a row within ``min_step_gap`` steps (``|step - step_sel| < min_step_gap``) of a taken row of the same
    trajectory becomes ineligible. Fewer than ``n_select`` rows come back when no eligible row is left. Ties are
    broken by the lowest index, so the result is deterministic.
    """
    x = np.asarray(descriptors, dtype=float)
    if x.ndim != 2:
        raise ValueError(f'descriptors must be (n_frames, n_features), got shape {x.shape}')
    n = x.shape[0]
    if not np.all(np.isfinite(x)):
        raise ValueError('non-finite descriptors')
    ok = np.ones(n, dtype=bool) if eligible is None else np.asarray(eligible, dtype=bool).copy()
    if ok.shape != (n,):
        raise ValueError(f'eligible mask of shape {ok.shape} for {n} frames')
    step_arr = None if steps is None else np.asarray(steps, dtype=float)
    traj_arr = np.zeros(n, dtype=int) if trajectories is None else np.asarray(trajectories)
    if min_step_gap and step_arr is None:
        raise ValueError('min_step_gap needs the MD step of every frame (`steps`)')
    if n_select <= 0 or not ok.any():
        return []
    mindist = np.full(n, np.inf)
    if reference is not None:
        ref = np.asarray(reference, dtype=float).reshape(-1, x.shape[1])
        for row in ref:  # memory O(n), not O(n m)
            mindist = np.minimum(mindist, np.linalg.norm(x - row, axis=1))
    chosen: list[int] = []

    def take(index: int):
        nonlocal mindist
        chosen.append(index)
        ok[index] = False
        if min_step_gap and step_arr is not None:
            close = (traj_arr == traj_arr[index]) & (np.abs(step_arr - step_arr[index]) < min_step_gap)
            ok[close] = False
        mindist = np.minimum(mindist, np.linalg.norm(x - x[index], axis=1))

    if reference is None or not np.isfinite(mindist).any():
        first = start if start is not None and ok[start] else int(np.flatnonzero(ok)[0])
        take(first)
    while len(chosen) < n_select and ok.any():
        scores = np.where(ok, mindist, -np.inf)
        take(int(np.argmax(scores)))
    return chosen


@dataclass
class SelectionResult:
    """What :func:`select_frames` decided, frame by frame and in totals."""

    classes: np.ndarray  # per frame: accurate / candidate / discarded
    selected: list[int]  # frame indices, in the order FPS took them
    band: TrustBand
    median_deviation: float
    counts: dict = field(default_factory=dict)  # totals
    counts_per_condition: dict = field(default_factory=dict)  # condition -> counts (with `selected`)

    def summary(self) -> dict:
        """JSON-ready: the work chain stores it as a Dict."""
        return {
            'trust_band': self.band.as_dict(),
            'median_deviation': self.median_deviation,
            'counts': self.counts,
            'counts_per_condition': self.counts_per_condition,
            'selected': [int(i) for i in self.selected],
            'classes': [str(c) for c in self.classes],
        }


def _counts(classes: np.ndarray, selected_mask: np.ndarray) -> dict:
    return {
        ACCURATE: int((classes == ACCURATE).sum()),
        CANDIDATE: int((classes == CANDIDATE).sum()),
        DISCARDED: int((classes == DISCARDED).sum()),
        'selected': int(selected_mask.sum()),
        'total': int(classes.size),
        'fraction_accurate': float((classes == ACCURATE).mean()) if classes.size else None,
    }


def select_frames(
    deviations,
    band: TrustBand,
    *,
    descriptors=None,
    max_selected: int = 50,
    min_step_gap: int = 0,
    steps=None,
    trajectories=None,
    conditions=None,
    reference=None,
    min_spread: float = DEFAULT_MIN_SPREAD,
) -> SelectionResult:
    """Classify frames by ``band`` and choose at most ``max_selected`` diverse candidates.

    ``deviations``: per-frame ``max_i d_i`` (eV/Å). ``descriptors``: ``(n_frames, d)``; without them the candidates
    are taken by decreasing deviation (still with the step gap), which is *not* diverse: use descriptors in
    production. ``conditions``: a label per frame (e.g. ``'T600_x0.50'``) for the per-condition counts;
    ``trajectories`` defaults to ``conditions`` (one trajectory per condition). Raises
    :class:`NegligibleSpreadError` when the committee's spread is negligible (:func:`check_spread`).
    """
    d = np.asarray(deviations, dtype=float).ravel()
    n = d.size
    if max_selected < 0:
        raise ValueError(f'max_selected must be >= 0, got {max_selected}')
    median = check_spread(d, min_spread)
    classes = classify(d, band)
    candidate = classes == CANDIDATE
    if trajectories is None and conditions is not None:
        trajectories = list(conditions)
    if trajectories is not None:
        # any hashable label -> integer ids, for the vectorised comparison in FPS
        _, traj_ids = np.unique(np.asarray([str(t) for t in trajectories]), return_inverse=True)
    else:
        traj_ids = None
    if descriptors is not None:
        desc = np.asarray(descriptors, dtype=float)
        if desc.ndim != 2 or desc.shape[0] != n:
            raise ValueError(f'descriptors of shape {desc.shape} for {n} frames')
        start = int(np.flatnonzero(candidate)[np.argmax(d[candidate])]) if candidate.any() else None
        selected = farthest_point_sampling(
            desc, max_selected, eligible=candidate, start=start, reference=reference,
            steps=steps, trajectories=traj_ids, min_step_gap=min_step_gap,
        )  # fmt: skip
    else:
        # by decreasing deviation, respecting the step gap (a degenerate FPS on the deviation rank)
        order = np.flatnonzero(candidate)[np.argsort(-d[candidate], kind='stable')]
        ok = candidate.copy()
        step_arr = None if steps is None else np.asarray(steps, dtype=float)
        if min_step_gap and step_arr is None:
            raise ValueError('min_step_gap needs the MD step of every frame (`steps`)')
        tid = np.zeros(n, dtype=int) if traj_ids is None else traj_ids
        selected = []
        for index in order:
            if len(selected) >= max_selected:
                break
            if not ok[index]:
                continue
            selected.append(int(index))
            ok[index] = False
            if min_step_gap:
                ok[(tid == tid[index]) & (np.abs(step_arr - step_arr[index]) < min_step_gap)] = False
    selected_mask = np.zeros(n, dtype=bool)
    selected_mask[selected] = True
    per_condition = {}
    if conditions is not None:
        labels = np.asarray([str(c) for c in conditions])
        if labels.size != n:
            raise ValueError(f'{labels.size} conditions for {n} frames')
        for label in dict.fromkeys(labels.tolist()):
            mask = labels == label
            per_condition[label] = _counts(classes[mask], selected_mask[mask])
    return SelectionResult(
        classes=classes,
        selected=[int(i) for i in selected],
        band=band,
        median_deviation=median,
        counts=_counts(classes, selected_mask),
        counts_per_condition=per_condition,
    )


def mace_frame_descriptors(model_path, frames: Sequence, *, device: str = 'cpu', dtype: str = 'float64') -> np.ndarray:
    """Per-frame descriptors from a MACE model: per element, the mean of the invariant node features of its atoms
    (last layer), concatenated in atomic-number order over the elements of any frame (zeros for an absent element).

    Per-element means keep the Li-vs-TM environments apart, which a mean over all atoms would blend. Needs
    mace-torch (imported here only); ``frames``: ASE Atoms.
    """
    from ..engine.common import mace_calculator

    calc = mace_calculator(model_path, device=device, dtype=dtype)
    numbers = sorted({int(z) for atoms in frames for z in atoms.numbers})
    rows = []
    for atoms in frames:
        per_atom = np.asarray(calc.get_descriptors(atoms, invariants_only=True, num_layers=-1), dtype=float)
        parts = []
        for z in numbers:
            mask = atoms.numbers == z
            parts.append(per_atom[mask].mean(axis=0) if mask.any() else np.zeros(per_atom.shape[1]))
        rows.append(np.concatenate(parts))
    return np.vstack(rows) if rows else np.zeros((0, 0))

"""Atomic reference energies (E0s) for fine-tuning, computed by the plugin and handed to ``mace_run_train``.

Why not leave it to mace-torch (0.3.16, ``mace/cli/run_train.py`` ~474-534)? Two errors (science review B2, B3):

* ``E0s: estimated`` fits a correction only for the elements *in the data*; with ``foundation_model_elements`` the
  dictionary is then padded with ``0.0`` for the others. A model fine-tuned on LiNiO2 frames had E0(Mn) = E0(Co) = 0,
  so every absolute energy of an NMC811 cell was off by n_Mn E0_Mn + n_Co E0_Co (hundreds of eV with QE labels);
* multihead fine-tuning took the foundation's E0s for the fine-tuning head, although the new labels (QE, PBEsol+U)
  sit hundreds of eV per atom away from the foundation's reference, differently per element.

What this module computes, per element ``z`` of the foundation model::

    E0_z = E0_z^foundation + delta_z

from the residuals ``r_k = E_k^DFT - E_k^foundation`` (the foundation's full prediction, its own E0s included) of
the training frames ``k`` with element counts ``N_kz``:

1. elements with an isolated-atom energy computed with the same DFT settings (optional input): ``E0_z`` is that
   energy, and its part ``N_kz delta_z`` is removed from the residuals;
2. a common per-atom shift ``c = sum_k r_k n_k / sum_k n_k^2`` (``n_k`` the frame's atoms of the remaining data
   elements): the part of the offset the data always determine;
3. per-element deviations from that shift by least squares with the minimum norm (``numpy.linalg.lstsq``):
   ``delta_z = c + eps_z``. Where the element-count matrix is rank deficient (NMC811 data: Ni:Mn:Co:O always
   8:1:1:20, rank 2 with Li), the minimum norm keeps the unresolvable split at the common shift instead of an
   arbitrary one; the elements involved are reported (``rank_deficient``, ``unresolved_elements``, ``warning``);
4. elements of the foundation absent from the data (and without an isolated-atom energy) get ``delta_z = c``: the
   foundation's value shifted consistently with the rest, never 0.

Energies on the data's composition manifold and formation energies against end members computed with the same model
do not depend on the split; absolute energies of compositions outside the data's span do (the warning says which).

The torch-dependent helpers (:func:`foundation_e0s`, :func:`foundation_energies`) load a model in the calling
process; the fit (:func:`fit_e0s`) is pure numpy.
"""

from __future__ import annotations

import numpy as np
from ase.data import atomic_numbers

# Residual fits need few frames (≤ 5 unknowns); more only cost foundation evaluations in the daemon.
DEFAULT_MAX_FRAMES = 200


def foundation_e0s(model, head: str | None = None) -> dict[str, float]:
    """The E0s of a loaded MACE model, as ``{symbol: eV}``, for ``head`` (default: mace's choice, the first head
    that is not ``pt_head``, which is what ``mace_run_train`` fine-tunes from). One implementation, in the engine
    (:func:`aiida_nmcml.engine.model_metadata.model_e0s`), which the training job also runs."""
    from aiida_nmcml.engine.model_metadata import model_e0s

    return model_e0s(model, head=head)


def foundation_energies(model, frames, dtype: str = 'float64') -> np.ndarray:
    """Total energies of ``frames`` predicted by a loaded MACE model (its own E0s included), on the CPU."""
    from mace.calculators import MACECalculator

    calc = MACECalculator(models=model, device='cpu', default_dtype=dtype)
    energies = []
    for atoms in frames:
        atoms = atoms.copy()
        atoms.calc = calc
        energies.append(float(atoms.get_potential_energy()))
    return np.array(energies)


def select_frames(frames, max_frames: int = DEFAULT_MAX_FRAMES) -> list[int]:
    """Indices of at most ``max_frames`` labelled frames, round robin over compositions (every composition kept)."""
    groups: dict[tuple, list[int]] = {}
    for index, atoms in enumerate(frames):
        if 'REF_energy' not in atoms.info:
            continue
        key = tuple(sorted(zip(*np.unique(atoms.numbers, return_counts=True), strict=True)))
        groups.setdefault(key, []).append(index)
    chosen: list[int] = []
    queues = [list(v) for _, v in sorted(groups.items())]
    while queues and len(chosen) < max_frames:
        for queue in queues:
            if queue and len(chosen) < max_frames:
                chosen.append(queue.pop(0))
        queues = [q for q in queues if q]
    return sorted(chosen)


def fit_e0s(
    foundation: dict[str, float],
    counts: dict[str, np.ndarray] | np.ndarray,
    residuals,
    data_elements: list[str] | None = None,
    isolated_atoms: dict[str, float] | None = None,
    rcond: float = 1e-10,
) -> dict:
    """The E0 dictionary (every foundation element) and a report; see the module docstring for the method.

    ``counts``: ``(n_frames, n_data_elements)`` element counts in the order of ``data_elements``;
    ``residuals``: ``(n_frames,)`` DFT minus foundation total energies (eV).
    """
    isolated = {str(k): float(v) for k, v in (isolated_atoms or {}).items()}
    unknown_isolated = sorted(set(isolated) - set(foundation))
    if unknown_isolated:
        raise ValueError(f'isolated-atom energies for {unknown_isolated}, which the foundation model lacks')
    data_elements = list(data_elements or [])
    counts = np.asarray(counts, dtype=float).reshape(len(np.atleast_1d(residuals)), len(data_elements))
    r = np.asarray(residuals, dtype=float).ravel().copy()
    delta: dict[str, float] = {}
    source: dict[str, str] = {}
    for symbol, energy in isolated.items():
        delta[symbol] = energy - foundation[symbol]
        source[symbol] = 'isolated_atom'
        if symbol in data_elements:
            r -= counts[:, data_elements.index(symbol)] * delta[symbol]
    fit_elements = [e for e in data_elements if e not in isolated]
    columns = [data_elements.index(e) for e in fit_elements]
    matrix = counts[:, columns]
    report: dict = {'n_frames': int(r.size), 'fit_elements': fit_elements}
    if fit_elements and r.size:
        n = matrix.sum(axis=1)
        shift = float(r @ n / (n @ n))
        eps, _, rank, _ = np.linalg.lstsq(matrix, r - n * shift, rcond=rcond)
        rank = int(rank)
        for symbol, value in zip(fit_elements, eps, strict=True):
            delta[symbol] = shift + float(value)
            source[symbol] = 'fit'
        residual = r - matrix @ np.array([delta[e] for e in fit_elements])
        report['rms_residual_per_atom'] = float(np.sqrt(np.mean((residual / n) ** 2)))
        # elements whose E0 the data cannot pin down: those with weight in the null space of the count matrix
        _, _, vt = np.linalg.svd(matrix, full_matrices=True)
        null = vt[rank:]
        unresolved = [e for i, e in enumerate(fit_elements) if null.size and np.abs(null[:, i]).max() > 1e-8]
    else:
        weights = [(counts[:, data_elements.index(e)].sum(), delta[e]) for e in data_elements if e in delta]
        total = sum(w for w, _ in weights)
        shift = float(sum(w * d for w, d in weights) / total) if total else 0.0
        rank, unresolved = 0, []
    absent = []
    for symbol in foundation:
        if symbol not in delta:
            delta[symbol] = shift
            source[symbol] = 'shift'
            absent.append(symbol)
    e0s = {symbol: foundation[symbol] + delta[symbol] for symbol in foundation}
    warnings = []
    if unresolved:
        warnings.append(
            f'the training data cannot separate the E0s of {unresolved}: the element-count matrix has rank {rank} '
            f'< {len(fit_elements)} elements (compositions always in the same ratio, e.g. NMC811). Their E0s are the '
            "minimum-norm split around the common shift: energies on the data's composition manifold are fine, "
            'absolute energies of other compositions (LiNiO2, LiCoO2, NiO, O2 ...) are not; add frames of those '
            'compositions or isolated-atom energies'
        )
    if absent:
        warnings.append(
            f"{absent} are absent from the training data: their E0s are the foundation's shifted by the common "
            f'{shift:+.4f} eV/atom, not fitted; energies of cells containing them are only as good as that guess'
        )
    report.update(
        {
            'common_shift_per_atom': shift,
            'rank': rank,
            'rank_deficient': bool(unresolved),
            'unresolved_elements': unresolved,
            'absent_elements': sorted(absent),
            'warning': '; '.join(warnings) or None,
        }
    )
    return {
        'e0s': e0s,
        # per head: the fine-tuned head ('Default') gets these E0s; in multihead fine-tuning the replay head keeps the
        # foundation's (its labels are on the foundation's reference)
        'heads': {'Default': dict(e0s), 'pt_head': dict(foundation)},
        'foundation': dict(foundation),
        'correction': delta,
        'source': source,
        **report,
    }


def compute_e0s(model, frames, isolated_atoms=None, max_frames: int = DEFAULT_MAX_FRAMES, head=None) -> dict:
    """Foundation E0s plus the fitted correction, from a loaded model and labelled frames (ase Atoms)."""
    foundation = foundation_e0s(model, head=head)
    chosen = [frames[i] for i in select_frames(frames, max_frames)]
    if not chosen:
        raise ValueError('no frame with REF_energy to fit the E0 correction on')
    data_elements = sorted(
        {s for atoms in chosen for s in atoms.get_chemical_symbols()}, key=lambda s: atomic_numbers[s]
    )
    counts = np.array([[int(np.sum(atoms.numbers == atomic_numbers[e])) for e in data_elements] for atoms in chosen])
    predicted = foundation_energies(model, chosen, dtype=_model_dtype(model))
    reference = np.array([float(atoms.info['REF_energy']) for atoms in chosen])
    result = fit_e0s(foundation, counts, reference - predicted, data_elements, isolated_atoms)
    result['n_frames_available'] = len(frames)
    return result


def _model_dtype(model) -> str:
    try:
        return str(next(model.parameters()).dtype).replace('torch.', '')
    except StopIteration:
        return 'float64'


def mace_e0s_argument(e0s: dict[str, float]) -> str:
    """The ``--E0s`` value mace-torch parses (``ast.literal_eval``): ``{atomic number: eV}``."""
    items = sorted((atomic_numbers[s], float(v)) for s, v in e0s.items())
    return '{' + ', '.join(f'{z}: {v!r}' for z, v in items) + '}'

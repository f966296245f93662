"""Barrier table of one hop: model NEB, DFT single points on the model's images, zero-shot potential (no AiiDA).

Used by the ``barrier_table`` calcfunction of ``nmcml.barrier`` and testable alone. Energies are per image along the
model's converged path (image 0 = initial end point). Definitions:

* a barrier *on a path* is ``max_i E_i - E_0`` over the images that have an energy (the end points included): for the
  model it is the CI-NEB barrier; for DFT and the zero-shot potential it is the barrier of the **model's** path, an
  upper bound of their own NEB barrier only if the model path is close to theirs (a full DFT NEB is not done here);
* ``dft_at_model_saddle`` is the DFT energy of the model's climbing image relative to image 0;
* differences are ``dft - model``, ``zero_shot - dft`` and ``zero_shot - model`` (eV);
* optional ``dft_neb``: a full DFT CI-NEB (QE neb.x) started from the model's images, with its own path: its barrier
  is DFT's own (``dft_neb_minus_model``; ``dft_neb_minus_dft_on_model_path`` says how far the model's path is off).

Ni moment check (science review 8.3): the DFT single points start every image from the same moments, but the
charge localisation can still jump (a Ni3+ becomes Ni4+ next door) and give a fake barrier. Each Ni is classed by its
DFT moment (|m| below ``bounds[0]``: Ni4+-like, below ``bounds[1]``: Ni3+-like, else Ni2+-like); an image whose
per-site pattern differs from image 0's is flagged.
"""

from __future__ import annotations

import numpy as np

NI_CLASSES = ('Ni4+', 'Ni3+', 'Ni2+')
DEFAULT_NI_BOUNDS = (0.5, 1.35)  # µB: Ni4+ (low-spin d6) ~0, Ni3+ ~1, Ni2+ ~1.7 (spin-only; DFT site moments smaller)


def ni_classes(moments, bounds=DEFAULT_NI_BOUNDS) -> list[str]:
    """Class of each Ni by |moment| (µB): ``Ni4+``, ``Ni3+`` or ``Ni2+``-like."""
    low, high = bounds
    return [NI_CLASSES[0] if abs(m) < low else NI_CLASSES[1] if abs(m) < high else NI_CLASSES[2] for m in moments]


def ni_pattern_changes(moments_by_image: dict[int, np.ndarray], bounds=DEFAULT_NI_BOUNDS) -> dict:
    """Per image: Ni class counts and the Ni (positions in the list of Ni) whose class differs from image 0's.

    ``moments_by_image``: image index -> the DFT moments of the Ni atoms (same Ni, same order in every image).
    Returns ``{'counts': {image: {class: n}}, 'changed_sites': {image: [...]}, 'flagged_images': [...]}``; without
    image 0 nothing can be compared and ``flagged_images`` is empty (``reference_missing`` True).
    """
    classes = {i: ni_classes(m, bounds) for i, m in sorted(moments_by_image.items())}
    counts = {i: {c: int(sum(x == c for x in cl)) for c in NI_CLASSES} for i, cl in classes.items()}
    if 0 not in classes:
        return {'counts': counts, 'changed_sites': {}, 'flagged_images': [], 'reference_missing': True}
    reference = classes[0]
    changed = {
        i: [k for k, (a, b) in enumerate(zip(reference, cl, strict=True)) if a != b] for i, cl in classes.items()
    }
    return {
        'counts': counts,
        'changed_sites': {i: sites for i, sites in changed.items() if sites},
        'flagged_images': sorted(i for i, sites in changed.items() if sites),
        'reference_missing': False,
    }


def path_energies(energies: dict[int, float], n_images: int) -> dict:
    """Energies of one method along the path relative to image 0; barrier and highest image over those present."""
    present = sorted(i for i in energies if 0 <= i < n_images and energies[i] is not None)
    missing = [i for i in range(n_images) if i not in present]
    if 0 not in present:
        return {'energies_relative': None, 'barrier': None, 'highest_image': None, 'missing_images': missing}
    relative = [None if i in missing else float(energies[i] - energies[0]) for i in range(n_images)]
    highest = max(present, key=lambda i: energies[i])
    return {
        'energies_relative': relative,
        'barrier': float(energies[highest] - energies[0]),
        'highest_image': int(highest),
        'missing_images': missing,
    }


def _difference(a, b):
    return None if a is None or b is None else float(a - b)


def barrier_row(
    neb: dict,
    dft_energies: dict[int, float] | None = None,
    ni_moments: dict[int, np.ndarray] | None = None,
    zero_shot_energies: dict[int, float] | None = None,
    bounds=DEFAULT_NI_BOUNDS,
    dft_neb: dict | None = None,
) -> dict:
    """One hop's row: model CI-NEB (with its committee spread), DFT on the model path, zero-shot on the same path.

    ``neb``: the ``neb_summary.json`` of the engine (``output_parameters`` of ``nmcml.neb``). ``dft_neb``: the
    ``output_parameters`` of aiida-quantumespresso's ``NebCalculation`` (neb.x), see :func:`dft_neb_summary`.
    """
    n_images = len(neb['energies'])
    climbing = neb.get('climbing_image') or neb.get('highest_image')
    committee = neb.get('committee') or {}
    row: dict = {
        'n_images': n_images,
        'model': {
            'barrier': float(neb['barrier_forward']),
            'barrier_reverse': float(neb['barrier_reverse']),
            'reaction_energy': float(neb['reaction_energy']),
            'energies_relative': [float(e) for e in neb['energies_relative']],
            'climbing_image': climbing,
            'converged': bool(neb['converged']),
            'fmax_final': neb.get('fmax_final'),
            'committee_barriers': committee.get('member_barriers'),
            'committee_barrier_std': committee.get('barrier_std'),
            'max_force_deviation': committee.get('max_force_deviation'),
            'cell_relaxation': neb.get('cell_relaxation'),
            'warnings': list(neb.get('warnings') or []),
        },
        'flags': [],
    }
    if not neb['converged']:
        row['flags'].append(f'model NEB not converged (fmax {neb.get("fmax_final", float("nan")):.3f} eV/Å)')
    row['flags'].extend(f'model: {w}' for w in neb.get('warnings') or [])
    dft = None
    if dft_energies is not None:
        dft = path_energies(dft_energies, n_images)
        dft['at_model_saddle'] = (
            None if dft['energies_relative'] is None or climbing is None else dft['energies_relative'][climbing]
        )
        if dft['missing_images']:
            row['flags'].append(f'DFT missing for images {dft["missing_images"]}')
        if ni_moments:
            check = ni_pattern_changes(ni_moments, bounds)
            dft['ni_moments'] = {
                'bounds_muB': list(bounds),
                'counts': {str(k): v for k, v in check['counts'].items()},
                'changed_sites': {str(k): v for k, v in check['changed_sites'].items()},
                'flagged_images': check['flagged_images'],
            }
            if check['flagged_images']:
                row['flags'].append(
                    f'Ni moment pattern changes along the DFT path at images {check["flagged_images"]}: the charge '
                    'localisation jumped, the DFT barrier on this path is not trustworthy'
                )
        row['dft'] = dft
    zero = None
    if zero_shot_energies is not None:
        zero = path_energies(zero_shot_energies, n_images)
        row['zero_shot'] = zero
    model_barrier = row['model']['barrier']
    dft_barrier = None if dft is None else dft['barrier']
    zero_barrier = None if zero is None else zero['barrier']
    row['differences'] = {
        'dft_minus_model': _difference(dft_barrier, model_barrier),
        'zero_shot_minus_dft': _difference(zero_barrier, dft_barrier),
        'zero_shot_minus_model': _difference(zero_barrier, model_barrier),
    }
    if dft_neb is not None:
        row['dft_neb'] = dft_neb_summary(dft_neb)
        neb_barrier = row['dft_neb']['barrier']
        row['differences']['dft_neb_minus_model'] = _difference(neb_barrier, model_barrier)
        row['differences']['dft_neb_minus_dft_on_model_path'] = _difference(neb_barrier, dft_barrier)
        if not row['dft_neb']['converged']:
            row['flags'].append(f'DFT NEB (neb.x) not converged after {row["dft_neb"]["iterations"]} iterations')
    return row


def dft_neb_summary(parameters: dict) -> dict:
    """Barrier of a neb.x run from aiida-quantumespresso's parsed ``output_parameters``: the last iteration's image
    energies (``pw_output_image_N.energy``, eV), barrier = highest image - image 1, and convergence.

    Why the image energies and not the activation energy printed by neb.x: the parser keeps per-iteration activation
    energies only on request, while every image's final pw.x energy is always in ``output_parameters``.
    """
    n_images = int(parameters['num_of_images'])
    energies = []
    for index in range(1, n_images + 1):
        image = parameters.get(f'pw_output_image_{index}') or {}
        energies.append(image.get('energy'))
    present = {i: e for i, e in enumerate(energies) if e is not None}
    path = path_energies(present, n_images)
    converged, iterations = (parameters.get('converged') or [False, 0])[:2]
    reverse = None if path['barrier'] is None or energies[-1] is None else float(max(present.values()) - energies[-1])
    return {
        'barrier': path['barrier'],
        'barrier_reverse': reverse,
        'energies_relative': path['energies_relative'],
        'highest_image': path['highest_image'],
        'missing_images': path['missing_images'],
        'converged': bool(converged),
        'iterations': int(iterations),
        'path_thr_eV_per_A': parameters.get('path_thr'),
        'ci_scheme': parameters.get('ci_scheme'),
    }

"""Inputs of one aiida-quantumespresso ``PwBaseWorkChain`` that labels one structure.

Why not ``HubbardStructureData``: it writes the ``HUBBARD`` card of QE >= 7.1, which pw.x 6.7 ignores with exit
code 0, silently dropping U. The SYSTEM namelist keys ``lda_plus_u`` / ``Hubbard_U(kind)`` work on both old and
new pw.x (deprecated but honoured up to 7.x), so they are what is written here.

One cutoff per pseudopotential family (the largest recommendation over all of its elements), not per structure:
frames of any composition labelled with the same protocol then carry identical settings and may share one
TrainingSet, which refuses mixed settings.
"""

from __future__ import annotations

from .common import LabelInputError, kind_hubbard_u, kind_magmoms, settings_fingerprint


def load_pseudo_family(label: str):
    from aiida.common.exceptions import NotExistent
    from aiida_pseudo.groups.family import PseudoPotentialFamily

    try:
        return PseudoPotentialFamily.collection.get(label=label)
    except NotExistent as exception:
        raise LabelInputError(
            f'pseudopotential family {label!r} is not installed: run `aiida-nmcml setup` (offline family) or '
            '`aiida-pseudo install sssp`, or pass another family in overrides["qe"]["pseudo_family"].'
        ) from exception


def family_cutoffs(family, settings: dict) -> tuple[float, float]:
    """(ecutwfc, ecutrho) in Ry: explicit protocol values win, else the family's largest recommendation."""
    ecutwfc, ecutrho = settings.get('ecutwfc'), settings.get('ecutrho')
    if ecutwfc and ecutrho:
        return float(ecutwfc), float(ecutrho)
    if not hasattr(family, 'get_recommended_cutoffs'):
        raise LabelInputError(
            f'pseudopotential family {family.label!r} recommends no cutoffs: set qe.ecutwfc and qe.ecutrho in the '
            'overrides, or use a family of type pseudo.family.cutoffs.'
        )
    elements = tuple(sorted(family.elements))
    wfc, rho = family.get_recommended_cutoffs(elements=elements, stringency=settings.get('stringency'), unit='Ry')
    scale = float(settings.get('cutoff_scale', 1.0))
    return float(ecutwfc or wfc * scale), float(ecutrho or rho * scale)


def check_pseudos(key: str, structure, family) -> None:
    missing = sorted({kind.symbol for kind in structure.kinds} - set(family.elements))
    if missing:
        raise LabelInputError(
            f'structure {key!r} contains {", ".join(missing)} but pseudopotential family {family.label!r} has no '
            f'pseudopotential for {"it" if len(missing) == 1 else "them"} '
            f'(it has {", ".join(sorted(family.elements))}); '
            'add one to the family or choose another family.'
        )


# QE's short names of the exchange-correlation functionals a UPF header may carry (v2 attribute ``functional``, or
# the v1 ``Exchange-Correlation functional`` line), mapped to the names used in the frames.
UPF_FUNCTIONALS = {
    'PBESOL': 'PBEsol',
    'SLA PW PSX PSC': 'PBEsol',
    'SLA-PW-PSX-PSC': 'PBEsol',
    'PBE': 'PBE',
    'SLA PW PBX PBC': 'PBE',
    'SLA-PW-PBX-PBC': 'PBE',
    'PZ': 'LDA',
    'SLA PZ NOGX NOGC': 'LDA',
    'SLA-PZ-NOGX-NOGC': 'LDA',
    'PW91': 'PW91',
    'REVPBE': 'revPBE',
}


def upf_functional(text: str) -> str:
    """The functional written in a UPF header (v2 or v1), normalised; the raw string when it is not a known one."""
    import re

    match = re.search(r'functional\s*=\s*"([^"]*)"', text[:20000])
    if match is None:
        match = re.search(r'^\s*(.+?)\s+Exchange-Correlation functional', text[:20000], re.MULTILINE)
    if match is None:
        raise LabelInputError('the UPF header names no functional: use pseudopotentials in UPF v1 or v2 format.')
    raw = ' '.join(match.group(1).split()).upper()
    return UPF_FUNCTIONALS.get(raw, raw)


def family_functional(family) -> str:
    """The functional of a pseudopotential family, read from its UPF headers (not a protocol constant).

    Why: a user who swaps in another family (e.g. SSSP PBE) would otherwise label every frame with the protocol's
    functional name. A family whose files disagree is refused: its labels would be a mixture of functionals.
    """
    found = {}
    for pseudo in family.nodes:
        found.setdefault(upf_functional(pseudo.get_content()), []).append(pseudo.element)
    if len(found) != 1:
        raise LabelInputError(
            f'pseudopotential family {family.label!r} mixes functionals ({found}): every element must use one '
            'functional; choose a consistent family.'
        )
    return next(iter(found))


def family_md5(family) -> dict[str, str]:
    """md5 of every pseudopotential of the family, by element: two families with the same name can differ."""
    return {pseudo.element: pseudo.md5 for pseudo in sorted(family.nodes, key=lambda p: p.element)}


def qe_fingerprint(settings: dict, hubbard_u: dict, functional: str | None = None, *, family=None) -> dict:
    """The settings that make two QE labels comparable (see ``settings_fingerprint``); the functional from the UPFs.

    ``family``: the loaded pseudopotential family, when the caller has it already (the QE adapter loads it once).
    """
    family = family if family is not None else load_pseudo_family(settings['pseudo_family'])
    ecutwfc, ecutrho = family_cutoffs(family, settings)
    system = settings.get('system', {})
    smearing = system.get('smearing', 'gaussian') if system.get('occupations') == 'smearing' else None
    return settings_fingerprint(
        'qe',
        family_functional(family),
        hubbard_u,
        ecutwfc,
        settings['kpoints_distance'],
        ecutrho=ecutrho,
        pseudos=family_md5(family),
        smearing=f'{smearing}:{float(system.get("degauss", 0.0)):g}' if smearing else str(system.get('occupations')),
        hubbard_projector=system.get('U_projection_type', 'atomic') if hubbard_u else None,
    )


def pw_base_inputs(
    code, structure, settings: dict, hubbard_u: dict, magmoms: dict, *, family=None, cutoffs=None
) -> dict:
    """A builder of the label's ``PwBaseWorkChain`` for ``structure``: spin-polarised, DFT+U through SYSTEM, forces
    and stress.

    The work chain is :class:`aiida_nmcml.dft.qe.NmcmlPwBaseWorkChain`, aiida-qe's own with one sanity handler (a
    frame pw.x computed without the U it was asked for is refused with its own exit code). ``family`` and
    ``cutoffs`` may be passed when the caller resolved them already (the QE adapter does, once per labelling run).
    """
    from aiida_quantumespresso.common.types import SpinType

    from .qe import NmcmlPwBaseWorkChain

    family = family if family is not None else load_pseudo_family(settings['pseudo_family'])
    check_pseudos(structure.label or structure.uuid, structure, family)
    ecutwfc, ecutrho = cutoffs if cutoffs is not None else family_cutoffs(family, settings)
    pseudos = family.get_pseudos(structure=structure)
    natoms = len(structure.sites)

    system = {'ecutwfc': ecutwfc, 'ecutrho': ecutrho, **settings.get('system', {})}
    u_per_kind = kind_hubbard_u(structure, hubbard_u)
    if u_per_kind:
        system.update({'lda_plus_u': True, 'lda_plus_u_kind': 0, 'hubbard_u': u_per_kind})
    electrons = dict(settings.get('electrons', {}))
    electrons['conv_thr'] = natoms * float(settings['conv_thr_per_atom'])
    overrides = {
        'pseudo_family': family.label,
        'kpoints_distance': float(settings['kpoints_distance']),
        'max_iterations': int(settings['max_iterations']),
        'clean_workdir': bool(settings.get('clean_workdir', False)),
        'pw': {
            'pseudos': pseudos,
            'parameters': {
                'CONTROL': {'calculation': 'scf', 'tprnfor': True, 'tstress': True, **settings.get('control', {})},
                'SYSTEM': system,
                'ELECTRONS': electrons,
            },
        },
    }
    builder = NmcmlPwBaseWorkChain.get_builder_from_protocol(
        code,
        structure,
        protocol=settings.get('qe_protocol', 'fast'),
        overrides=overrides,
        spin_type=SpinType.COLLINEAR,
        initial_magnetic_moments=kind_magmoms(structure, magmoms),
        options=settings.get('options', {}),
    )
    builder.pw.pseudos = pseudos
    return builder

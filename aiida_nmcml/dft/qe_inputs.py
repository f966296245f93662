"""Inputs of one aiida-quantumespresso ``PwBaseWorkChain`` that labels one structure.

Why not ``HubbardStructureData``: it writes the ``HUBBARD`` card of QE >= 7.1, which pw.x 6.7 ignores with exit
code 0, silently dropping U. The SYSTEM namelist keys ``lda_plus_u`` / ``Hubbard_U(kind)`` work on both old and
new pw.x (deprecated but honoured up to 7.x), so they are what is written here.

One cutoff per pseudopotential family (the largest recommendation over all of its elements), not per structure:
frames of any composition labelled with the same protocol then carry identical settings and may share one
TrainingSet, which refuses mixed settings.
"""

from __future__ import annotations

from aiida import orm

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


def qe_fingerprint(settings: dict, hubbard_u: dict, functional: str) -> dict:
    family = load_pseudo_family(settings['pseudo_family'])
    ecutwfc, _ = family_cutoffs(family, settings)
    return settings_fingerprint('qe', functional, hubbard_u, ecutwfc, settings['kpoints_distance'])


def pw_base_inputs(code, structure, settings: dict, hubbard_u: dict, magmoms: dict) -> dict:
    """A builder of ``PwBaseWorkChain`` for ``structure``: spin-polarised, DFT+U through SYSTEM, forces and stress."""
    from aiida_quantumespresso.common.types import SpinType
    from aiida_quantumespresso.workflows.pw.base import PwBaseWorkChain

    family = load_pseudo_family(settings['pseudo_family'])
    check_pseudos(structure.label or structure.uuid, structure, family)
    ecutwfc, ecutrho = family_cutoffs(family, settings)
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
    builder = PwBaseWorkChain.get_builder_from_protocol(
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


def require_code(code, plugin: str) -> orm.AbstractCode:
    if code is None:
        raise LabelInputError(f'no code given for the {plugin} calculations: pass `code` (e.g. nmcml-pw@localhost).')
    if code.default_calc_job_plugin not in (None, plugin):
        raise LabelInputError(
            f'code {code.full_label!r} runs {code.default_calc_job_plugin!r}, but this engine needs {plugin!r}.'
        )
    return code

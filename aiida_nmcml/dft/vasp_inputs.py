"""Inputs of one aiida-vasp ``VaspWorkChain`` that labels one structure, Materials Project style.

ISPIN 2 with MAGMOM per site (from the structure's moments), Dudarev DFT+U (LDAUTYPE 2) with the protocol's U per
element written in POSCAR species order, ENCUT from the protocol, POTCARs by MP's mapping (Li_sv, Ni_pv, Mn_pv, Co,
O). Kinds split by moment (``Ni``, ``Ni1``) get their element's POTCAR and U.
"""

from __future__ import annotations

import math

from aiida import orm

from .common import LabelInputError, kind_hubbard_u, settings_fingerprint, site_magmoms


def _species_order(structure) -> list[str]:
    """Kind names in POSCAR order (aiida-vasp groups consecutive sites of one kind)."""
    from aiida_vasp.parsers.content_parsers.potcar import MultiPotcarIo

    return MultiPotcarIo.potentials_order(structure)


def check_potentials(key: str, structure, settings: dict) -> None:
    from aiida_vasp.data.potcar import PotcarData

    mapping = settings['potential_mapping']
    missing = sorted({kind.symbol for kind in structure.kinds} - set(mapping))
    if missing:
        raise LabelInputError(
            f'structure {key!r} contains {", ".join(missing)} but vasp.potential_mapping has no POTCAR for it; add '
            'one in overrides["vasp"]["potential_mapping"].'
        )
    family = settings['potential_family']
    if PotcarData.get_potcar_group(family) is None:
        raise LabelInputError(
            f'POTCAR family {family!r} is not uploaded: run `aiida-vasp potcar uploadfamily --path=... '
            f'--name={family}` or set overrides["vasp"]["potential_family"].'
        )


def ldau_incar(structure, hubbard_u: dict, ldau_luj: dict) -> dict:
    u_per_kind = kind_hubbard_u(structure, hubbard_u)
    if not u_per_kind:
        return {}
    kinds = {kind.name: kind for kind in structure.kinds}
    order = _species_order(structure)
    return {
        'ldau': True,
        'ldautype': 2,
        'ldaul': [ldau_luj.get(kinds[k].symbol, {}).get('L', 2) if k in u_per_kind else -1 for k in order],
        'ldauu': [u_per_kind.get(k, 0.0) for k in order],
        'ldauj': [0.0 for _ in order],
        'ldauprint': 1,
    }


def vasp_fingerprint(settings: dict, hubbard_u: dict, functional: str) -> dict:
    return settings_fingerprint(
        'vasp', functional, hubbard_u, float(settings['parameters']['encut']), settings['kpoints_distance']
    )


def vasp_inputs(code, structure, settings: dict, hubbard_u: dict, magmoms: dict):
    """A builder of ``VaspWorkChain`` for ``structure``; k-points with the same distance definition as QE."""
    from aiida_vasp.workchains.v2.vasp import VaspWorkChain

    check_potentials(structure.label or structure.uuid, structure, settings)
    incar = {k: v for k, v in settings['parameters'].items() if k != 'ediff_per_atom'}
    incar['ediff'] = float(settings['parameters'].get('ediff_per_atom', 1e-6)) * len(structure.sites)
    incar['ispin'] = 2
    incar['magmom'] = site_magmoms(structure, magmoms)
    incar['ibrion'] = -1  # a single point: labels, not relaxations
    incar['nsw'] = 0
    incar['isif'] = 2  # stress is computed
    incar.update(ldau_incar(structure, hubbard_u, settings.get('ldau_luj', {})))

    builder = VaspWorkChain.get_builder()
    builder.code = code
    builder.structure = structure
    builder.parameters = orm.Dict({'incar': incar})
    builder.potential_family = orm.Str(settings['potential_family'])
    builder.potential_mapping = orm.Dict(
        {kind.name: settings['potential_mapping'][kind.symbol] for kind in structure.kinds}
    )
    # aiida-vasp multiplies kpoints_spacing by 2π; QE's kpoints_distance already contains it
    builder.kpoints_spacing = orm.Float(float(settings['kpoints_distance']) / (2 * math.pi))
    builder.max_iterations = orm.Int(int(settings['max_iterations']))
    builder.clean_workdir = orm.Bool(bool(settings.get('clean_workdir', False)))
    builder.settings = orm.Dict(
        {'parser_settings': {'include_node': ['misc'], 'include_quantity': ['site_magnetization', 'magnetization']}}
    )
    options = {'resources': {'num_machines': 1}, **settings.get('options', {})}
    builder.calc.metadata.options = options
    return builder

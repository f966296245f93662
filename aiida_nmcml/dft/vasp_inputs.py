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


def vasp_fingerprint(settings: dict, hubbard_u: dict, functional: str | None = None) -> dict:
    """The settings that make two VASP labels comparable (see ``settings_fingerprint``)."""
    parameters = settings['parameters']
    pseudos = {'family': settings['potential_family'], **dict(sorted(settings['potential_mapping'].items()))}
    return settings_fingerprint(
        'vasp',
        functional or settings['functional'],
        hubbard_u,
        float(parameters['encut']),
        settings['kpoints_distance'],
        pseudos=pseudos,
        smearing=f'ismear={int(parameters.get("ismear", 1))}:sigma={float(parameters.get("sigma", 0.2)):g}',
        hubbard_projector=f'ldautype={int(parameters.get("ldautype", 2))}' if hubbard_u else None,
    )


def vasp_parameters(settings: dict, natoms: int) -> dict:
    """INCAR keys from the protocol: EDIFF is total (not per atom), LREAL .FALSE. below ``small_cell_atoms``.

    Why: EDIFF scaled by the atom count gave 1e-4 eV for 100 atoms, loose for force labels; real-space projection
    (LREAL Auto) adds force and stress errors that matter for the small cells DFT labels are computed in.
    """
    incar = dict(settings['parameters'])
    if 'lreal' not in incar:
        incar['lreal'] = False if natoms < int(settings.get('small_cell_atoms', 100)) else 'auto'
    return incar


def vasp_inputs(code, structure, settings: dict, hubbard_u: dict, magmoms: dict):
    """A builder of the label's ``VaspWorkChain`` for ``structure``; k-points with the same distance definition as QE.

    The work chain is :class:`aiida_nmcml.dft.vasp.NmcmlVaspWorkChain`: aiida-vasp's own with one sanity handler (a
    run whose LDAUU, paired with the POTCAR atom types in vasprun.xml, is not the U requested is refused).
    """
    from .vasp import NmcmlVaspWorkChain

    check_potentials(structure.label or structure.uuid, structure, settings)
    incar = vasp_parameters(settings, len(structure.sites))
    incar['ispin'] = 2
    incar['magmom'] = site_magmoms(structure, magmoms)
    incar['ibrion'] = -1  # a single point: labels, not relaxations
    incar['nsw'] = 0
    incar['isif'] = 2  # stress is computed
    incar.update(ldau_incar(structure, hubbard_u, settings.get('ldau_luj', {})))

    builder = NmcmlVaspWorkChain.get_builder()
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
        {
            'parser_settings': {
                'include_node': ['misc'],
                'include_quantity': ['site_magnetization', 'magnetization'],
                'energy_type': ['energy_free', 'energy_extrapolated'],  # the label is energy_free (TOTEN)
            }
        }
    )
    options = {'resources': {'num_machines': 1}, **settings.get('options', {})}
    builder.calc.metadata.options = options
    return builder


def applied_ldauu(retrieved) -> dict[str, float] | None:
    """U (eV) per element that VASP used, from ``vasprun.xml``: LDAUU of <parameters> against the atom types.

    Why: a POTCAR or species-order slip would put Ni's U on O without any error. VASP writes the parameters it
    used and the element of each atom type (from the POTCAR); pairing the two gives the U each element really got.
    ``None`` when there is no vasprun.xml; {} when LDAU is off.
    """
    import xml.etree.ElementTree as ET

    if 'vasprun.xml' not in retrieved.base.repository.list_object_names():
        return None
    root = ET.fromstring(retrieved.base.repository.get_object_content('vasprun.xml', mode='rb'))
    ldau = root.find(".//parameters//i[@name='LDAU']")
    if ldau is None or ldau.text.strip().upper() not in ('T', '.TRUE.', 'TRUE'):
        return {}
    values = root.find(".//parameters//v[@name='LDAUU']")
    types = root.findall("./atominfo/array[@name='atomtypes']/set/rc")
    elements = [rc.findall('c')[1].text.strip() for rc in types]
    numbers = [float(v) for v in values.text.split()] if values is not None else []
    if len(numbers) != len(elements):
        return {'error': f'LDAUU has {len(numbers)} values for {len(elements)} atom types'}
    applied: dict[str, float] = {}
    for element, u in zip(elements, numbers, strict=True):
        if abs(u) > 1e-8:
            applied[element] = max(applied.get(element, 0.0), round(u, 4))
    return applied


def requested_ldauu(structure, incar: dict) -> dict[str, float]:
    """U (eV) per element that an INCAR written by :func:`ldau_incar` requests (LDAUU in POSCAR species order)."""
    if not incar.get('ldau'):
        return {}
    kinds = {kind.name: kind for kind in structure.kinds}
    requested: dict[str, float] = {}
    for name, u in zip(_species_order(structure), incar.get('ldauu', []), strict=False):
        if u:
            requested[kinds[name].symbol] = float(u)
    return requested


def ldau_mismatch(calculation, hubbard_u: dict) -> str | None:
    """A message when the U VASP used per element differs from the requested ``hubbard_u``, else ``None``."""
    applied = applied_ldauu(calculation.outputs.retrieved)
    if applied is None:
        return 'no vasprun.xml retrieved: the U that VASP applied cannot be checked'
    elements = {kind.symbol for kind in calculation.inputs.structure.kinds}
    wanted = {el: round(float(u), 3) for el, u in hubbard_u.items() if u and el in elements}
    if {k: round(v, 3) for k, v in applied.items()} != wanted:
        return (
            f'DFT+U requested {wanted} eV but VASP applied {applied} eV (LDAUU against the POTCAR atom types in '
            'vasprun.xml): check the POTCAR mapping and the species order.'
        )
    return None

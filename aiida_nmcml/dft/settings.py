"""The declared schema of ``nmcml.label``'s settings (the resolved ``label.yaml`` protocol plus overrides).

Why: a misspelt key used to run silently with the protocol's value. ``{'qe': {'kpoint_distance': 0.15}}`` ran at
the protocol's k-point distance with exit 0, and ``{'hubbard_u': {'ni': 6.2}}`` ran pw.x without U while the frames
claimed U. Every key is checked here before anything is submitted; an unknown key is refused naming the closest valid
one. The free-form namelists (``control``, ``system``, ``electrons``, VASP ``parameters``) are passed through to the
DFT code; only the keys this package interprets in them are checked.
"""

from __future__ import annotations

from ase.data import chemical_symbols

from aiida_nmcml.common.schema import Field, Section, closest_key

from .common import LabelInputError

ELEMENTS = tuple(chemical_symbols[1:])
QE_SMEARINGS = (
    'gaussian', 'gauss', 'methfessel-paxton', 'm-p', 'mp', 'marzari-vanderbilt', 'cold', 'm-v', 'mv',
    'fermi-dirac', 'f-d', 'fd',
)  # fmt: skip
U_PROJECTIONS = ('atomic', 'ortho-atomic', 'norm-atomic', 'file', 'pseudo')


def _element_keys(what: str, minimum: float | None = None):
    """A check for a dict keyed by element symbol (``hubbard_u``, ``magmoms``): unknown keys name the closest symbol."""

    def check(value) -> str | None:
        messages = []
        for key, number in value.items():
            if key not in ELEMENTS:
                hint = closest_key(str(key), ELEMENTS)
                dym = f"did you mean '{hint}'? " if hint else ''
                messages.append(f'unknown element {key!r} in {what}; {dym}keys are element symbols (Ni, Co, Mn, ...)')
            elif isinstance(number, bool) or not isinstance(number, (int, float)):
                messages.append(f'{what}[{key!r}] = {number!r} is not a number')
            elif minimum is not None and number < minimum:
                messages.append(f'{what}[{key!r}] = {number} is out of range (>= {minimum:g})')
        return '; '.join(messages) or None

    return check


def _element_dict(what: str):
    """A check for a dict keyed by element symbol with any values (e.g. POTCAR names)."""
    check = _element_keys(what)
    return lambda value: check({key: 0 for key in value})


def _smearing(value) -> str | None:
    smearing = value.get('smearing')
    if smearing is not None and str(smearing).lower() not in QE_SMEARINGS:
        hint = closest_key(str(smearing), QE_SMEARINGS)
        return f'smearing {smearing!r} is not a QE smearing{f"; did you mean {hint!r}?" if hint else ""}'
    degauss = value.get('degauss')
    if degauss is not None and (isinstance(degauss, bool) or not isinstance(degauss, (int, float)) or degauss <= 0):
        return f'degauss {degauss!r} must be a number > 0 (Ry)'
    projection = value.get('U_projection_type')
    if projection is not None and projection not in U_PROJECTIONS:
        return f'U_projection_type {projection!r} is not one of {", ".join(U_PROJECTIONS)}'
    return None


def _free(help_text: str, check=None) -> Section:
    return Section({}, open=True, help=help_text, check=check)


POSITIVE = {'min': 0.0, 'min_exclusive': True}

QE = Section(
    {
        'pseudo_family': Field(str, help='aiida-pseudo family label (cutoffs, UPF files, functional).'),
        'qe_protocol': Field(str, default='balanced', choices=('fast', 'balanced', 'stringent')),
        'stringency': Field(str, default=None, nullable=True, help="family's cutoff stringency"),
        'cutoff_scale': Field(float, default=1.0, **POSITIVE, help="factor on the family's recommended cutoffs"),
        'ecutwfc': Field(float, default=None, nullable=True, **POSITIVE, unit='Ry'),
        'ecutrho': Field(float, default=None, nullable=True, **POSITIVE, unit='Ry'),
        'kpoints_distance': Field(float, **POSITIVE, unit='1/Å, 2π included'),
        'conv_thr_per_atom': Field(float, **POSITIVE, unit='Ry'),
        'max_iterations': Field(int, default=5, min=1),
        'clean_workdir': Field(bool, default=False),
        'control': _free('extra CONTROL namelist keys'),
        'system': _free('extra SYSTEM namelist keys (smearing, degauss, U_projection_type checked)', _smearing),
        'electrons': _free('extra ELECTRONS namelist keys'),
        'options': _free('CalcJob metadata.options'),
    }
)

VASP = Section(
    {
        'functional': Field(str, help='recorded per frame; the POTCARs decide it'),
        'potential_family': Field(str),
        'potential_mapping': Section({}, open=True, check=_element_dict('vasp.potential_mapping')),
        'kpoints_distance': Field(float, **POSITIVE, unit='1/Å, 2π included'),
        'max_iterations': Field(int, default=5, min=1),
        'clean_workdir': Field(bool, default=False),
        'ldau_luj': _free('per-element {L: ...}'),
        'small_cell_atoms': Field(int, default=100, min=1, help='LREAL .FALSE. below this many atoms'),
        'parameters': _free('INCAR (lower case); ediff is the total EDIFF in eV'),
        'options': _free('CalcJob metadata.options'),
    }
)

LABEL = Section(
    {
        'description': Field(str, default='', help='the protocol level description'),
        'min_success_fraction': Field(float, default=0.5, min=0.0, max=1.0),
        'hubbard_u': Section({}, open=True, check=_element_keys('hubbard_u', 0.0), help='U (eV) per element'),
        'magmoms': Section({}, open=True, check=_element_keys('magmoms'), help='default initial moment per element'),
        'allow_nonmagnetic_start': Field(
            bool, default=False, help='accept frames whose starting moments are all zero (a non-magnetic run)'
        ),
        'qe': QE,
        'vasp': VASP,
    }
)


def check_label_inputs(inputs: dict, path: str = 'settings') -> None:
    """Raise :class:`LabelInputError` listing every unknown key and bad value of the label settings or overrides."""
    messages = LABEL.errors(inputs, path)
    if messages:
        raise LabelInputError('invalid label settings:\n' + '\n'.join(messages))


def check_resolved_settings(settings: dict, engine: str) -> str | None:
    """The message for the ``settings`` Dict of a LabelWorkChain (the resolved protocol), or ``None``."""
    top = {k: v for k, v in settings.items() if k != 'functional'}  # recorded by get_builder_from_protocol
    messages = LABEL.errors(top, 'settings')
    if engine not in settings:
        messages.append(f'settings hold no {engine!r} section: build the inputs with get_builder_from_protocol.')
    return '\n'.join(messages) or None

"""Set-up of a working environment: profile, ``localhost`` computer, codes and a pseudopotential family.

:func:`ensure_environment` is idempotent: the second call creates nothing. ``aiida-nmcml setup`` and the test
fixtures both go through it, so the tests exercise exactly what users run.
"""

from __future__ import annotations

from .codes import code_specs, ensure_codes, missing_executables
from .computer import ensure_localhost
from .pseudos import DEFAULT_FAMILY, configured_family, ensure_pseudo_family, get_family, set_default_family

__all__ = ('DEFAULT_FAMILY', 'check_environment', 'configured_family', 'ensure_environment')


def ensure_environment(family: str = DEFAULT_FAMILY, computer: str = 'localhost', echo=None) -> dict:
    """Computer, codes and pseudopotential family in the loaded profile; returns them keyed by role.

    Keys: ``computer``, ``pw``, ``neb``, ``mace_train``, ``engine`` (codes), ``pseudo_family`` (label) and
    ``created`` (labels of what this call created; empty on a second call).
    """
    echo = echo or (lambda message: None)
    created = []
    fam, new = ensure_pseudo_family(family)  # first: a missing family refuses before anything is created
    if new:
        created.append(f'pseudo family {fam.label}')
    set_default_family(fam)  # what nmcml.label uses when the overrides name no family
    comp, new = ensure_localhost(computer)
    if new:
        created.append(f'computer {comp.label}')
    codes, new_codes = ensure_codes(comp)
    created += [f'code {label}' for label in new_codes]
    for item in created:
        echo(f'created {item}')
    return {'computer': comp, **codes, 'pseudo_family': fam.label, 'created': created}


DFT_CALCJOBS = ('aiida.calculations:quantumespresso.pw', 'aiida.calculations:vasp.vasp')


def enable_dft_caching(profile_name: str) -> list[str]:
    """Turn AiiDA caching on for the DFT calcjobs of ``profile_name``; returns the entry points newly enabled.

    Why: active learning and repeated demos relabel identical structures with identical settings; caching reuses the
    finished calculation (a new node linked to the original) instead of paying for pw.x again. Only DFT is cached:
    MD and training are stochastic by design.
    """
    from aiida.manage.configuration import get_config

    config = get_config()
    current = list(config.get_option('caching.enabled_for', scope=profile_name) or [])
    added = [entry for entry in DFT_CALCJOBS if entry not in current]
    if added:
        config.set_option('caching.enabled_for', current + added, scope=profile_name)
        config.store()
    return added


def check_environment(family: str = DEFAULT_FAMILY, computer: str = 'localhost') -> list[tuple[str, bool, str]]:
    """What is present and what is missing, as ``(item, ok, detail)``; creates nothing."""
    from aiida import orm
    from aiida.common.exceptions import NotExistent
    from aiida.manage import get_manager

    rows = []
    profile = get_manager().get_profile()
    rows.append(('profile', profile is not None, profile.name if profile else 'no profile: run `aiida-nmcml setup`'))
    if profile is not None:
        broker = profile.process_control_backend
        rows.append(('broker', broker is not None, broker or 'profile has no broker: the daemon cannot run'))
    try:
        comp = orm.load_computer(computer)
        rows.append((f'computer {computer}', True, f'{comp.transport_type} + {comp.scheduler_type}'))
    except NotExistent:
        comp = None
        rows.append((f'computer {computer}', False, 'missing: run `aiida-nmcml setup`'))
    for spec in code_specs():
        present = False
        if comp is not None:
            try:
                orm.load_code(f'{spec.label}@{computer}')
                present = True
            except NotExistent:
                pass
        rows.append((f'code {spec.label}', present, spec.executable if present else 'missing: run `aiida-nmcml setup`'))
    for missing in missing_executables():
        rows.append(('executable', False, f'{missing} not found on this machine'))
    fam = get_family(family)
    rows.append((f'pseudo family {family}', fam is not None, f'{len(fam.nodes)} pseudos' if fam else 'missing'))
    return rows

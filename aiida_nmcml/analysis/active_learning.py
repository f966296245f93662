"""The rules of the active-learning loop (``nmcml.active_learning``) as pure functions, so they are unit-tested without
a daemon and the in-process benchmark can apply the same ones: the parameters schema, the stopping rules, the Ni
moment check of new DFT labels, and the learning curve.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..common.schema import Field, Section
from ..engine.common import li_per_tm

__all__ = (
    'LATTICE_CHECK',
    'PARAMETERS',
    'RULE_ACCURATE',
    'RULE_DFT_BUDGET',
    'RULE_MAX_ITERATIONS',
    'RULE_TARGETS',
    'accuracy_rule',
    'compare_lattice',
    'condition_key',
    'expected_ni_states',
    'li_content',
    'ni_moment_pattern',
    'targets_rule',
)

RULE_ACCURATE = 'accurate_fraction'  # >= accurate_fraction of the monitored frames below trust_lower, every condition
RULE_TARGETS = 'held_out_targets'  # held-out force / energy / stress RMSE at or below the targets
RULE_MAX_ITERATIONS = 'max_iterations'
RULE_DFT_BUDGET = 'max_dft_labels'


def _band_check(section: Mapping) -> str | None:
    lower, upper = section.get('trust_lower'), section.get('trust_upper')
    if lower is not None and upper is not None and upper <= lower:
        return f'trust_upper ({upper}) must be above trust_lower ({lower})'
    return None


#: ``parameters`` of ``nmcml.active_learning`` (the MD, DFT and training settings are the children's own inputs).
PARAMETERS = Section(
    {
        'temperatures_K': Field(list, default=[300.0], items=Field(float, min=0.0, min_exclusive=True, max=5000.0),
                                min_length=1, unit='K', help='exploration temperatures; each seed structure at each'),
        'steps_growth': Field(float, default=1.0, min=1.0, max=10.0,
                              help='MD steps of iteration k are md.parameters.steps * steps_growth**k (longer runs '
                                   'as the model improves)'),
        'trust_lower': Field(float, default=None, nullable=True, min=0.0, unit='eV/Å',
                             help='per-atom deviation below which a frame is accurate; null: from the calibration'),
        'trust_upper': Field(float, default=None, nullable=True, min=0.0, min_exclusive=True, unit='eV/Å',
                             help='above it a frame is discarded (not labelled); null: from the calibration'),
        'trust_upper_factor': Field(float, default=6.0, min=1.0, min_exclusive=True,
                                    help='upper = factor * lower when the calibration has no upper level'),
        'min_spread': Field(float, default=1.0e-3, min=0.0, min_exclusive=True, unit='eV/Å',
                            help='median frame deviation below which selection is refused (exit 730)'),
        'max_selected': Field(int, default=50, min=1, help='frames sent to DFT per iteration (all conditions)'),
        'min_step_gap': Field(int, default=0, min=0, help='MD steps between two selected frames of one trajectory'),
        'descriptors': Field(str, default='mace', choices=('mace', 'none'),
                             help='FPS on MACE invariant descriptors of committee member 0, or by deviation only'),
        'held_out_per_condition': Field(int, default=2, min=0,
                                        help='MD snapshots per condition labelled once for the fixed held-out set '
                                             '(first iteration; not used when held_out_set is given)'),
        'accurate_fraction': Field(float, default=0.95, min=0.0, max=1.0, min_exclusive=True,
                                   help='convergence: this fraction of monitored frames below trust_lower, every '
                                        'condition'),
        'targets': Section(
            {
                'forces_rmse_meV_per_A': Field(float, default=60.0, nullable=True, min=0.0, unit='meV/Å'),
                'energy_rmse_meV_per_atom': Field(float, default=3.0, nullable=True, min=0.0, unit='meV/atom'),
                'stress_rmse_GPa': Field(float, default=0.3, nullable=True, min=0.0, unit='GPa'),
            },
            nullable=True,
            help='held-out targets (all given ones must be met); null: no target rule',
        ),
        'max_iterations': Field(int, default=10, min=1, help='iteration budget (continuations count the earlier ones)'),
        'max_dft_labels': Field(int, default=1000, min=1, help='DFT budget: selected plus held-out labels'),
        'retrain_from': Field(str, default='foundation', choices=('foundation', 'previous'),
                              help='each retraining starts from the foundation model or from the previous '
                                   "committee's member 0"),
        'magnetic_check': Field(str, default='reject', choices=('reject', 'flag', 'off'),
                                help='new labels whose Ni moment pattern does not match the oxidation states: left '
                                     'out of the dataset (reject) or only listed (flag)'),
        'magnetic_tolerance': Field(int, default=0, min=0, help='Ni sites a pattern may be off by'),
        'seed': Field(int, default=0, min=0, help='MD seeds (iteration and condition are added)'),
    },
    check=_band_check,
)  # fmt: skip


def li_content(symbols: Sequence[str]) -> float:
    """x in Li_x TM O2: Li atoms per transition-metal atom (antisite Ni counted as a TM); NaN without any TM."""
    x = li_per_tm(symbols)
    return float('nan') if x is None else x


def condition_key(structure_key: str, temperature: float) -> str:
    """Link-label-safe name of one exploration condition: ``<structure key>_T600``."""
    return f'{structure_key}_T{round(float(temperature))}'


# |moment| bins of Ni in DFT+U layered oxides (science review §8.1 item 6): Ni4+ (low-spin d6) ~0, Ni3+ (low-spin
# d7) ~1 µB, Ni2+ (d8) ~1.7 µB; the bin edges sit between them.
NI_MOMENT_EDGES = (0.5, 1.35)


def expected_ni_states(symbols: Sequence[str]) -> dict[str, int] | None:
    """How many Ni are 2+, 3+, 4+ in a charge-balanced cell (Li+, O2-, Mn4+, Co3+ until every Ni is 4+).

    The same ladder as :func:`aiida_nmcml.structures.assign_oxidation_states` (Ni oxidised first; Co only when every Ni
    is 4+). None when no assignment closes the balance.
    """
    symbols = list(symbols)
    n = {el: symbols.count(el) for el in ('Li', 'Ni', 'Mn', 'Co', 'O')}
    charge = 2 * n['O'] - n['Li'] - 4 * n['Mn'] - 3 * n['Co']  # what the Ni (and extra Co holes) must carry
    if n['Ni'] == 0:
        return {'Ni2+': 0, 'Ni3+': 0, 'Ni4+': 0}
    excess = charge - 2 * n['Ni']  # holes above Ni2+
    if excess < 0 or excess > 2 * n['Ni'] + n['Co']:
        return None
    ni3 = min(excess, n['Ni'])  # all to 3+ first
    ni4 = min(max(excess - n['Ni'], 0), n['Ni'])  # then to 4+
    ni3 -= ni4
    return {'Ni2+': n['Ni'] - ni3 - ni4, 'Ni3+': ni3, 'Ni4+': ni4}


def ni_moment_pattern(symbols: Sequence[str], magmoms, tolerance: int = 0) -> dict:
    """Compare a DFT label's Ni moments with the composition's oxidation states.

    Returns the expected and found counts of Ni2+/3+/4+-like sites (|m| bins at 0.5 and 1.35 µB), ``off_by`` (the
    number of Ni in the wrong bin, half the L1 distance of the counts) and ``match`` (``off_by <= tolerance``). A
    mismatch is a spin local minimum of DFT+U (science review §8.1 item 6); ``match`` is None without moments or
    without a charge-balanced assignment.
    """
    symbols = list(symbols)
    expected = expected_ni_states(symbols)
    result = {'expected': expected, 'found': None, 'off_by': None, 'match': None}
    if magmoms is None or expected is None:
        return result
    moments = np.abs(np.asarray(magmoms, dtype=float).ravel())
    if moments.size != len(symbols):
        return result
    ni = moments[[i for i, s in enumerate(symbols) if s == 'Ni']]
    lo, hi = NI_MOMENT_EDGES
    found = {'Ni2+': int((ni > hi).sum()), 'Ni3+': int(((ni >= lo) & (ni <= hi)).sum()), 'Ni4+': int((ni < lo).sum())}
    off_by = sum(abs(found[k] - expected[k]) for k in found) // 2
    result.update({'found': found, 'off_by': int(off_by), 'match': bool(off_by <= tolerance)})
    return result


def accuracy_rule(counts_per_condition: Mapping[str, Mapping], fraction: float) -> tuple[bool, dict]:
    """True when at every condition at least ``fraction`` of the monitored frames are accurate; per-condition values."""
    values = {key: counts.get('fraction_accurate') for key, counts in counts_per_condition.items()}
    met = bool(values) and all(v is not None and v >= fraction for v in values.values())
    return met, values


def targets_rule(summary: Mapping | None, targets: Mapping | None) -> tuple[bool, dict]:
    """True when every given target is met by the held-out ``summary`` (``nmcml.evaluate`` metrics ``summary``).

    A target whose metric is missing (e.g. no stress labels) is not met: the rule never fires on absent data.
    """
    if not targets or summary is None:
        return False, {}
    names = {
        'forces_rmse_meV_per_A': 'forces_rmse_meV_per_A',
        'energy_rmse_meV_per_atom': 'energy_rmse_meV_per_atom',
        'stress_rmse_GPa': 'stress_rmse_GPa',
    }
    checked = {}
    for key, metric in names.items():
        target = targets.get(key)
        if target is None:
            continue
        value = summary.get(metric)
        checked[key] = {'value': value, 'target': target, 'met': value is not None and value <= target}
    met = bool(checked) and all(entry['met'] for entry in checked.values())
    return met, checked


def _reference_check(reference) -> str | None:
    """``reference``: structure key -> {a, c} in Å, both positive (the DFT values to compare with)."""
    if not reference:
        return 'give at least one structure key with its DFT {a, c}'
    for key, entry in reference.items():
        if not isinstance(entry, Mapping) or set(entry) != {'a', 'c'}:
            return f'{key!r}: expected {{a: <Å>, c: <Å>}}, got {entry!r}'
        for name in ('a', 'c'):
            value = entry[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
                return f'{key}.{name}: {value!r} is not a positive length in Å'
    return None


#: ``lattice_check`` of ``nmcml.active_learning``: relax given cells with the final committee's member, compare a, c.
LATTICE_CHECK = Section(
    {
        'reference': Field(dict, check=_reference_check, unit='Å',
                           help='DFT a and c per lattice_structures key, e.g. {x1: {a: 2.87, c: 14.2}} (a DFT '
                                'vc-relax of the same cell, or literature values)'),
        'tolerance_percent': Field(float, default=1.0, min=0.0, min_exclusive=True, max=50.0, unit='%',
                                   help='|model - DFT| / DFT allowed for a and for c (the issue: 1 %)'),
        'fmax': Field(float, default=0.02, min=0.0, min_exclusive=True, unit='eV/Å',
                      help='FIRE convergence on forces (and the cell filter\'s stress forces)'),
        'max_steps': Field(int, default=300, min=1, max=100_000, help='FIRE steps per structure'),
        'mode': Field(str, default='full', choices=('full', 'c'),
                      help='relax every cell component, or only c (the layer stacking)'),
        'member': Field(int, default=0, min=0, help='which committee member relaxes (sorted keys; 0: m0)'),
    },
    help='optional a(x), c(x) check after a model relaxation (default off: the input is absent)',
)  # fmt: skip


def compare_lattice(model: Mapping[str, Mapping], reference: Mapping[str, Mapping], tolerance_percent: float) -> dict:
    """Model a and c against the DFT ``reference``, per structure key; ``within`` when both are inside the tolerance.

    ``all_within`` is True only when every reference key has a model value within the tolerance and its relaxation
    converged (a non-converged relaxation is not a model lattice parameter); keys without a model value are listed
    in ``missing``.
    """
    per_structure, missing = {}, []
    for key in sorted(reference):
        if key not in model:
            missing.append(key)
            continue
        entry = {'converged': bool(model[key].get('converged', True))}
        if model[key].get('x_li') is not None:
            entry['x_li'] = float(model[key]['x_li'])
        within = entry['converged']
        for name in ('a', 'c'):
            value, ref = float(model[key][name]), float(reference[key][name])
            error = 100.0 * (value - ref) / ref
            entry.update({name: value, f'{name}_dft': ref, f'{name}_error_percent': error})
            within = within and abs(error) <= tolerance_percent
        entry['within'] = bool(within)
        per_structure[key] = entry
    return {
        'tolerance_percent': float(tolerance_percent),
        'per_structure': per_structure,
        'missing': missing,
        'all_within': bool(per_structure) and not missing and all(e['within'] for e in per_structure.values()),
    }

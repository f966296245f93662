"""Provenance side of the diffusion analysis: calcfunctions that turn MD trajectories into stored D and Ea nodes.

The science is in :mod:`aiida_nmcml.analysis.diffusion` (no AiiDA); these wrappers exist so that the future
``nmcml.diffusion`` work chain creates its data only through calcfunctions, with each trajectory file an input node:

* :func:`analyse_trajectories` -- one (T, x) point: replicas (``trajectory`` outputs of ``nmcml.md``, extxyz
  SinglefileData) -> ``result`` (Dict: D_xy, D_z, D_iso, D_sigma, Haven ratio, conductivity, warnings) and
  ``samples`` (ArrayData: MSD curves and the D samples that the Arrhenius fit consumes).
* :func:`arrhenius` -- the ``samples`` nodes of several temperatures -> Ea, D(300 K) and their samples.
"""

from __future__ import annotations

import numpy as np
from aiida import orm
from aiida.engine import calcfunction

from ..analysis import diffusion as dm
from ..common.schema import Field, Section

PARAMETERS = Section(
    {
        'timestep_fs': Field(float, default=None, nullable=True, min=0.0, min_exclusive=True, unit='fs',
                             help="null: read from the frames' info['time_fs']"),
        'stride': Field(int, default=1, min=1, help='MD steps between frames (with timestep_fs)'),
        'start_fs': Field(float, default=1000.0, min=0.0, unit='fs', help='ballistic/vibrational start not fitted'),
        'max_lag_fraction': Field(float, default=0.5, min=0.0, min_exclusive=True, max=1.0),
        'n_lags': Field(int, default=60, min=3, max=500),
        'temperature_K': Field(float, default=None, nullable=True, min=0.0, min_exclusive=True, unit='K'),
        'species': Field(str, default='Li'),
        'level': Field(float, default=0.95, min=0.5, max=0.999),
        'n_samples': Field(int, default=4000, min=100, max=100000),
        'seed': Field(int, default=0, min=0),
    }
)  # fmt: skip


def json_safe(value):
    """``value`` with every non-finite float replaced by None: a Dict node refuses NaN and inf (e.g. the reduced
    chi^2 of an Arrhenius fit through two temperatures, which has no degrees of freedom left)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _read_frames(node: orm.SinglefileData):
    from ase.io import read

    with node.as_path() as path:
        return read(path, index=':', format='extxyz')


@calcfunction
def analyse_trajectories(parameters: orm.Dict, **trajectories):
    """D*, D_sigma and the Haven ratio of one (T, x) point from independent replicas (equal length)."""
    errors = PARAMETERS.errors(parameters.get_dict(), 'parameters')
    if errors:
        raise ValueError('\n'.join(errors))
    p = PARAMETERS.with_defaults(parameters.get_dict())
    if not trajectories:
        raise ValueError('give at least one trajectory')
    replicas = [_read_frames(trajectories[key]) for key in sorted(trajectories)]
    result = dm.analyse_diffusion(
        replicas if len(replicas) > 1 else replicas[0],
        p['timestep_fs'],
        p['stride'],
        species=p['species'],
        start_fs=p['start_fs'],
        max_lag_fraction=p['max_lag_fraction'],
        n_lags=p['n_lags'],
        temperature=p['temperature_K'],
        n_samples=p['n_samples'],
        level=p['level'],
        seed=p['seed'],
    )
    samples = orm.ArrayData()
    for name in ('tracer_xy', 'tracer_z', 'tracer_iso', 'collective_xy'):
        fit = getattr(result, name)
        if fit is None:
            continue
        samples.set_array(f'{name}_lag_fs', fit.lag_fs)
        samples.set_array(f'{name}_msd_A2', fit.msd)
        samples.set_array(f'{name}_D_samples', fit.D_samples)
    if result.haven_samples is not None:
        samples.set_array('haven_samples', result.haven_samples)
    summary = result.as_dict()
    for key in ('D_xy', 'D_z', 'D_iso', 'D_collective_xy'):  # the curves live in `samples`
        if summary.get(key):
            for curve in ('lag_fs', 'msd_A2', 'msd_std_A2'):
                summary[key].pop(curve, None)
    samples.base.attributes.set('temperature_K', p['temperature_K'])
    return {'result': orm.Dict(json_safe(summary)), 'samples': samples}


@calcfunction
def arrhenius(**samples):
    """Ea and D(300 K) from the ``samples`` of :func:`analyse_trajectories` at several temperatures (in-plane D*)."""
    temperatures, draws = [], []
    for key in sorted(samples):
        node = samples[key]
        temperature = node.base.attributes.get('temperature_K', None)
        if temperature is None:
            raise ValueError(f'samples `{key}` carry no temperature_K: set it in analyse_trajectories parameters')
        temperatures.append(float(temperature))
        draws.append(np.asarray(node.get_array('tracer_xy_D_samples')))
    fit = dm.arrhenius_fit(temperatures, draws)
    posterior = orm.ArrayData()
    posterior.set_array('Ea_eV', fit.ea_samples)
    posterior.set_array('ln_D0', fit.ln_d0_samples)
    posterior.set_array('D_300K_cm2_s', fit.extrapolate_samples(300.0))
    return {'result': orm.Dict(json_safe(fit.as_dict())), 'posterior': posterior}


# ---------------------------------------------------------------------------------------------------------------
# Calcfunctions of the ``nmcml.diffusion`` work chain (aiida_nmcml/workflows/diffusion_chain.py): every node it makes
# ---------------------------------------------------------------------------------------------------------------

#: Room-temperature experiments on NMC811 (chemical diffusion coefficients D~, cm^2/s), docs/references.md.
EXPERIMENT = {
    'oregan_2022': {
        'source': "O'Regan et al., Electrochim. Acta 425, 140700 (2022): GITT fit, LG M50 NMC811, 298 K "
        '(values computed from the published fit)',
        'x_li': [0.25, 0.32, 0.40, 0.50, 0.60, 0.70, 0.80, 0.90, 1.0],
        'D_cm2_s': [2.0e-10, 2.9e-11, 1.0e-10, 7.3e-11, 6.8e-11, 3.9e-11, 3.0e-11, 3.6e-11, 6.1e-11],
    },
    'chen_2020': {
        'source': 'Chen et al., J. Electrochem. Soc. 2020, doi:10.1149/1945-7111/ab9050: P2D parameter, 298 K',
        'D_cm2_s': 4e-11,
    },
    'scatter': 'GITT values for layered oxides scatter by up to 4 orders of magnitude between reports (Kang & Chueh, '
    'J. Electrochem. Soc. 168, 120504 (2021)): compare within one to two orders of magnitude.',
}


def _store_frames(frames, filename: str = 'trajectory.extxyz') -> orm.SinglefileData:
    import io

    from ase.io import write

    handle = io.StringIO()
    write(handle, frames, format='extxyz')
    return orm.SinglefileData(io.BytesIO(handle.getvalue().encode()), filename=filename)


@calcfunction
def build_orderings(requests: orm.Dict, **ground_states):
    """The starting cells of the diffusion grid: random orderings (``aiida_nmcml.structures.build_nmc``, one seed each)
    or a copy of the GA ground state given for that content (``gs_<x key>``)."""
    from ..structures import build_nmc, to_structure_data

    out = {}
    for key, request in requests.get_dict().items():
        if 'ground_state' in request:
            out[key] = ground_states[f'gs_{request["ground_state"]}'].clone()
            continue
        supercell = request['supercell']
        atoms = build_nmc(
            supercell,
            x_li=request['x_li'],
            composition=request.get('composition'),
            seed=request['seed'],
            antisite_fraction=request.get('antisite_fraction', 0.0),
        )
        out[key] = to_structure_data(atoms)
    return out


@calcfunction
def production_cell(trajectory: orm.SinglefileData, fraction: orm.Float):
    """The NVT production start: the last NPT frame (wrapped, fractional) in the cell averaged over the last
    ``fraction`` of the NPT frames (full-cell MTK keeps the cell momentum symmetric, so averaging the matrices is
    meaningful). Per-atom sublattice labels and initial moments are carried."""
    from ase import Atoms

    from ..structures import to_structure_data

    frames = _read_frames(trajectory)
    n_avg = max(1, round(fraction.value * len(frames)))
    cell = np.mean([f.cell.array for f in frames[-n_avg:]], axis=0)
    last = frames[-1]
    atoms = Atoms(numbers=last.numbers, cell=cell, pbc=True, scaled_positions=last.get_scaled_positions(wrap=True))
    if 'sublattice' in last.arrays:
        atoms.arrays['sublattice'] = np.asarray(last.arrays['sublattice']).astype(str)
    if 'initial_magmoms' in last.arrays:
        atoms.set_initial_magnetic_moments(last.arrays['initial_magmoms'])
    structure = to_structure_data(atoms)
    structure.base.attributes.set(
        'nmcml_npt_average',
        {'frames_averaged': n_avg, 'frames': len(frames), 'volume_change': npt_volume_change(frames, n_avg)},
    )
    return structure


def npt_volume_change(frames, n_avg: int) -> float:
    """Relative change of the mean volume of the last ``n_avg`` NPT frames against the first (starting) frame.

    Why: a model that does not bind the cell lets an NPT run grow without bound (the demo's distilled foundation took a
    70-atom Li0.5NiO2 cell from 675 to 3655 Å^3 in 600 fs at 800 K, docs/foundation.md); averaging such a cell and
    producing in it gives a trajectory of a material that has come apart. Thermal expansion at 1000 K and the change of
    c with x are a few per cent.
    """
    start = frames[0].get_volume()
    return float(np.mean([f.get_volume() for f in frames[-n_avg:]]) / start - 1.0)


def npt_runaway(volume_change: float, limit: float) -> str | None:
    """Why an equilibration's cell cannot be used (its mean volume moved more than ``limit``), or None."""
    if abs(volume_change) <= limit:
        return None
    return (
        f'the NPT cell ran away: mean volume {volume_change:+.0%} against the start (limit {limit:.0%}); the model '
        'does not hold the cell at this temperature -- label frames of this run and retrain (docs/foundation.md)'
    )


def count_frames(node: orm.SinglefileData) -> int:
    """Number of frames of an extxyz file node (read only; no node is made)."""
    return len(_read_frames(node))


@calcfunction
def trim_trajectory(trajectory: orm.SinglefileData, n_frames: orm.Int):
    """The first ``n_frames`` frames: replicas are pooled only at equal length."""
    return _store_frames(_read_frames(trajectory)[: n_frames.value])


@calcfunction
def inspect_run(trajectory: orm.SinglefileData, settings: orm.Dict, uncertainty: orm.ArrayData | None = None):
    """Flags of one production run and its MSD curve. A run is ``in_domain`` only when none of these holds: it ended
    with a non-zero exit (stop rule, failure), the committee deviation left the trust band, a TM ion migrated towards
    the Li layer, two O came closer than ``oo_min_distance``. ``reasons`` says which."""
    from ..analysis import md_checks

    s = settings.get_dict()
    frames = _read_frames(trajectory)
    frame_checks = md_checks.check_frames(
        frames, s['oo_min_distance'], s['migration_fraction'], stride=s.get('frame_stride', 1)
    )
    reasons, warnings = [], []
    if s.get('exit_status'):
        reasons.append(f'the MD ended with exit {s["exit_status"]}: {s.get("exit_message", "")}'.strip())
    committee = None
    if uncertainty is not None and 'max_force_dev' in uncertainty.get_arraynames():
        committee = md_checks.check_uncertainty(
            uncertainty.get_array('max_force_dev'), s['trust_upper'], s['max_fraction_above']
        )
        if committee['outside']:
            reasons.append(
                f'committee deviation left the trust band: {committee["fraction_above"]:.1%} of '
                f'{committee["monitored"]} monitored frames above {s["trust_upper"]} eV/Å '
                f"(max {committee['max_force_dev']:.3g} eV/Å): outside the model's domain"
            )
    else:
        warnings.append('no committee deviation series (one model?): the trust band was not checked')
    if frame_checks['tm_migrated']:
        reasons.append(
            f'{len(frame_checks["tm_migrated"])} TM ion(s) moved > {frame_checks["migration_threshold_A"]:.2f} Å along '
            f'the layer normal (towards the Li layer): atoms {frame_checks["tm_migrated"][:10]}'
        )
    if frame_checks['oo_contact_frames']:
        reasons.append(
            f'O-O contact below {s["oo_min_distance"]} Å (min {frame_checks["min_oo_distance_A"]:.2f} Å) in '
            f'{len(frame_checks["oo_contact_frames"])} checked frame(s)'
        )
    checks = {
        'in_domain': not reasons,
        'reasons': reasons,
        'warnings': warnings,
        'exit_status': s.get('exit_status'),
        'committee': committee,
        'frames': frame_checks,
        'n_frames': len(frames),
        'temperature_mean_K': float(np.mean([f.info.get('temperature', np.nan) for f in frames])),
    }
    curve = md_checks.msd_curve(frames)
    msd = orm.ArrayData()
    for name in ('lag_fs', 'msd_xy_A2', 'msd_z_A2'):
        msd.set_array(name, np.asarray(curve[name], dtype=float))
    msd.base.attributes.set('n_li', curve['n_li'])
    return {'checks': orm.Dict(json_safe(checks)), 'msd': msd}


def _interval(samples: np.ndarray, level: float = 0.95) -> list[float]:
    lo, med, hi = np.quantile(samples, [(1 - level) / 2, 0.5, (1 + level) / 2])
    return [float(med), float(lo), float(hi)]


@calcfunction
def compare_d(reference: orm.ArrayData, other: orm.ArrayData, labels: orm.Dict):
    """D_xy of two analyses (another committee driver, or another cell size) side by side: the ratio other/reference
    from the samples (independent draws), whether 1 lies in its 95 % interval, and the spread between the two next to
    the statistical width of each. ``agree``: the ratio interval contains 1."""
    a = np.asarray(reference.get_array('tracer_xy_D_samples'), dtype=float)
    b = np.asarray(other.get_array('tracer_xy_D_samples'), dtype=float)
    n = min(a.size, b.size)
    rng = np.random.default_rng(0)
    ratio = rng.permutation(b)[:n] / rng.permutation(a)[:n]
    ratio_interval = _interval(ratio)
    log_a, log_b = np.log(a[a > 0]), np.log(b[b > 0])
    return orm.Dict(
        json_safe(
            {
                **labels.get_dict(),
                'reference_D_xy_cm2_s': _interval(a),
                'other_D_xy_cm2_s': _interval(b),
                'ratio_other_over_reference': ratio_interval,
                'agree': bool(ratio_interval[1] <= 1.0 <= ratio_interval[2]),
                'spread_ln_D': float(abs(np.median(log_b) - np.median(log_a))),
                'statistical_sd_ln_D': [float(np.std(log_a)), float(np.std(log_b))],
                'note': 'spread_ln_D is the difference between the two analyses; statistical_sd_ln_D the width of each',
            }
        )
    )


@calcfunction
def diffusion_table(grid: orm.Dict, **results):
    """The D(T, x) table: a row per (T, x) with D_xy / D_iso / D_z (median and 95 % interval), the Haven ratio and
    the runs used and excluded with reasons; per x the Arrhenius Ea and D(300 K); the model and size checks."""
    info = grid.get_dict()
    runs, missing = info['runs'], info.get('missing', {})
    checks = {key[4:]: node.get_dict() for key, node in results.items() if key.startswith('run_')}
    rows = []
    points = {}
    for key, run in runs.items():
        if run['kind'] != 'model':
            points.setdefault(run['point'], []).append(key)
    for point, keys in points.items():
        first = runs[keys[0]]
        used = [k for k in keys if checks.get(k, {}).get('in_domain')]
        excluded = {}
        for k in keys:
            if k in used:
                continue
            reasons = checks.get(k, {}).get('reasons') or [runs[k].get('dropped') or 'no production frames']
            excluded[k] = reasons
        row = {
            'point': point,
            'kind': first['kind'],
            'x_li': first['x_li'],
            'temperature_K': first['temperature_K'],
            'runs_used': used,
            'runs_excluded': excluded,
        }
        node = results.get(f'point_{point}')
        if node is None:
            row['missing'] = missing.get(point, 'not analysed')
        else:
            r = node.get_dict()
            for name in ('D_xy', 'D_iso', 'D_z'):
                fit = r.get(name) or {}
                row[f'{name}_cm2_s'] = [fit.get('D_cm2_s'), *(fit.get('D_interval_cm2_s') or [None, None])]
            row['D_z_over_D_xy'] = r.get('D_z_over_D_xy')
            row['haven_ratio'] = r.get('haven_ratio')
            row['warnings'] = r.get('warnings', [])
        rows.append(row)
    arrhenius = {}
    for key, node in results.items():
        if key.startswith('arrhenius_'):
            fit = node.get_dict()
            arrhenius[key[len('arrhenius_') :]] = {
                'Ea_eV': fit['Ea_eV'],
                'D_300K_cm2_s': fit['D_300K_cm2_s'],
                'temperatures_K': fit['temperatures_K'],
                'curvature': fit['curvature'],
                'uncertainty_inflation': fit['uncertainty_inflation'],
            }
    table = {
        'observable': 'Li tracer (self) diffusion coefficient D*, in-plane D_xy = <dr_xy^2>/(4t) (primary) and '
        'isotropic D = <dr^2>/(6t); displacements relative to the framework (O + TM) centre of mass',
        'interval': '[median, lower, upper] of the 95 % interval',
        'rows': rows,
        'arrhenius': arrhenius,
        'runs': {k: {'in_domain': c.get('in_domain'), 'reasons': c.get('reasons')} for k, c in checks.items()},
        'dropped': {k: r['dropped'] for k, r in runs.items() if r.get('dropped')},
    }
    for name in ('model_check', 'size_check'):
        if name in results:
            table[name] = results[name].get_dict()
    return orm.Dict(json_safe(table))


@calcfunction
def compare_with_experiment(table: orm.Dict, settings: orm.Dict):
    """MD D*(300 K) from the Arrhenius posterior against room-temperature experiments on NMC811, stated honestly.

    MD gives the tracer D*; GITT / EIS / P2D fits give the chemical D~ = D_J Theta with D_J = D*/H_R. ``raw`` compares
    D* with D~ as they are (different observables); ``converted`` gives D~_MD = (D*/H_R) Theta where a thermodynamic
    factor Theta is given for that x (H_R: the median of the Haven-ratio medians over that content's temperatures,
    an assumption: H_R is measured at 600-1000 K, not at 300 K). Within one to two orders of magnitude is all the
    experimental scatter allows.
    """
    data = table.get_dict()
    thetas = {float(k): float(v) for k, v in (settings.get('thermodynamic_factors') or {}).items()}
    ref = EXPERIMENT['oregan_2022']
    rows = {}
    for x_key, fit in data.get('arrhenius', {}).items():
        x_li = float(x_key[1:].replace('_', '.'))
        d_md = fit['D_300K_cm2_s']
        d_exp = float(np.exp(np.interp(x_li, ref['x_li'], np.log(ref['D_cm2_s']))))
        entry = {
            'x_li': x_li,
            'md_tracer_D_300K_cm2_s': d_md,
            'experiment_chemical_D_cm2_s': d_exp,
            'experiment_source': ref['source'],
            'raw': {
                'what': 'MD tracer D* vs experimental chemical D~ (different observables)',
                'log10_ratio_md_over_exp': float(np.log10(d_md[0] / d_exp)),
                'log10_ratio_interval': [float(np.log10(d_md[1] / d_exp)), float(np.log10(d_md[2] / d_exp))],
            },
            'extrapolated_from_K': fit['temperatures_K'],
        }
        havens = [
            row['haven_ratio'][0]
            for row in data.get('rows', [])
            if row.get('kind') == 'grid' and abs(row['x_li'] - x_li) < 1e-9 and row.get('haven_ratio')
        ]
        theta = next((v for k, v in thetas.items() if abs(k - x_li) < 1e-6), None)
        if theta is not None and havens:
            h_r = float(np.median(havens))
            converted = [d * theta / h_r for d in d_md]
            entry['converted'] = {
                'what': 'D~_MD = (D*/H_R) Theta vs experimental chemical D~ (same observable)',
                'theta': theta,
                'haven_ratio_used': h_r,
                'haven_ratio_note': 'median over the temperatures of this content, assumed to hold at 300 K',
                'chemical_D_300K_cm2_s': converted,
                'log10_ratio_md_over_exp': float(np.log10(converted[0] / d_exp)),
            }
        else:
            entry['converted'] = None
            entry['converted_note'] = (
                'no thermodynamic factor given for this x' if theta is None else 'no Haven ratio for this x'
            )
        entry['within_two_orders'] = abs(entry['raw']['log10_ratio_md_over_exp']) <= 2
        rows[x_key] = entry
    return orm.Dict(
        json_safe(
            {
                'contents': rows,
                'other_reference': EXPERIMENT['chen_2020'],
                'scatter': EXPERIMENT['scatter'],
                'note': 'MD: tracer D* (self diffusion) extrapolated to 300 K from the Arrhenius posterior; '
                'experiment: chemical D~ at 298 K. They differ by Theta/H_R; only the converted entries compare like '
                'with like.',
            }
        )
    )

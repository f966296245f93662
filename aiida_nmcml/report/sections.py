"""The report's sections: each reads the processes it knows from a :class:`~.collect.Campaign` and draws its figures.

A section whose stage did not run (or has no usable output) is still in the report, saying so: an empty plot would
read as "nothing happened" where "not run" is the truth. Figures are matplotlib ``Figure`` objects saved as PNG
(Agg, no pyplot state, so several reports can be built in one process).
"""

from __future__ import annotations

import html
import math
import pathlib
import re
from dataclasses import dataclass, field

import numpy as np
from aiida import orm

from ..engine.common import li_per_tm
from . import references
from .collect import Campaign

EV_PER_A3_TO_GPA = 160.21766208
K_B_EV = 8.617333262e-5
X_KEY = re.compile(r'x(\d)_(\d{4})')
COLOURS = ('#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#e377c2', '#17becf', '#7f7f7f')


@dataclass
class Figure:
    filename: str
    caption: str


@dataclass
class Section:
    key: str
    title: str
    ran: bool = False
    missing: str = ''  # why there is nothing to show (stage not run, no output)
    figures: list[Figure] = field(default_factory=list)
    blocks: list[str] = field(default_factory=list)  # HTML: paragraphs and tables (already escaped)

    def found(self, items, missing: str) -> bool:
        """True, and the section ran, if there are ``items`` to show; else False, with ``missing`` as the reason."""
        if items:
            self.ran = True
            return True
        self.missing = missing
        return False


class Drawer:
    """Saves figures into the report folder with unique, stable names."""

    def __init__(self, folder: pathlib.Path):
        self.folder = folder
        self.count = 0

    def new(self, width: float = 9.0, height: float = 3.2, ncols: int = 1, nrows: int = 1):
        from matplotlib.figure import Figure as MplFigure

        fig = MplFigure(figsize=(width, height))
        # margins in inches (labels need the same room whatever the width), as fractions of this figure
        fig.subplots_adjust(
            left=min(0.25, 0.85 / width), right=0.98, bottom=min(0.3, 0.55 / height), top=0.88, wspace=0.38, hspace=0.5
        )
        axes = fig.subplots(nrows, ncols, squeeze=False)
        return fig, axes

    def save(self, fig, stem: str, caption: str) -> Figure:
        self.count += 1
        name = f'fig{self.count:02d}_{re.sub(r"[^A-Za-z0-9_]+", "_", stem)}.png'
        fig.savefig(self.folder / name, dpi=90)
        return Figure(name, caption)


def finish_axes(ax, xlabel: str, ylabel: str, **legend) -> None:
    """Axis labels and the legend (``fontsize`` 7 unless given): the last lines of most plots here."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(**{'fontsize': 7, **legend})


def table(header: list[str], rows: list[list]) -> str:
    """An HTML table; cells are escaped here (floats formatted with 3 significant digits)."""

    def cell(value):
        if value is None:
            return '–'
        if isinstance(value, float):
            return f'{value:.4g}'
        if isinstance(value, list | tuple) and len(value) == 3 and all(isinstance(v, int | float) for v in value):
            return f'{value[0]:.3g} [{value[1]:.3g}, {value[2]:.3g}]'  # (median, lower, upper)
        return html.escape(str(value))

    head = ''.join(f'<th>{html.escape(h)}</th>' for h in header)
    body = ''.join('<tr>' + ''.join(f'<td>{cell(v)}</td>' for v in row) + '</tr>' for row in rows)
    return f'<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def para(text: str) -> str:
    return f'<p>{html.escape(text)}</p>'


def x_from_key(label: str) -> float | None:
    match = X_KEY.search(label or '')
    return None if match is None else float(f'{match.group(1)}.{match.group(2)}')


def li_content(symbols) -> float | None:
    """Li per transition-metal atom (x in Li_x MO2); None without transition metals (synthetic cells)."""
    return li_per_tm(symbols)


def fmt_x(x: float | None) -> str:
    return 'x = ?' if x is None else f'x = {x:.3g}'


# ---------------------------------------------------------------------------------------------------------------
# Machine-learning potential: parity, learning curve, reliability
# ---------------------------------------------------------------------------------------------------------------


def labelled_evaluations(campaign: Campaign) -> list[orm.CalcJobNode]:
    found = []
    for process in campaign.of('evaluate'):
        if 'predictions' not in campaign.outs(process) or 'metrics' not in campaign.outs(process):
            continue
        if campaign.outs(process)['metrics'].get('n_labelled', 0):
            found.append(process)
    return found


def evaluation_name(campaign: Campaign, process: orm.CalcJobNode) -> str:
    iteration = campaign.iteration_of(process)
    frames = campaign.ins(process)['frames'] if 'frames' in campaign.ins(process) else None
    universal = (
        campaign.ins(process)['universal_potential'].value if 'universal_potential' in campaign.ins(process) else None
    )
    parts = []
    if iteration is not None:
        parts.append(f'AL iteration {iteration}')
    if universal:
        parts.append(f'zero-shot {universal}')
    parts.append(campaign.describe(process))
    if frames is not None:
        parts.append(f'on {frames.num_frames} frame{"" if frames.num_frames == 1 else "s"} (TrainingSet <{frames.pk}>)')
    return ', '.join(parts)


def parity_section(campaign: Campaign, drawer: Drawer) -> Section:
    section = Section('parity', 'Parity: committee vs DFT (energy, forces, stress)')
    evaluations = labelled_evaluations(campaign)
    if not section.found(
        evaluations, 'No committee evaluation on labelled frames in this campaign (nmcml.evaluate did not run).'
    ):
        return section
    rows = []
    for process in evaluations:
        arrays = campaign.outs(process)['predictions']
        names = set(arrays.get_arraynames())
        natoms = arrays.get_array('natoms')
        summary = campaign.outs(process)['metrics'].get('summary', {}) or {}
        fig, axes = drawer.new(10.5, 3.4, ncols=3)
        panels = [
            (
                'energy',
                'ref_energy',
                'energy',
                'E per atom − ⟨E_DFT⟩ (meV)',
                lambda a, n=natoms: a / n,
                'energy_rmse_meV_per_atom',
                'meV/atom',
            ),
            (
                'forces',
                'ref_forces',
                'forces',
                'force components (eV/Å)',
                lambda a: a.reshape(-1),
                'forces_rmse_meV_per_A',
                'meV/Å',
            ),
            (
                'stress',
                'ref_stress',
                'stress',
                'stress components (GPa)',
                lambda a: a.reshape(-1) * EV_PER_A3_TO_GPA,
                'stress_rmse_GPa',
                'GPa',
            ),
        ]
        for ax, (title, ref_key, pred_key, label, transform, metric, unit) in zip(axes[0], panels):
            ax.set_title(title)
            if ref_key not in names or pred_key not in names:
                ax.text(0.5, 0.5, 'not predicted', ha='center', transform=ax.transAxes)
                continue
            ref, pred = transform(arrays.get_array(ref_key)), transform(arrays.get_array(pred_key))
            ok = np.isfinite(ref) & np.isfinite(pred)
            if not ok.any() or (title == 'energy' and summary.get(metric) is None):
                ax.text(0.5, 0.5, 'no labels', ha='center', transform=ax.transAxes)
                continue
            if title == 'energy':
                # relative to the mean DFT energy, in meV: absolute energies (~ -600 eV/atom) gave offset tick labels
                # that overlapped and pushed the axis label out of the figure; the model's offset stays visible
                shift = float(ref[ok].mean())
                ref, pred = 1000 * (ref - shift), 1000 * (pred - shift)
            ax.plot(ref[ok], pred[ok], 'o', ms=3, alpha=0.7, color=COLOURS[0], zorder=3)
            lo, hi = float(min(ref[ok].min(), pred[ok].min())), float(max(ref[ok].max(), pred[ok].max()))
            pad = 0.05 * (hi - lo or 1.0)
            ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], 'k--', lw=0.8)
            ax.set_xlabel(f'DFT {label}')
            ax.set_ylabel(f'model {label}')
            value = summary.get(metric)
            if value is not None:
                ax.text(  # lower right, under the points: off the diagonal where the points lie
                    0.96,
                    0.04,
                    f'RMSE {value:.3g} {unit}',
                    transform=ax.transAxes,
                    fontsize=9,
                    ha='right',
                    zorder=2,
                    bbox={'facecolor': 'white', 'alpha': 0.6, 'edgecolor': 'none'},
                )
        name = evaluation_name(campaign, process)
        section.figures.append(drawer.save(fig, f'parity_{process.pk}', f'Parity, {name}.'))
        rows.append(
            [
                name,
                campaign.outs(process)['metrics'].get('n_labelled'),
                summary.get('energy_rmse_meV_per_atom'),
                summary.get('forces_rmse_meV_per_A'),
                summary.get('stress_rmse_GPa'),
            ]
        )
    section.blocks.append(
        table(['evaluation', 'labelled frames', 'E RMSE (meV/atom)', 'F RMSE (meV/Å)', 'σ RMSE (GPa)'], rows)
    )
    return section


def training_frames(campaign: Campaign, process: orm.CalcJobNode) -> int | None:
    """Labelled frames behind the evaluated committee: the largest training set among its members' trainings."""
    sizes = []
    for label, node in campaign.ins(process).items():
        if not label.startswith('models__'):
            continue
        creator = node.creator
        if creator is not None and 'training_set' in campaign.ins(creator):
            sizes.append(int(campaign.ins(creator)['training_set'].base.attributes.get('num_labelled', 0)))
    return max(sizes) if sizes else None


def learning_curve_section(campaign: Campaign, drawer: Drawer) -> Section:
    section = Section('learning', 'Learning curve: held-out error vs DFT calls')
    evaluations = [p for p in labelled_evaluations(campaign) if 'universal_potential' not in campaign.ins(p)]
    if not section.found(evaluations, 'No committee evaluation on held-out labelled frames in this campaign.'):
        return section
    dft = [p for p in campaign.dft_calculations() if p.is_finished_ok]
    use_dft = bool(dft)
    series: dict[str, list] = {}
    rows = []
    for process in evaluations:
        if use_dft:
            x = sum(1 for p in dft if p.ctime <= process.ctime)
        else:
            x = training_frames(campaign, process)
        summary = campaign.outs(process)['metrics'].get('summary', {}) or {}
        frames = campaign.ins(process)['frames']
        key = f'held-out set <{frames.pk}> ({frames.num_frames} frames)'
        series.setdefault(key, []).append(
            (x, summary.get('forces_rmse_meV_per_A'), summary.get('energy_rmse_meV_per_atom'))
        )
        rows.append(
            [
                campaign.describe(process),
                campaign.iteration_of(process),
                x,
                summary.get('forces_rmse_meV_per_A'),
                summary.get('energy_rmse_meV_per_atom'),
            ]
        )
    fig, axes = drawer.new(9.0, 3.2, ncols=2)
    xlabel = 'DFT calculations finished before the evaluation' if use_dft else 'labelled frames in the training set'
    for i, (key, points) in enumerate(sorted(series.items())):
        points = sorted((p for p in points if p[0] is not None), key=lambda p: p[0])
        for ax, column in zip(axes[0], (1, 2)):
            xs = [p[0] for p in points if p[column] is not None]
            ys = [p[column] for p in points if p[column] is not None]
            ax.plot(xs, ys, 'o-', color=COLOURS[i % len(COLOURS)], label=key)
    axes[0][0].set_ylabel('force RMSE (meV/Å)')
    axes[0][1].set_ylabel('energy RMSE (meV/atom)')
    for ax in axes[0]:
        ax.set_xlabel(xlabel)
    axes[0][0].legend(fontsize=7)
    note = (
        'x axis: DFT calculations (pw.x / VASP jobs) that had finished when the committee was evaluated.'
        if use_dft
        else 'No DFT calculation is part of this campaign (labels were given): x axis is the size of the labelled '
        'training set behind the committee.'
    )
    section.figures.append(drawer.save(fig, 'learning_curve', f'Held-out error of each evaluation. {note}'))
    section.blocks.append(table(['evaluation', 'AL iteration', xlabel, 'F RMSE (meV/Å)', 'E RMSE (meV/atom)'], rows))
    return section


def active_learning_section(campaign: Campaign, drawer: Drawer) -> Section:
    """Per iteration of ``nmcml.active_learning``: its ``iteration_metrics`` (scalar entries) and the stopping rule."""
    section = Section('active_learning', 'Active learning: iterations and stopping rule')
    nodes = [p for p in campaign.of('active_learning') if campaign.outs(p)]
    if not section.found(nodes, 'Active learning (nmcml.active_learning) did not run in this campaign.'):
        return section
    for process in nodes:
        outputs = campaign.outs(process)
        metrics = {
            k.split('__', 1)[1]: n.get_dict() for k, n in sorted(outputs.items()) if k.startswith('iteration_metrics__')
        }
        scalar = sorted({k for m in metrics.values() for k, v in m.items() if isinstance(v, int | float | str | bool)})
        section.blocks.append(para(f'{campaign.describe(process)}: {len(metrics)} iterations recorded.'))
        if metrics:
            section.blocks.append(
                table(['iteration', *scalar], [[key, *(m.get(k) for k in scalar)] for key, m in metrics.items()])
            )
        if 'convergence' in outputs:
            record = outputs['convergence'].get_dict()
            section.blocks.append(para('Stopped by: ' + ', '.join(f'{k} = {v}' for k, v in sorted(record.items()))))
    return section


def reliability_section(campaign: Campaign, drawer: Drawer) -> Section:
    section = Section('reliability', 'Uncertainty vs true error (reliability of the committee spread)')
    nodes = [
        p for p in campaign.of('evaluate') if 'reliability' in campaign.outs(p) and 'calibration' in campaign.outs(p)
    ]
    missing = (
        'No calibration output: no committee (≥ 2 models) was evaluated on labelled frames, or its spread was '
        'negligible (exit code 730) and calibration was refused.'
    )
    if not section.found(nodes, missing):
        return section
    rows = []
    for process in nodes:
        curve = campaign.outs(process)['reliability']
        cal = campaign.outs(process)['calibration'].get_dict()
        s = curve.get_array('s_rms')
        err = curve.get_array('error_rms')
        centre = 0.5 * (curve.get_array('lower') + curve.get_array('upper'))
        fig, axes = drawer.new(9.0, 3.2, ncols=2)
        ax = axes[0][0]
        ax.loglog(s, err, 'o', color=COLOURS[0], label='binned RMS error')
        grid = np.geomspace(max(float(s.min()), 1e-6) / 2, float(s.max()) * 2, 50)
        ax.loglog(grid, grid, 'k:', lw=0.8, label='error = spread')
        if cal.get('error_scale'):
            ax.loglog(
                grid, cal['error_scale'] * grid, '--', color=COLOURS[1], label=f'calibrated ×{cal["error_scale"]:.2g}'
            )
        from matplotlib.ticker import NullFormatter

        for axis in (ax.xaxis, ax.yaxis):  # minor labels of a short log range overlap the major ones
            axis.set_minor_formatter(NullFormatter())
        finish_axes(ax, 'committee spread s (eV/Å, per atom, bin RMS)', 'true force error (eV/Å, bin RMS)')
        ax = axes[0][1]
        ax.semilogx(centre, curve.get_array('p_exceed'), 'o-', color=COLOURS[2])
        for name, style in (('trust_lower', '--'), ('trust_upper', '-.')):
            if cal.get(name):
                ax.axvline(cal[name], ls=style, color='grey', label=f'{name} {cal[name]:.3g} eV/Å')
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(-0.03, 1.03)
        finish_axes(ax, 'per-atom deviation d (eV/Å)', f'P(error > {cal.get("tolerance", 0.1):g} eV/Å)')
        name = evaluation_name(campaign, process)
        section.figures.append(
            drawer.save(fig, f'reliability_{process.pk}', f'Reliability curve, {name} ({cal.get("n_atoms")} atoms).')
        )
        rows.append(
            [
                name,
                cal.get('n_models'),
                cal.get('n_atoms'),
                cal.get('alpha'),
                cal.get('error_scale'),
                cal.get('spearman'),
                cal.get('trust_lower'),
                cal.get('trust_upper'),
            ]
        )
    section.blocks.append(
        table(
            [
                'evaluation',
                'models',
                'atoms',
                'α',
                'error scale',
                'Spearman ρ',
                'trust lower (eV/Å)',
                'trust upper (eV/Å)',
            ],
            rows,
        )
    )
    return section


# ---------------------------------------------------------------------------------------------------------------
# Search: GA convergence, ranking vs DFT, formation energies and hull
# ---------------------------------------------------------------------------------------------------------------


def ga_section(campaign: Campaign, drawer: Drawer) -> Section:
    from ..workflows.search import li_fraction, n_formula_units

    section = Section('ga', 'Genetic search: convergence')
    nodes = [p for p in campaign.of('ga') if 'history' in campaign.outs(p) and 'output_parameters' in campaign.outs(p)]
    if not section.found(nodes, 'The genetic search (nmcml.ga / nmcml.search) did not run in this campaign.'):
        return section
    fig, axes = drawer.new(7.0, 3.4)
    ax = axes[0][0]
    rows = []
    for i, process in enumerate(
        sorted(nodes, key=lambda p: li_fraction(campaign.outs(p)['output_parameters'].get_dict()))
    ):
        params = campaign.outs(process)['output_parameters'].get_dict()
        history = campaign.outs(process)['history']
        n_fu = n_formula_units(params)
        best = history.get_array('best_energy')
        x = li_fraction(params)
        ax.plot(
            history.get_array('evaluations'),
            1000 * (best - best.min()) / n_fu + 1e-2,
            '-o',  # markers: a GA that evaluated every ordering at once has a one-point history, a line shows nothing
            ms=3,
            color=COLOURS[i % len(COLOURS)],
            label=f'x = {x:.3g}',
        )
        rows.append(
            [
                f'{x:.3g}',
                campaign.describe(process),
                params.get('evaluations'),
                params.get('generations_run'),
                params.get('converged'),
                params.get('stop_reason'),
                params.get('best_spread'),
            ]
        )
    ax.set_yscale('log')
    finish_axes(ax, 'energy evaluations', 'best energy − final best + 0.01 (meV/f.u.)', ncol=2)
    section.figures.append(drawer.save(fig, 'ga_convergence', 'Best committee-mean energy found vs evaluations.'))
    section.blocks.append(
        table(['x', 'GA', 'evaluations', 'generations', 'converged', 'stop reason', 'best spread (eV)'], rows)
    )
    return section


def ranking_section(campaign: Campaign, drawer: Drawer) -> Section:
    section = Section('ranking', 'Energy ranking: model vs DFT')
    entries = []
    for process in campaign.of('search'):
        if 'summary' not in campaign.outs(process):
            continue
        for key, entry in campaign.outs(process)['summary'].get_dict().items():
            if entry.get('verification'):
                entries.append((key, entry['verification'], process))
    if not section.found(
        entries, 'No DFT verification of GA candidates (nmcml.search with verify_with_dft) in this campaign.'
    ):
        return section
    fig, axes = drawer.new(5.0, 4.2)
    ax = axes[0][0]
    rows = []
    top = 0.0
    for i, (key, ver, _process) in enumerate(entries):
        dft, mlip = ver['dft_relative_meV_per_fu'], ver['mlip_relative_meV_per_fu']
        top = max(top, *dft, *mlip)
        ax.plot(dft, mlip, 'o', color=COLOURS[i % len(COLOURS)], label=fmt_x(x_from_key(key)))
        rows.append(
            [
                fmt_x(x_from_key(key)),
                len(dft),
                ver.get('mae_relative_meV_per_fu'),
                ver.get('spearman'),
                ver.get('dft_ground_state_is_mlip'),
            ]
        )
    ax.plot([0, top * 1.05 + 1], [0, top * 1.05 + 1], 'k--', lw=0.8)
    finish_axes(ax, 'DFT relative energy (meV/f.u.)', 'model relative energy (meV/f.u.)')
    section.figures.append(drawer.save(fig, 'ranking', 'Candidates of each Li content verified by DFT.'))
    section.blocks.append(
        table(['Li content', 'candidates', 'MAE (meV/f.u.)', 'Spearman ρ', 'DFT ground state = model'], rows)
    )
    return section


def hull_section(campaign: Campaign, drawer: Drawer) -> Section:
    section = Section('hull', 'Formation energies and convex hull')
    hulls = [campaign.outs(p)['result'] for p in campaign.of('convex_hull') if 'result' in campaign.outs(p)]
    if not section.found(hulls, 'No convex hull: the search (with its x = 0 and x = 1 end members) did not run.'):
        return section
    for hull_node in hulls:
        hull = hull_node.get_dict()
        rows = sorted(hull['contents'].values(), key=lambda r: r['x_li'])
        fig, axes = drawer.new(6.0, 3.6)
        ax = axes[0][0]
        xs = [r['x_li'] for r in rows]
        ys = [1000 * r['formation_energy_eV_per_fu'] for r in rows]
        err = [1000 * (r['formation_energy_spread_eV_per_fu'] or 0.0) for r in rows]
        ax.errorbar(xs, ys, yerr=err, fmt='o', color=COLOURS[0], capsize=3, label='best ordering (committee ± σ)')
        ax.plot(hull['hull_x_li'], [1000 * y for y in hull['hull_eV_per_fu']], 'k-', lw=1, label='lower hull')
        finish_axes(ax, 'Li content x', 'formation energy (meV/f.u.)')
        section.figures.append(
            drawer.save(
                fig, f'hull_{hull_node.pk}', f'Formation energies against x = 0 and x = 1, Dict <{hull_node.pk}>.'
            )
        )
        section.blocks.append(
            table(
                ['x', 'E_f (meV/f.u.)', 'committee σ (meV/f.u.)', 'above hull (meV/f.u.)', 'on hull', 'GA converged'],
                [
                    [
                        r['x_li'],
                        1000 * r['formation_energy_eV_per_fu'],
                        None
                        if r['formation_energy_spread_eV_per_fu'] is None
                        else 1000 * r['formation_energy_spread_eV_per_fu'],
                        1000 * r['above_hull_eV_per_fu'],
                        r['on_hull'],
                        r['converged'],
                    ]
                    for r in rows
                ],
            )
        )
    return section


# ---------------------------------------------------------------------------------------------------------------
# Diffusion: MSD, Arrhenius, D(x) at 300 K
# ---------------------------------------------------------------------------------------------------------------


def trajectory_content(campaign: Campaign, process: orm.CalcFunctionNode) -> float | None:
    """Li content of an analyse_trajectories point: from the returned key, else from its first trajectory."""
    for node in (campaign.outs(process)['result'],) if 'result' in campaign.outs(process) else ():
        x = x_from_key(campaign.returned_label(node))
        if x is not None:
            return x
    for label, node in sorted(campaign.ins(process).items()):
        if isinstance(node, orm.SinglefileData) and label != 'parameters':
            from ase.io import read

            with node.as_path() as path:
                first = read(path, index=0, format='extxyz')
            return li_content(first.get_chemical_symbols())
    return None


def diffusion_points(campaign: Campaign) -> list[dict]:
    points = []
    for process in campaign.of('analyse_trajectories'):
        if not process.is_finished_ok or 'samples' not in campaign.outs(process):
            continue
        samples = campaign.outs(process)['samples']
        result = campaign.outs(process)['result'].get_dict()
        temperature = samples.base.attributes.get('temperature_K', None) or result.get('temperature')
        points.append(
            {
                'process': process,
                'samples': samples,
                'result': result,
                'T': temperature,
                'x': trajectory_content(campaign, process),
            }
        )
    return points


def msd_section(campaign: Campaign, drawer: Drawer) -> Section:
    section = Section('msd', 'Mean squared displacement of Li (in-plane, relative to the framework)')
    points = diffusion_points(campaign)
    if not section.found(points, 'No diffusion analysis (analyse_trajectories / nmcml.diffusion) in this campaign.'):
        return section
    contents = sorted({p['x'] for p in points}, key=lambda x: -1 if x is None else x)
    fig, axes = drawer.new(min(4.0 * len(contents), 12.0), 3.4, ncols=len(contents))
    temperatures = sorted({p['T'] or 0 for p in points})
    rows = []
    for ax, x in zip(axes[0], contents):
        for point in sorted((p for p in points if p['x'] == x), key=lambda p: p['T'] or 0):
            samples, result = point['samples'], point['result']
            colour = COLOURS[temperatures.index(point['T'] or 0) % len(COLOURS)]
            lag = samples.get_array('tracer_xy_lag_fs') / 1000
            ax.plot(lag, samples.get_array('tracer_xy_msd_A2'), '-', color=colour, label=f'{point["T"]} K')
            fit = result.get('D_xy') or {}
            if fit.get('D_cm2_s') is not None:
                slope = 4 * fit['D_cm2_s'] / 0.1 * 1000  # Å^2/ps: 1 Å^2/fs = 0.1 cm^2/s, in-plane MSD = 4 D t
                ax.plot(lag, slope * lag + (fit.get('intercept_A2') or 0.0), ':', color=colour, lw=1)
                lo, hi = fit.get('D_interval_cm2_s') or (None, None)
                rows.append(
                    [
                        fmt_x(x),
                        point['T'],
                        fit['D_cm2_s'],
                        lo,
                        hi,
                        result.get('haven_ratio'),
                        result.get('n_replicas'),
                        '; '.join(result.get('warnings') or []),
                    ]
                )
        ax.set_title(fmt_x(x))
        finish_axes(ax, 'lag (ps)', 'MSD_xy (Å²)')
    section.figures.append(
        drawer.save(
            fig, 'msd', 'In-plane Li MSD per temperature (solid) and the generalised least-squares fit (dotted).'
        )
    )
    section.blocks.append(
        table(['Li content', 'T (K)', 'D*_xy (cm²/s)', 'lower', 'upper', 'Haven ratio', 'replicas', 'warnings'], rows)
    )
    return section


def arrhenius_fits(campaign: Campaign) -> list[dict]:
    fits = []
    for process in campaign.of('arrhenius'):
        if not process.is_finished_ok or 'posterior' not in campaign.outs(process):
            continue
        x = x_from_key(campaign.returned_label(campaign.outs(process)['result']))
        if x is None:  # from the analysed points that fed the fit
            contents = set()
            for node in campaign.ins(process).values():
                creator = node.creator
                if creator is not None and creator.process_label == 'analyse_trajectories':
                    contents.add(trajectory_content(campaign, creator))
            x = contents.pop() if len(contents) == 1 else None
        fits.append(
            {
                'process': process,
                'result': campaign.outs(process)['result'].get_dict(),
                'posterior': campaign.outs(process)['posterior'],
                'x': x,
            }
        )
    return sorted(fits, key=lambda f: -1 if f['x'] is None else f['x'])


def arrhenius_section(campaign: Campaign, drawer: Drawer) -> Section:
    section = Section('arrhenius', 'Arrhenius plot with 95 % credible bands')
    fits = arrhenius_fits(campaign)
    if not section.found(fits, 'No Arrhenius fit (needs D at ≥ 2 temperatures for one Li content).'):
        return section
    fig, axes = drawer.new(6.5, 4.0)
    ax = axes[0][0]
    rows = []
    for i, fit in enumerate(fits):
        result, posterior = fit['result'], fit['posterior']
        colour = COLOURS[i % len(COLOURS)]
        temps = np.asarray(result['temperatures_K'], float)
        mean, std = np.asarray(result['ln_D_mean']), np.asarray(result['ln_D_std'])
        ax.errorbar(
            1000 / temps,
            np.exp(mean),
            yerr=[np.exp(mean) - np.exp(mean - 2 * std), np.exp(mean + 2 * std) - np.exp(mean)],
            fmt='o',
            color=colour,
            capsize=3,
        )
        grid = np.linspace(1000 / (temps.max() * 1.05), 1000 / 300.0, 60)
        ea, ln_d0 = posterior.get_array('Ea_eV'), posterior.get_array('ln_D0')
        ln_d = ln_d0[None, :] - ea[None, :] / (K_B_EV * (1000 / grid[:, None]))
        lo, med, hi = np.quantile(ln_d, [0.025, 0.5, 0.975], axis=1)
        ax.fill_between(grid, np.exp(lo), np.exp(hi), color=colour, alpha=0.2)
        e_med, e_lo, e_hi = result['Ea_eV']
        ax.plot(
            grid,
            np.exp(med),
            '-',
            color=colour,
            label=f'{fmt_x(fit["x"])}: Ea = {e_med:.2f} [{e_lo:.2f}, {e_hi:.2f}] eV',
        )
        d_med, d_lo, d_hi = result['D_300K_cm2_s']
        rows.append(
            [
                fmt_x(fit['x']),
                ', '.join(f'{t:g}' for t in temps),
                e_med,
                e_lo,
                e_hi,
                d_med,
                d_lo,
                d_hi,
                result.get('chi2_reduced'),
                (result.get('curvature') or {}).get('curved'),
            ]
        )
    ax.axvline(1000 / 300, color='grey', ls=':', lw=1)
    ax.text(1000 / 300, ax.get_ylim()[0], ' 300 K', color='grey', va='bottom', fontsize=8)
    ax.set_yscale('log')
    finish_axes(ax, '1000 / T (1/K)', 'tracer D*_xy (cm²/s)')
    section.figures.append(
        drawer.save(
            fig,
            'arrhenius',
            'MD points (±2σ of ln D) and the Arrhenius posterior median with its 95 % band, extrapolated to 300 K.',
        )
    )
    section.blocks.append(
        table(
            [
                'Li content',
                'T (K)',
                'Ea (eV)',
                'lower',
                'upper',
                'D*(300 K) (cm²/s)',
                'lower',
                'upper',
                'χ²_red',
                'curved',
            ],
            rows,
        )
    )
    section.blocks.append(
        para(
            'Experimental activation energies for orientation: '
            + '; '.join(f'{n}: {v} eV ({s}, tag {t})' for n, v, s, t in references.EXPERIMENTAL_EA_EV)
            + '.'
        )
    )
    return section


def d300_section(campaign: Campaign, drawer: Drawer) -> Section:
    section = Section('d300', 'D(x) at 300 K against experiment (tracer vs chemical)')
    fits = [f for f in arrhenius_fits(campaign) if f['x'] is not None]
    if not section.found(fits, 'No Arrhenius fit with a known Li content: D(300 K) cannot be placed on x.'):
        return section
    fig, axes = drawer.new(6.5, 4.0)
    ax = axes[0][0]
    yang = references.YANG_2012
    ax.axhspan(yang['D_min_cm2_s'], yang['D_max_cm2_s'], color='#dddddd', alpha=0.6, label=yang['label'])
    ax.axhline(references.CHEN_2020['D_cm2_s'], color='#555555', ls='--', lw=1, label=references.CHEN_2020['label'])
    oregan = references.OREGAN_2022
    ax.plot(oregan['x_li'], oregan['D_cm2_s'], 's-', color='#555555', ms=4, lw=0.8, label=oregan['label'])
    xs = [f['x'] for f in fits]
    med = [f['result']['D_300K_cm2_s'][0] for f in fits]
    lo = [f['result']['D_300K_cm2_s'][1] for f in fits]
    hi = [f['result']['D_300K_cm2_s'][2] for f in fits]
    ax.errorbar(
        xs,
        med,
        yerr=[np.subtract(med, lo), np.subtract(hi, med)],
        fmt='o',
        color=COLOURS[1],
        capsize=4,
        label='this campaign: MD tracer D*_xy (Arrhenius, 95 %)',
    )
    ax.set_yscale('log')
    ax.set_xlim(-0.02, 1.05)
    finish_axes(ax, 'Li content x', 'D at 300 K (cm²/s)', fontsize=6.5, loc='lower left')
    section.figures.append(
        drawer.save(
            fig,
            'd300',
            'Model tracer D* (in-plane, extrapolated to 300 K from the Arrhenius posterior) '
            'against experimental chemical diffusion coefficients at 298 K.',
        )
    )
    section.blocks.append(
        para(
            'Tracer vs chemical: MD gives the tracer (self) diffusion coefficient D* of Li; GITT and cell-model fits '
            'give the chemical diffusion coefficient D~ = D* Θ / H_R (thermodynamic factor Θ, Haven ratio H_R). '
            'Reported experimental values scatter by up to four orders of magnitude (Kang & Chueh 2021): agreement '
            'within one to two orders of magnitude is what this comparison can show.'
        )
    )
    section.blocks.append(
        table(
            ['source', 'kind', 'T (K)', 'tag'],
            [
                [r['label'], r['kind'], r['temperature_K'], r['tag']]
                for r in (references.OREGAN_2022, references.CHEN_2020, references.YANG_2012)
            ],
        )
    )
    for process in campaign.of('diffusion'):
        if 'experiment' in campaign.outs(process):
            data = campaign.outs(process)['experiment'].get_dict()
            rows = data.get('rows') if isinstance(data.get('rows'), list) else None
            if rows and isinstance(rows[0], dict):
                header = sorted({k for r in rows for k in r})
                section.blocks.append(table(header, [[r.get(k) for k in header] for r in rows]))
    return section


# ---------------------------------------------------------------------------------------------------------------
# Barriers: NEB profiles model vs DFT
# ---------------------------------------------------------------------------------------------------------------


def barrier_row(campaign: Campaign, process: orm.CalcJobNode) -> dict | None:
    """The ``nmcml.barrier`` table row of this NEB (model, DFT on the same images, zero-shot), if a barrier ran it.

    The row is found by the hop key under which the barrier work chain returned this NEB's summary
    (``hops.<key>.neb``).
    """
    summary = campaign.outs(process).get('output_parameters')
    for caller in campaign.callers(process):
        if caller.process_type != 'aiida.workflows:nmcml.barrier':
            continue
        outputs = campaign.outs(caller)
        table = outputs.get('table')
        for label, node in outputs.items():
            if summary is not None and node.pk == summary.pk and label.startswith('hops__') and table is not None:
                return table.get(label[len('hops__') :].rsplit('__', 1)[0])
    return None


def dft_profile(campaign: Campaign, process: orm.CalcJobNode) -> tuple[list, list] | None:
    """DFT energies (relative to image 0) on the NEB's own images, where a barrier stage computed them."""
    row = barrier_row(campaign, process) or {}
    energies = (row.get('dft') or {}).get('energies_relative')
    return (None, energies) if energies else None


def neb_section(campaign: Campaign, drawer: Drawer) -> Section:
    section = Section('neb', 'Migration barriers: NEB profiles, model vs DFT')
    nodes = [p for p in campaign.of('neb') if 'output_parameters' in campaign.outs(p)]
    if not section.found(nodes, 'No NEB (nmcml.neb / nmcml.barrier) in this campaign.'):
        return section
    rows = []
    fig, axes = drawer.new(min(4.2 * len(nodes), 12.6), 3.4, ncols=min(len(nodes), 3), nrows=math.ceil(len(nodes) / 3))
    flat = [ax for row in axes for ax in row]
    for ax, process in zip(flat, nodes):
        summary = campaign.outs(process)['output_parameters'].get_dict()
        coordinate = summary.get('reaction_coordinate_A') or list(range(len(summary['energies'])))
        ax.plot(coordinate, summary['energies_relative'], 'o-', color=COLOURS[0], label='model NEB (driver)')
        committee = summary.get('committee') or {}
        for k, member in enumerate(committee.get('member_energies') or []):
            member = np.asarray(member)
            ax.plot(
                coordinate,
                member - member[0],
                '-',
                color=COLOURS[2],
                lw=0.7,
                alpha=0.7,
                label='committee members' if k == 0 else None,
            )
        dft = dft_profile(campaign, process)
        if dft is not None:
            ax.plot(dft[0] or coordinate, dft[1], 's--', color=COLOURS[1], label='DFT on the same images')
        zero = ((barrier_row(campaign, process) or {}).get('zero_shot') or {}).get('energies_relative')
        if zero:
            ax.plot(coordinate, zero, '^:', color=COLOURS[4], label='zero-shot universal potential')
        ax.set_title(campaign.describe(process), fontsize=8)
        finish_axes(ax, 'reaction coordinate (Å)', 'E − E_initial (eV)')
        rows.append(
            [
                campaign.describe(process),
                summary.get('barrier_forward'),
                committee.get('barrier_mean'),
                committee.get('barrier_std'),
                None if dft is None else max(dft[1]),
                summary.get('converged'),
                '; '.join(summary.get('warnings') or []),
            ]
        )
    for ax in flat[len(nodes) :]:
        ax.set_visible(False)
    section.figures.append(drawer.save(fig, 'neb', 'Energy along the converged path of each hop.'))
    section.blocks.append(
        table(
            ['NEB', 'barrier (eV)', 'committee mean', 'committee σ', 'DFT barrier (eV)', 'converged', 'warnings'], rows
        )
    )
    section.blocks.append(
        para(
            'Published DFT barriers for orientation (LiNiO2, not NMC811): '
            + '; '.join(
                f'{name}: DFT {dft} eV, MACE-MP-0 {mp} eV' for name, dft, mp in references.NEB_BARRIERS_EV.values()
            )
            + ' (Devi et al. dataset; Bheemaguli et al. 2026).'
        )
    )
    if not any(dft_profile(campaign, p) for p in nodes):
        section.blocks.append(
            para('No DFT energies on the NEB images in this campaign: the model profile is unchecked.')
        )
    return section

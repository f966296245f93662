"""The static HTML report: one folder with ``index.html`` and its PNG figures, no JavaScript, no network.

Why static and script-free: the report is attached to an archive record and opened years later, offline, from a file
system; nothing in it may depend on a CDN or a running server.
"""

from __future__ import annotations

import datetime
import html
import pathlib

from . import provenance, sections
from .collect import collect

SECTIONS = (
    sections.parity_section,
    sections.learning_curve_section,
    sections.active_learning_section,
    sections.reliability_section,
    sections.ga_section,
    sections.ranking_section,
    sections.hull_section,
    sections.msd_section,
    sections.arrhenius_section,
    sections.d300_section,
    sections.neb_section,
)

STYLE = """
body{font-family:system-ui,-apple-system,'DejaVu Sans',sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
nav ul{columns:2;font-size:.95em}figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.88em;color:#555}table{border-collapse:collapse;font-size:.85em;margin:.8em 0}
td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}th{background:#f3f3f3}
.missing{background:#fff6e0;border-left:4px solid #e0a000;padding:.5em 1em}.meta{color:#555;font-size:.9em}
.status-ran{color:#227722}.status-missing{color:#aa6600}
"""


def build_report(node_or_group, folder) -> pathlib.Path:
    """Write the campaign report into ``folder`` (created if needed); return the path of ``index.html``.

    ``node_or_group``: the campaign's WorkChainNode, any stage's process node, a Group (its ``label/...`` subgroups
    are included) or an identifier of one (group label, pk, uuid).
    """
    import matplotlib

    matplotlib.use('Agg', force=False)
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob('fig*.png'):  # a rebuilt report must not keep figures of a section that vanished
        old.unlink()
    campaign = collect(node_or_group)
    drawer = sections.Drawer(folder)
    built = [make(campaign, drawer) for make in SECTIONS]
    counts = provenance.summary(campaign)
    index = folder / 'index.html'
    index.write_text(render(campaign, built, counts), encoding='utf-8')
    return index


def render(campaign, built: list[sections.Section], counts: dict) -> str:
    esc = html.escape
    now = datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')
    nav = ''.join(
        f'<li><a href="#{s.key}">{esc(s.title)}</a> '
        f'<span class="status-{"ran" if s.ran else "missing"}">({"shown" if s.ran else "not run"})</span></li>'
        for s in built
    )
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<title>aiida-nmcml report: {esc(campaign.title)}</title><style>{STYLE}</style></head><body>',
        f'<h1>NMC811 campaign report: {esc(campaign.title)}</h1>',
        f'<p class="meta">Source: {esc(provenance.target_description(campaign))}. Built {now}. '
        f'{counts["processes"]} processes, {counts["dft_calls"]} DFT calculations, {counts["models"]} models.</p>',
        f'<nav><h2>Contents</h2><ul>{nav}<li><a href="#provenance">Provenance</a></li></ul></nav>',
        glance(built),
    ]
    for section in built:
        parts.append(f'<section id="{section.key}"><h2>{esc(section.title)}</h2>')
        if not section.ran:
            parts.append(f'<p class="missing">Not run: {esc(section.missing)}</p>')
        for figure in section.figures:
            parts.append(
                f'<figure><img src="{esc(figure.filename)}" alt="{esc(figure.caption)}">'
                f'<figcaption>{esc(figure.caption)}</figcaption></figure>'
            )
        parts.extend(section.blocks)
        parts.append('</section>')
    parts.append(provenance_block(campaign, counts))
    parts.append('</body></html>')
    return '\n'.join(parts)


def glance(built: list[sections.Section]) -> str:
    ran = [s.title for s in built if s.ran]
    missing = [s.title for s in built if not s.ran]
    text = f'<p>{len(ran)} of {len(built)} sections have data.'
    if missing:
        text += ' Not run: ' + html.escape('; '.join(missing)) + '.'
    return text + '</p>'


def provenance_block(campaign, counts: dict) -> str:
    rows = [
        [
            'DFT calculations',
            f'{counts["dft_calls"]} ({counts["dft_finished_ok"]} finished ok, '
            f'{counts["dft_failed"]} failed; by code {counts["dft_by_code"] or "none"})',
        ],
        ['MACE trainings (calcjobs)', counts['trainings']],
        ['models (MaceModel nodes)', counts['models']],
        ['training sets', counts['training_sets']],
        ['largest training set', counts['largest_training_set']],
        ['MD runs', counts['md_runs']],
        ['processes', counts['processes']],
        ['processes that failed', counts['failed_processes']],
        ['data nodes', counts['data_nodes']],
        ['nodes in all', counts['nodes']],
    ]
    groups = [[label, count] for label, count in counts['groups'].items()] or [['(none)', None]]
    recorded = [[k, ', '.join(v)] for k, v in provenance.recorded_versions(campaign).items()]
    installed = [[k, v] for k, v in provenance.installed_versions().items()]
    by_type = [[k, v] for k, v in counts['processes_by_type'].items()]
    return (
        '<section id="provenance"><h2>Provenance</h2>'
        + sections.para(f'Source: {provenance.target_description(campaign)}.')
        + sections.table(['what', 'count'], rows)
        + '<h3>Groups</h3>'
        + sections.table(['group', 'nodes'], groups)
        + '<h3>Processes by type</h3>'
        + sections.table(['process', 'count'], by_type)
        + '<h3>Software recorded by the processes</h3>'
        + sections.table(['software', 'versions'], recorded or [['(nothing recorded)', None]])
        + '<h3>Software that built this report</h3>'
        + sections.table(['package', 'version'], installed)
        + sections.para(
            'Every number above is read from the AiiDA provenance graph; `verdi process show PK` and '
            '`verdi node graph generate PK` show where it came from.'
        )
        + '</section>'
    )

"""The campaign report: every section from real nodes, the same report from the node and from the group, sections
that did not run say so, and the page loads in headless Chromium with every figure and no console error."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest


def chromium() -> str | None:
    return shutil.which('chromium') or shutil.which('chromium-browser')


SECTIONS = (
    'parity',
    'learning',
    'active_learning',
    'reliability',
    'ga',
    'ranking',
    'hull',
    'msd',
    'arrhenius',
    'd300',
    'neb',
)


def sections_of(text: str) -> dict[str, str]:
    return dict(re.findall(r'<section id="(\w+)">(.*?)</section>', text, flags=re.S))


def test_every_section_from_the_campaign_group(built_report):
    text = built_report.read_text()
    found = sections_of(text)
    assert set(found) == {*SECTIONS, 'provenance'}
    # the test campaign verifies no GA candidate with DFT and has no nmcml.active_learning node: those sections say
    # so, every other one has a figure
    assert 'Not run' in found['ranking'] and 'Not run' in found['active_learning']
    for key in set(SECTIONS) - {'ranking', 'active_learning'}:
        assert 'Not run' not in found[key], key
        assert '<img src="fig' in found[key], key
    images = re.findall(r'<img src="([^"]+)"', text)
    for name in images:
        data = (built_report.parent / name).read_bytes()
        assert data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) > 5000, name
    # one parity plot and one reliability curve per evaluation; both evaluations labelled with their iteration
    assert found['parity'].count('<img') == 2 and found['reliability'].count('<img') == 2
    assert 'AL iteration 0' in found['parity'] and 'AL iteration 1' in found['parity']
    # learning curve: DFT calls finished before each evaluation (2, then 4)
    rows = re.findall(r'<tr><td>iter_0(\d)_evaluate[^<]*</td><td>(\d)</td><td>(\d)</td>', found['learning'])
    assert rows == [('0', '0', '2'), ('1', '1', '4')]
    # hull: the three GA contents, end members on the hull at zero formation energy
    assert found['hull'].count('<tr><td>') == 3
    # Arrhenius: the synthetic walks have Ea = 0.3 eV; both Li contents are placed on the D(x) plot
    ea = [
        float(v) for v in re.findall(r'<tr><td>x = [\d.]+</td><td>[\d., ]+</td><td>([\d.]+)</td>', found['arrhenius'])
    ]
    assert len(ea) == 2 and all(0.2 < v < 0.4 for v in ea)
    assert 'tracer' in found['d300'] and 'chemical' in found['d300'] and 'O&#x27;Regan' in found['d300']
    # provenance: DFT calls, models, groups
    provenance = found['provenance']
    assert '<td>DFT calculations</td><td>4 (4 finished ok, 0 failed' in provenance
    assert '<td>models (MaceModel nodes)</td><td>3</td>' in provenance
    assert 'report-test/active_learning/iter_01' in provenance and 'aiida-core' in provenance


def test_report_from_the_campaign_node(report_campaign, built_report, tmp_path):
    """From the node: everything the campaign node called, the same figures as from the group. The test's
    calcfunctions ran on their own (tests/report/conftest.py), so only the group reaches the hull and the diffusion."""
    from aiida_nmcml.report import build_report

    campaign, _, _ = report_campaign
    index = build_report(campaign, tmp_path)
    by_node, by_group = sections_of(index.read_text()), sections_of(built_report.read_text())
    called = ('parity', 'learning', 'reliability', 'ga', 'neb')
    for key in called:
        assert 'Not run' not in by_node[key], key
        captions = re.compile(r'<figcaption>(.*?)</figcaption>')
        assert captions.findall(by_node[key]) == captions.findall(by_group[key]), key
    for key in ('hull', 'msd', 'arrhenius', 'd300'):
        assert 'Not run' in by_node[key] and 'Not run' not in by_group[key], key
    assert 'report-test/committee' in by_node['provenance']  # the node's groups are found from its outputs


def test_sections_whose_stage_did_not_run_say_so(aiida_profile, toy_frames, tmp_path):
    from aiida import orm

    from aiida_nmcml.data.trainingset import TrainingSet
    from aiida_nmcml.report import build_report

    group = orm.Group(label='report-only-labels').store()
    group.add_nodes(TrainingSet.from_frames(toy_frames[:3]).store())
    text = build_report(group.label, tmp_path).read_text()
    found = sections_of(text)
    assert all('Not run' in found[key] for key in SECTIONS)
    assert '<img' not in text
    assert '0 of 11 sections have data' in text


@pytest.mark.skipif(chromium() is None and os.environ.get('CI') != 'true', reason='Debian chromium not installed')
def test_page_loads_in_headless_chromium(built_report, tmp_path):
    """Loads the report itself (console messages must be none), then a copy with a check script that counts the
    images the browser could not decode (the report has no script of its own), then takes a screenshot."""
    browser = chromium()
    assert browser, 'chromium is missing: scripts/bootstrap.sh installs it for the tests (NMCML_TEST_TOOLS=1)'
    flags = [browser, '--headless', '--no-sandbox', '--disable-gpu', '--enable-logging=stderr', '--v=0',
             '--virtual-time-budget=5000', f'--user-data-dir={tmp_path / "profile"}']  # fmt: skip
    page = built_report.as_uri()
    dom = subprocess.run([*flags, '--dump-dom', page], capture_output=True, text=True, timeout=120, check=False)
    console = [line for line in dom.stderr.splitlines() if 'CONSOLE' in line]
    assert dom.returncode == 0 and console == [], console
    assert 'NMC811 campaign report' in dom.stdout
    probe = built_report.parent / 'probe.html'
    script = (
        '<script>window.addEventListener("load",()=>{const bad=[...document.images].filter(i=>!i.complete||'
        '!i.naturalWidth);document.title="images "+document.images.length+" broken "+bad.length;});</script>'
    )
    probe.write_text(built_report.read_text().replace('</body>', script + '</body>'))
    checked = subprocess.run(
        [*flags, '--dump-dom', probe.as_uri()], capture_output=True, text=True, timeout=120, check=False
    )
    title = re.search(r'<title>(images \d+ broken \d+)</title>', checked.stdout)
    expected = len(re.findall(r'<img ', built_report.read_text()))
    assert title is not None and title.group(1) == f'images {expected} broken 0', checked.stdout[:300]
    probe.unlink()
    shot = tmp_path / 'report.png'
    subprocess.run(
        [*flags, f'--screenshot={shot}', '--window-size=1200,7000', page], capture_output=True, timeout=120, check=False
    )
    assert shot.stat().st_size > 20000
    if os.environ.get('NMCML_REPORT_SCREENSHOT'):  # to look at it: NMCML_REPORT_SCREENSHOT=/tmp/report.png pytest ...
        shutil.copy(shot, os.environ['NMCML_REPORT_SCREENSHOT'])

"""Export of a campaign: the AiiDA archive imports into a fresh profile with the same nodes and hashes, and the FAIR
bundle's files are what its metadata says they are."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import subprocess
import sys

BIN = pathlib.Path(sys.executable).parent
PROBE = """
import json, sys
from aiida import load_profile, orm
load_profile('fresh')
groups = {}
for (group,) in orm.QueryBuilder().append(orm.Group, filters={'label': {'like': 'report-test%'}}).all():
    groups[group.label] = sorted(n.uuid for n in group.nodes)
models = {}
for (node,) in orm.QueryBuilder().append(orm.Data, filters={'node_type': {'like': 'data.nmcml.model.%'}}).all():
    node.verify()  # the file in the imported repository still has the recorded sha256
    models[node.uuid] = node.sha256
print(json.dumps({'groups': groups, 'models': models}))
"""


def sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_archive_round_trips_and_bundle_hashes_match(report_campaign, tmp_path):
    from aiida import orm

    from aiida_nmcml.report import export_campaign

    _, label, parts = report_campaign
    bundle = export_campaign(label, tmp_path / 'bundle').parent
    meta = json.loads((bundle / 'metadata.json').read_text())
    for name, info in meta['files'].items():
        assert sha256(bundle / name) == info['sha256'], name
    sums = dict(line.split('  ')[::-1] for line in (bundle / 'SHA256SUMS').read_text().splitlines())
    assert sums['dataset.extxyz'] == parts['dataset'].sha256 == meta['dataset']['sha256']
    assert meta['dataset']['labelled'] == parts['dataset'].num_labelled
    models = {m.uuid: m.sha256 for m in parts['models']}
    assert {row['uuid']: row['sha256'] for row in meta['models']} == models
    for row in meta['models']:
        assert sha256(bundle / row['file']) == row['sha256']
    assert meta['license'] == 'CC-BY-4.0' and 'dft_settings' in meta and meta['counts']['dft_calls'] == 4
    assert 'campaign.aiida' in (bundle / 'README.md').read_text()

    # a fresh profile in its own AIIDA_PATH (switching profiles in-process would close the session's storage)
    env = {**os.environ, 'AIIDA_PATH': str(tmp_path / 'aiida')}

    def run(*args):
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    run(str(BIN / 'verdi'), 'presto', '-p', 'fresh', '--non-interactive')
    run(str(BIN / 'verdi'), '-p', 'fresh', 'archive', 'import', str(bundle / 'campaign.aiida'))
    imported = json.loads(run(sys.executable, '-c', PROBE).strip().splitlines()[-1])
    source = {}
    for (group,) in orm.QueryBuilder().append(orm.Group, filters={'label': {'like': f'{label}%'}}).all():
        source[group.label] = sorted(n.uuid for n in group.nodes)
    assert imported['groups'] == source
    for uuid, digest in models.items():
        assert imported['models'][uuid] == digest

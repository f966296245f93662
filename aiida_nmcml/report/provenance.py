"""Provenance summary: what the campaign cost and consists of, and with which software it ran."""

from __future__ import annotations

import collections
from importlib import metadata

from aiida import orm

from ..data.model import MaceModel
from ..data.trainingset import TrainingSet
from .collect import DFT_CALCJOBS, Campaign

PACKAGES = (
    'aiida-nmcml',
    'aiida-core',
    'aiida-quantumespresso',
    'aiida-vasp',
    'mace-torch',
    'torch',
    'e3nn',
    'ase',
    'numpy',
    'matplotlib',
    'chgnet',
)


def installed_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def recorded_versions(campaign: Campaign) -> dict[str, list[str]]:
    """Versions the processes recorded when they ran (aiida-core, plugin; QE's from pw.x's own output)."""
    found: dict[str, set] = collections.defaultdict(set)
    for process in campaign.processes:
        version = process.base.attributes.get('version', None) or {}
        if version.get('core'):
            found['aiida-core'].add(version['core'])
        if version.get('plugin'):
            plugin = (process.process_type or '').split(':')[-1].split('.')[0] or 'plugin'
            found[f'plugin ({plugin})'].add(str(version['plugin']))
        if process.process_type in DFT_CALCJOBS and 'output_parameters' in process.outputs:
            code_version = process.outputs.output_parameters.get('creator_version', None)
            if code_version:
                found['Quantum ESPRESSO (pw.x)'].add(str(code_version))
    return {key: sorted(values) for key, values in found.items()}


def summary(campaign: Campaign) -> dict:
    """Counts a reader checks first: DFT calls (finished / failed), trainings, models, MD runs, nodes."""
    dft = campaign.dft_calculations()
    data = campaign.data_nodes()
    models = [n for n in data if isinstance(n, MaceModel)]
    sets = [n for n in data if isinstance(n, TrainingSet)]
    by_type = collections.Counter(p.process_label or p.process_type or type(p).__name__ for p in campaign.processes)
    largest = max(sets, key=lambda s: s.num_labelled, default=None)
    return {
        'dft_calls': len(dft),
        'dft_finished_ok': sum(1 for p in dft if p.is_finished_ok),
        'dft_failed': sum(1 for p in dft if p.is_finished and not p.is_finished_ok),
        'dft_by_code': dict(collections.Counter(DFT_CALCJOBS[p.process_type] for p in dft)),
        'trainings': len(campaign.of('train')),
        'models': len(models),
        'model_hashes': sorted({m.sha256 for m in models}),
        'training_sets': len(sets),
        'largest_training_set': None if largest is None else {'pk': largest.pk, 'labelled': largest.num_labelled},
        'md_runs': len(campaign.of('md')),
        'processes': len(campaign.processes),
        'data_nodes': len(data),
        'nodes': len(campaign.processes) + len(data),
        'processes_by_type': dict(sorted(by_type.items())),
        'failed_processes': sum(1 for p in campaign.processes if p.is_finished and not p.is_finished_ok),
        'groups': {g.label: g.count() for g in campaign.groups},
    }


def target_description(campaign: Campaign) -> str:
    target = campaign.target
    if isinstance(target, orm.Group):
        return f'group {target.label} (pk {target.pk}, uuid {target.uuid})'
    state = target.process_state.value if target.process_state else 'unknown'
    status = f', exit status {target.exit_status}' if target.exit_status is not None else ''
    return f'{target.process_label}<{target.pk}> (uuid {target.uuid}), state {state}{status}'

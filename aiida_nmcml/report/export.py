"""Export a campaign: an AiiDA archive of its groups and a FAIR bundle laid out as a Materials Cloud Archive record.

The folder written by :func:`export_campaign`::

    campaign.aiida        AiiDA archive of the campaign's groups and their provenance (``verdi archive import``)
    dataset.extxyz        the final labelled dataset, byte-identical to the TrainingSet node (REF_* keys, per-frame
                          DFT settings and source uuid in the comment lines)
    models/<key>.model    the final committee, hash-checked on the way out
    metadata.json         title, description, licence, creators, keywords (to complete before upload), DFT settings,
                          software versions, counts, every file with its sha256, the uuids that identify the nodes
    README.md             what each file is and how to use it
    SHA256SUMS            ``sha256sum -c SHA256SUMS`` checks the bundle

Why both: the archive replays the provenance in AiiDA; the plain files serve a reader who never installs AiiDA.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import pathlib

from aiida import orm

from ..data.model import MaceModel
from ..data.trainingset import TrainingSet
from . import provenance
from .collect import Campaign, collect

ARCHIVE = 'campaign.aiida'
DATASET = 'dataset.extxyz'
LICENCE = 'CC-BY-4.0'


def sha256_path(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for block in iter(lambda: handle.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def final_models(campaign: Campaign) -> dict[str, MaceModel]:
    """The committee the campaign ended with: its ``committee`` outputs, else the last fine-tuning's ``models``, else
    the models in ``<campaign>/committee`` (or any group), newest last."""
    target = campaign.target
    if isinstance(target, orm.ProcessNode):
        outputs = campaign.outs(target)
        committee = {k.split('__', 1)[1]: n for k, n in outputs.items() if k.startswith('committee__')}
        if committee:
            return committee
    for process in reversed(campaign.of('finetune')):
        models = {k.split('__', 1)[1]: n for k, n in campaign.outs(process).items() if k.startswith('models__')}
        if models:
            return models
    grouped = [g for g in campaign.groups if g.label.endswith('/committee')] or campaign.groups
    models = sorted(
        {n.pk: n for g in grouped for n in g.nodes if isinstance(n, MaceModel)}.values(), key=lambda n: n.ctime
    )
    return {f'model_{i}': node for i, node in enumerate(models)}


def final_dataset(campaign: Campaign) -> TrainingSet | None:
    """The campaign's ``training_set`` output, else its largest labelled TrainingSet (the last AL merge)."""
    target = campaign.target
    if isinstance(target, orm.ProcessNode) and isinstance(campaign.outs(target).get('training_set'), TrainingSet):
        return campaign.outs(target)['training_set']
    sets = [n for n in campaign.data_nodes() if isinstance(n, TrainingSet) and n.num_labelled]
    return max(sets, key=lambda s: (s.num_labelled, s.ctime), default=None)


def export_campaign(node_or_group, folder, *, licence: str = LICENCE, overwrite: bool = False) -> pathlib.Path:
    """Write the archive and the FAIR bundle of a campaign into ``folder``; return the path of ``metadata.json``."""
    from aiida.tools.archive import create_archive

    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    campaign = collect(node_or_group)
    archive = folder / ARCHIVE
    if archive.exists():
        if not overwrite:
            raise FileExistsError(f'{archive} exists: pass overwrite=True (CLI: --force) to replace it')
        archive.unlink()
    entities = list(campaign.groups)
    if isinstance(campaign.target, orm.ProcessNode):
        entities.append(campaign.target)
    from aiida.tools.archive.exceptions import ExportValidationError

    try:
        create_archive(entities, filename=archive)
    except ExportValidationError as exc:  # e.g. a process still running: AiiDA exports only sealed processes
        archive.unlink(missing_ok=True)
        raise ValueError(f'cannot archive {campaign.title}: {exc} Export once the campaign has finished.') from exc

    files = {ARCHIVE: archive}
    dataset = final_dataset(campaign)
    if dataset is not None:
        dataset.write_extxyz(folder / DATASET)
        files[DATASET] = folder / DATASET
    models_dir = folder / 'models'
    models_dir.mkdir(exist_ok=True)
    models = final_models(campaign)
    model_rows = []
    for key, model in models.items():
        path = model.copy_to(models_dir / f'{key}.model')  # refuses bytes that differ from the recorded sha256
        files[f'models/{key}.model'] = path
        model_rows.append(
            {
                'key': key,
                'file': f'models/{key}.model',
                'sha256': model.sha256,
                'uuid': model.uuid,
                'elements': model.elements,
                'r_max': model.r_max,
                'dtype': model.dtype,
                'source': model.source,
            }
        )

    counts = provenance.summary(campaign)
    metadata = {
        'title': f'NMC811 machine-learning potential and Li diffusion: campaign {campaign.title}',
        'description': (
            'A MACE committee fine-tuned on DFT+U labels of Li_x NMC811 (LiNi0.8Mn0.1Co0.1O2), the dataset it was '
            'trained on, and the AiiDA provenance of every step (labelling, fine-tuning, search, active learning, '
            'diffusion, barriers), produced by aiida-nmcml.'
        ),
        'license': licence,
        'creators': [],  # to complete before upload: [{'givennames', 'familyname', 'affiliations'}]
        'keywords': ['NMC811', 'MACE', 'machine-learning potential', 'Li diffusion', 'DFT+U', 'AiiDA'],
        'references': [
            {
                'type': 'Preprint',
                'comment': 'workflow followed',
                'citation': 'He, van de Wetering, Nolsen, Artrith, arXiv:2605.19747 (2026)',
            },
        ],
        'created': datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds'),
        'campaign': provenance.target_description(campaign),
        'groups': [g.label for g in campaign.groups],
        'dft_settings': dataset.dft_settings if dataset is not None else None,
        'dataset': None
        if dataset is None
        else {
            'file': DATASET,
            'uuid': dataset.uuid,
            'sha256': dataset.sha256,
            'frames': dataset.num_frames,
            'labelled': dataset.num_labelled,
            'elements': dataset.elements,
            'compositions': dataset.counts_by_composition(),
            'keys': {
                'energy': 'REF_energy (eV)',
                'forces': 'REF_forces (eV/Å)',
                'stress': 'REF_stress (eV/Å^3, Voigt)',
            },
        },
        'models': model_rows,
        'counts': {k: v for k, v in counts.items() if k not in ('model_hashes',)},
        'software': {'installed': provenance.installed_versions(), 'recorded': provenance.recorded_versions(campaign)},
        'files': {name: {'sha256': sha256_path(path), 'size': path.stat().st_size} for name, path in files.items()},
    }
    (folder / 'README.md').write_text(readme(metadata), encoding='utf-8')
    (folder / 'metadata.json').write_text(json.dumps(metadata, indent=2, sort_keys=True, default=str), encoding='utf-8')
    sums = [(name, sha256_path(folder / name)) for name in (*files, 'README.md', 'metadata.json')]
    (folder / 'SHA256SUMS').write_text(''.join(f'{digest}  {name}\n' for name, digest in sums), encoding='utf-8')
    return folder / 'metadata.json'


def readme(metadata: dict) -> str:
    lines = [
        f'# {metadata["title"]}',
        '',
        metadata['description'],
        '',
        f'Licence: {metadata["license"]}. Source: {metadata["campaign"]}.',
        '',
        '## Files',
        '',
        f'- `{ARCHIVE}`: AiiDA archive of the groups {", ".join(metadata["groups"]) or "(none)"} with their full '
        'provenance. Import with `verdi archive import campaign.aiida` (aiida-core '
        f'{metadata["software"]["installed"].get("aiida-core", "2.x")} or newer).',
    ]
    if metadata['dataset']:
        d = metadata['dataset']
        lines.append(
            f'- `{DATASET}`: {d["labelled"]} labelled of {d["frames"]} frames (extended XYZ; energies `REF_energy` in '
            'eV, forces `REF_forces` in eV/Å, stress `REF_stress` in eV/Å^3); `ase.io.read(path, ":")` reads it.'
        )
    for model in metadata['models']:
        lines.append(
            f'- `{model["file"]}`: MACE model, sha256 `{model["sha256"]}` (a Python pickle: check the hash '
            'before loading it with `torch.load`).'
        )
    lines += [
        '- `metadata.json`: DFT settings, software versions, counts, every file with its sha256.',
        '- `SHA256SUMS`: `sha256sum -c SHA256SUMS` checks every file.',
        '',
        '## DFT settings',
        '',
        '```json',
        json.dumps(metadata['dft_settings'], indent=2, sort_keys=True),
        '```',
        '',
    ]
    return '\n'.join(lines)

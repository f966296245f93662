"""TrainingSet: storage round trip, immutability by design, deterministic splits, refusal of mixed settings."""

import json

import numpy as np
import pytest

from aiida_nmcml.data.trainingset import MixedSettingsError, TrainingSet, TrainingSetHashMismatch, merge_trainingsets


def _with_settings(frames, **settings):
    out = []
    for atoms in frames:
        atoms = atoms.copy()
        atoms.info.update(settings)
        out.append(atoms)
    return out


QE = {
    'engine': 'qe',
    'functional': 'PBEsol',
    'hubbard_u': json.dumps({'Ni': 6.2}),
    'ecutwfc': 30.0,
    'kpoints_distance': 0.5,
}


def test_round_trip_keeps_labels(toy_frames):
    node = TrainingSet.from_frames(toy_frames).store()
    frames = node.get_frames()
    assert node.num_frames == len(toy_frames) == len(frames)
    for original, loaded in zip(toy_frames, frames):
        assert loaded.info['REF_energy'] == pytest.approx(original.info['REF_energy'])
        np.testing.assert_allclose(loaded.arrays['REF_forces'], original.arrays['REF_forces'], atol=1e-6)
        np.testing.assert_allclose(loaded.get_cell(), original.get_cell(), atol=1e-6)
    assert set(node.elements) <= {'Li', 'Ni', 'Mn', 'Co', 'O'}
    assert sum(node.counts_by_composition().values()) == node.num_frames


def test_split_is_deterministic_and_complete(toy_frames):
    node = TrainingSet.from_frames(toy_frames)
    first = node.split((0.8, 0.1, 0.1), seed=3)
    again = node.split((0.8, 0.1, 0.1), seed=3)
    other = node.split((0.8, 0.1, 0.1), seed=4)
    energies = {k: [a.info['REF_energy'] for a in v.get_frames()] for k, v in first.items()}
    assert energies == {k: [a.info['REF_energy'] for a in v.get_frames()] for k, v in again.items()}
    assert energies != {k: [a.info['REF_energy'] for a in v.get_frames()] for k, v in other.items()}
    assert sum(len(v) for v in energies.values()) == len(toy_frames)
    assert all(len(v) >= 1 for v in energies.values())
    with pytest.raises(ValueError, match='sum to 1'):
        node.split((0.5, 0.1, 0.1))


def test_mixed_settings_refused(toy_frames):
    qe = _with_settings(toy_frames[:3], **QE)
    other = _with_settings(toy_frames[3:6], **{**QE, 'ecutwfc': 45.0})
    node = TrainingSet.from_frames(qe)
    assert node.dft_settings['engine'] == 'qe'
    with pytest.raises(MixedSettingsError, match='ecutwfc'):
        node.append(other)
    # key order inside the Hubbard JSON is not a different setting (two keys: the order differs in the strings)
    two = TrainingSet.from_frames(_with_settings(toy_frames[:3], **{**QE, 'hubbard_u': '{"Ni": 6.2, "Co": 3.32}'}))
    reordered = _with_settings(toy_frames[6:8], **{**QE, 'hubbard_u': '{"Co": 3.32, "Ni": 6.2}'})
    assert two.append(reordered).num_frames == 5
    with pytest.raises(MixedSettingsError, match='hubbard_u'):  # a different U is
        two.append(_with_settings(toy_frames[6:8], **{**QE, 'hubbard_u': '{"Co": 3.32, "Ni": 6.0}'}))


def test_unlabelled_frames_are_accepted_and_nan_refused(toy_frames):
    bare = [a.copy() for a in toy_frames[:2]]
    for atoms in bare:
        atoms.info.pop('REF_energy')
    node = TrainingSet.from_frames(bare)
    assert node.num_labelled == 0 and node.num_frames == 2
    broken = toy_frames[0].copy()
    broken.arrays['REF_forces'][0, 0] = np.nan
    with pytest.raises(ValueError, match='non-finite REF_forces'):
        TrainingSet.from_frames([broken])


def test_filter_append_and_merge_provenance(toy_frames, tmp_path):
    node = TrainingSet.from_frames(toy_frames).store()
    small = node.filter(lambda a: len(a) <= 4)
    assert 0 < small.num_frames < node.num_frames
    assert all(len(a) <= 4 for a in small.get_frames())
    merged = merge_trainingsets(a=small.store(), b=node)
    assert merged.num_frames == small.num_frames + node.num_frames
    inputs = {link.node.uuid for link in merged.creator.base.links.get_incoming().all()}
    assert {small.uuid, node.uuid} <= inputs
    node.write_extxyz(tmp_path / 'out.xyz')
    assert (tmp_path / 'out.xyz').read_bytes() == node.get_content(mode='rb')


@pytest.mark.parametrize(
    ('key', 'value'),
    [
        ('smearing', 'gaussian:0.01'),
        ('ecutrho', 480.0),
        ('pseudos', json.dumps({'Ni': 'ffff', 'O': 'eeee'})),
        ('hubbard_projector', 'ortho-atomic'),
    ],
)
def test_labels_differing_in_what_changes_the_pes_are_refused(toy_frames, key, value):
    """Pseudopotentials, density cutoff, smearing and U projectors each change the potential-energy surface."""
    full = {
        **QE,
        'ecutrho': 240.0,
        'pseudos': json.dumps({'Ni': 'aaaa', 'O': 'bbbb'}),
        'smearing': 'cold:0.01',
        'hubbard_projector': 'atomic',
    }
    node = TrainingSet.from_frames(_with_settings(toy_frames[:2], **full))
    with pytest.raises(MixedSettingsError, match=key):
        node.append(_with_settings(toy_frames[2:4], **{**full, key: value}))


def test_round_trip_keeps_sublattice_and_initial_moments():
    """MD candidates carry the sublattice labels and initial moments to labelling: the set must not drop them."""
    from aiida_nmcml.structures import build_nmc

    atoms = build_nmc(8, x_li=0.5, seed=0, composition={'Ni': 1.0})
    zeros = atoms.copy()
    zeros.set_initial_magnetic_moments(np.zeros(len(zeros)))  # an MD frame whose moments were zeroed
    frames = TrainingSet.from_frames([atoms, zeros]).store().get_frames()
    for original, loaded in zip((atoms, zeros), frames, strict=True):
        assert list(loaded.arrays['sublattice']) == list(original.arrays['sublattice'])
        np.testing.assert_allclose(loaded.get_initial_magnetic_moments(), original.get_initial_magnetic_moments())
    assert frames[0].get_initial_magnetic_moments().max() > 0


def test_content_is_checked_against_its_sha256_on_read(toy_frames, tmp_path):
    """A file whose bytes differ from the recorded sha256 is refused on read (as for models), not parsed."""
    import io

    node = TrainingSet.from_frames(toy_frames[:2])
    assert len(node.get_frames()) == 2
    content = node.get_content(mode='rb')
    node.base.repository.put_object_from_filelike(io.BytesIO(content.replace(b'Li', b'Na', 1)), node.filename)
    with pytest.raises(TrainingSetHashMismatch, match='sha256'):
        node.get_frames()
    with pytest.raises(TrainingSetHashMismatch):
        node.write_extxyz(tmp_path / 'out.xyz')

"""MaceModel: hash + metadata on creation, deduplication, refusal of tampered bytes, offline foundation names."""

from __future__ import annotations

import pytest

from aiida_nmcml.data.model import (
    FoundationModelUnavailable,
    MaceModel,
    ModelHashMismatch,
    resolve_foundation_model,
    sha256_file,
)


def test_from_file_records_hash_and_metadata(tiny_foundation_model):
    node = MaceModel.from_file(tiny_foundation_model)
    assert node.sha256 == sha256_file(tiny_foundation_model)
    assert set(node.elements) == {'Li', 'Ni', 'Mn', 'Co', 'O'}
    assert node.r_max == pytest.approx(4.0)
    assert node.dtype == 'float64'
    assert node.heads == ['Default']
    assert node.architecture['class'] == 'ScaleShiftMACE'
    assert node.source == 'file'
    assert node.missing_elements(['Li', 'Fe']) == ['Fe']


def test_get_or_create_deduplicates_by_hash(tiny_foundation_model, tmp_path):
    first = MaceModel.get_or_create(tiny_foundation_model)
    copy = tmp_path / 'renamed.model'
    copy.write_bytes(tiny_foundation_model.read_bytes())
    assert MaceModel.get_or_create(copy).pk == first.pk
    assert resolve_foundation_model(str(copy)).pk == first.pk


def test_copy_to_checks_hash(tiny_foundation_model, tmp_path):
    node = MaceModel.get_or_create(tiny_foundation_model)
    target = node.copy_to(tmp_path)
    assert sha256_file(target) == node.sha256
    node.verify()
    model = node.load_model()
    assert int(model.atomic_numbers.numel()) == 5


def test_calculator_evaluates_a_checked_copy(tiny_foundation_model):
    """``MaceModel.calculator``: a MACECalculator over a hash-checked copy; selection's descriptors use the same."""
    from aiida_nmcml.analysis.selection import mace_frame_descriptors
    from aiida_nmcml.structures import layered_parent

    node = MaceModel.get_or_create(tiny_foundation_model)
    atoms = layered_parent(primitive=False)
    with node.calculator() as calc:
        atoms.calc = calc
        assert abs(atoms.get_potential_energy()) > 0
    descriptors = mace_frame_descriptors(tiny_foundation_model, [atoms])
    assert descriptors.shape[0] == 1 and descriptors.shape[1] > 0


def test_hash_mismatch_is_refused(tiny_foundation_model, tmp_path):
    """A node whose bytes differ from its recorded hash is neither stored nor loaded nor copied."""
    node = MaceModel.from_file(tiny_foundation_model)
    node.base.attributes.set('sha256', '0' * 64)
    with pytest.raises(ModelHashMismatch):
        node.copy_to(tmp_path / 'x.model')
    assert not (tmp_path / 'x.model').exists()
    with pytest.raises(ModelHashMismatch):
        node.load_model()
    with pytest.raises(Exception, match='sha256'):
        node.store()


def test_not_a_model_is_refused(tmp_path):
    junk = tmp_path / 'junk.model'
    junk.write_bytes(b'not a pickle')
    with pytest.raises(ValueError, match='not a MACE model'):
        MaceModel.from_file(junk)


def test_compiled_model_is_refused_with_a_clear_error(tmp_path):
    """A TorchScript archive (mace's *_compiled.model) is refused before torch loads it (it used to raise a bare
    NotImplementedError from deep inside torch.load). A scripted module stands in: same archive format."""
    import torch

    from aiida_nmcml.data.model import CompiledModelError, MaceModel, is_torchscript

    path = tmp_path / 'member_compiled.model'
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    assert is_torchscript(path.read_bytes())
    with pytest.raises(CompiledModelError, match=r'compiled \(TorchScript\) MACE model.*`model` output'):
        MaceModel.from_file(path)


def test_named_model_offline_gives_clear_error(tmp_path, monkeypatch):
    """A name with nothing cached, offline: the error says which file to copy where (no silent fallback).

    The download is made to fail like a DNS error so the test means the same on a machine with internet.
    """
    import urllib.error

    from mace.calculators import foundations_models

    def offline(*args, **kwargs):
        raise urllib.error.URLError('[Errno -3] Temporary failure in name resolution')

    monkeypatch.setattr(foundations_models, '_urlretrieve_with_timeout', offline)
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'cache'))
    with pytest.raises(FoundationModelUnavailable) as info:
        resolve_foundation_model('mace-mp-0-small')
    message = str(info.value)
    assert '2023-12-10-mace-128-L0_energy_epoch-249' in message
    assert str(tmp_path / 'cache' / 'mace') in message
    assert 'name resolution' in message
    assert not list((tmp_path / 'cache').rglob('*.model'))  # no partial file left to be mistaken for the model


def test_named_model_from_cache(tiny_foundation_model, tmp_path, monkeypatch):
    """A cached file under the name mace-torch uses is picked up offline; new bytes are tagged with the foundation name,
    known bytes reuse their node (deduplication by hash)."""
    from aiida_nmcml.data.model import foundation_model_cache_path

    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'cache'))
    cached = foundation_model_cache_path('mace-omat-0-medium')
    cached.parent.mkdir(parents=True)
    cached.write_bytes(tiny_foundation_model.read_bytes())
    node = resolve_foundation_model('mace-omat-0-medium', store=False)
    assert node.sha256 == sha256_file(cached)
    if node.is_stored:  # these bytes were stored before in this profile: deduplicated, the first node is reused
        assert node.pk == MaceModel.find_by_hash(node.sha256).pk
    else:  # first time: tagged with the foundation name
        assert node.source == 'foundation:mace-omat-0-medium'


def test_unknown_name(tmp_path):
    with pytest.raises(FoundationModelUnavailable, match='neither a known foundation model'):
        resolve_foundation_model(str(tmp_path / 'nope.model'))


def test_truncated_cached_file_names_the_file_to_delete(tiny_foundation_model, tmp_path, monkeypatch):
    from aiida_nmcml.data.model import foundation_model_cache_path

    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'cache'))
    cached = foundation_model_cache_path('mace-mp-0-small')
    cached.parent.mkdir(parents=True)
    cached.write_bytes(tiny_foundation_model.read_bytes()[:1000])
    with pytest.raises(FoundationModelUnavailable, match='partial download: delete it'):
        resolve_foundation_model('mace-mp-0-small')

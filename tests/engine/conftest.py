"""Engine fixtures: a committee of two genuinely different tiny MACE models (seeds 1 and 2)."""

from __future__ import annotations

import pathlib
import shutil

import pytest


@pytest.fixture(scope='session')
def second_tiny_model(tmp_path_factory) -> pathlib.Path:
    """Same architecture and data as the foundation stand-in, other seed: a committee member that really differs."""
    from aiida_nmcml.testing import toymodel

    target = tmp_path_factory.mktemp('seed2') / 'tiny2.model'
    shutil.copy(toymodel.cached_tiny_mace(seed=2), target)
    return target


@pytest.fixture(scope='session')
def committee_models(tiny_foundation_model, second_tiny_model) -> list[pathlib.Path]:
    return [tiny_foundation_model, second_tiny_model]


@pytest.fixture
def small_cell():
    """A 32-atom LiNiO2-type cell (2x2x2 rhombohedral) with a little Mn and Co: the size the tests run MD on."""
    from aiida_nmcml.testing.cells import small_cell as build

    return build()


@pytest.fixture
def workdir(tmp_path, monkeypatch, small_cell, committee_models):
    """A job directory like the CalcJob's: structure file and model files, cwd set to it."""
    from ase.io import write

    write(tmp_path / 'structure.extxyz', small_cell)
    for i, model in enumerate(committee_models):
        shutil.copy(model, tmp_path / f'model_{i}.model')
    monkeypatch.chdir(tmp_path)
    return tmp_path

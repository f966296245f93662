"""Shared-descriptor committee monitor (``uncertainty.evaluation: shared_descriptor``) against the member-by-member one.

Members made from one model by re-drawing their readouts (``committee_init.initialise_readout``) share the descriptor
exactly, so the shared-descriptor evaluation (member 0's forward pass, every member's readouts, backward passes of the
energy differences) must reproduce the sequential evaluation (every member a full model call) to round-off:
tolerance 1e-9 eV/Å on forces and 1e-8 eV on energies in float64 (measured ~2e-15 and ~6e-14).
"""

from __future__ import annotations

import numpy as np
import pytest

from aiida_nmcml.engine.md_committee import Committee


@pytest.fixture(scope='module')
def readout_members(tiny_foundation_model, tmp_path_factory):
    """Three members: the tiny foundation and two copies with perturbed readouts (one descriptor, three readouts)."""
    import torch

    from aiida_nmcml.engine.committee_init import initialise_readout

    folder = tmp_path_factory.mktemp('readout_members')
    paths = [str(tiny_foundation_model)]
    for seed in (1, 2):  # two perturbed copies: three members
        model = torch.load(tiny_foundation_model, map_location='cpu', weights_only=False)
        initialise_readout(model, seed, mode='perturb', scale=0.5, which='all')
        path = folder / f'member{seed}.model'
        torch.save(model, path)
        paths.append(str(path))
    return paths


@pytest.fixture
def rattled(small_cell):
    atoms = small_cell.copy()
    atoms.rattle(0.08, seed=11)
    return atoms


def evaluate(members, atoms, committee_dtype, evaluation):
    committee = Committee(
        members, device='cpu', dtype='float64', committee_dtype=committee_dtype, evaluation=evaluation
    )
    atoms.calc = committee.driver
    return committee.member_forces(atoms), committee.deviation(atoms)


def test_shared_descriptor_equals_member_by_member(readout_members, rattled):
    (e_seq, f_seq), d_seq = evaluate(readout_members, rattled, 'float64', 'members')
    (e_sh, f_sh), d_sh = evaluate(readout_members, rattled, 'float64', 'shared_descriptor')
    assert f_seq.shape == f_sh.shape == (3, len(rattled), 3)
    assert np.abs(f_seq - f_seq.mean(axis=0)).max() > 1e-3  # the readouts really differ: not 0 == 0 below
    np.testing.assert_allclose(f_sh, f_seq, rtol=0, atol=1e-9)
    np.testing.assert_allclose(e_sh, e_seq, rtol=0, atol=1e-8)
    assert d_sh.max_force_dev == pytest.approx(d_seq.max_force_dev, abs=1e-9)
    assert d_sh.energy_std_per_atom == pytest.approx(d_seq.energy_std_per_atom, abs=1e-10)
    # float32 monitor with the float64 driver: the spread comes from float32 differences alone, so it matches the
    # float64 spread to float32 round-off (forces of a few eV/Å: ~1e-5 eV/Å), with no float32/float64 floor
    _, d32_sh = evaluate(readout_members, rattled, 'float32', 'shared_descriptor')
    assert d32_sh.max_force_dev == pytest.approx(d_seq.max_force_dev, rel=1e-3, abs=1e-4)


def test_md_runs_with_shared_descriptor_monitor(workdir, readout_members):
    """The option reaches the engine through input.json and fills the uncertainty series."""
    import shutil

    from aiida_nmcml.engine import md, md_io

    for i, path in enumerate(readout_members[:2]):
        shutil.copy(path, f'model_{i}.model')
    summary = md.run(
        {
            'models': ['model_0.model', 'model_1.model'],
            'device': 'cpu',
            'steps': 10,
            'uncertainty': {'stride': 5, 'evaluation': 'shared_descriptor'},
        }
    )
    table = md_io.read_table(md_io.UNCERTAINTY)
    assert list(table['step']) == [0, 5, 10]
    assert np.all(table['max_force_dev'] > 0)
    assert summary['committee_size'] == 2


def test_schema_refuses_unknown_evaluation():
    from aiida_nmcml.engine.md_config import SCHEMA

    errors = SCHEMA.errors({'uncertainty': {'evaluation': 'vmap'}}, 'input')
    assert errors and 'evaluation' in errors[0]

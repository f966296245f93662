"""The NEB engine: an analytic potential with a known saddle, then the CLI with the tiny MACE committee on a Li hop.

The tiny MACE is trained on toy frames, so its barrier means nothing physically; those tests check the plumbing
(relaxed end points, images ordered, climbing image at the maximum, committee spread, files, statuses). The barrier
value is checked on the analytic potential, where the exact answer is known.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.io import read, write

from aiida_nmcml.engine import neb
from aiida_nmcml.engine.cli import main as engine_main
from aiida_nmcml.engine.common import EngineError

BARRIER = 0.4  # eV, of the analytic potential
PERIOD = 3.0  # Å between minima


class CosinePotential(Calculator):
    """Atom 0 in E = B/2 (1 - cos(2 pi x / L)) + 1/2 k (y - y0(x))^2 + 1/2 k z^2 with a curved valley
    y0(x) = 0.3 sin(pi x / L): minima at x = 0, L (y = 0), saddle at x = L/2 (y = 0.3) with energy exactly B.
    The valley is curved, so the straight-line path is not the minimum energy path. Other atoms feel nothing."""

    implemented_properties = ('energy', 'forces', 'free_energy')

    def calculate(self, atoms=None, properties=('energy',), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        x, y, z = self.atoms.positions[0]
        k, q = 5.0, 2 * np.pi / PERIOD
        y0 = 0.3 * np.sin(np.pi * x / PERIOD)
        dy0 = 0.3 * np.pi / PERIOD * np.cos(np.pi * x / PERIOD)
        energy = BARRIER / 2 * (1 - np.cos(q * x)) + 0.5 * k * (y - y0) ** 2 + 0.5 * k * z**2
        forces = np.zeros((len(self.atoms), 3))
        forces[0] = [-(BARRIER / 2 * q * np.sin(q * x) - k * (y - y0) * dy0), -k * (y - y0), -k * z]
        self.results = {'energy': energy, 'free_energy': energy, 'forces': forces}


def _ends():
    initial = Atoms('HHe', positions=[[0.0, 0.0, 0.0], [0.0, 5.0, 5.0]], cell=[20, 20, 20], pbc=False)
    final = initial.copy()
    final.positions[0] = [PERIOD, 0.0, 0.0]
    return initial, final


def test_analytic_barrier_and_climbing_image():
    initial, final = _ends()
    # start the end points off their minima: relaxation must bring them back
    initial.positions[0] += [0.1, 0.05, 0.0]
    images, summary = neb.run_neb(initial, final, CosinePotential(), {'n_images': 5, 'fmax': 0.01})
    assert summary['converged']
    assert summary['endpoints']['initial']['converged']
    assert summary['barrier_forward'] == pytest.approx(BARRIER, abs=2e-3)
    assert summary['reaction_energy'] == pytest.approx(0.0, abs=1e-3)
    energies = np.array(summary['energies'])
    assert summary['climbing_image'] == int(np.argmax(energies))
    saddle = images[summary['climbing_image']].positions[0]
    assert saddle[0] == pytest.approx(PERIOD / 2, abs=0.02)
    assert saddle[1] == pytest.approx(0.3, abs=0.02)  # followed the curved valley, not the straight line
    x = [image.positions[0, 0] for image in images]
    assert np.all(np.diff(x) > 0)  # images ordered along the path
    assert np.all(np.diff(summary['reaction_coordinate_A']) > 0)
    # one evaluation per image per step: the per-image calculators do not recompute each other
    assert summary['model_evaluations'] <= (summary['steps'] + 3) * 7


def test_without_climbing_the_barrier_is_underestimated_or_equal():
    """Plain NEB with an even number of images has no image at the saddle: the climbing image is what fixes it."""
    initial, final = _ends()
    _, plain = neb.run_neb(initial, final, CosinePotential(), {'n_images': 4, 'fmax': 0.01, 'climb': False})
    _, climbed = neb.run_neb(initial, final, CosinePotential(), {'n_images': 4, 'fmax': 0.01})
    assert plain['climbing_image'] is None
    assert plain['barrier_forward'] < BARRIER - 0.01
    assert climbed['barrier_forward'] == pytest.approx(BARRIER, abs=2e-3)


def test_path_through_via():
    initial, final = _ends()
    via = initial.copy()
    via.positions[0] = [PERIOD / 2, 1.0, 0.0]
    path = neb.initial_path(initial, final, 5, 'linear', via)
    assert len(path) == 7
    assert np.allclose(path[3].positions[0], [PERIOD / 2, 1.0, 0.0])
    with pytest.raises(EngineError, match='n_images >= 3'):
        neb.initial_path(initial, final, 2, 'linear', via)


def test_end_point_checks():
    initial, final = _ends()
    other = Atoms('HLi', positions=final.positions, cell=final.cell)
    with pytest.raises(EngineError, match='other atoms'):
        neb.check_end_points(initial, other)
    with pytest.raises(EngineError, match='same structure'):
        neb.run_neb(initial, initial.copy(), CosinePotential(), {'n_images': 3})
    with pytest.raises(EngineError, match="did you mean 'n_images'"):
        neb.merged_config({'n_image': 3})
    with pytest.raises(EngineError, match='fmax'):
        neb.merged_config({'fmax': 0.0})


@pytest.mark.parametrize('mode', ['c', 'full'])
def test_cell_relaxation(mode):
    """``relax_cell``: positions and cell relaxed on the model's stress (Lennard-Jones argon here, cheap and with a
    stress); 'c' strains only zz, so the in-plane vectors and the stacking's xy offset stay where they were."""
    from ase.build import bulk
    from ase.calculators.lj import LennardJones

    atoms = bulk('Ar', 'fcc', a=5.26, orthorhombic=True)
    atoms.set_cell(atoms.cell.array @ np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.3, 0.0, 1.05]]), scale_atoms=True)
    calc = LennardJones(sigma=3.4, epsilon=0.0104, rc=8.0, smooth=True)
    start = atoms.copy()
    start.calc = calc
    stress0 = np.abs(start.get_stress() * CELL_MASK[mode]).max()
    relaxed, record = neb.relax_cell(atoms, calc, mode, fmax=0.005, steps=300)
    assert record['converged'], record
    assert record['cellpar_after'][2] != pytest.approx(record['cellpar_before'][2], abs=0.01)
    if mode == 'c':
        np.testing.assert_allclose(relaxed.cell.array[:2], atoms.cell.array[:2], atol=1e-9)
        np.testing.assert_allclose(relaxed.cell.array[2, :2], atoms.cell.array[2, :2], atol=1e-9)
    probe = relaxed.copy()
    probe.calc = calc
    assert np.abs(probe.get_stress() * CELL_MASK[mode]).max() < 0.05 * stress0  # the stress went away


CELL_MASK = {'c': np.array([0, 0, 1, 0, 0, 0]), 'full': np.ones(6)}


def test_end_points_follow_the_relaxed_cell():
    """The final end point (and ``via``) keep the hop's fractional displacement on the relaxed cell and positions."""
    from aiida_nmcml.hops import build_hop

    hop = build_hop('tsh', supercell=16, seed=0)
    relaxed = hop.initial.copy()
    relaxed.set_cell(relaxed.cell.array @ np.diag([1.01, 1.01, 0.95]), scale_atoms=True)
    relaxed.positions += np.random.default_rng(0).normal(0, 0.03, relaxed.positions.shape)
    for other in (hop.final, hop.via):
        moved = neb.follow_cell(hop.initial, relaxed, other)
        np.testing.assert_allclose(moved.cell.array, relaxed.cell.array)
        before = other.get_scaled_positions(wrap=False) - hop.initial.get_scaled_positions(wrap=False)
        after = moved.get_scaled_positions(wrap=False) - relaxed.get_scaled_positions(wrap=False)
        np.testing.assert_allclose(after, before - np.round(before), atol=1e-9)
        assert np.count_nonzero(np.linalg.norm(after, axis=1) > 1e-6) == 1  # only the hopping Li differs
        np.testing.assert_allclose(moved.get_initial_magnetic_moments(), hop.initial.get_initial_magnetic_moments())


@pytest.fixture
def hop_workdir(tmp_path, monkeypatch, committee_models):
    """A 2x2x1 hexagonal LiNiO2 cell (47 atoms) with one Li vacancy: ODH end points, as the CalcJob writes them."""
    from aiida_nmcml.hops import build_hop, hexagonal_supercell

    hop = build_hop('odh', supercell=hexagonal_supercell(2, 2, 1), seed=0)
    write(tmp_path / 'initial.extxyz', hop.initial)
    write(tmp_path / 'final.extxyz', hop.final)
    for i, model in enumerate(committee_models):
        shutil.copy(model, tmp_path / f'model_{i}.model')
    monkeypatch.chdir(tmp_path)
    return tmp_path, hop


def test_cli_neb_with_tiny_mace_committee(hop_workdir):
    """The engine end to end. The toy model's landscape is not LiNiO2's, so the run is cut after a few steps with an
    unreachable fmax: this also checks that a NEB that does not converge keeps its images and says so."""
    tmp_path, hop = hop_workdir
    config = {
        'models': ['model_0.model', 'model_1.model'],
        'device': 'cpu',
        'n_images': 3,
        'fmax': 0.001,
        'max_steps': 12,
        'endpoint_max_steps': 50,
        'relax_cell': 'c',
        'cell_max_steps': 4,
    }
    (tmp_path / 'input.json').write_text(json.dumps(config))
    code = engine_main(['neb', 'input.json'])
    status = json.loads((tmp_path / 'engine_status.json').read_text())
    assert status['status'] == 'neb_not_converged', status
    assert code == 32
    summary = json.loads((tmp_path / neb.SUMMARY_FILENAME).read_text())
    assert not summary['converged'] and summary['steps'] == 12
    images = read(tmp_path / neb.IMAGES_FILENAME, index=':')
    assert len(images) == 5
    energies = [image.info['neb_energy'] for image in images]
    assert energies == pytest.approx(summary['energies'])
    assert summary['climbing_image'] == summary['highest_image'] == int(np.argmax(energies[1:-1])) + 1
    assert images[summary['climbing_image']].info['climbing']
    assert summary['barrier_forward'] == pytest.approx(max(energies) - energies[0])
    # the starting (IDPP) path moves the hopping Li monotonically from its site to the vacancy
    m = hop.moving_index
    path0 = read(tmp_path / neb.INITIAL_PATH_FILENAME, index=':')
    progress = [np.linalg.norm(image.positions[m] - path0[0].positions[m]) for image in path0]
    assert np.all(np.diff(progress) > 0)
    assert progress[-1] == pytest.approx(hop.info['hop_distance_A'], abs=0.3)
    # committee of two different models: a spread along the path, one barrier per member
    committee = summary['committee']
    assert committee['n_members'] == 2 and len(committee['member_barriers']) == 2
    assert committee['barrier_std'] > 0
    assert len(committee['max_force_deviation']) == 5 and min(committee['max_force_deviation']) > 0
    # magnetic moments carried along the path for the DFT single points
    assert np.allclose(images[2].get_initial_magnetic_moments(), hop.initial.get_initial_magnetic_moments())
    # the cell was relaxed first (c only, 4 steps of the toy model) and the whole path lives on it
    cell = summary['cell_relaxation']
    assert cell['mode'] == 'c' and 1 <= cell['steps'] <= 4
    assert images[3].cell.cellpar() == pytest.approx(cell['cellpar_after'], abs=1e-6)
    assert cell['cellpar_after'][:2] == pytest.approx(cell['cellpar_before'][:2], abs=1e-9)
    assert list(images[2].arrays['sublattice']) == list(hop.initial.arrays['sublattice'])  # for DFT moments
    # end points were relaxed (a toy model may need more steps; then it says so)
    for end in ('initial', 'final'):
        info = summary['endpoints'][end]
        assert info['converged'] == (info['fmax'] <= 0.02)


def test_cli_refuses_bad_input(hop_workdir):
    tmp_path, _ = hop_workdir
    (tmp_path / 'input.json').write_text(json.dumps({'models': ['model_0.model'], 'n_images': 0}))
    assert engine_main(['neb', 'input.json']) == 2
    status = json.loads((tmp_path / 'engine_status.json').read_text())
    assert status['status'] == 'invalid_input' and 'n_images' in status['message']


def test_hop_builder_odh_and_tsh_geometry():
    """4x4x1 hexagonal LiNiO2 (Devi et al. setup): ODH Li47Ni48O96, TSH Li46Ni48O96 with a divacancy; the TSH guide
    puts the Li in the O4 tetrahedron that shares faces with its own and both vacant octahedra."""
    from aiida_nmcml.hops import build_hop

    odh = build_hop('odh')
    assert odh.initial.get_chemical_formula() == 'Li47Ni48O96' and odh.via is None
    m = odh.moving_index
    moved = np.linalg.norm(odh.final.positions - odh.initial.positions, axis=1)
    assert np.flatnonzero(moved > 1e-9).tolist() == [m]
    assert moved[m] == pytest.approx(2.87, abs=0.01)
    # the straight path crosses the O-O edge shared by the two octahedra: two O equidistant from the midpoint
    mid = odh.initial.copy()
    mid.positions[m] = (odh.initial.positions[m] + odh.final.positions[m]) / 2
    d = mid.get_distances(m, np.flatnonzero(np.array(mid.get_chemical_symbols()) == 'O'), mic=True)
    assert np.sort(d)[0] == pytest.approx(np.sort(d)[1], abs=1e-6) and np.sort(d)[0] < 1.8

    tsh = build_hop('tsh')
    assert tsh.initial.get_chemical_formula() == 'Li46Ni48O96'
    m = tsh.moving_index
    symbols = np.array(tsh.via.get_chemical_symbols())
    d_o = np.sort(tsh.via.get_distances(m, np.flatnonzero(symbols == 'O'), mic=True))
    assert d_o[3] < 2.1 < d_o[4]  # four O around the tetrahedral site
    li_others = [i for i in np.flatnonzero(symbols == 'Li') if i != m]
    assert tsh.via.get_distances(m, li_others, mic=True).min() > 2.3  # no Li on its other face-sharing sites
    # the final site is one of the two vacancies: no Li there in the initial structure
    target = tsh.final.positions[m]
    probe = tsh.initial.copy()
    probe.positions[m] = target
    assert probe.get_distances(m, li_others, mic=True).min() > 2.5


def test_hop_builder_environment_choice():
    from aiida_nmcml.hops import build_hop

    composition = {'Ni': 0.8, 'Mn': 0.1, 'Co': 0.1}
    for env in ('Mn', 'Co', 'Ni'):
        hop = build_hop('tsh', composition=composition, environment=env, seed=1)
        assert hop.info['nearest_tm_to_transition_point'][0] == env
    with pytest.raises(ValueError, match='unknown hop kind'):
        build_hop('dumbbell')


def test_warning_when_an_image_lies_below_the_end_points():
    """End points that are not minima (here: unrelaxed, on the slopes outside both wells) give a path that dips below
    them; the summary says the barrier is not meaningful instead of reporting it silently."""
    initial, final = _ends()
    initial.positions[0, 0] = -0.6
    final.positions[0, 0] = PERIOD + 0.6
    _, summary = neb.run_neb(
        initial, final, CosinePotential(), {'n_images': 5, 'fmax': 0.05, 'relax_endpoints': False, 'max_steps': 50}
    )
    assert any('below the lower end point' in w for w in summary['warnings'])
    _, relaxed = neb.run_neb(initial, final, CosinePotential(), {'n_images': 5, 'fmax': 0.01, 'max_steps': 50})
    assert relaxed['warnings'] == []

"""The teacher (CHGNet from its wheel), the sampler and ``aiida-nmcml-engine label``: no AiiDA, no network."""

from __future__ import annotations

import collections
import json
import socket
import subprocess
import sys

import numpy as np
import pytest
from ase.io import read, write

from aiida_nmcml.engine import teacher
from aiida_nmcml.engine.common import sha256sum


@pytest.fixture
def no_network(monkeypatch):
    """Every socket connection fails: what an air-gapped compute node does."""

    def refuse(*args, **kwargs):
        raise OSError('network blocked by the test')

    monkeypatch.setattr(socket.socket, 'connect', refuse)
    monkeypatch.setattr(socket, 'create_connection', refuse)
    monkeypatch.setattr(socket, 'getaddrinfo', refuse)


@pytest.fixture(scope='module')
def chgnet():
    return teacher.load_teacher('chgnet', 'cpu')


def test_chgnet_loads_from_its_wheel_offline(no_network):
    with pytest.raises(OSError, match='blocked'):
        socket.create_connection(('pypi.org', 443), timeout=1)
    calc, identity = teacher.load_teacher('chgnet', 'cpu')
    assert identity['name'] == 'chgnet' and identity['package_version'] == '0.4.2'
    assert identity['model_version'] == '0.3.0'
    # the recorded hash is the hash of the file inside the installed wheel
    assert identity['weights_sha256'] == sha256sum(teacher.chgnet_weights_path())
    atoms = teacher.sample_configurations(
        {'x_li': [1.0], 'frames_per_x': 1, 'end_member_frames': 0, 'antisite_frames': 0, 'md_seeds': 0}
    )[0]
    frame = teacher.label_atoms(atoms, calc, identity)
    assert np.all(np.isfinite(frame.arrays['REF_forces'])) and frame.info['REF_stress'].shape == (6,)


def test_unknown_or_missing_teacher():
    with pytest.raises(teacher.EngineError, match='unknown teacher'):
        teacher.load_teacher('mace-mp-0')
    if not teacher.teacher_available('sevennet-0'):
        with pytest.raises(teacher.EngineError) as info:
            teacher.load_teacher('sevennet-0')
        assert info.value.status == 'teacher_unavailable' and 'sevennet' in info.value.message


def test_stress_follows_the_ase_convention(chgnet):
    """REF_stress must be ASE's (1/V dE/dε): check against a finite difference of the teacher's own energy."""
    calc, identity = chgnet
    atoms = teacher._end_members()['LiNiO2']
    frame = teacher.label_atoms(atoms, calc, identity)
    h, energies = 2e-3, []
    for sign in (1, -1):
        strained = atoms.copy()
        strained.set_cell(atoms.cell.array @ np.diag([1 + sign * h, 1, 1]), scale_atoms=True)
        energies.append(teacher.label_atoms(strained, calc, identity).info['REF_energy'])
    finite_difference = (energies[0] - energies[1]) / (2 * h) / atoms.get_volume()
    assert frame.info['REF_stress'][0] == pytest.approx(finite_difference, abs=2e-3)


def test_sampler_covers_the_chemistry_and_is_deterministic():
    parameters = {'x_li': [1.0, 0.5, 0.25], 'frames_per_x': 3, 'antisite_frames': 2, 'end_member_frames': 1}
    frames = teacher.sample_configurations(parameters)
    again = teacher.sample_configurations(parameters)
    assert all(np.allclose(a.positions, b.positions) for a, b in zip(frames, again))
    kinds = collections.Counter(a.info['config_type'] for a in frames)
    assert kinds == {'nmc': 9, 'md_seed': 3, 'antisite': 2, 'end_member': 5}
    members = {a.info['member']: a.get_chemical_formula() for a in frames if a.info['config_type'] == 'end_member'}
    assert set(members) == {'LiNiO2', 'LiCoO2', 'LiMnO2', 'NiO', 'Li2O'}
    # per-element references are not rank-deficient: the composition matrix has full rank 5
    matrix = np.array([[a.get_chemical_symbols().count(s) for s in teacher.ELEMENTS] for a in frames])
    assert np.linalg.matrix_rank(matrix) == 5
    # Li content follows x (Li sites of the NMC cells are emptied as asked)
    nmc = [a for a in frames if a.info['config_type'] == 'nmc']
    for atoms in nmc:
        symbols = atoms.get_chemical_symbols()
        ratio = symbols.count('Li') / sum(symbols.count(m) for m in ('Ni', 'Mn', 'Co'))
        assert ratio == pytest.approx(atoms.info['x_li'], abs=0.2)
    with pytest.raises(ValueError, match="did you mean 'frames_per_x'"):
        teacher.sample_configurations({'frames_per_xx': 3})


def test_label_command_records_the_teacher_on_every_frame(tmp_path):
    """The real subcommand in a subprocess: labels, teacher-MD snapshots, identity file, status file."""
    frames = teacher.sample_configurations(
        {
            'x_li': [1.0],
            'cell_atoms': [8],
            'frames_per_x': 2,
            'antisite_frames': 0,
            'end_member_frames': 1,
            'md_seeds': 1,
            'md_seed_atoms': 8,
        }
    )
    write(tmp_path / 'frames.xyz', frames, format='extxyz')
    md = {'temperatures_K': [600.0], 'steps': 4, 'interval': 2, 'timestep_fs': 1.0, 'friction': 0.02, 'seed': 0}
    (tmp_path / 'input.json').write_text(
        json.dumps({'frames': 'frames.xyz', 'teacher': 'chgnet', 'device': 'cpu', 'md': md})
    )
    proc = subprocess.run(
        [sys.executable, '-m', 'aiida_nmcml.engine.cli', 'label', 'input.json'],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / 'engine_status.json').read_text())['status'] == 'ok'
    identity = json.loads((tmp_path / teacher.IDENTITY_FILENAME).read_text())
    labelled = read(tmp_path / teacher.LABELLED_FILENAME, index=':')
    summary = json.loads((tmp_path / teacher.SUMMARY_FILENAME).read_text())
    assert summary['n_labelled'] == len(frames) and summary['n_md_snapshots'] == 2
    assert len(labelled) == len(frames) + 2
    for atoms in labelled:
        assert atoms.info['teacher'] == 'chgnet'
        assert atoms.info['teacher_weights_sha256'] == identity['weights_sha256']
        assert atoms.info['teacher_version'] == 'chgnet==0.4.2 model 0.3.0'
        assert atoms.info['engine'] == 'teacher'
        assert atoms.arrays['REF_forces'].shape == (len(atoms), 3)
    snapshots = [a for a in labelled if a.info['config_type'] == 'teacher_md']
    assert {a.info['md_temperature_K'] for a in snapshots} == {600.0}
    seed = next(a for a in frames if a.info.get('md_seed'))
    assert not np.allclose(snapshots[0].positions, seed.positions)  # the teacher really moved the atoms


def test_label_command_refuses_bad_input(tmp_path):
    write(tmp_path / 'frames.xyz', teacher._end_members()['NiO'])
    (tmp_path / 'input.json').write_text(json.dumps({'frames': 'frames.xyz', 'md': {'temprature_K': [1]}}))
    proc = subprocess.run(
        [sys.executable, '-m', 'aiida_nmcml.engine.cli', 'label', 'input.json'],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    status = json.loads((tmp_path / 'engine_status.json').read_text())
    assert proc.returncode == 2 and status['status'] == 'invalid_input'
    assert 'temprature_K' in status['message'] and 'temperatures_K' in status['message']


def test_engine_does_not_import_aiida():
    code = (
        'import sys, aiida_nmcml.engine.teacher as t; t.sample_configurations({"frames_per_x": 1}); '
        'print("aiida" in sys.modules)'
    )
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == 'False'


class _PressureCalculator:
    """A stand-in student: no forces, a uniform stress (negative: the cell wants to expand) plus, with ``bulk``, a
    harmonic restoring stress ``bulk * (V/V0 - 1)`` about the first volume it sees; a fixed energy."""

    def __init__(self, stress_ev_a3: float, bulk: float = 0.0):
        volumes = []
        from ase.calculators.calculator import Calculator

        class Fake(Calculator):
            implemented_properties = ('energy', 'forces', 'stress')

            def calculate(self, atoms=None, properties=('energy',), system_changes=()):
                super().calculate(atoms, properties, system_changes)
                volumes.append(volumes[0] if volumes else self.atoms.get_volume())
                stress = stress_ev_a3 + bulk * (self.atoms.get_volume() / volumes[0] - 1.0)
                self.results = {
                    'energy': 0.0,
                    'forces': np.zeros((len(self.atoms), 3)),
                    'stress': np.array([stress] * 3 + [0.0] * 3),
                }

        self.calc = Fake()


EXPLORE = {'temperatures_K': [300.0], 'steps': 60, 'interval': 10, 'timestep_fs': 2.0, 'tdamp_fs': 50.0,
           'pdamp_fs': 100.0, 'barostat': 'full', 'max_volume_change': 0.05, 'seed': 0}  # fmt: skip


def test_student_exploration_stops_a_runaway_cell_and_the_teacher_labels_its_frames():
    """A student whose stress pushes the cell outwards (what the unrefined demo student did) is stopped once the volume
    passes max_volume_change; that frame is labelled, the run is flagged, and the labels are the teacher's."""
    from aiida_nmcml.engine.teacher_explore import exploration_seeds, exploration_summary, student_explore

    seeds = exploration_seeds({'x_li': [0.5], 'cell_atoms': 20, 'compositions': ['NMC811']})
    assert len(seeds) == 1 and seeds[0].info['config_type'] == 'explore_seed'
    teacher_calc = _PressureCalculator(0.0).calc  # labels: zero energy and stress, so labels != student values
    identity = {
        'name': 'fake',
        'package': 'fake',
        'package_version': '0',
        'model_version': '0',
        'weights_sha256': 'x' * 64,
    }

    frames, runs = student_explore(seeds, _PressureCalculator(-0.05).calc, teacher_calc, identity, EXPLORE)
    (run,) = runs
    assert run['stopped'] and 'volume' in run['stopped']
    assert run['max_volume_ratio'] > 1.05 and run['steps'] < EXPLORE['steps']
    assert len(frames) == run['n_frames'] == run['steps'] // EXPLORE['interval']
    assert frames[-1].info['volume_ratio'] > 1.05  # the frame that crossed the limit is labelled
    assert all(f.info['config_type'] == 'student_md' and f.info['x_li'] == 0.5 for f in frames)
    verdict = exploration_summary(runs)
    assert verdict['holds_cell'] is False and verdict['n_stopped'] == 1

    # a student that binds the cell (bulk modulus 1 eV/Å^3 = 160 GPa) holds it for the whole run
    frames, runs = student_explore(seeds, _PressureCalculator(0.0, bulk=1.0).calc, teacher_calc, identity, EXPLORE)
    assert runs[0]['stopped'] is None and runs[0]['steps'] == EXPLORE['steps']
    assert len(frames) == EXPLORE['steps'] // EXPLORE['interval']
    assert exploration_summary(runs)['holds_cell'] is True


def test_label_command_explores_with_a_student(tmp_path):
    """The real subcommand with the shipped demo student and CHGNet: student NPT frames labelled by the teacher, the
    student's errors against the teacher recorded per run."""
    from aiida_nmcml.engine.teacher_explore import exploration_seeds
    from aiida_nmcml.workflows.distill import SHIPPED_DIR

    (model,) = sorted(SHIPPED_DIR.glob('distilled-chgnet-demo-*.model'))
    (tmp_path / 'student.model').write_bytes(model.read_bytes())
    write(
        tmp_path / 'frames.xyz',
        exploration_seeds({'x_li': [0.5], 'cell_atoms': 20, 'compositions': ['NMC811']}),
        format='extxyz',
    )
    explore = {**EXPLORE, 'steps': 20, 'max_volume_change': 0.3}
    config = {'frames': 'frames.xyz', 'teacher': 'chgnet', 'device': 'cpu', 'explore': explore,
              'models': [{'path': 'student.model', 'sha256': sha256sum(tmp_path / 'student.model')}]}  # fmt: skip
    (tmp_path / 'input.json').write_text(json.dumps(config))
    proc = subprocess.run([sys.executable, '-m', 'aiida_nmcml.engine.cli', 'label', 'input.json'], cwd=tmp_path,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((tmp_path / teacher.SUMMARY_FILENAME).read_text())
    labelled = read(tmp_path / teacher.LABELLED_FILENAME, index=':')
    explored = [a for a in labelled if a.info['config_type'] == 'student_md']
    assert summary['n_explore_frames'] == len(explored) == 2
    (run,) = summary['explore_runs']
    assert run['steps'] == 20 and run['temperature_K'] == 300.0
    assert run['student_force_rmse_eV_A'] > 0  # the student is not the teacher
    for frame in explored:
        assert frame.info['teacher'] == 'chgnet'
        assert frame.info['REF_energy'] != pytest.approx(frame.info['student_energy'], abs=1e-6)

    # explore without a student is refused
    (tmp_path / 'input.json').write_text(json.dumps({**config, 'models': []}))
    proc = subprocess.run([sys.executable, '-m', 'aiida_nmcml.engine.cli', 'label', 'input.json'], cwd=tmp_path,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert proc.returncode != 0
    assert 'explore needs the student' in json.loads((tmp_path / 'engine_status.json').read_text())['message']

"""Benchmark: the distilled MACE foundation model against its teacher (CHGNet), on frames it never saw.

    python benchmarks/distill.py --model PATH_OR_PK [--md-steps 2000] [--md-atoms 120] [--seed 1000]

What is measured (issue 9's goals in brackets), all against the teacher, never against DFT:

* held-out frames: NMC811 at x = 1, 0.5, 0.25, rattled/strained, plus teacher-MD snapshots at 300, 600 and 1000 K,
  sampled with a seed the distillation did not use (default 1000) and labelled here by the teacher:
  force RMSE [≤ 80 meV/Å demo], energy RMSE [≤ 10 meV/atom], stress RMSE [≤ 0.5 GPa];
* lattice: a and c of relaxed NMC811 (40-atom cells, random TM order) at x = 1 and 0.5, relaxed separately by the
  teacher and by the student (FIRE on a Fréchet cell filter) [within 1 %];
* MD: NVT (Langevin) at 1000 K on a 120-atom NMC811 cell with the student: minimum interatomic distance and
  temperature over the run [10 ps without blow-up; on the shared 2-core machine we run what fits and say so];
* speed: MD atom-steps/s of student and teacher, side by side on the same cell and thread count [student ≥ 5×].

The algorithm never sees the answers: the held-out frames come from another seed, and the lattice comparison relaxes
from the same unrelaxed cell with each model. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time
import warnings

import numpy as np

os.environ.setdefault('OMP_NUM_THREADS', '1')

EV_PER_A3_TO_GPA = 160.21766208


def load_student(spec: str):
    """A MACE calculator from a .model path or the pk/uuid of a MaceModel node (hash-checked copy)."""
    from mace.calculators import MACECalculator

    path = pathlib.Path(spec)
    if not path.is_file():
        import tempfile

        from aiida import load_profile, orm

        load_profile()
        node = orm.load_node(int(spec) if spec.isdigit() else spec)
        path = node.copy_to(pathlib.Path(tempfile.mkdtemp()) / 'student.model')
    return MACECalculator(model_paths=str(path), device='cpu', default_dtype='float64'), str(path)


def held_out_frames(teacher, identity, seed: int, md_steps: int = 20, frames_per_x: int = 4):
    """Frames the distillation never saw, labelled by the teacher."""
    from aiida_nmcml.engine.teacher import label_atoms, sample_configurations, teacher_md

    frames = sample_configurations(
        {
            'seed': seed,
            'x_li': [1.0, 0.5, 0.25],
            'cell_atoms': [16, 24],
            'frames_per_x': frames_per_x,
            'antisite_frames': 0,
            'end_member_frames': 0,
            'md_seeds': 1,
            'md_seed_atoms': 16,
        }
    )
    static = [label_atoms(a, teacher, identity) for a in frames if not a.info.get('md_seed')]
    seeds = [a for a in frames if a.info.get('md_seed')]
    md = {
        'temperatures_K': [300.0, 600.0, 1000.0],
        'steps': md_steps,
        'interval': md_steps // 2,
        'timestep_fs': 1.0,
        'friction': 0.02,
        'seed': seed,
    }
    thermal = teacher_md(seeds, teacher, identity, md)
    return static, thermal


def errors(student, frames) -> dict:
    de, df, ds = [], [], []
    for atoms in frames:
        work = atoms.copy()
        work.calc = student
        de.append((work.get_potential_energy() - atoms.info['REF_energy']) / len(atoms))
        df.append((work.get_forces() - atoms.arrays['REF_forces']).ravel())
        ds.append((work.get_stress(voigt=True) - atoms.info['REF_stress']) * EV_PER_A3_TO_GPA)
    df = np.concatenate(df)
    ref_f = np.concatenate([a.arrays['REF_forces'].ravel() for a in frames])
    return {
        'n_frames': len(frames),
        'force_rmse_meV_per_A': float(np.sqrt(np.mean(df**2)) * 1e3),
        'force_rmse_relative_pct': float(np.sqrt(np.mean(df**2)) / np.sqrt(np.mean(ref_f**2)) * 100),
        'energy_rmse_meV_per_atom': float(np.sqrt(np.mean(np.square(de))) * 1e3),
        'stress_rmse_GPa': float(np.sqrt(np.mean(np.square(ds)))),
    }


def hexagonal_a_c(atoms) -> tuple[float, float]:
    """a and c of the layered lattice from a relaxed supercell of :func:`aiida_nmcml.structures.build_nmc`."""
    from aiida_nmcml.structures import _PRIMITIVE_IN_HEX

    matrix = np.array(atoms.info['supercell_matrix'], dtype=float)
    primitive = np.linalg.solve(matrix, atoms.cell.array)
    hexagonal = np.linalg.solve(_PRIMITIVE_IN_HEX, primitive)
    return float(np.mean(np.linalg.norm(hexagonal[:2], axis=1))), float(np.linalg.norm(hexagonal[2]))


def relax(atoms, calc, fmax: float = 0.05, steps: int = 150):
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE

    atoms = atoms.copy()
    atoms.calc = calc
    opt = FIRE(FrechetCellFilter(atoms), logfile=None)
    converged = opt.run(fmax=fmax, steps=steps)
    return atoms, bool(converged), opt.nsteps


def lattice_start(x: float):
    from aiida_nmcml.structures import build_nmc

    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        start = build_nmc(40, x_li=x, seed=3, magnetic=False)
    start.info['supercell_matrix'] = start.info['nmcml']['supercell_matrix']
    return start


def relaxed_lattice(calc, x: float, steps: int) -> dict:
    """a, c of the 40-atom NMC811 cell at ``x`` relaxed by ``calc`` from the same unrelaxed start."""
    t0 = time.time()
    relaxed, converged, nsteps = relax(lattice_start(x), calc, steps=steps)
    a, c = hexagonal_a_c(relaxed)
    return {'a': a, 'c': c, 'converged': converged, 'steps': nsteps, 'wall_s': time.time() - t0}


def nvt(calc, atoms, steps: int, temperature: float = 1000.0, seed: int = 0, record_every: int = 10) -> dict:
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

    atoms = atoms.copy()
    atoms.calc = calc
    rng = np.random.default_rng(seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    Stationary(atoms)
    dyn = Langevin(atoms, timestep=1.0 * units.fs, temperature_K=temperature, friction=0.01 / units.fs, rng=rng)
    closest, temperatures = [], []

    def record():
        d = atoms.get_all_distances(mic=True)
        closest.append(float(np.min(d[np.triu_indices(len(atoms), 1)])))
        temperatures.append(float(atoms.get_temperature()))

    dyn.attach(record, interval=record_every)
    t0 = time.time()
    dyn.run(steps)
    wall = time.time() - t0
    return {
        'steps': steps,
        'time_ps': steps * 1e-3,
        'natoms': len(atoms),
        'wall_s': wall,
        'atom_steps_per_s': steps * len(atoms) / wall,
        'min_distance_A': float(min(closest)),
        'temperature_K_mean_second_half': float(np.mean(temperatures[len(temperatures) // 2 :])),
        'temperature_K_max': float(max(temperatures)),
        'blew_up': bool(min(closest) < 1.0 or max(temperatures) > 5 * temperature),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', help='.model file or MaceModel pk/uuid (distilled foundation); none: teacher only')
    parser.add_argument('--teacher-cache', help='folder keeping the teacher-side results between runs')
    parser.add_argument('--seed', type=int, default=1000, help='sampling seed of the held-out frames')
    parser.add_argument('--md-steps', type=int, default=2000, help='student NVT steps at 1000 K (1 fs)')
    parser.add_argument('--md-atoms', type=int, default=120)
    parser.add_argument('--teacher-md-steps', type=int, default=10, help='teacher steps for the speed comparison')
    parser.add_argument('--skip-lattice', action='store_true')
    parser.add_argument('--frames-per-x', type=int, default=4, help='held-out static frames per x')
    parser.add_argument('--held-out-md-steps', type=int, default=20, help='teacher MD steps per temperature')
    parser.add_argument('--relax-steps', type=int, default=100, help='max FIRE steps of each relaxation')
    args = parser.parse_args(argv)
    out = sys.stdout
    sys.stdout = sys.stderr  # libraries print banners (CHGNet, MACE): only the JSON goes to stdout
    try:
        report = measure(args)
    finally:
        sys.stdout = out
    json.dump(report, sys.stdout, indent=1)
    print()
    return 0


def teacher_side(args) -> dict:
    """Everything that needs only the teacher, cached in ``--teacher-cache`` (it does not depend on the student)."""
    from ase.io import read, write

    from aiida_nmcml.engine.teacher import load_teacher

    key = f'seed{args.seed}-f{args.frames_per_x}-md{args.held_out_md_steps}-r{args.relax_steps}-a{args.md_atoms}'
    key += f'-t{args.teacher_md_steps}'
    cache = pathlib.Path(args.teacher_cache) / key if args.teacher_cache else None
    if cache is not None and (cache / 'teacher.json').is_file():
        data = json.loads((cache / 'teacher.json').read_text())
        data['static'] = read(cache / 'static.xyz', index=':')
        data['thermal'] = read(cache / 'thermal.xyz', index=':')
        data['from_cache'] = str(cache)
        return data
    teacher, identity = load_teacher('chgnet', 'cpu')
    data = {'identity': identity, 'load_average_start': os.getloadavg()}
    t0 = time.time()
    data['static'], data['thermal'] = held_out_frames(
        teacher, identity, args.seed, args.held_out_md_steps, args.frames_per_x
    )
    data['held_out_labelling_s'] = time.time() - t0
    data['lattice'] = (
        {} if args.skip_lattice else {f'x={x}': relaxed_lattice(teacher, x, args.relax_steps) for x in (1.0, 0.5)}
    )
    data['md_speed'] = nvt(teacher, md_cell(args.md_atoms), args.teacher_md_steps, record_every=5)
    data['load_average_end'] = os.getloadavg()
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        write(cache / 'static.xyz', data['static'])
        write(cache / 'thermal.xyz', data['thermal'])
        plain = {k: v for k, v in data.items() if k not in ('static', 'thermal')}
        (cache / 'teacher.json').write_text(json.dumps(plain, indent=1))
    return data


def md_cell(natoms: int):
    from aiida_nmcml.structures import build_nmc

    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return build_nmc(natoms, x_li=1.0, seed=0, magnetic=False)


def measure(args) -> dict:
    report = {'machine': {'cpus': os.cpu_count(), 'omp_threads': os.environ.get('OMP_NUM_THREADS')}}
    report['machine']['load_average_start'] = os.getloadavg()
    ref = teacher_side(args)
    report['teacher'] = ref['identity']
    report['teacher_side'] = {
        k: ref.get(k) for k in ('held_out_labelling_s', 'load_average_start', 'load_average_end', 'from_cache')
    }
    if not args.model:
        return report
    student, path = load_student(args.model)
    report['student'] = {'file': path}
    static, thermal = ref['static'], ref['thermal']
    report['held_out'] = {
        'all': errors(student, static + thermal),
        'static': errors(student, static),
        'teacher_md_300_1000K': errors(student, thermal),
    }
    for x in (1.0, 0.5, 0.25):
        subset = [a for a in static if a.info.get('x_li') == x]
        report['held_out'][f'x={x}'] = errors(student, subset)
    if not args.skip_lattice:
        report['lattice'] = {}
        for x in (1.0, 0.5):
            row = {'teacher': ref['lattice'][f'x={x}'], 'student': relaxed_lattice(student, x, args.relax_steps)}
            row['a_error_pct'] = 100 * (row['student']['a'] - row['teacher']['a']) / row['teacher']['a']
            row['c_error_pct'] = 100 * (row['student']['c'] - row['teacher']['c']) / row['teacher']['c']
            report['lattice'][f'x={x}'] = row
    report['md_1000K_student'] = nvt(student, md_cell(args.md_atoms), args.md_steps)
    report['md_1000K_teacher_speed'] = ref['md_speed']
    report['speedup_student_over_teacher'] = (
        report['md_1000K_student']['atom_steps_per_s'] / report['md_1000K_teacher_speed']['atom_steps_per_s']
    )
    report['machine']['load_average_end'] = os.getloadavg()
    return report


if __name__ == '__main__':
    sys.exit(main())

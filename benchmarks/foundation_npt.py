"""Does a MACE model hold an NPT cell? The check that found the distilled demo foundation's runaway (2026-11-27).

Anisotropic MTK NPT (the engine's own integrator: ``aiida-nmcml-engine md``, p = 0, 2 fs, tdamp 50 fs, pdamp 200 fs)
of layered LiNiO2-type cells at x = 0.5 and x = 1 (70/80 atoms, ``build_nmc(80, composition={'Ni': 1})``), and the
same cells with CHGNet (the teacher, ASE's MTKNPT) as the reference with ``--chgnet``. Prints one JSON document: the
volume every 100 steps and the final/initial volume ratio per model and cell. Nothing is tuned to pass: a model that
binds the cell stays within a few per cent of the teacher's volume; the shipped demo student reached 4-5x in 800 fs.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/foundation_npt.py [MODEL ...] [--chgnet] [--steps 400]``
(default model: the demo foundation shipped in the package). CPU: ~1 min per MACE run of 400 steps, ~3 min per
CHGNet run of 150 steps on one core.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import subprocess
import sys
import tempfile

os.environ.setdefault('OMP_NUM_THREADS', '1')

CELLS = {'x0.5': 0.5, 'x1': 1.0}
SETTINGS = {'ensemble': 'npt', 'barostat': 'full', 'timestep_fs': 2.0, 'trajectory_stride': 10, 'dtype': 'float64',
            'pdamp_fs': 200.0, 'tdamp_fs': 50.0, 'seed': 2, 'device': 'cpu'}  # fmt: skip


def cell(x_li: float):
    from aiida_nmcml.structures import build_nmc

    return build_nmc(80, x_li=x_li, composition={'Ni': 1.0}, seed=1)


def engine_npt(model: pathlib.Path, atoms, steps: int, temperature: float) -> list[float]:
    """Volumes every 100 steps of the engine's NPT run with ``model`` alone (no committee: nothing to monitor)."""
    from ase.io import write

    with tempfile.TemporaryDirectory() as folder:
        work = pathlib.Path(folder)
        write(work / 'structure.extxyz', atoms, format='extxyz')
        data = model.read_bytes()
        (work / 'model.model').write_bytes(data)
        config = {**SETTINGS, 'steps': steps, 'temperature_K': temperature, 'structure': 'structure.extxyz',
                  'models': [{'path': 'model.model', 'sha256': hashlib.sha256(data).hexdigest()}]}  # fmt: skip
        (work / 'input.json').write_text(json.dumps(config))
        subprocess.run([sys.executable, '-m', 'aiida_nmcml.engine.cli', 'md', 'input.json'], cwd=work, check=True,
                       capture_output=True)  # fmt: skip
        rows = [line.split() for line in (work / 'thermo.log').read_text().splitlines() if not line.startswith('#')]
        return [float(row[6]) for row in rows if int(row[0]) % 100 == 0]


def chgnet_npt(atoms, steps: int, temperature: float) -> list[float]:
    import numpy as np
    from ase import units
    from ase.md.nose_hoover_chain import MTKNPT
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    from aiida_nmcml.engine.teacher import load_teacher

    atoms = atoms.copy()
    atoms.calc, _ = load_teacher('chgnet', 'cpu')
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=np.random.default_rng(SETTINGS['seed']))
    dyn = MTKNPT(atoms, timestep=2 * units.fs, temperature_K=temperature, pressure_au=0.0, tdamp=50 * units.fs,
                 pdamp=200 * units.fs)  # fmt: skip
    volumes = [atoms.get_volume()]
    for _ in range(steps // 50):
        dyn.run(50)
        volumes.append(atoms.get_volume())
    return volumes


def main() -> None:
    from aiida_nmcml.workflows.distill import SHIPPED_DIR

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('models', nargs='*', type=pathlib.Path)
    parser.add_argument('--chgnet', action='store_true', help='also the teacher, as the reference')
    parser.add_argument('--steps', type=int, default=400)
    parser.add_argument('--temperature', type=float, default=800.0)
    args = parser.parse_args()
    models = args.models or sorted(SHIPPED_DIR.glob('distilled-chgnet-demo-*.model'))
    report = {'settings': {**SETTINGS, 'steps': args.steps, 'temperature_K': args.temperature}, 'runs': []}
    for name, x_li in CELLS.items():
        atoms = cell(x_li)
        runs = [(str(path), lambda a, p=path: engine_npt(p, a, args.steps, args.temperature)) for path in models]
        if args.chgnet:
            runs.append(('chgnet', lambda a: chgnet_npt(a, min(args.steps, 150), args.temperature)))
        for label, run in runs:
            volumes = run(atoms)
            report['runs'].append({'model': label, 'cell': name, 'natoms': len(atoms), 'volumes_A3': volumes,
                                   'final_over_initial': volumes[-1] / volumes[0]})  # fmt: skip
    print(json.dumps(report, indent=1))


if __name__ == '__main__':
    main()

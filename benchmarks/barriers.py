"""Li migration barriers in LiNiO2 (ODH and TSH) with the best model available offline, against DFT literature.

The hops are the two canonical ones of layered oxides, built by :func:`aiida_nmcml.hops.build_hop` in a 4x4x1
hexagonal LiNiO2 cell (the Devi et al. setup: Li47Ni48O96 for the oxygen-dumbbell hop, Li46Ni48O96 with a
divacancy for the tetrahedral-site hop), relaxed end points, IDPP path (TSH: through the tetrahedral site), NEB then
climbing-image NEB to ``fmax`` with :func:`aiida_nmcml.engine.neb.run_neb` -- the same code the ``nmcml.neb``
calcjob runs. The cell is first relaxed with the model (``--relax-cell``), since the TSH barrier follows the Li slab
spacing (c).

Model: CHGNet 0.3.0 (pretrained universal MLIP shipped inside the chgnet wheel; not fine-tuned on NMC), or a MACE
model file with ``--model PATH``. No MACE foundation model can be downloaded here.

References (REFERENCES.md): DFT (PBE+U) 0.451 eV (ODH) and 0.263 eV (TSH), Devi et al. dataset; un-fine-tuned
MACE-MP-0 on the same paths 0.363 / 0.262 eV (Bheemaguli, Xiao, Sai Gautam 2026). Reported, not asserted: the
numbers go to docs/barriers.md.

Run: ``PYTHONPATH=. python benchmarks/barriers.py [--device cuda] [--model chgnet|PATH] [--hops odh tsh]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

os.environ.setdefault('OMP_NUM_THREADS', '1')

LITERATURE = {
    'odh': {'dft': 0.451, 'mace_mp_0': 0.363, 'source': 'Devi et al. arXiv:2508.06459; Bheemaguli et al. 2026'},
    'tsh': {'dft': 0.263, 'mace_mp_0': 0.262, 'source': 'Devi et al. arXiv:2508.06459; Bheemaguli et al. 2026'},
}


def make_model(name: str, device: str):
    import torch

    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if name == 'chgnet':
        import warnings

        from chgnet.model.dynamics import CHGNetCalculator

        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            calc = CHGNetCalculator(use_device=device)
        return calc, {'model': 'CHGNet', 'version': str(calc.version), 'device': device}
    from aiida_nmcml.engine.common import make_calculator

    return make_calculator([name], device, 'float64'), {'model': name, 'device': device}


def relaxed_host(calculator, repeats, fmax: float, steps: int):
    """LiNiO2 (x = 1) in the hexagonal supercell with cell and positions relaxed by the model (c from the model)."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE

    from aiida_nmcml.engine.neb import ImageCalculator
    from aiida_nmcml.hops import hexagonal_supercell
    from aiida_nmcml.structures import build_nmc

    host = build_nmc(hexagonal_supercell(*repeats), composition={'Ni': 1.0}, seed=0)
    before = host.cell.cellpar()
    host.calc = ImageCalculator(calculator, with_stress=True)
    opt = FIRE(FrechetCellFilter(host), logfile=None)
    converged = bool(opt.run(fmax=fmax, steps=steps))
    after = host.cell.cellpar()
    host.calc = None
    return host, {
        'cell_before': [round(float(v), 4) for v in before],
        'cell_after': [round(float(v), 4) for v in after],
        'steps': int(opt.nsteps),
        'converged': converged,
    }


def run_hop(kind: str, host, calculator, args) -> dict:
    from aiida_nmcml.engine.neb import run_neb
    from aiida_nmcml.hops import build_hop

    hop = build_hop(kind, host=host)
    settings = {
        'n_images': args.images if kind == 'odh' else max(args.images, 5),
        'fmax': args.fmax,
        'max_steps': args.max_steps,
        'endpoint_fmax': args.endpoint_fmax,
        'endpoint_max_steps': args.max_steps,
    }
    start = time.perf_counter()
    _, summary = run_neb(hop.initial, hop.final, calculator, settings, via=hop.via)
    seconds = time.perf_counter() - start
    barrier = summary['barrier_forward']
    lit = LITERATURE[kind]
    return {
        'hop': kind,
        'formula': hop.info['formula'],
        'environment': hop.info['nearest_tm_to_transition_point'],
        'barrier_eV': barrier,
        'reverse_barrier_eV': summary['barrier_reverse'],
        'reaction_energy_eV': summary['reaction_energy'],
        'dft_literature_eV': lit['dft'],
        'difference_to_dft_eV': barrier - lit['dft'],
        'mace_mp_0_literature_eV': lit['mace_mp_0'],
        'converged': summary['converged'],
        'fmax_final': summary['fmax_final'],
        'neb_steps': summary['steps'],
        'n_images': settings['n_images'],
        'climbing_image': summary['climbing_image'],
        'energies_relative_eV': [round(e, 4) for e in summary['energies_relative']],
        'endpoints': summary.get('endpoints'),
        'model_evaluations': summary['model_evaluations'],
        'seconds': seconds,
        'source': lit['source'],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', default='chgnet', help="'chgnet' or a MACE model file")
    parser.add_argument('--device', default='auto')
    parser.add_argument('--hops', nargs='+', default=['odh', 'tsh'], choices=['odh', 'tsh'])
    parser.add_argument('--repeats', nargs=3, type=int, default=[4, 4, 1], help='hexagonal cells (4 4 1: 192 sites)')
    parser.add_argument('--images', type=int, default=5)
    parser.add_argument('--fmax', type=float, default=0.05)
    parser.add_argument('--endpoint-fmax', type=float, default=0.03)
    parser.add_argument('--max-steps', type=int, default=300)
    parser.add_argument('--no-relax-cell', action='store_true')
    args = parser.parse_args()

    calculator, model_info = make_model(args.model, args.device)
    report = {'benchmark': 'barriers', 'machine': platform.node(), **model_info, 'repeats': args.repeats}
    if args.device != 'cpu':
        try:
            import torch

            report['gpu'] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        except Exception:  # pragma: no cover - informational only
            report['gpu'] = None
    if args.no_relax_cell:
        from aiida_nmcml.hops import hexagonal_supercell
        from aiida_nmcml.structures import build_nmc

        host = build_nmc(hexagonal_supercell(*args.repeats), composition={'Ni': 1.0}, seed=0)
        report['cell'] = {'relaxed': False, 'cellpar': [round(float(v), 4) for v in host.cell.cellpar()]}
    else:
        start = time.perf_counter()
        host, cell = relaxed_host(calculator, args.repeats, 0.02, args.max_steps)
        report['cell'] = {'relaxed': True, **cell, 'seconds': time.perf_counter() - start}
    report['hops'] = [run_hop(kind, host, calculator, args) for kind in args.hops]
    print(json.dumps(report, indent=1))


if __name__ == '__main__':
    main()

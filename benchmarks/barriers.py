"""Li migration barriers in LiNiO2 (ODH and TSH) with the best model available offline, against DFT literature.

The hops are the two canonical ones of layered oxides, built by :func:`aiida_nmcml.hops.build_hop` in a 4x4x1
hexagonal LiNiO2 cell (the Devi et al. setup: Li47Ni48O96 for the oxygen-dumbbell hop, Li46Ni48O96 with a
divacancy for the tetrahedral-site hop), relaxed end points, IDPP path (TSH: through the tetrahedral site), NEB then
climbing-image NEB to ``fmax`` with :func:`aiida_nmcml.engine.neb.run_neb` -- the same code the ``nmcml.neb``
calcjob runs. The cell is first relaxed with the model (``--relax-cell``), since the TSH barrier follows the Li slab
spacing (c).

Models (``--models``, several allowed, each gets its own relaxed cell and NEB): ``best`` is the best model available
offline -- the distilled foundation model of ``get_or_distill_foundation`` when it is cached on this machine
(``~/.cache/aiida-nmcml/foundation/distilled-*.model``, newest first), otherwise CHGNet; ``chgnet`` is CHGNet 0.3.0
(the pretrained universal MLIP shipped inside the chgnet wheel; zero-shot, not fine-tuned on NMC); a path is any MACE
model file. No MACE foundation model can be downloaded here.

References (docs/references.md): DFT (PBE+U) 0.451 eV (ODH) and 0.263 eV (TSH), Devi et al. dataset; un-fine-tuned
MACE-MP-0 on the same paths 0.363 / 0.262 eV (Bheemaguli, Xiao, Sai Gautam 2026). Reported, not asserted: the
numbers go to docs/barriers.md.

Run: ``PYTHONPATH=. python benchmarks/barriers.py [--device cuda] [--models best chgnet PATH] [--hops odh tsh]``.
Prints one JSON report and a markdown table (model, hop, barrier, literature, difference, convergence, wall time).
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


def cached_distilled_model() -> str | None:
    """Newest distilled foundation model in this machine's cache (what get_or_distill_foundation would reuse)."""
    import pathlib

    root = os.environ.get('NMCML_CACHE') or pathlib.Path.home() / '.cache' / 'aiida-nmcml'
    found = sorted((pathlib.Path(root) / 'foundation').glob('distilled-*.model'), key=lambda p: p.stat().st_mtime)
    return str(found[-1]) if found else None


def resolve_model(name: str) -> str:
    if name != 'best':
        return name
    return cached_distilled_model() or 'chgnet'


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
    from aiida_nmcml.engine.neb import relax_cell
    from aiida_nmcml.hops import hexagonal_supercell
    from aiida_nmcml.structures import build_nmc

    host = build_nmc(hexagonal_supercell(*repeats), composition={'Ni': 1.0}, seed=0)
    relaxed, record = relax_cell(host, calculator, 'full', fmax=fmax, steps=steps)  # the engine's, as nmcml.neb
    return relaxed, {
        'cell_before': [round(float(v), 4) for v in record['cellpar_before']],
        'cell_after': [round(float(v), 4) for v in record['cellpar_after']],
        'max_stress_GPa': round(record['max_stress_GPa'], 3),
        'steps': record['steps'],
        'converged': record['converged'],
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


def benchmark_model(name: str, args) -> dict:
    """Cell relaxation (unless --no-relax-cell) and every hop with one model."""
    resolved = resolve_model(name)
    calculator, model_info = make_model(resolved, args.device)
    report = {'requested': name, **model_info}
    if args.no_relax_cell:
        from aiida_nmcml.hops import hexagonal_supercell
        from aiida_nmcml.structures import build_nmc

        host = build_nmc(hexagonal_supercell(*args.repeats), composition={'Ni': 1.0}, seed=0)
        report['cell'] = {'relaxed': False, 'cellpar': [round(float(v), 4) for v in host.cell.cellpar()]}
    else:
        start = time.perf_counter()
        host, cell = relaxed_host(calculator, args.repeats, args.cell_fmax, args.max_steps)
        report['cell'] = {'relaxed': True, **cell, 'seconds': time.perf_counter() - start}
    report['hops'] = []
    for kind in args.hops:
        report['hops'].append(run_hop(kind, host, calculator, args))
        print(json.dumps({'model': report['model'], **report['hops'][-1]}), flush=True)  # progress, one line a hop
    return report


def markdown(reports: list[dict], n1: int = 4) -> str:
    lines = [
        '| model | hop | cell a, c (Å) | images | converged (fmax) | steps | barrier (eV) | DFT lit. | model - DFT | '
        'MACE-MP-0 lit. | wall (s) |',
        '|---|---|---|---|---|---|---|---|---|---|---|',
    ]
    for report in reports:
        cellpar = report['cell'].get('cell_after') or report['cell'].get('cellpar')
        for hop in report['hops']:
            lines.append(
                f'| {report["model"]} | {hop["hop"].upper()} | {cellpar[0] / n1:.3f}, {cellpar[2]:.3f} | '
                f'{hop["n_images"]} | {hop["converged"]} ({hop["fmax_final"]:.3f}) | {hop["neb_steps"]} | '
                f'{hop["barrier_eV"]:.3f} | {hop["dft_literature_eV"]} | {hop["difference_to_dft_eV"]:+.3f} | '
                f'{hop["mace_mp_0_literature_eV"]} | {hop["seconds"]:.0f} |'
            )
    return '\n'.join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--models', nargs='+', default=['best'], help="'best', 'chgnet' or MACE model files")
    parser.add_argument('--device', default='auto')
    parser.add_argument('--hops', nargs='+', default=['odh', 'tsh'], choices=['odh', 'tsh'])
    parser.add_argument('--repeats', nargs=3, type=int, default=[4, 4, 1], help='hexagonal cells (4 4 1: 192 sites)')
    parser.add_argument('--images', type=int, default=5)
    parser.add_argument('--fmax', type=float, default=0.05)
    parser.add_argument('--endpoint-fmax', type=float, default=0.03)
    parser.add_argument('--cell-fmax', type=float, default=0.02)
    parser.add_argument('--max-steps', type=int, default=300)
    parser.add_argument('--no-relax-cell', action='store_true')
    args = parser.parse_args()

    report = {'benchmark': 'barriers', 'machine': platform.node(), 'repeats': args.repeats, 'load': os.getloadavg()}
    if args.device != 'cpu':
        try:
            import torch

            report['gpu'] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        except Exception:  # pragma: no cover - informational only
            report['gpu'] = None
    start = time.perf_counter()
    report['models'] = [benchmark_model(name, args) for name in args.models]
    report['seconds'] = time.perf_counter() - start
    report['load_after'] = os.getloadavg()
    print(json.dumps(report, indent=1))
    print(markdown(report['models'], args.repeats[0]))


if __name__ == '__main__':
    main()

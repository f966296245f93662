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
On a loaded CPU (what docs/barriers.md reports): ``--device cpu --hops odh --images 1 --endpoint-fmax 0.05
--cell-repeats 2 2 1 --log`` (one climbing image, end points cut from a host relaxed in the small cell and tiled).
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


def relaxed_host(calculator, repeats, fmax: float, steps: int, cell_repeats=None):
    """LiNiO2 (x = 1) in the hexagonal supercell with cell and positions relaxed by the model (c from the model).

    ``cell_repeats`` (e.g. 2 2 1, dividing ``repeats``): relax cell and positions of that smaller pristine LiNiO2
    supercell and tile it to ``repeats``. Pristine LiNiO2 is periodic in the small cell, so a, c and the relaxed
    positions (a cooperative Jahn-Teller distortion, if the model has one, commensurate with the small cell) are the
    same, at ~1/4 of the cost per evaluation; both hop end points are then cut from one relaxed host and relax only
    locally around the vacancy. The hop vacancies are not in the relaxed cell (lattice of the pristine host)."""
    from aiida_nmcml.engine.neb import relax_cell
    from aiida_nmcml.hops import hexagonal_supercell
    from aiida_nmcml.structures import build_nmc

    if cell_repeats and list(cell_repeats) != list(repeats):
        tiles = [r // c for r, c in zip(repeats, cell_repeats, strict=True)]
        if any(r % c for r, c in zip(repeats, cell_repeats, strict=True)):
            raise SystemExit(f'--cell-repeats {cell_repeats} must divide --repeats {repeats}')
        small = build_nmc(hexagonal_supercell(*cell_repeats), composition={'Ni': 1.0}, seed=0)
        relaxed_small, record = relax_cell(small, calculator, 'full', fmax=fmax, steps=steps)
        relaxed = relaxed_small.repeat(tiles)  # keeps the per-atom arrays (sublattice, moments)
        n_atoms = len(small)
        record['cellpar_after_small'] = record['cellpar_after']
        record['cellpar_before'] = [float(v) for v in small.repeat(tiles).cell.cellpar()]
        record['cellpar_after'] = [float(v) for v in relaxed.cell.cellpar()]
    else:
        host = build_nmc(hexagonal_supercell(*repeats), composition={'Ni': 1.0}, seed=0)
        relaxed, record = relax_cell(host, calculator, 'full', fmax=fmax, steps=steps)  # the engine's, as nmcml.neb
        n_atoms = len(host)
    return relaxed, {
        'relaxed_in': list(cell_repeats or repeats),
        'cell_before': [round(float(v), 4) for v in record['cellpar_before']],
        'cell_after': [round(float(v), 4) for v in record['cellpar_after']],
        **(
            {'cell_after_small': [round(float(v), 4) for v in record['cellpar_after_small']]}
            if 'cellpar_after_small' in record  # only when the small cell was tiled
            else {}
        ),
        'energy_per_atom_eV': round(record['energy'] / n_atoms, 5),
        'max_stress_GPa': round(record['max_stress_GPa'], 3),
        'steps': record['steps'],
        'converged': record['converged'],
    }


def run_hop(kind: str, host, calculator, args) -> dict:
    from aiida_nmcml.engine.neb import run_neb
    from aiida_nmcml.hops import build_hop

    hop = build_hop(kind, host=host)
    settings = {
        'n_images': args.images if kind == 'odh' else max(args.images, args.tsh_min_images),
        'fmax': args.fmax,
        'max_steps': args.max_steps,
        'endpoint_fmax': args.endpoint_fmax,
        'endpoint_max_steps': args.max_steps,
        'optimizer': args.optimizer,
    }
    start = time.perf_counter()
    print(f'# {kind}: {hop.info["formula"]}, NEB settings {settings}', flush=True)
    _, summary = run_neb(hop.initial, hop.final, calculator, settings, via=hop.via, logfile='-' if args.log else None)
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
        'warnings': summary['warnings'],
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
        host, cell = relaxed_host(calculator, args.repeats, args.cell_fmax, args.max_steps, args.cell_repeats)
        print(f'# cell: {cell}', flush=True)
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
    parser.add_argument(
        '--cell-repeats', nargs=3, type=int, default=None, help='relax the cell in this smaller pristine cell (2 2 1)'
    )
    parser.add_argument('--tsh-min-images', type=int, default=5, help='TSH: at least this many images (>= 3)')
    parser.add_argument('--optimizer', default='fire', choices=['fire', 'bfgs', 'mdmin'])
    parser.add_argument('--log', action='store_true', help="optimiser logs on stdout (every step's energy and fmax)")
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

"""Discretisation error of the ``nmcml.label`` protocols: energy, force and stress against a converged reference.

Why: a model fine-tuned on labels learns their k-point and cutoff error too. The labels must therefore be closer to
the converged answer than the model errors we target (forces <= 50 meV/Å RMS). This benchmark labels one rattled
LiNiO2-type cell (8 sites, the demo's cells) at x = 1 (Li2Ni2O4, a DFT+U insulator) and x = 0.5 (LiNi2O4,
Ni3+/Ni4+, the metallic-prone delithiated case) with every requested protocol, exactly as ``nmcml.label`` runs it
(real pw.x, the protocol YAML, the offline pseudopotentials), and once with the reference settings:
family cutoffs x ``--reference-cutoff-scale``, ``--reference-k`` Å^-1, cold smearing 0.01 Ry, conv_thr 1e-10 Ry/atom.

Errors per protocol and cell: |ΔE| in meV/atom, force RMS over all Cartesian components and max |ΔF| in meV/Å,
max |Δσ| in GPa, and the wall time of the label (the LabelWorkChain, in-process) and of pw.x. Printed as JSON.

``--reference-protocol fast`` uses a protocol's labels as the reference instead (what fitted a loaded 2-core
machine: see docs/labelling.md). ``--reuse old.json`` takes labels already computed by an earlier run of this script
(same cell, same protocol) instead of recomputing them, and says so in the output.

Usage: ``python benchmarks/label_convergence.py [--protocols plumbing demo fast] [--reference-k 0.3]
[--reference-protocol NAME] [--cells x1.0 x0.5] [--profile NAME] [--json out.json] [--reuse old.json]``.
``moderate``/``precise`` are accepted, but on an 8-atom cell their k-meshes (0.25/0.15 Å^-1) are denser than any
reference affordable on a 2-core machine; run them with a denser reference.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings

os.environ.setdefault('OMP_NUM_THREADS', '1')
os.environ.setdefault('OMPI_ALLOW_RUN_AS_ROOT', '1')
os.environ.setdefault('OMPI_ALLOW_RUN_AS_ROOT_CONFIRM', '1')

GPA_PER_EV_A3 = 160.21766208
CELLS = {'x1.0': 1.0, 'x0.5': 0.5}


def cell(x_li: float):
    """The demo's 8-site LiNiO2-type cell at ``x_li``, rattled by 0.05 Å (fixed seeds): the builder's moments."""
    from aiida_nmcml import structures

    with warnings.catch_warnings():
        warnings.simplefilter('ignore', structures.NmcStructureWarning)
        atoms = structures.build_nmc(8, x_li=x_li, seed=0, composition={'Ni': 1.0})
    atoms.rattle(stdev=0.05, seed=1)
    return structures.to_structure_data(atoms)


def label(codes, structure, protocol: str, overrides: dict) -> dict:
    from aiida import orm
    from aiida.engine import run_get_node

    from aiida_nmcml.workflows.label import LabelWorkChain

    overrides = {**overrides, 'qe': {'pseudo_family': codes['pseudo_family'], **overrides.get('qe', {})}}
    builder = LabelWorkChain.get_builder_from_protocol(
        codes['pw'], {'cell': structure}, engine='qe', protocol=protocol, overrides=overrides
    )
    start = time.perf_counter()
    outputs, node = run_get_node(builder)
    wall = time.perf_counter() - start
    if not node.is_finished_ok:
        return {'failed': f'exit {node.exit_status}: {node.exit_message}', 'wall_s': round(wall, 1)}
    (frame,) = outputs['labelled'].get_frames()
    calcs = [n for n in node.called_descendants if isinstance(n, orm.CalcJobNode) and n.is_finished_ok]
    calc = max(calcs, key=lambda n: n.ctime)
    parameters = calc.outputs.output_parameters.get_dict()
    system = calc.inputs.parameters['SYSTEM']
    return {
        'energy': float(frame.info['REF_energy']),
        'forces': frame.arrays['REF_forces'].tolist(),
        'stress': frame.info['REF_stress'].tolist(),
        'natoms': len(frame),
        'total_magnetization': float(frame.info['dft_total_magnetization']),
        'kpoints_mesh': calc.inputs.kpoints.get_kpoints_mesh()[0],
        'ecutwfc': system['ecutwfc'],
        'ecutrho': system['ecutrho'],
        'smearing': f'{system.get("smearing")} {system.get("degauss")} Ry',
        'scf_iterations': parameters.get('scf_iterations'),
        'wall_s': round(wall, 1),
        'pw_wall_s': round(float(parameters['wall_time_seconds']), 1),
        'pw_cpu_s': pw_cpu_seconds(calc),
        'calculation_uuid': calc.uuid,
    }


def pw_cpu_seconds(calc) -> float | None:
    """CPU seconds pw.x reports (``PWSCF : 1m31.20s CPU``): on a loaded machine the wall time says little."""
    import re

    text = calc.outputs.retrieved.base.repository.get_object_content('aiida.out')
    match = re.search(r'PWSCF\s*:\s*(?:(\d+)h\s*)?(?:(\d+)m\s*)?([\d.]+)s CPU', text)
    if match is None:
        return None
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return round(3600 * hours + 60 * minutes + seconds, 1)


def cpu_of_energy(energy: float) -> float | None:
    """pw.x CPU seconds of the PwCalculation (in this profile) whose energy is ``energy`` (rows reused from a run that
    did not record them)."""
    from aiida import orm

    query = orm.QueryBuilder().append(orm.CalcJobNode, tag='calc', project='*', filters={'attributes.exit_status': 0})
    query.append(
        orm.Dict, with_incoming='calc', edge_filters={'label': 'output_parameters'}, project='attributes.energy'
    )
    for calc, value in query.iterall():
        if value is not None and abs(float(value) - energy) < 1e-6:
            return pw_cpu_seconds(calc)
    return None


def errors(row: dict, reference: dict) -> dict:
    import numpy as np

    if 'failed' in row or 'failed' in reference:
        return {}
    df = (np.asarray(row['forces']) - np.asarray(reference['forces'])) * 1000.0
    ds = (np.asarray(row['stress']) - np.asarray(reference['stress'])) * GPA_PER_EV_A3
    return {
        'energy_mev_per_atom': round(abs(row['energy'] - reference['energy']) / row['natoms'] * 1000.0, 2),
        'force_rms_mev_per_a': round(float(np.sqrt(np.mean(df**2))), 1),
        'force_max_mev_per_a': round(float(np.abs(df).max()), 1),
        'stress_max_gpa': round(float(np.abs(ds).max()), 3),
    }


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--protocols', nargs='*', default=['plumbing', 'demo', 'fast'])
    parser.add_argument('--cells', nargs='+', default=list(CELLS), choices=list(CELLS))
    parser.add_argument('--reference-k', type=float, default=0.3, help='k-point distance (Å^-1) of the reference')
    parser.add_argument('--reference-cutoff-scale', type=float, default=1.2)
    parser.add_argument('--reference-protocol', default=None, help='use this protocol as the reference')
    parser.add_argument('--reference-base', default='moderate', help='protocol the reference overrides apply to')
    parser.add_argument(
        '--reference-overrides', default=None, help='JSON label overrides of the reference (replace the defaults)'
    )
    parser.add_argument(
        '--variants',
        default=None,
        help='JSON {name: {"base": protocol, "overrides": {...}}}: extra rows (a k-point or cutoff series); '
        'with --reference-variant NAME one of them is the reference',
    )
    parser.add_argument('--reference-variant', default=None, help='name of the variant used as the reference')
    parser.add_argument('--reuse', default=None, help='JSON of an earlier run: reuse its labels (same cell+protocol)')
    parser.add_argument(
        '--reuse-reference', action='store_true', help="also reuse the earlier run's reference (same settings)"
    )
    parser.add_argument('--profile', default=None)
    parser.add_argument('--json', default=None, help='also write the result here (updated after every label)')
    args = parser.parse_args()

    from aiida import load_profile
    from aiida.manage.caching import disable_caching

    load_profile(args.profile, allow_switch=True)
    from aiida_nmcml.setup import ensure_environment

    codes = ensure_environment()
    reference_overrides = {
        'qe': {
            'cutoff_scale': args.reference_cutoff_scale,
            'ecutwfc': None,
            'ecutrho': None,
            'kpoints_distance': args.reference_k,
            'conv_thr_per_atom': 1e-10,
            'system': {'occupations': 'smearing', 'smearing': 'cold', 'degauss': 0.01},
            'options': {'resources': {'num_machines': 1, 'num_mpiprocs_per_machine': 1}},
        }
    }
    if args.reference_overrides:
        reference_overrides = json.loads(args.reference_overrides)
    variants = json.loads(args.variants) if args.variants else {}
    if args.reference_variant and args.reference_variant not in variants:
        parser.error(f'--reference-variant {args.reference_variant!r} is not one of --variants {sorted(variants)}')
    result = {
        'cell': 'LiNiO2-type 8-site cell (the demo cells): x=1 Li2Ni2O4, x=0.5 LiNi2O4; rattled 0.05 Å',
        'dft': 'pw.x 6.7, PBEsol+U (Ni 6.2 eV), offline pslibrary US family, 1 MPI rank',
        'variants': variants,
        'reference': {'variant': args.reference_variant}
        if args.reference_variant
        else {'protocol': args.reference_protocol}
        if args.reference_protocol
        else {'base': args.reference_base, 'overrides': reference_overrides}
        if args.reference_overrides
        else {
            'cutoff_scale': args.reference_cutoff_scale,
            'kpoints_distance': args.reference_k,
            'smearing': 'cold 0.01 Ry',
            'conv_thr_per_atom': 1e-10,
        },
        'cpu_count': os.cpu_count(),
        'load_average_at_start': list(os.getloadavg()),
        'rows': {},
        'raw': {},
    }

    def dump():
        if args.json:
            with open(args.json, 'w') as handle:
                json.dump(result, handle, indent=1)

    previous = {}
    if args.reuse:
        with open(args.reuse) as handle:
            previous = json.load(handle).get('raw', {})
    reused = result.setdefault('reused_from_earlier_run', [])

    def run(key, structure, protocol, overrides, name=None):
        name = name or protocol
        row = previous.get(key, {}).get(name)
        if row and 'failed' not in row and (not overrides or args.reuse_reference):
            reused.append(f'{key}/{name}')
            if row.get('pw_cpu_s') is None:  # rows of an earlier version of this script: find the calculation
                row = {**row, 'pw_cpu_s': cpu_of_energy(row['energy'])}
            return row
        return label(codes, structure, protocol, overrides)

    with disable_caching():
        for key in args.cells:
            structure = cell(CELLS[key])
            raw = result['raw'].setdefault(key, {})
            # cheap protocols first, so a partial run still says something; the reference last
            for protocol in args.protocols:
                raw[protocol] = run(key, structure, protocol, {})
                dump()
            for name, variant in variants.items():
                raw[name] = run(key, structure, variant['base'], variant.get('overrides', {}), name)
                dump()
            if args.reference_variant:
                raw['reference'] = raw[args.reference_variant]
            elif args.reference_protocol:
                raw['reference'] = raw.get(args.reference_protocol) or run(key, structure, args.reference_protocol, {})
            else:
                raw['reference'] = run(key, structure, args.reference_base, reference_overrides, 'reference')
            for protocol in [*args.protocols, *(v for v in variants if v != args.reference_variant)]:
                row = raw[protocol]
                result['rows'].setdefault(protocol, {})[key] = {
                    **errors(row, raw['reference']),
                    **{k: row.get(k) for k in ('kpoints_mesh', 'ecutwfc', 'ecutrho', 'smearing', 'wall_s')},
                    'pw_wall_s': row.get('pw_wall_s'),
                    'pw_cpu_s': row.get('pw_cpu_s'),
                    'total_magnetization': row.get('total_magnetization'),
                    **({'failed': row['failed']} if 'failed' in row else {}),
                }
            described = ('kpoints_mesh', 'ecutwfc', 'ecutrho', 'smearing', 'wall_s', 'pw_wall_s', 'pw_cpu_s')
            reference_row = {k: raw['reference'].get(k) for k in described}
            reference_row['total_magnetization'] = raw['reference'].get('total_magnetization')
            result['rows'].setdefault('reference', {})[key] = reference_row
            dump()
    result['load_average_at_end'] = list(os.getloadavg())
    summary = {k: v for k, v in result.items() if k != 'raw'}
    print(json.dumps(summary, indent=1))
    dump()
    return result


if __name__ == '__main__':
    main()

"""The demo: every stage that exists today, end to end, on this machine, in a few minutes.

    python examples/demo_pipeline.py [--foundation mace-mp-0-small | --foundation path/to/file.model]

1. structures — LiNiO2-type cells (8 atoms, x = 1 and 0.5) and an NMC811 supercell from ``aiida_nmcml.structures``;
2. ``nmcml.label`` — DFT+U labels with pw.x (demo protocol: a 4x2x2 k-mesh, the family's density cutoff, cold
   smearing; forces checked against a converged reference by ``benchmarks/label_convergence.py``, docs/labelling.md);
3. ``nmcml.finetune`` — a committee of two MACE models fine-tuned from a foundation model. Offline (CI, air-gapped
   machines) the foundation model is a small MACE distilled from CHGNet (``nmcml.distill``, protocol demo; built once
   per machine, then reused; docs/foundation.md) — grounded in a universal potential, not DFT;
4. ``nmcml.md`` — NVT MD of NMC811 with the committee's force deviation monitored on the fly;
5. ``nmcml.search`` — a genetic search for the lowest-energy Li/vacancy ordering at x = 0.75.

Everything is submitted to the daemon and collected in the group ``nmcml/demo/<timestamp>``; inspect it with
``verdi process list -a`` and ``verdi process report <pk>``. Numbers printed here are demo-grade: three small DFT cells
(their forces carry physics, their energies are not converged to meV/atom) and a demo-grade distilled foundation
model, never to be quoted.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
import warnings


def wait(node, what: str, poll: float = 3.0):
    """Block until ``node`` terminates, printing its state; raise if it failed (the report says why)."""
    start = time.time()
    last = None
    while not node.is_terminated:
        state = node.process_status or node.process_state.value
        if state != last:
            print(f'  {what} <{node.pk}>: {state}', flush=True)
            last = state
        time.sleep(poll)
    print(f'  {what} <{node.pk}>: finished with exit status {node.exit_status} after {time.time() - start:.0f} s')
    if not node.is_finished_ok:
        raise SystemExit(f'{what} failed: {node.exit_message}; see `verdi process report {node.pk}`')
    return node


def foundation(args):
    from aiida_nmcml.data.model import resolve_foundation_model

    if args.foundation:
        return resolve_foundation_model(args.foundation)
    from aiida_nmcml.workflows.distill import get_or_distill_foundation

    # Offline: a MACE distilled from CHGNet (weights in its wheel), built once per machine and reused (nmcml.distill).
    return get_or_distill_foundation('demo', echo=lambda message: print(f'  {message}'))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--foundation', help='foundation model name (online) or .model file (offline)')
    parser.add_argument('--md-steps', type=int, default=200)
    args = parser.parse_args(argv)

    from aiida import load_profile, orm
    from aiida.engine import submit
    from aiida.plugins import WorkflowFactory

    from aiida_nmcml import structures

    load_profile()
    codes = {key: orm.load_code(f'nmcml-{key}@localhost') for key in ('pw', 'mace-train', 'engine')}
    stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
    group, _ = orm.Group.collection.get_or_create(f'nmcml/demo/{stamp}')
    print(f'demo campaign: group {group.label}')

    def keep(node):
        group.add_nodes([node])
        return node

    print('1. structures')
    cells = {}
    # 8-site cells: with the demo protocol's k-mesh by density (4x2x2 here) their forces are within the issue-15
    # target of a converged reference; 4-atom cells at Gamma were off by ~1 eV/Å
    for i, (x_li, rattle) in enumerate([(1.0, 0.03), (1.0, 0.06), (0.5, 0.03)]):
        with warnings.catch_warnings():  # LiNiO2-type on purpose: NMC811 needs 10 TM sites, too big for the demo DFT
            warnings.simplefilter('ignore', structures.NmcStructureWarning)
            atoms = structures.build_nmc(8, x_li=x_li, seed=i, composition={'Ni': 1.0})
        atoms.rattle(stdev=rattle, seed=i)
        cells[f'cell_{i}'] = structures.to_structure_data(atoms)
    nmc = structures.to_structure_data(structures.build_nmc(40, x_li=1.0, seed=0))
    print(f'  {len(cells)} LiNiO2-type cells for DFT, NMC811 supercell {nmc.get_formula()} for MD')

    print('2. DFT+U labelling (nmcml.label, protocol demo)')
    Label = WorkflowFactory('nmcml.label')
    label = keep(submit(Label.get_builder_from_protocol(codes['pw'], structures=cells, engine='qe', protocol='demo')))
    wait(label, 'LabelWorkChain')
    labelled = label.outputs.labelled
    print(f'  labelled {labelled.num_frames} frames; failures: {label.outputs.failures.get_dict() or "none"}')

    print('3. fine-tuning a committee (nmcml.finetune, protocol demo)')
    model = foundation(args)
    Finetune = WorkflowFactory('nmcml.finetune')
    builder = Finetune.get_builder_from_protocol(
        codes['mace-train'],
        labelled,
        foundation_model=model,
        evaluate_code=codes['engine'],
        protocol='demo',
        overrides={'committee_size': 2},
    )
    finetune = keep(submit(builder))
    wait(finetune, 'FinetuneWorkChain')
    committee = dict(finetune.outputs.models)
    metrics = finetune.outputs.metrics.get_dict()
    print(f'  committee of {len(committee)}; validation metrics: {metrics}')

    print('4. MD with on-the-fly committee uncertainty (nmcml.md.base: restarts a killed run, protocol demo)')
    Md = WorkflowFactory('nmcml.md.base')
    md_builder = Md.get_builder_from_protocol(
        codes['engine'], nmc, models=committee, protocol='demo', overrides={'parameters': {'steps': args.md_steps}}
    )
    md = keep(submit(md_builder))
    while not md.is_terminated:
        time.sleep(3)
    summary = md.outputs.output_parameters.get_dict() if 'output_parameters' in md.outputs else {}
    print(f'  MD exit status {md.exit_status} ({md.exit_message or "ok"}); summary: {summary}')

    print('5. genetic search for Li/vacancy orderings (nmcml.search, protocol demo)')
    Search = WorkflowFactory('nmcml.search')
    search = keep(submit(Search.get_builder_from_protocol(codes['engine'], models=committee, protocol='demo')))
    wait(search, 'SearchWorkChain')
    print(f'  {search.outputs.summary.get_dict()}')

    print(f'done: `verdi group show {group.label}` lists every process of this demo')
    return 0


if __name__ == '__main__':
    sys.exit(main())

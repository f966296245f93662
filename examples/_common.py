"""What every example script shares: the set-up's codes, inputs from earlier runs, submitting and waiting.

Each example has a ``build(...)`` that returns a protocol builder (nothing is submitted; tests/test_examples.py calls
it) and a ``main()`` that loads the profile, builds, submits to the daemon and waits. Inputs a stage needs from an
earlier stage (a TrainingSet, a committee) are given by pk (``--training-set``, ``--committee``) or, by default, taken
from the newest finished run of that stage in the profile — after `bash scripts/run_demo.sh` those are the demo
campaign's.
"""

from __future__ import annotations

import argparse
import time


def parser(doc: str) -> argparse.ArgumentParser:
    """The options every example has: where its inputs come from, and whether to wait."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--committee', help='comma-separated MaceModel pks (default: the newest fine-tuned committee)')
    p.add_argument('--training-set', help='TrainingSet pk (default: the newest labelled set)')
    p.add_argument('--dry-run', action='store_true', help='build the builder and print it; submit nothing')
    p.add_argument('--no-wait', action='store_true', help='submit and return (follow with `verdi process list`)')
    return p


def codes() -> dict:
    """The codes ``aiida-nmcml setup`` made on localhost, keyed as ``ensure_environment`` keys them."""
    from aiida import orm

    labels = {'pw': 'nmcml-pw', 'neb': 'nmcml-neb', 'mace_train': 'nmcml-mace-train', 'engine': 'nmcml-engine'}
    return {key: orm.load_code(f'{label}@localhost') for key, label in labels.items()}


def _newest_output(process_label: str, port: str):
    """The output ``port`` (a node or a namespace dict) of the newest process ``process_label`` that finished ok."""
    from aiida import orm

    qb = orm.QueryBuilder().append(orm.WorkflowNode, filters={'attributes.process_label': process_label}, project='*')
    qb.order_by({orm.WorkflowNode: {'ctime': 'desc'}})
    for (node,) in qb.iterall():
        if node.is_finished_ok and port in node.outputs:
            out = node.outputs[port]
            return dict(out) if hasattr(out, 'keys') else out
    raise SystemExit(f'no finished {process_label} with output {port!r} in this profile: give it by pk')


def committee(spec: str | None) -> dict:
    """``--committee 12,13`` or the newest committee: the active-learning one if any, else the fine-tuned one."""
    from aiida import orm

    if spec:
        return {f'member_{i}': orm.load_node(pk.strip()) for i, pk in enumerate(spec.split(','))}
    try:
        return _newest_output('ActiveLearningWorkChain', 'committee')
    except SystemExit:
        return _newest_output('FinetuneWorkChain', 'models')


def training_set(spec: str | None):
    """``--training-set PK`` or the newest TrainingSet that ``nmcml.label`` produced."""
    from aiida import orm

    return orm.load_node(spec) if spec else _newest_output('LabelWorkChain', 'labelled')


def run(builder, args, what: str, poll: float = 5.0):
    """Submit ``builder`` to the daemon (or only print it with ``--dry-run``) and, unless ``--no-wait``, wait for it."""
    if args.dry_run:
        print(builder)
        return None
    from aiida.engine import submit

    node = submit(builder)
    print(f'submitted {what} <{node.pk}>; `verdi process status {node.pk}` shows its children')
    if args.no_wait:
        return node
    start = time.time()
    while not node.is_terminated:
        time.sleep(poll)
    print(f'{what} <{node.pk}> finished with exit status {node.exit_status} after {time.time() - start:.0f} s')
    if not node.is_finished_ok:
        raise SystemExit(f'{what} failed: {node.exit_message}; see `verdi process report {node.pk}`')
    return node

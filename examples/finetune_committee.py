"""Fine-tuning: a committee of two MACE models fine-tuned from the foundation model on a DFT TrainingSet.

    python examples/finetune_committee.py [--training-set PK] [--foundation NAME_OR_FILE] [--dry-run] [--no-wait]

Runs ``nmcml.finetune`` (docs/finetuning.md) with the ``demo`` protocol: two members with different seeds, then
``nmcml.evaluate`` for the committee's spread and its calibration on held-out frames. The TrainingSet defaults to the
newest one labelled in this profile (examples/label_dft.py, or the demo campaign); the foundation model to the MACE
distilled offline from CHGNet (``aiida-nmcml foundation distill --protocol demo``, once per machine). In the demo
campaign this stage took 45 s (load 3–10) to 142 s (load ~12) on 2 shared cores (docs/tutorial.md).
"""

from __future__ import annotations

import sys

import _common


def build(codes: dict, training_set, foundation_model, protocol: str = 'demo', overrides: dict | None = None):
    """A FinetuneWorkChain builder: committee of two, evaluated with the engine code."""
    from aiida_nmcml.workflows.finetune import FinetuneWorkChain

    return FinetuneWorkChain.get_builder_from_protocol(
        codes['mace_train'],
        training_set,
        foundation_model=foundation_model,
        evaluate_code=codes['engine'],
        protocol=protocol,
        overrides={'committee_size': 2, **(overrides or {})},
    )


def main(argv=None) -> int:
    p = _common.parser(__doc__)
    p.add_argument('--foundation', help='foundation model name (online) or .model file; default: the distilled one')
    args = p.parse_args(argv)
    from aiida import load_profile

    load_profile()
    from aiida_nmcml.data.model import resolve_foundation_model
    from aiida_nmcml.workflows.distill import get_or_distill_foundation

    foundation = resolve_foundation_model(args.foundation) if args.foundation else get_or_distill_foundation('demo')
    builder = build(_common.codes(), _common.training_set(args.training_set), foundation)
    node = _common.run(builder, args, 'FinetuneWorkChain')
    if node is not None:
        print(f'committee: {[m.pk for m in node.outputs.models.values()]}; metrics {node.outputs.metrics.get_dict()}')
    return 0


if __name__ == '__main__':
    sys.exit(main())

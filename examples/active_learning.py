"""Active learning: one iteration of explore (committee MD) → select in the trust band → label with pw.x → retrain.

    python examples/active_learning.py [--committee PK,PK] [--training-set PK] [--iterations N] [--foundation M]

Runs ``nmcml.active_learning`` (docs/active_learning.md) with the ``demo`` protocol: MD at 300 K of the protocol's
exploration cells with the committee, frames whose committee force deviation is inside the trust band selected by
farthest-point sampling (capped), labelled with the same DFT settings as the TrainingSet (``demo``, so the set stays
consistent), and the committee fine-tuned again on the grown set; a held-out frame per condition gives the learning
curve. Committee and TrainingSet default to the newest in this profile (the demo campaign's). One iteration with one
selected frame, as in the demo campaign: 6 min 4 s in the demo campaign at load 5–10 on 2 shared
cores, 4 min 39 s of it the three pw.x labels (docs/tutorial.md).
"""

from __future__ import annotations

import sys

import _common


def build(
    codes: dict, committee: dict, training_set, foundation_model, iterations: int = 1, protocol='demo', overrides=None
):
    """An ActiveLearningWorkChain builder: ``iterations`` rounds, one selected frame each, demo DFT; each retraining
    starts again from ``foundation_model`` on the grown set (the protocol's ``retrain_from: foundation``)."""
    from aiida_nmcml.workflows.active_learning import ActiveLearningWorkChain

    overrides = {
        'label_protocol': 'demo',  # the DFT settings of the TrainingSet: a mixed set is refused
        'parameters': {'max_iterations': iterations, 'max_selected': 1},
        **(overrides or {}),
    }
    return ActiveLearningWorkChain.get_builder_from_protocol(
        engine_code=codes['engine'],
        dft_code=codes['pw'],
        train_code=codes['mace_train'],
        committee=committee,
        training_set=training_set,
        foundation_model=foundation_model,
        protocol=protocol,
        overrides=overrides,
    )


def main(argv=None) -> int:
    p = _common.parser(__doc__)
    p.add_argument('--iterations', type=int, default=1)
    p.add_argument('--foundation', help='foundation model name (online) or .model file; default: the distilled one')
    args = p.parse_args(argv)
    from aiida import load_profile

    load_profile()
    from aiida_nmcml.data.model import resolve_foundation_model
    from aiida_nmcml.workflows.distill import get_or_distill_foundation

    foundation = resolve_foundation_model(args.foundation) if args.foundation else get_or_distill_foundation('demo')
    committee, training_set = _common.committee(args.committee), _common.training_set(args.training_set)
    builder = build(_common.codes(), committee, training_set, foundation, args.iterations)
    node = _common.run(builder, args, 'ActiveLearningWorkChain')
    if node is not None:
        print(f'final committee: {[m.pk for m in node.outputs.committee.values()]}')
    return 0


if __name__ == '__main__':
    sys.exit(main())

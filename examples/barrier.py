"""Barrier: a Li oxygen-dumbbell hop (ODH) by CI-NEB with the committee, its spread along the path, zero-shot CHGNet.

    python examples/barrier.py [--committee PK,PK] [--dft-check] [--dry-run] [--no-wait]

Runs ``nmcml.barrier`` (docs/barriers.md) with the ``demo`` protocol: one ODH in a 16-site LiNiO2 cell, one image,
a loose model CI-NEB (``nmcml.neb``) with the committee's spread per image, and the same path evaluated zero-shot by
CHGNet. ``--dft-check`` adds pw.x single points on the model's path (one per image and end point). The cell is far
too small for a physical hop: plumbing, not a barrier to quote. 62 s in the demo campaign at load 3–6 on 2 shared
cores, without the DFT check (docs/tutorial.md).
"""

from __future__ import annotations

import sys

import _common


def build(codes: dict, committee: dict, dft_check: bool = False, protocol: str = 'demo', overrides: dict | None = None):
    """A BarrierWorkChain builder; with ``dft_check`` the NEB images are also labelled by pw.x."""
    from aiida_nmcml.workflows.barrier import BarrierWorkChain

    return BarrierWorkChain.get_builder_from_protocol(
        codes['engine'],
        committee,
        protocol=protocol,
        overrides=overrides,
        dft_code=codes['pw'] if dft_check else None,
    )


def main(argv=None) -> int:
    p = _common.parser(__doc__)
    p.add_argument('--dft-check', action='store_true', help='pw.x single points on the model NEB path')
    args = p.parse_args(argv)
    from aiida import load_profile

    load_profile()
    builder = build(_common.codes(), _common.committee(args.committee), dft_check=args.dft_check)
    node = _common.run(builder, args, 'BarrierWorkChain')
    if node is not None and 'table' in node.outputs:
        print(node.outputs.table.get_dict())
    return 0


if __name__ == '__main__':
    sys.exit(main())

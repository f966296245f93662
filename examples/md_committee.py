"""MD: NVT molecular dynamics of a 40-atom NMC811 cell with the committee's force deviation monitored on the fly.

    python examples/md_committee.py [--committee PK,PK] [--steps N] [--dry-run] [--no-wait]

Runs ``nmcml.md.base`` (docs/md.md, docs/restarts.md) with the ``demo`` protocol (CPU, float64, 200 steps by
default): member 0 drives the MD, the others are evaluated along it; a run that leaves the trust band stops with the
frames exposed, a run killed at its walltime continues from its checkpoint. The committee defaults to the newest one
in this profile. Not timed on its own; see docs/tutorial.md for the MD stages of the demo campaign.
"""

from __future__ import annotations

import sys

import _common


def build(codes: dict, committee: dict, steps: int = 200, protocol: str = 'demo', overrides: dict | None = None):
    """An MdBaseWorkChain builder on a seeded NMC811 cell at x = 1."""
    from aiida_nmcml import structures
    from aiida_nmcml.workflows.md_base import MdBaseWorkChain

    cell = structures.to_structure_data(structures.build_nmc(40, x_li=1.0, seed=0))
    overrides = {'parameters': {'steps': steps}, **(overrides or {})}
    return MdBaseWorkChain.get_builder_from_protocol(
        codes['engine'], cell, models=committee, protocol=protocol, overrides=overrides
    )


def main(argv=None) -> int:
    p = _common.parser(__doc__)
    p.add_argument('--steps', type=int, default=200)
    args = p.parse_args(argv)
    from aiida import load_profile

    load_profile()
    node = _common.run(build(_common.codes(), _common.committee(args.committee), args.steps), args, 'MdBaseWorkChain')
    if node is not None and 'output_parameters' in node.outputs:
        print(node.outputs.output_parameters.get_dict())
    return 0


if __name__ == '__main__':
    sys.exit(main())

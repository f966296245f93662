"""Search: a genetic search for the lowest-energy Li/vacancy ordering per Li content, ranked by the committee.

    python examples/genetic_search.py [--committee PK,PK] [--verify] [--dry-run] [--no-wait]

Runs ``nmcml.search`` (docs/search.md) with the ``demo`` protocol: one GA per Li content (x = 0.5, 0.4 on a 40-atom
NMC811 lattice) plus the end members for the convex hull, candidates ranked by the committee's energy. With
``--verify`` the best candidate per content is also labelled by pw.x (an 8-site LiNiO2-type lattice then, as the demo
campaign does: 40 atoms are too many for demo DFT). The demo campaign's search
(8-site cell, no DFT) took 22–27 s at load 3–10 on 2 shared cores; the 40-atom default here is not timed.
"""

from __future__ import annotations

import sys

import _common


def build(codes: dict, committee: dict, verify: bool = False, protocol: str = 'demo', overrides: dict | None = None):
    """A SearchWorkChain builder; ``verify`` adds the DFT check of one candidate per content on the DFT-sized cell."""
    from aiida_nmcml.workflows.search import SearchWorkChain

    overrides = dict(overrides or {})
    if verify:
        overrides = {'lattice': {'supercell': 8, 'composition': {'Ni': 1.0}}, 'n_verify': 1, **overrides}
    return SearchWorkChain.get_builder_from_protocol(
        codes['engine'],
        models=committee,
        protocol=protocol,
        overrides=overrides,
        dft_code=codes['pw'] if verify else None,
    )


def main(argv=None) -> int:
    p = _common.parser(__doc__)
    p.add_argument('--verify', action='store_true', help='label the best candidate per content with pw.x')
    args = p.parse_args(argv)
    from aiida import load_profile

    load_profile()
    builder = build(_common.codes(), _common.committee(args.committee), verify=args.verify)
    node = _common.run(builder, args, 'SearchWorkChain')
    if node is not None:
        print(node.outputs.summary.get_dict())
    return 0


if __name__ == '__main__':
    sys.exit(main())

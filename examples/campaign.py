"""Campaign: the whole study in one work chain — initial DFT set, committee, search, active learning, diffusion,
barriers and the HTML report — with the ``demo`` protocol, from Python.

    python examples/campaign.py [--foundation NAME_OR_FILE] [--name NAME] [--dry-run] [--no-wait]

The same as ``aiida-nmcml campaign launch --protocol demo --daemon --wait`` (docs/campaign.md, followed step by step
in docs/tutorial.md): ``nmcml.campaign`` with every stage at its demo protocol, all nodes in the groups
``<name>/...``, the report's path printed at the end. The foundation model defaults to the MACE distilled offline
from CHGNet (made once per machine). The measured wall time on 2 shared CPU cores is in the README and
docs/campaign.md.
"""

from __future__ import annotations

import sys

import _common


def build(codes: dict, foundation_model=None, name: str | None = None, protocol: str = 'demo', overrides=None):
    """A CampaignWorkChain builder with the set-up's codes."""
    from aiida_nmcml.workflows.campaign import CampaignWorkChain

    return CampaignWorkChain.get_builder_from_protocol(
        {'dft': codes['pw'], 'train': codes['mace_train'], 'engine': codes['engine'], 'neb': codes['neb']},
        engine='qe',
        protocol=protocol,
        overrides=overrides,
        foundation_model=foundation_model,
        name=name,
    )


def main(argv=None) -> int:
    p = _common.parser(__doc__)
    p.add_argument('--foundation', help='foundation model name (online) or .model file; default: the distilled one')
    p.add_argument('--name', help='campaign name and group prefix (default nmcml/campaign/demo/<time>)')
    args = p.parse_args(argv)
    from aiida import load_profile

    load_profile()
    from aiida_nmcml.data.model import resolve_foundation_model
    from aiida_nmcml.workflows.distill import get_or_distill_foundation

    foundation = resolve_foundation_model(args.foundation) if args.foundation else get_or_distill_foundation('demo')
    node = _common.run(build(_common.codes(), foundation, args.name), args, 'CampaignWorkChain', poll=15.0)
    if node is not None:
        print(f'`aiida-nmcml campaign status {node.pk}`; `aiida-nmcml campaign report {node.pk} --open`')
    return 0


if __name__ == '__main__':
    sys.exit(main())

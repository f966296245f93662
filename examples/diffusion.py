"""Diffusion: Li tracer diffusion coefficients D*(T) of Li0.5 NMC811 from committee MD, with intervals and Ea.

    python examples/diffusion.py [--committee PK,PK] [--dry-run] [--no-wait]

Runs ``nmcml.diffusion`` (docs/diffusion.md) with the ``demo`` protocol: a 40-atom NMC811 cell at x = 0.5, 800 and
1000 K, two replicas each; anisotropic NPT equilibration then Bussi NVT production (2 ps), runs that leave the trust
band or show TM migration flagged and excluded, D* from the Li MSD relative to the framework with an interval from
the correlated-MSD covariance, an Arrhenius fit, and the same grid driven by another member as a model check. The
committee defaults to the newest in this profile. Demo numbers (2 ps at 800–1000 K of 40 atoms) are never to be
quoted. In the demo campaign (LiNiO2-type cells) it took 91 s and fitted no D:
every run left the committee's domain at the first production step (docs/campaign.md, "Wall time of the demo").
"""

from __future__ import annotations

import sys

import _common


def build(codes: dict, committee: dict, protocol: str = 'demo', overrides: dict | None = None):
    """A DiffusionWorkChain builder on the protocol's grid."""
    from aiida_nmcml.workflows.diffusion_chain import DiffusionWorkChain

    return DiffusionWorkChain.get_builder_from_protocol(
        codes['engine'], committee, protocol=protocol, overrides=overrides
    )


def main(argv=None) -> int:
    args = _common.parser(__doc__).parse_args(argv)
    from aiida import load_profile

    load_profile()
    node = _common.run(build(_common.codes(), _common.committee(args.committee)), args, 'DiffusionWorkChain')
    if node is not None:
        for key, fit in node.outputs.arrhenius.items():
            print(key, fit.get_dict())
    return 0


if __name__ == '__main__':
    sys.exit(main())

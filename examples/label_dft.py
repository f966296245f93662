"""Labelling: DFT+U energies, forces and stresses of two rattled 8-atom LiNiO2-type cells (x = 1, 0.5) with pw.x.

    python examples/label_dft.py [--protocol demo|fast|moderate|precise] [--dry-run] [--no-wait]

Runs ``nmcml.label`` (docs/labelling.md) with the ``demo`` protocol: 4x2x2 k-points, the pseudopotential family's
density cutoff, Hubbard U on Ni, spin-polarised, one pw.x per cell. In the demo campaign (docs/tutorial.md) such a
label took 73-129 s of pw.x CPU, 8-13 min of wall time with four at once at load ~12 on 2 shared cores; the output
``labelled`` is a TrainingSet that examples/finetune_committee.py picks up.
"""

from __future__ import annotations

import sys

import _common


def build(codes: dict, protocol: str = 'demo', overrides: dict | None = None):
    """A LabelWorkChain builder for two seeded, rattled LiNiO2-type cells (the demo's initial-set cells)."""
    import warnings

    from aiida_nmcml import structures
    from aiida_nmcml.workflows.label import LabelWorkChain

    cells = {}
    for i, x_li in enumerate((1.0, 0.5)):
        with warnings.catch_warnings():  # LiNiO2-type on purpose: NMC811 needs 10 TM sites, too big for demo DFT
            warnings.simplefilter('ignore', structures.NmcStructureWarning)
            atoms = structures.build_nmc(8, x_li=x_li, seed=i, composition={'Ni': 1.0})
        atoms.rattle(stdev=0.04, seed=i)
        cells[f'x{i}'] = structures.to_structure_data(atoms)
    return LabelWorkChain.get_builder_from_protocol(
        codes['pw'], structures=cells, engine='qe', protocol=protocol, overrides=overrides
    )


def main(argv=None) -> int:
    p = _common.parser(__doc__)
    p.add_argument('--protocol', default='demo')
    args = p.parse_args(argv)
    from aiida import load_profile

    load_profile()
    node = _common.run(build(_common.codes(), protocol=args.protocol), args, 'LabelWorkChain')
    if node is not None and node.is_finished_ok:
        print(f'TrainingSet <{node.outputs.labelled.pk}>: {node.outputs.labelled.num_frames} frames')
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""Smoke test of the DFT stack: a spin-polarised SCF of 4-atom LiNiO2 with pw.x, submitted to the daemon.

Run after ``aiida-nmcml setup --daemon``::

    python examples/scf_linio2.py          # submits, waits, prints energy and magnetisation

It is also what the tests run against both the embedded (SQLite + ZeroMQ) and production (PostgreSQL + RabbitMQ)
profiles. The cutoffs are deliberately tiny (30/240 Ry, 2x2x2 k): seconds, not physics.
"""

from __future__ import annotations

import sys
import time


def build(codes: dict | None = None, hubbard: bool = False):
    """A PwBaseWorkChain builder for LiNiO2 (ferromagnetic start, Ni 1 µB)."""
    from aiida import orm
    from aiida_quantumespresso.common.types import SpinType
    from aiida_quantumespresso.workflows.pw.base import PwBaseWorkChain

    from aiida_nmcml.setup.codes import mpi_available
    from aiida_nmcml.structures import layered_parent

    codes = codes or {'pw': orm.load_code('nmcml-pw@localhost'), 'pseudo_family': 'nmcml-pbesol-us-offline'}
    structure = orm.StructureData(ase=layered_parent())
    overrides = {
        'pseudo_family': codes['pseudo_family'],
        'kpoints_distance': 0.6,
        'pw': {
            'parameters': {
                'SYSTEM': {'ecutwfc': 30.0, 'ecutrho': 240.0, 'smearing': 'gaussian', 'degauss': 0.01},
                'ELECTRONS': {'conv_thr': 1e-6, 'mixing_beta': 0.3},
            },
            'metadata': {
                'options': {
                    'resources': {'num_machines': 1, 'num_mpiprocs_per_machine': 1},
                    'max_wallclock_seconds': 600,
                }
            },
        },
    }
    builder = PwBaseWorkChain.get_builder_from_protocol(
        codes['pw'],
        structure,
        protocol='fast',
        overrides=overrides,
        spin_type=SpinType.COLLINEAR,
        initial_magnetic_moments={'Ni': 1.0, 'Li': 0.0, 'O': 0.0},
    )
    builder.pw.metadata.options.withmpi = mpi_available()
    return builder


def main() -> int:
    from aiida import load_profile
    from aiida.engine import submit

    load_profile()
    node = submit(build())
    print(f'submitted PwBaseWorkChain<{node.pk}>')
    while not node.is_terminated:
        time.sleep(2)
    print(f'exit status {node.exit_status}')
    if node.is_finished_ok:
        params = node.outputs.output_parameters.get_dict()
        print(f'energy {params["energy"]:.4f} eV, total magnetisation {params.get("total_magnetization")}')
    return 0 if node.is_finished_ok else 1


if __name__ == '__main__':
    sys.exit(main())

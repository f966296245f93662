"""The ``localhost`` computer (core.local + core.direct) every code of the embedded default runs on."""

from __future__ import annotations

import pathlib

LOCALHOST = 'localhost'
PREPEND = (
    '# OpenMPI refuses to run as root without these (containers, CI); harmless otherwise.\n'
    'export OMPI_ALLOW_RUN_AS_ROOT=1\n'
    'export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1\n'
    'export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}\n'
    '# Concurrent jobs on one machine: OpenMPI would pin every 1-rank job to core 0, and OpenBLAS would spawn a\n'
    '# thread per core in each job; both serialise the concurrent labelling the daemon sets up.\n'
    'export OMPI_MCA_hwloc_base_binding_policy=${OMPI_MCA_hwloc_base_binding_policy:-none}\n'
    'export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}\n'
)


def default_workdir() -> pathlib.Path:
    from aiida.manage.configuration import get_config, get_profile

    return pathlib.Path(get_config().dirpath) / 'scratch' / get_profile().name


def ensure_localhost(label: str = LOCALHOST, workdir: str | None = None):
    """Reuse ``label`` if it exists (e.g. made by ``verdi presto``), else create and configure it.

    Returns ``(computer, created)``.
    """
    from aiida import orm
    from aiida.common.exceptions import NotExistent

    try:
        computer = orm.load_computer(label)
        created = False
    except NotExistent:
        workdir = pathlib.Path(workdir or default_workdir())
        workdir.mkdir(parents=True, exist_ok=True)
        computer = orm.Computer(
            label=label,
            hostname='localhost',
            description='this machine (aiida-nmcml setup)',
            transport_type='core.local',
            scheduler_type='core.direct',
            workdir=str(workdir),
        ).store()
        computer.set_mpirun_command(['mpirun', '-np', '{tot_num_mpiprocs}'])
        computer.set_default_mpiprocs_per_machine(1)
        created = True
    if not computer.is_user_configured(orm.User.collection.get_default()):
        computer.configure(safe_interval=0.0)
    return computer, created

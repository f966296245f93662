"""Load on the production profile (PostgreSQL + RabbitMQ): 20 label work chains and 4 MD runs submitted at once
through the one-node SLURM over SSH, one daemon worker. All finish, nothing is lost (every work chain and calcjob
finished ok, every frame labelled) and nothing is duplicated (one pw.x job per frame, one MD job per run, every
SLURM job id once). The throughput is printed (``-s``) and noted in docs/hpc.md with the load of the machine.

On demand only (marker ``load``; ``.ci/run``'s production pass excludes it): ``NMCML_TEST_PROFILE=production pytest
tests/hpc/test_load.py -m load``; skipped, with that reason, on the embedded default.
"""

from __future__ import annotations

import collections
import os
import time

import pytest
from aiida import orm

PW = 'aiida.calculations:quantumespresso.pw'
MD = 'aiida.calculations:nmcml.md'
N_LABEL, N_MD, MD_STEPS = 20, 4, 60

# `load`: excluded from .ci/run (it alone would take a large share of CI's 40-minute budget: 7 min at load average
# 2-7 on the 2-core VM, docs/hpc.md §6); run it with
# `NMCML_TEST_PROFILE=production pytest -m load tests/hpc/test_load.py`.
pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.daemon, pytest.mark.production_only, pytest.mark.load]


def test_20_labels_and_4_md_at_once_on_the_production_profile(
    slurm_codes, model_node, started_daemon_client, aiida_profile
):
    from aiida.engine import submit

    from aiida_nmcml.setup.computer import scheduler_options
    from aiida_nmcml.structures import layered_parent
    from aiida_nmcml.workflows.label import LabelWorkChain
    from aiida_nmcml.workflows.md_base import MdBaseWorkChain

    assert aiida_profile.storage_backend == 'core.psql_dos' and aiida_profile.process_control_backend == 'core.rabbitmq'
    options = {'max_wallclock_seconds': 1800, **scheduler_options(slurm_codes['computer'])}
    builders = []
    for i in range(N_LABEL):
        atoms = layered_parent()  # 4 atoms, Gamma only, 30/240 Ry (plumbing): seconds of pw.x
        atoms.rattle(stdev=0.03, seed=100 + i)
        structure = orm.StructureData(ase=atoms)
        structure.base.attributes.set('nmcml_magmoms', [1.0 if s == 'Ni' else 0.0 for s in atoms.symbols])
        builders.append(
            LabelWorkChain.get_builder_from_protocol(
                slurm_codes['pw'],
                {'f0': structure},
                engine='qe',
                protocol='plumbing',
                overrides={'qe': {'pseudo_family': slurm_codes['pseudo_family'], 'options': options}},
            )
        )
    for i in range(N_MD):
        builders.append(
            MdBaseWorkChain.get_builder_from_protocol(
                slurm_codes['engine'],
                orm.StructureData(ase=layered_parent().repeat((2, 1, 1))),
                models=[model_node],
                protocol='demo',
                overrides={
                    'parameters': {'steps': MD_STEPS, 'checkpoint_stride': 20, 'trajectory_stride': 20, 'seed': i},
                    'metadata': {'options': options},
                },
            )
        )
    load_before = os.getloadavg()[0]
    start = time.monotonic()
    nodes = [submit(builder) for builder in builders]
    submitted = time.monotonic() - start
    finished_at = {}
    while len(finished_at) < len(nodes):
        # completeness, not speed, is asserted: 393 s at load average 2-7 on the 2-core VM, but at load 21-28 only
        # 16/24 had finished at 25 min (CPU starvation of the one daemon worker, no error; docs/hpc.md §6)
        assert time.monotonic() - start < 3600, f'{len(finished_at)}/{len(nodes)} finished in 60 min'
        for node in nodes:
            if node.pk not in finished_at and node.is_terminated:
                finished_at[node.pk] = time.monotonic() - start
        time.sleep(1)
    wall = max(finished_at.values())
    labels, mds = nodes[:N_LABEL], nodes[N_LABEL:]

    # nothing lost
    for node in nodes:
        assert node.is_finished_ok, (node.pk, node.process_label, node.exit_status, node.exit_message)
    descendants = [d for node in nodes for d in node.called_descendants]
    states = collections.Counter(d.process_state.value for d in descendants)
    assert set(states) == {'finished'}, states
    assert all(d.is_finished_ok for d in descendants if isinstance(d, orm.CalcJobNode))
    # nothing duplicated: one pw.x job per frame, one MD job per run, each SLURM job id once
    for label in labels:
        (calc,) = [d for d in label.called_descendants if d.process_type == PW]
        (frame,) = label.outputs.labelled.get_frames()
        assert frame.info['source_uuid'] == calc.uuid
    for md in mds:
        (calc,) = [d for d in md.called_descendants if d.process_type == MD]
        assert md.outputs.output_parameters.get_dict()['last_step'] == MD_STEPS
    jobs = [d for d in descendants if isinstance(d, orm.CalcJobNode)]
    assert len(jobs) == N_LABEL + N_MD
    job_ids = [j.get_job_id() for j in jobs]
    assert len(set(job_ids)) == len(job_ids) and all(str(i).isdigit() for i in job_ids)

    labels_done = sorted(finished_at[n.pk] for n in labels)
    print(
        f'\nLOAD {N_LABEL} label + {N_MD} MD work chains ({len(jobs)} SLURM jobs, {len(descendants)} processes) on '
        f'{aiida_profile.storage_backend} + {aiida_profile.process_control_backend}, 1 daemon worker: submitted in '
        f'{submitted:.1f} s, all finished in {wall:.0f} s = {len(jobs) / wall * 60:.1f} jobs/min; labels: median '
        f'{labels_done[len(labels_done) // 2]:.0f} s, last {labels_done[-1]:.0f} s; MD last '
        f'{max(finished_at[n.pk] for n in mds):.0f} s; load average {load_before:.1f} -> {os.getloadavg()[0]:.1f} '
        f'on {os.cpu_count()} cores'
    )

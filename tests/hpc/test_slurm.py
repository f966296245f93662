"""Real SLURM over real SSH: jobs of the daemon go through sbatch on the one-node cluster of
``scripts/start_hpc_services.sh`` (core.slurm + core.ssh to localhost:2222), nothing is mocked.

Checked: inputs are uploaded over SSH, the job is queued and run by SLURM (a job id, the #SBATCH header, the GPU
directive of the computer template), outputs come back through ``retrieved`` and are parsed from it; a job killed by
its SLURM walltime is continued from its checkpoint by MdBaseWorkChain; a SIGKILLed daemon picks up the running
label and MD work chains after a restart without running a finished DFT calculation again.
"""

from __future__ import annotations

import functools
import itertools
import pathlib
import signal
import sys
import time

import pytest
from aiida import orm

ROOT = pathlib.Path(__file__).resolve().parents[2]
PW = 'aiida.calculations:quantumespresso.pw'
MD = 'aiida.calculations:nmcml.md'

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.daemon]


def job_script(calc) -> str:
    """The job script sbatch ran, read back over SSH from the job's remote work directory."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        target = pathlib.Path(tmp) / 'script.sh'
        calc.outputs.remote_folder.getfile('_aiidasubmit.sh', str(target))
        return target.read_text()


def assert_went_through_slurm(calc, computer):
    assert calc.computer.uuid == computer.uuid
    assert calc.computer.scheduler_type == 'core.slurm' and calc.computer.transport_type == 'core.ssh'
    assert str(calc.get_job_id()).isdigit(), calc.get_job_id()  # sbatch's job id
    script = job_script(calc)
    assert '#SBATCH --partition=debug' in script and '#SBATCH --time=' in script
    assert calc.outputs.remote_folder.get_remote_path().startswith('/tmp/aiida-nmcml-slurm/')
    return script


@functools.cache
def md_timing(model_path: pathlib.Path) -> tuple[float, float]:
    """``(startup_s, steps_per_s)`` of the engine on this machine now, for the MD cell of these tests.

    Why: a walltime test needs a target the first 60 s job cannot reach but a few jobs can; on a loaded 2-core
    machine the engine's start alone took ~55 s, on an idle one ~5 s. Rate: two in-process runs (model load
    subtracted); start-up: one ``aiida-nmcml-engine md`` process, as the job runs it, minus its steps.
    """
    import json
    import os
    import shutil
    import subprocess
    import tempfile

    from ase.io import write

    from aiida_nmcml.engine.md import run

    atoms = md_atoms()
    with tempfile.TemporaryDirectory() as tmp:
        elapsed = []
        for steps in (10, 110):
            folder = pathlib.Path(tmp) / f'cal{steps}'
            folder.mkdir()
            write(folder / 'structure.extxyz', atoms, format='extxyz')
            cwd = os.getcwd()
            os.chdir(folder)
            try:
                start = time.perf_counter()
                run({'models': [str(model_path)], 'steps': steps, 'device': 'cpu', 'seed': 1, 'committee_dtype': None})
                elapsed.append(time.perf_counter() - start)
            finally:
                os.chdir(cwd)
        rate = 100 / max(elapsed[1] - elapsed[0], 1e-3)
        folder = pathlib.Path(tmp) / 'cli'
        folder.mkdir()
        write(folder / 'structure.extxyz', atoms, format='extxyz')
        shutil.copy(model_path, folder / 'model_m0.model')
        config = {'steps': 20, 'seed': 1, 'device': 'cpu', 'models': [{'path': 'model_m0.model'}]}
        (folder / 'input.json').write_text(json.dumps(config))
        engine = pathlib.Path(sys.executable).parent / 'aiida-nmcml-engine'
        start = time.perf_counter()
        subprocess.run([str(engine), 'md', 'input.json'], cwd=folder, check=True, capture_output=True, timeout=600)
        startup = max(time.perf_counter() - start - 20 / rate, 0.0)
    return startup, rate


def md_atoms():
    """36 atoms: on an idle machine a 16-atom cell ran ~8700 steps in the walltime test and the toy model heated."""
    from aiida_nmcml.structures import layered_parent

    return layered_parent().repeat((3, 3, 1))


def test_pw_base_workchain_through_slurm_over_ssh(slurm_codes, submit_and_await):
    """PwBaseWorkChain on 4-atom LiNiO2 (30/240 Ry): pw.x runs as a SLURM job, output parsed from `retrieved`."""
    from aiida_nmcml.setup.computer import scheduler_options

    sys.path.insert(0, str(ROOT / 'examples'))
    from scf_linio2 import build

    builder = build(slurm_codes)
    builder.pw.metadata.options.update(scheduler_options(slurm_codes['computer']))
    node = submit_and_await(builder, timeout=600)
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    (calc,) = [n for n in node.called if n.process_type == PW]
    assert_went_through_slurm(calc, slurm_codes['computer'])
    assert 'aiida.out' in calc.outputs.retrieved.base.repository.list_object_names()
    params = node.outputs.output_parameters.get_dict()
    assert params['energy'] < 0 and abs(params['total_magnetization']) > 0.1
    # the parser's numbers are the ones in the retrieved output file
    text = calc.outputs.retrieved.base.repository.get_object_content('aiida.out')
    assert '!    total energy' in text and 'JOB DONE' in text


def test_training_with_gpu_directive_through_slurm(slurm_codes, submit_and_await):
    """nmcml.mace.train as a SLURM job that asks for a GPU: the template's `--gres=gpu:1` is in the job script and
    the fake GPU GRES of the test node lets SLURM schedule it (device=cpu: the machine has no GPU)."""
    sys.path.insert(0, str(ROOT / 'tests' / 'calculations'))
    from train_helpers import toy_set, train_builder

    from aiida_nmcml.setup.computer import scheduler_options

    builder = train_builder(slurm_codes['mace_train'], toy_set(12, seed=3), seed=2)
    builder.metadata.options.update(scheduler_options(slurm_codes['computer'], gpu=True))
    node = submit_and_await(builder, timeout=600)
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    script = assert_went_through_slurm(node, slurm_codes['computer'])
    assert '#SBATCH --gres=gpu:1' in script.splitlines()
    header = script.split('\n\n')[0]
    assert '#SBATCH --gres=gpu:1' in header  # inside the #SBATCH block, where sbatch reads it
    retrieved = node.outputs.retrieved.base.repository.list_object_names()
    assert any(name.endswith('.model') for name in retrieved), retrieved
    assert node.outputs.model.base.repository.list_object_names()


def test_md_killed_by_slurm_walltime_is_continued_from_its_checkpoint(
    slurm_codes, model_node, tiny_foundation_model, submit_and_await
):
    """nmcml.md jobs with a 60 s SLURM walltime and a target of ~2.5 jobs of MD: SLURM kills the first job, the
    MdBaseWorkChain continues from the retrieved checkpoint (parent folder on the remote) until the target."""
    from aiida_nmcml.calculations.md import MdCalculation
    from aiida_nmcml.setup.computer import scheduler_options
    from aiida_nmcml.workflows.md_base import MdBaseWorkChain

    atoms = md_atoms()
    startup, rate = md_timing(tiny_foundation_model)
    # SLURM kills 60-95 s after the start (its time-limit check runs every 30 s): ~ rate * (70 - startup) steps per
    # job; 2.5 jobs' worth makes the first job die and 3-4 jobs finish, within a factor ~2 of the estimate
    per_job = rate * max(70 - startup, 10)
    steps = max(int(2.5 * per_job) // 20 * 20, 60)
    timing = f'{steps} steps at {rate:.1f}/s, start-up {startup:.0f} s'
    builder = MdBaseWorkChain.get_builder_from_protocol(
        slurm_codes['engine'],
        orm.StructureData(ase=atoms),
        models=[model_node],
        protocol='demo',
        overrides={
            # 50 K and no temperature stop: the toy model heats (904 K) or collapses (0.46 Å at step 1340) over
            # thousands of steps at 300 K; this test is about the walltime restart, not the dynamics
            'parameters': {
                'temperature_K': 50.0,
                'steps': steps,
                'checkpoint_stride': 20,
                'trajectory_stride': 20,
                'seed': 1,
                'stop': {'max_temperature': None},
            },
            'metadata': {'options': {'max_wallclock_seconds': 60, **scheduler_options(slurm_codes['computer'])}},
        },
    )
    builder.max_iterations = orm.Int(8)
    node = submit_and_await(builder, timeout=1500)
    assert node.is_finished_ok, (node.exit_status, node.exit_message, timing)
    children = sorted(node.called, key=lambda n: n.ctime)
    assert len(children) >= 2, f'the first job was not killed: {timing}'
    killed = MdCalculation.exit_codes.ERROR_MISSING_STATUS_FILE.status
    for first, second in itertools.pairwise(children):
        script = assert_went_through_slurm(first, slurm_codes['computer'])
        assert '#SBATCH --time=00:01:00' in script
        # AiiDA reads SLURM's "CANCELLED ... DUE TO TIME LIMIT" (120) when it can; otherwise the missing status (310)
        assert first.exit_status in (120, killed), (first.exit_status, first.exit_message)
        assert second.inputs.parent_folder.uuid == first.outputs.remote_folder.uuid
    assert any('DUE TO TIME LIMIT' in (c.get_scheduler_stderr() or '') for c in children[:-1])
    assert children[-1].is_finished_ok
    summary = node.outputs.output_parameters.get_dict()
    assert summary['last_step'] == steps and summary['start_step'] > 0
    from ase.io import read

    with node.outputs.trajectory.open(mode='r') as handle:
        recorded = [a.info['step'] for a in read(handle, ':', format='extxyz')]
    assert recorded[-1] == steps and recorded == sorted(set(recorded))


def kill_daemon_hard(client) -> list[int]:
    """SIGKILL the daemon's circus arbiter first (no respawn), then every worker: a crashed login node."""
    import psutil

    pid = client.get_daemon_pid()
    assert pid, 'daemon not running'
    arbiter = psutil.Process(pid)
    procs = [arbiter, *arbiter.children(recursive=True)]
    for proc in procs:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=30)
    return [p.pid for p in procs]


def test_daemon_sigkill_during_label_and_md_then_restart(
    slurm_codes, model_node, tiny_foundation_model, started_daemon_client, submit_and_await
):
    """Label (2 pw.x frames) and MD submitted; the daemon is SIGKILLed once a DFT job has finished and the MD job
    is in SLURM; after a restart both work chains finish, the finished pw.x calculation is reused, not rerun (the
    number of PwCalculation nodes equals the number of frames) and the MD job is not submitted again."""
    from aiida.engine import submit

    from aiida_nmcml.setup.computer import scheduler_options
    from aiida_nmcml.structures import layered_parent
    from aiida_nmcml.workflows.label import LabelWorkChain
    from aiida_nmcml.workflows.md_base import MdBaseWorkChain

    options = scheduler_options(slurm_codes['computer'])
    structures = {}
    for i in range(2):
        atoms = layered_parent()
        atoms.rattle(stdev=0.04, seed=i)
        structure = orm.StructureData(ase=atoms)
        magmoms = [1.0 if s == 'Ni' else 0.0 for s in atoms.get_chemical_symbols()]
        structure.base.attributes.set('nmcml_magmoms', magmoms)
        structures[f'r{i}'] = structure
    label_builder = LabelWorkChain.get_builder_from_protocol(
        slurm_codes['pw'],
        structures,
        engine='qe',
        protocol='plumbing',
        overrides={'qe': {'pseudo_family': slurm_codes['pseudo_family']}},
    )
    atoms = md_atoms()
    _, rate = md_timing(tiny_foundation_model)
    steps = int(rate * 60) // 20 * 20 + 20  # ~1 min of MD after its start-up: still running when the daemon dies
    md_builder = MdBaseWorkChain.get_builder_from_protocol(
        slurm_codes['engine'],
        orm.StructureData(ase=atoms),
        models=[model_node],
        protocol='demo',
        overrides={
            'parameters': {'steps': steps, 'checkpoint_stride': 20, 'trajectory_stride': 20, 'seed': 2},
            'metadata': {'options': {'max_wallclock_seconds': 1800, **options}},
        },
    )
    label = submit(label_builder)
    md = submit(md_builder)

    def pw_calcs():
        return [n for n in label.called_descendants if n.process_type == PW]

    def md_calcs():
        return [n for n in md.called_descendants if n.process_type == MD]

    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        done = [c for c in pw_calcs() if c.is_finished_ok]
        running_md = [c for c in md_calcs() if c.get_job_id() and not c.is_terminated]
        if done and running_md:
            break
        assert not (label.is_terminated or md.is_terminated), 'finished before the kill: make the work longer'
        time.sleep(1)
    else:
        pytest.fail('no finished pw.x with a queued MD job within 10 min')
    finished_before = {c.uuid for c in pw_calcs() if c.is_finished_ok}
    md_job = md_calcs()[0].get_job_id()
    import psutil

    killed = kill_daemon_hard(started_daemon_client)
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != 'zombie' for pid in killed)
    started_daemon_client.start_daemon()  # removes the stale pid file the SIGKILLed arbiter left behind
    assert started_daemon_client.get_daemon_pid() not in killed

    label = submit_and_await(label, timeout=900)
    md = submit_and_await(md, timeout=900)
    assert label.is_finished_ok, (label.exit_status, label.exit_message)
    assert md.is_finished_ok, (md.exit_status, md.exit_message)
    calcs = pw_calcs()
    assert len(calcs) == len(structures), [c.pk for c in calcs]  # no DFT job ran twice
    assert finished_before <= {c.uuid for c in calcs}
    frames = label.outputs.labelled.get_frames()
    assert {f.info['source_uuid'] for f in frames} == {c.uuid for c in calcs}
    (md_calc,) = md_calcs()  # the MD job kept running in SLURM and was picked up, not resubmitted
    assert md_calc.get_job_id() == md_job and md_calc.is_finished_ok
    assert md.outputs.output_parameters.get_dict()['last_step'] == steps

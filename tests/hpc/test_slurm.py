"""Real SLURM over real SSH: jobs of the daemon go through sbatch on the one-node cluster of
``scripts/start_hpc_services.sh`` (core.slurm + core.ssh to localhost:2222), nothing is mocked.

Checked: inputs are uploaded over SSH, the job is queued and run by SLURM (a job id, the #SBATCH header, the GPU
directive of the computer template), outputs come back through ``retrieved`` and are parsed from it; an MD and a
training job killed by their SLURM walltime end with 120 and are continued from their checkpoints by MdBaseWorkChain
and MaceTrainBaseWorkChain; a SIGKILLed daemon picks up the label, fine-tune and MD work chains after a restart
without running a finished DFT or training job again (also on the production profile: marker ``production``).
"""

from __future__ import annotations

import functools
import pathlib
import sys
import time

import pytest
from aiida import orm
from factories import kill_daemon_hard

ROOT = pathlib.Path(__file__).resolve().parents[2]
PW = 'aiida.calculations:quantumespresso.pw'
MD = 'aiida.calculations:nmcml.md'
TRAIN = 'aiida.calculations:nmcml.mace.train'

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


WALLTIME_TRAIN_PARAMETERS = {
    'model': 'MACE',
    'num_channels': 8,
    'max_L': 0,
    'correlation': 2,
    'num_interactions': 2,
    'r_max': 4.0,
    'num_radial_basis': 4,
    'num_cutoff_basis': 3,
    'batch_size': 4,
    'valid_batch_size': 8,
    'eval_interval': 1,
    'patience': 100000,  # no early stop: the walltime, not the data, ends the first job
    'save_all_checkpoints': True,  # a checkpoint every epoch (mace keeps the last): restart where it was killed
}


@functools.cache
def train_timing(code_uuid: str, set_uuid: str) -> tuple[float, float]:
    """``(startup_s, epochs_per_s)`` of ``mace_run_train`` on this machine now, for the walltime training below.

    One real run of the job's own folder (a dry run of the calcjob, 6 epochs): start-up is the time to the first
    epoch line, the rate comes from mace's time stamps of the epoch lines.
    """
    import datetime
    import shutil
    import subprocess

    from aiida.engine import run_get_node

    from aiida_nmcml.calculations.train import MaceTrainCalculation

    builder = MaceTrainCalculation.get_builder()
    builder.code = orm.load_node(code_uuid)
    builder.training_set = orm.load_node(set_uuid)
    builder.seed = orm.Int(1)
    builder.parameters = orm.Dict({**WALLTIME_TRAIN_PARAMETERS, 'max_num_epochs': 6})
    builder.metadata.options.max_wallclock_seconds = 600
    builder.metadata.dry_run = True
    builder.metadata.store_provenance = False
    _, node = run_get_node(builder)
    folder = pathlib.Path(node.dry_run_info['folder'])
    trainer = pathlib.Path(sys.executable).parent / 'mace_run_train'
    start = datetime.datetime.now()
    out = subprocess.run(
        [str(trainer), '--config=config.yaml'], cwd=folder, capture_output=True, text=True, timeout=600, check=True
    ).stdout
    shutil.rmtree(folder, ignore_errors=True)
    stamps = [
        datetime.datetime.strptime(line[:23], '%Y-%m-%d %H:%M:%S.%f')
        for line in out.splitlines()
        if ' INFO: Epoch ' in line
    ]
    rate = (len(stamps) - 1) / max((stamps[-1] - stamps[0]).total_seconds(), 1e-3)
    return (stamps[0] - start).total_seconds(), rate


def has_checkpoint(calc) -> bool:
    """Whether the running job of ``calc`` has written a checkpoint in its work directory (the test cluster's remote
    is this machine): the MD engine's ``checkpoint.npz``, mace's ``checkpoints/*.pt``."""
    from aiida_nmcml.engine.md_io import CHECKPOINT

    workdir = calc.get_remote_workdir()
    if not workdir:
        return False
    folder = pathlib.Path(workdir)
    return (folder / CHECKPOINT).is_file() or any((folder / 'checkpoints').glob('*.pt'))


def test_md_and_training_killed_by_slurm_walltime_are_continued(
    slurm_codes, model_node, tiny_foundation_model, started_daemon_client
):
    """An nmcml.md.base and an nmcml.mace.train.base through SLURM, submitted together. When the first job of each
    has written a checkpoint, its SLURM time limit is lowered to 1 min (``scontrol update TimeLimit=1``, as an
    admin may do): SLURM kills it for its walltime at its next check, whatever the load of the machine (a fixed
    60 s ``--time`` made the kill land before the first checkpoint when the start-up alone took a minute). Each
    killed calcjob ends with 120 (SLURM's line read from any line of the retrieved scheduler stderr: the MD job's
    e3nn warning comes first) and the restart work chain continues it from its checkpoint in the remote folder (MD:
    its checkpoint; training: mace's ``checkpoints/`` with ``restart_latest``) to the same target."""
    import subprocess

    from aiida.engine import submit
    from ase.io import read

    from aiida_nmcml.setup.computer import scheduler_options
    from aiida_nmcml.workflows.md_base import MdBaseWorkChain
    from aiida_nmcml.workflows.train_base import MaceTrainBaseWorkChain

    sys.path.insert(0, str(ROOT / 'tests' / 'calculations'))
    from train_helpers import toy_set

    options = {'max_wallclock_seconds': 900, **scheduler_options(slurm_codes['computer'])}
    atoms = md_atoms()
    _, rate = md_timing(tiny_foundation_model)
    training_set = toy_set(24, seed=5)
    _, epoch_rate = train_timing(slurm_codes['mace_train'].uuid, training_set.uuid)
    # the kill comes <= ~90 s after the first checkpoint (1 min floor of the new limit + SLURM's 30 s check):
    # 120 s of work makes the first job die with work left and the second one finish
    steps = max(int(rate * 120) // 20 * 20, 60)
    epochs = max(int(epoch_rate * 120), 8)
    timing = f'MD {steps} steps at {rate:.1f}/s; training {epochs} epochs at {epoch_rate:.2f}/s'
    md_builder = MdBaseWorkChain.get_builder_from_protocol(
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
            'metadata': {'options': options},
            'max_iterations': 4,
        },
    )
    train_builder = MaceTrainBaseWorkChain.get_builder_from_protocol(
        slurm_codes['mace_train'],
        training_set,
        protocol='demo',
        overrides={
            'parameters': {**WALLTIME_TRAIN_PARAMETERS, 'max_num_epochs': epochs},
            'metadata': {'options': options},
            'max_iterations': 4,
        },
        seed=orm.Int(1),
    )
    md, train = submit(md_builder), submit(train_builder)
    shortened = set()
    deadline = time.monotonic() + 1800
    while not (md.is_terminated and train.is_terminated):
        assert time.monotonic() < deadline, f'not finished in 30 min: {timing}'
        for node in (md, train):
            first = sorted(node.called, key=lambda n: n.ctime)[:1]
            if first and first[0].pk not in shortened and first[0].get_job_id() and has_checkpoint(first[0]):
                cmd = ['scontrol', 'update', f'JobId={first[0].get_job_id()}', 'TimeLimit=1']
                subprocess.run(cmd, check=True, capture_output=True, timeout=60)
                shortened.add(first[0].pk)
        time.sleep(1)
    assert md.is_finished_ok, (md.exit_status, md.exit_message, timing)
    assert train.is_finished_ok, (train.exit_status, train.exit_message, timing)

    for node in (md, train):
        first, *rest = sorted(node.called, key=lambda n: n.ctime)
        assert first.pk in shortened and len(rest) == 1, f'{node.process_label}: {len(rest) + 1} jobs ({timing})'
        assert_went_through_slurm(first, slurm_codes['computer'])
        assert 'DUE TO TIME LIMIT' in first.get_scheduler_stderr(), first.get_scheduler_stderr()
        assert first.exit_status == 120, (first.exit_status, first.exit_message, timing)
        assert rest[0].inputs.parent_folder.uuid == first.outputs.remote_folder.uuid
        assert rest[0].is_finished_ok and not rest[0].get_scheduler_stderr().count('TIME LIMIT')

    # MD: the kill came after the engine's warnings, and the trajectory is one continuous run to the target
    md_first = sorted(md.called, key=lambda n: n.ctime)[0]
    assert 'DUE TO TIME LIMIT' not in md_first.get_scheduler_stderr().splitlines()[0]
    summary = md.outputs.output_parameters.get_dict()
    assert summary['last_step'] == steps and summary['start_step'] > 0
    with md.outputs.trajectory.open(mode='r') as handle:
        recorded = [a.info['step'] for a in read(handle, ':', format='extxyz')]
    assert recorded[-1] == steps and recorded == sorted(set(recorded))

    # training: the continued job went on from the epoch the killed one had reached (mace's latest checkpoint,
    # saved every epoch), not from epoch 0, and reached the target
    curves = [c.outputs.learning_curve.get_array('epoch') for c in sorted(train.called, key=lambda n: n.ctime)]
    assert curves[0][0] == 0 and curves[0][-1] <= curves[1][0] <= curves[0][-1] + 1, (curves, timing)
    assert curves[1][-1] == epochs - 1, (curves, timing)
    continued = sorted(train.called, key=lambda n: n.ctime)[1]
    assert continued.outputs.metrics['restart']['checkpoint'], continued.outputs.metrics['restart']  # mace loaded it
    assert train.outputs.model.base.repository.list_object_names()


HOLD = '#SBATCH --hold'  # queued but not started until `scontrol release`: a busy queue, made deterministic


def release(calcs) -> None:
    """Let SLURM start the held jobs of ``calcs`` (``scontrol release``; a job that is not held is left alone)."""
    import subprocess

    ids = [str(c.get_job_id()) for c in calcs if c.get_job_id()]
    if ids:
        subprocess.run(['scontrol', 'release', ','.join(ids)], check=False, capture_output=True, timeout=60)


def job_state(calc) -> str:
    """SLURM's state of the job of ``calc`` (RUNNING, PENDING ...), '' once it has left the queue."""
    import subprocess

    cmd = ['squeue', '-h', '-j', str(calc.get_job_id()), '-o', '%T']
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=60).stdout.strip()


# Marker `production`: .ci/run's second pass runs it again on PostgreSQL + RabbitMQ (its first pass on two xdist
# workers left the time for it inside CI's 40 minutes).
@pytest.mark.production
def test_daemon_sigkill_during_label_finetune_and_md_then_restart(
    slurm_codes, model_node, tiny_foundation_model, started_daemon_client, submit_and_await
):
    """A label (2 pw.x frames), a fine-tune (committee of 2) and an MD run through SLURM; the daemon is SIGKILLed
    when one DFT job and one training job have finished, the other DFT and training jobs wait in the queue (held)
    and the MD job runs. After a restart all three finish; no finished DFT or training job runs again and no job is
    submitted twice: the numbers of PwCalculation and training calcjobs equal the frames and the members, and the
    queued and running jobs are picked up by their SLURM job ids."""
    from aiida.engine import submit

    from aiida_nmcml.data.trainingset import TrainingSet
    from aiida_nmcml.setup.computer import scheduler_options
    from aiida_nmcml.structures import layered_parent
    from aiida_nmcml.testing.toymodel import toy_frames
    from aiida_nmcml.workflows.finetune import FinetuneWorkChain
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
        overrides={
            'qe': {
                'pseudo_family': slurm_codes['pseudo_family'],
                'options': {'max_wallclock_seconds': 1800, 'custom_scheduler_commands': HOLD, **options},
            }
        },
    )
    finetune_builder = FinetuneWorkChain.get_builder_from_protocol(
        slurm_codes['mace_train'],
        TrainingSet.from_frames(toy_frames(16, seed=41)).store(),
        validation_set=TrainingSet.from_frames(toy_frames(6, seed=42)).store(),
        foundation_model=model_node,
        evaluate_code=slurm_codes['engine'],
        protocol='demo',
        overrides={
            'train': {
                'parameters': {'max_num_epochs': 1},
                'metadata': {'options': {'custom_scheduler_commands': HOLD, **options}},
            },
            'evaluate': {'metadata': {'options': options}},
        },
    )
    atoms = md_atoms()
    _, rate = md_timing(tiny_foundation_model)
    steps = int(rate * 45) // 20 * 20 + 20  # ~45 s of MD after its start-up; released just before the kill
    md_builder = MdBaseWorkChain.get_builder_from_protocol(
        slurm_codes['engine'],
        orm.StructureData(ase=atoms),
        models=[model_node],
        protocol='demo',
        overrides={
            'parameters': {'steps': steps, 'checkpoint_stride': 20, 'trajectory_stride': 20, 'seed': 2},
            'metadata': {'options': {'max_wallclock_seconds': 1800, 'custom_scheduler_commands': HOLD, **options}},
        },
    )
    label, finetune, md = submit(label_builder), submit(finetune_builder), submit(md_builder)

    def calcs(node, entry_point):
        return sorted((n for n in node.called_descendants if n.process_type == entry_point), key=lambda n: n.ctime)

    def queued(node, entry_point):
        return [c for c in calcs(node, entry_point) if c.get_job_id()]

    # one DFT and one training job run; the others wait in the queue; once the two have finished, the MD job is
    # released and the daemon is killed as soon as SLURM runs it
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        pws, trains, mds = queued(label, PW), queued(finetune, TRAIN), queued(md, MD)
        release(pws[:1] + trains[:1])
        done = [c for c in pws + trains if c.is_finished_ok]
        if len(pws) == 2 and len(trains) == 2 and {c.process_type for c in done} == {PW, TRAIN} and mds:
            release(mds)
            if job_state(mds[0]) == 'RUNNING':
                break
        assert not any(n.is_terminated for n in (label, finetune, md)), 'a work chain ended before the kill'
        time.sleep(1)
    else:
        pytest.fail('no finished pw.x and training job with a running MD job within 15 min')
    finished_before = {c.uuid for c in calcs(label, PW) + calcs(finetune, TRAIN) if c.is_finished_ok}
    jobs_before = {
        c.uuid: c.get_job_id() for node, kind in ((label, PW), (finetune, TRAIN), (md, MD)) for c in calcs(node, kind)
    }
    import psutil

    killed = kill_daemon_hard(started_daemon_client)
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != 'zombie' for pid in killed)
    started_daemon_client.start_daemon()  # removes the stale pid file the SIGKILLed arbiter left behind
    assert started_daemon_client.get_daemon_pid() not in killed
    release(calcs(label, PW) + calcs(finetune, TRAIN))  # the queue moves on while the daemon comes back

    deadline = time.monotonic() + 1200
    while not all(n.is_terminated for n in (label, finetune, md)):
        assert time.monotonic() < deadline, 'not finished within 20 min of the restart'
        time.sleep(2)
    for node in (label, finetune, md):
        assert node.is_finished_ok, (node.process_label, node.exit_status, node.exit_message)
    pws, trains = calcs(label, PW), calcs(finetune, TRAIN)
    assert len(pws) == len(structures), [c.pk for c in pws]  # no DFT job ran twice
    assert len(trains) == 2, [c.pk for c in trains]  # no training job ran twice
    assert finished_before <= {c.uuid for c in pws + trains}
    for calc in (*pws, *trains, *calcs(md, MD)):
        # every job that was queued or running at the kill was picked up by its job id, not submitted again
        assert calc.uuid in jobs_before and calc.get_job_id() == jobs_before[calc.uuid], calc.pk
        assert calc.is_finished_ok, (calc.pk, calc.exit_status)
    frames = label.outputs.labelled.get_frames()
    assert {f.info['source_uuid'] for f in frames} == {c.uuid for c in pws}
    assert sorted(finetune.outputs.models) == ['member_0', 'member_1']
    assert len(calcs(md, MD)) == 1  # the MD job kept running in SLURM and was picked up, not resubmitted
    assert md.outputs.output_parameters.get_dict()['last_step'] == steps

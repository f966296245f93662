"""The computer template of ``aiida-nmcml setup --computer-template`` (no SLURM needed: nothing connects)."""

from __future__ import annotations

import pytest
from aiida import orm


def test_builtin_template_reads_and_fills_the_user():
    from aiida_nmcml.setup.computer import load_computer_template

    spec = load_computer_template('slurm-gpu')
    assert spec['hostname'] == 'localhost' and spec['port'] == 2222
    assert spec['gpu_directive'] == '#SBATCH --gres=gpu:1'
    assert spec['username'] and '$' not in spec['username']
    assert '{username}' in spec['workdir']  # left for AiiDA to expand, not expanded here
    assert not spec['key_filename'].startswith('~')


@pytest.mark.parametrize(
    ('text', 'match'),
    [
        ('hostname: h\npartiton: gpu\n', "unknown key 'partiton' \\(did you mean 'partition'\\?\\)"),
        ('partition: gpu\n', '`hostname` is required'),
        ('hostname: h\nexecutables: {vasp: /bin/vasp}\n', 'unknown executables'),
    ],
)
def test_bad_templates_are_refused(tmp_path, text, match):
    from aiida_nmcml.setup.computer import load_computer_template

    path = tmp_path / 'cluster.yaml'
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_computer_template(path)
    with pytest.raises(ValueError, match='neither a built-in'):
        load_computer_template(tmp_path / 'absent.yaml')


def test_setup_cli_makes_a_slurm_computer_with_codes_and_options(nmcml_codes, tmp_path):
    """A cluster YAML through the CLI: core.slurm + core.ssh, codes at the cluster paths, options from the template;
    a second call creates nothing."""
    from click.testing import CliRunner

    from aiida_nmcml.cli.setup import cmd_setup
    from aiida_nmcml.setup.computer import scheduler_options

    path = tmp_path / 'cluster.yaml'
    path.write_text(
        'label: testcluster\nhostname: login.example.org\nport: 22\nusername: me\n'
        "workdir: /scratch/{username}/aiida\npartition: gpu\naccount: proj1\ngpu_directive: '#SBATCH --gpus=1'\n"
        "mpirun_command: srun\nprepend_text: 'module load qe'\nexecutables: {pw: /opt/qe/bin/pw.x}\n"
    )
    result = CliRunner().invoke(cmd_setup, ['--computer-template', str(path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert 'created computer testcluster (core.ssh + core.slurm)' in result.output
    computer = orm.load_computer('testcluster')
    assert computer.get_workdir() == '/scratch/{username}/aiida'
    assert computer.get_mpirun_command() == ['srun']
    assert computer.get_prepend_text() == 'module load qe'
    assert computer.get_configuration()['username'] == 'me'
    assert orm.load_code('nmcml-pw@testcluster').get_executable().as_posix() == '/opt/qe/bin/pw.x'
    assert orm.load_code('nmcml-engine@testcluster').default_calc_job_plugin == 'nmcml.md'
    assert scheduler_options(computer) == {'queue_name': 'gpu', 'account': 'proj1'}
    assert scheduler_options(computer, gpu=True)['custom_scheduler_commands'] == '#SBATCH --gpus=1'
    again = CliRunner().invoke(cmd_setup, ['--computer-template', str(path)], catch_exceptions=False)
    assert again.exit_code == 0 and 'reused computer testcluster' in again.output

    bad = tmp_path / 'bad.yaml'
    bad.write_text('hostname: h\nacount: x\n')
    refused = CliRunner().invoke(cmd_setup, ['--computer-template', str(bad)])
    assert refused.exit_code != 0 and "did you mean 'account'" in refused.output


def _dry_run_script(process_class, namespace) -> str:
    """The ``_aiidasubmit.sh`` of a calcjob built from a work chain builder's namespace (dry run: nothing connects)."""
    import pathlib

    from aiida.engine import run_get_node

    builder = process_class.get_builder()
    for key, value in namespace.items():
        if key != 'metadata':
            builder[key] = value
    builder.metadata.options.update(dict(namespace.metadata.options))
    builder.metadata.dry_run = True
    builder.metadata.store_provenance = False
    _, node = run_get_node(builder)
    return (pathlib.Path(node.dry_run_info['folder']) / '_aiidasubmit.sh').read_text()


def _sbatch_header(script: str) -> list[str]:
    return [line for line in script.splitlines() if line.startswith('#SBATCH')]


def test_gpu_jobs_of_the_protocol_builders_take_the_directive_of_their_computer(nmcml_codes, model_node, tmp_path):
    """A cluster that wants `--gpus=1`: training, committee, distillation and MD builders with device cuda put the
    template's directive (not the protocol's generic `--gres=gpu:1`) and its partition/account into the job script;
    a CPU job gets the partition only; an explicit `gpu_options` override wins; a computer without a template keeps
    the protocol's generic form."""
    from aiida_nmcml.calculations.md import MdCalculation
    from aiida_nmcml.calculations.train import MaceTrainCalculation
    from aiida_nmcml.data.trainingset import TrainingSet
    from aiida_nmcml.setup.computer import ensure_slurm_computer
    from aiida_nmcml.structures import layered_parent
    from aiida_nmcml.testing.toymodel import toy_frames
    from aiida_nmcml.workflows.distill import DistillWorkChain
    from aiida_nmcml.workflows.finetune import FinetuneWorkChain
    from aiida_nmcml.workflows.md_base import MdBaseWorkChain
    from aiida_nmcml.workflows.train_base import MaceTrainBaseWorkChain

    path = tmp_path / 'gpus.yaml'
    path.write_text(
        'label: gpuscluster\nhostname: login.example.org\nusername: me\nworkdir: /scratch/{username}/aiida\n'
        "partition: gpu\naccount: proj1\ngpu_directive: '#SBATCH --gpus=1'\n"
    )
    ensure_slurm_computer(path)
    train_code = orm.load_code('nmcml-mace-train@gpuscluster')
    engine_code = orm.load_code('nmcml-engine@gpuscluster')
    training_set = TrainingSet.from_frames(toy_frames(8, seed=2)).store()

    builder = MaceTrainBaseWorkChain.get_builder_from_protocol(
        train_code, training_set, protocol='demo', overrides={'device': 'cuda'}, seed=orm.Int(1)
    )
    header = _sbatch_header(_dry_run_script(MaceTrainCalculation, builder.train))
    assert '#SBATCH --gpus=1' in header and not any('--gres' in line for line in header), header
    assert '#SBATCH --partition=gpu' in header and '#SBATCH --account=proj1' in header

    cpu = MaceTrainBaseWorkChain.get_builder_from_protocol(train_code, training_set, protocol='demo')
    assert cpu.train.metadata.options.queue_name == 'gpu'
    assert 'custom_scheduler_commands' not in cpu.train.metadata.options

    md = MdBaseWorkChain.get_builder_from_protocol(
        engine_code,
        orm.StructureData(ase=layered_parent()),
        models=[model_node],
        protocol='demo',
        overrides={'device': 'cuda', 'metadata': {'options': {'custom_scheduler_commands': '#SBATCH --mem=8G'}}},
    )
    header = _sbatch_header(_dry_run_script(MdCalculation, md.md))
    assert {'#SBATCH --gpus=1', '#SBATCH --mem=8G', '#SBATCH --partition=gpu'} <= set(header), header

    committee = FinetuneWorkChain.get_builder_from_protocol(
        train_code, training_set, evaluate_code=engine_code, device='cuda', protocol='demo'
    )
    assert committee.train.metadata.options['custom_scheduler_commands'] == '#SBATCH --gpus=1'
    assert committee.evaluate.metadata.options['custom_scheduler_commands'] == '#SBATCH --gpus=1'
    distill = DistillWorkChain.get_builder_from_protocol(engine_code, train_code, device='cuda', protocol='demo')
    assert distill.label.metadata.options['custom_scheduler_commands'] == '#SBATCH --gpus=1'
    assert distill.train.metadata.options['account'] == 'proj1'

    explicit = MaceTrainBaseWorkChain.get_builder_from_protocol(
        train_code,
        training_set,
        protocol='demo',
        overrides={'device': 'cuda', 'gpu_options': {'custom_scheduler_commands': '#SBATCH --gres=gpu:a100:1'}},
    )
    assert explicit.train.metadata.options['custom_scheduler_commands'] == '#SBATCH --gres=gpu:a100:1'
    local = MaceTrainBaseWorkChain.get_builder_from_protocol(
        nmcml_codes['mace_train'], training_set, protocol='demo', overrides={'device': 'cuda'}
    )
    assert local.train.metadata.options['custom_scheduler_commands'] == '#SBATCH --gres=gpu:1'
    assert 'queue_name' not in local.train.metadata.options

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

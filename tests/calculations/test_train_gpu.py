"""GPU jobs on SLURM: the submit script the protocol's options produce, generated without SLURM (dry run).

A ``core.slurm`` computer on localhost only has to *write* the script: ``metadata.dry_run`` uploads to a local folder
and never calls ``sbatch``.
"""

from __future__ import annotations

import pathlib

import yaml
from aiida import orm
from aiida.engine import run_get_node

from aiida_nmcml.workflows.finetune import FinetuneWorkChain


def slurm_code(tmp_path):
    computer = orm.Computer(
        label=f'slurm-gpu-{tmp_path.name}',
        hostname='localhost',
        transport_type='core.local',
        scheduler_type='core.slurm',
        workdir=str(tmp_path / 'scratch'),
    ).store()
    computer.configure()
    return orm.InstalledCode(
        computer=computer,
        filepath_executable='/opt/venv/bin/mace_run_train',
        label='mace-train-gpu',
        default_calc_job_plugin='nmcml.mace.train',
    ).store()


def test_cuda_protocol_puts_gres_in_the_submit_script(tmp_path, train_sets, monkeypatch):
    from aiida_nmcml.calculations.train import MaceTrainCalculation

    monkeypatch.chdir(tmp_path)  # dry runs write their folder under the working directory
    builder = FinetuneWorkChain.get_builder_from_protocol(
        slurm_code(tmp_path), train_sets['first'], device='cuda', protocol='demo'
    )
    train = MaceTrainCalculation.get_builder()
    for key in ('code', 'parameters', 'device'):
        setattr(train, key, builder.train[key])
    train.metadata.options = dict(builder.train.metadata.options)
    train.training_set = train_sets['first']
    train.metadata.dry_run = True
    train.metadata.store_provenance = False
    _, node = run_get_node(train)
    folder = pathlib.Path(node.dry_run_info['folder'])
    script = (folder / '_aiidasubmit.sh').read_text()
    assert '#SBATCH --gres=gpu:1' in script
    assert '#SBATCH --nodes=1' in script
    assert yaml.safe_load((folder / 'config.yaml').read_text())['device'] == 'cuda'
    assert "'/opt/venv/bin/mace_run_train' '--config=config.yaml'" in script

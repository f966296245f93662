"""``verdi data nmcml.trainingset|nmcml.model`` (aiida-core's plugin entry points) and ``aiida-nmcml data``."""

from __future__ import annotations

import hashlib
import json

import pytest
from click.testing import CliRunner


@pytest.fixture(scope='module')
def nodes(aiida_profile, tiny_foundation_model, toy_frames):
    from aiida_nmcml.data.model import MaceModel
    from aiida_nmcml.data.trainingset import TrainingSet

    return TrainingSet.from_frames(toy_frames[:5]).store(), MaceModel.from_file(tiny_foundation_model).store()


def invoke(command, args):
    result = CliRunner().invoke(command, args, catch_exceptions=False)
    return result


def test_verdi_finds_the_plugin_commands(nodes):
    from aiida.cmdline.commands.cmd_verdi import verdi

    trainingset, model = nodes
    listed = invoke(verdi, ['data', '--help'])
    assert 'nmcml.trainingset' in listed.output and 'nmcml.model' in listed.output
    shown = invoke(verdi, ['data', 'nmcml.trainingset', 'show', '--json', str(trainingset.pk)])
    assert shown.exit_code == 0, shown.output
    summary = json.loads(shown.output)
    assert summary['frames'] == 5 and summary['labelled'] == 5 and summary['sha256'] == trainingset.sha256
    shown = invoke(verdi, ['data', 'nmcml.model', 'show', model.uuid])
    assert shown.exit_code == 0, shown.output
    assert model.sha256 in shown.output and 'r_max' in shown.output


def test_export_writes_the_stored_bytes(nodes, tmp_path):
    from aiida_nmcml.cli import cmd_root

    trainingset, model = nodes
    target = tmp_path / 'frames.extxyz'
    done = invoke(cmd_root, ['data', 'trainingset', 'export', str(trainingset.pk), str(target)])
    assert done.exit_code == 0, done.output
    assert hashlib.sha256(target.read_bytes()).hexdigest() == trainingset.sha256
    again = invoke(cmd_root, ['data', 'trainingset', 'export', str(trainingset.pk), str(target)])
    assert again.exit_code != 0 and '--force' in again.output  # never overwrites silently
    model_file = tmp_path / 'm.model'
    done = invoke(cmd_root, ['data', 'model', 'export', str(model.pk), str(model_file), '--force'])
    assert done.exit_code == 0, done.output
    assert hashlib.sha256(model_file.read_bytes()).hexdigest() == model.sha256


def test_wrong_node_type_is_one_clear_line(nodes):
    from aiida_nmcml.cli import cmd_root

    trainingset, _ = nodes
    done = invoke(cmd_root, ['data', 'model', 'show', str(trainingset.pk)])
    assert done.exit_code != 0
    assert 'Traceback' not in done.output and f'no MaceModel found with ID<{trainingset.pk}>' in done.output

"""nmcml.distill: protocols and input checks, then a real `fast` distillation from CHGNet on the daemon whose model
fine-tunes through nmcml.finetune and runs NMC811 MD at 600 K without blowing up.

Everything is real: CHGNet labels (weights from its wheel), mace_run_train, the engine MD. The fine-tuning data are
teacher-labelled frames held out from the distillation (the plumbing and the model under test are the real ones; real
pw.x labels of even a tiny cell would add minutes, and tests/workflows/test_finetune.py covers fine-tuning on them).
"""

from __future__ import annotations

import numpy as np
import pytest
from aiida import orm
from ase.io import read

from aiida_nmcml.calculations.teacher import TeacherLabelCalculation
from aiida_nmcml.data.model import MaceModel
from aiida_nmcml.data.trainingset import TrainingSet
from aiida_nmcml.engine.teacher import sample_configurations
from aiida_nmcml.workflows.distill import EXTRAS_TEACHER, DistillWorkChain


@pytest.mark.parametrize('protocol', ['demo', 'fast', 'moderate', 'precise'])
def test_protocol_builders(protocol, nmcml_codes):
    builder = DistillWorkChain.get_builder_from_protocol(
        nmcml_codes['engine'], nmcml_codes['mace_train'], protocol=protocol
    )
    expected = DistillWorkChain.get_protocol_inputs(protocol)
    assert builder.train.parameters['max_num_epochs'] == expected['train']['parameters']['max_num_epochs']
    assert builder.sample['frames_per_x'] == expected['sample']['frames_per_x']
    assert builder.label.teacher.value == 'chgnet'
    assert builder.train.metadata.options['environment_variables'] == {'OMP_NUM_THREADS': '1'}
    # every level's sampler and label settings pass their schemas
    assert DistillWorkChain.spec().inputs['sample'].validator(builder.sample, None) is None
    assert TeacherLabelCalculation.spec().inputs['parameters'].validator(builder.label.parameters, None) is None


def test_misspelt_keys_are_refused_before_submission(nmcml_codes):
    with pytest.raises(ValueError, match="did you mean 'frames_per_x'"):  # refused as soon as it is set
        DistillWorkChain.get_builder_from_protocol(
            nmcml_codes['engine'], nmcml_codes['mace_train'], protocol='fast', overrides={'sample': {'frame_per_x': 3}}
        )
    frames = TrainingSet.from_frames(sample_configurations({'frames_per_x': 1, 'x_li': [1.0]})).store()
    builder = TeacherLabelCalculation.get_builder()
    builder.code = nmcml_codes['engine']
    builder.frames = frames
    with pytest.raises(ValueError, match='unknown teacher'):
        builder.teacher = orm.Str('mace-mp-0')
    with pytest.raises(ValueError, match="did you mean 'temperatures_K'"):
        builder.parameters = orm.Dict({'md': {'temperature_K': [300.0]}})
    with pytest.raises(ValueError, match="did you mean 'rounds'"):
        DistillWorkChain.get_builder_from_protocol(
            nmcml_codes['engine'], nmcml_codes['mace_train'], protocol='fast', overrides={'refine': {'round': 1}}
        )
    with pytest.raises(ValueError, match='max_volume_change'):
        DistillWorkChain.get_builder_from_protocol(
            nmcml_codes['engine'],
            nmcml_codes['mace_train'],
            protocol='fast',
            overrides={'refine': {'explore': {'max_volume_change': -1.0}}},
        )
    no_md = DistillWorkChain.get_builder_from_protocol(
        nmcml_codes['engine'],
        nmcml_codes['mace_train'],
        protocol='fast',
        overrides={'refine': {'rounds': 1, 'explore': {'steps': 0}}},
    )
    assert 'needs refine.explore.steps' in DistillWorkChain.validate_inputs(no_md, None)


def test_exploration_needs_exactly_one_student(nmcml_codes, tiny_foundation_model):
    validate = TeacherLabelCalculation.validate_inputs
    frames = TrainingSet.from_frames(sample_configurations({'frames_per_x': 1, 'x_li': [1.0]})).store()
    explore = orm.Dict({'explore': {'temperatures_K': [800.0], 'steps': 10}})
    ports = TeacherLabelCalculation.spec().inputs
    assert 'needs the student' in validate({'frames': frames, 'parameters': explore}, ports)
    student = MaceModel.from_file(tiny_foundation_model).store()
    two = {'a': student, 'b': student}
    assert 'at most one model' in validate({'frames': frames, 'parameters': explore, 'models': two}, ports)
    one = {'student': student}
    assert validate({'frames': frames, 'parameters': explore, 'models': one}, ports) is None


@pytest.mark.daemon
@pytest.mark.slow
def test_fast_distillation_finetunes_and_runs_md(nmcml_codes, submit_and_await):
    from aiida.plugins import CalculationFactory

    from aiida_nmcml import structures
    from aiida_nmcml.engine.common import sha256sum
    from aiida_nmcml.engine.teacher import chgnet_weights_path
    from aiida_nmcml.workflows.finetune import FinetuneWorkChain

    # one refinement round with a deliberately strict volume rule (1 %: a 12-atom cell fluctuates more than that at
    # 1200 K), so the round retrains and the final check exits 750 with everything attached
    explore = {'temperatures_K': [1200.0], 'steps': 60, 'interval': 10, 'max_volume_change': 0.01}
    refine = {'rounds': 1, 'seeds': {'x_li': [0.5], 'cell_atoms': 12}, 'explore': explore}
    builder = DistillWorkChain.get_builder_from_protocol(
        nmcml_codes['engine'], nmcml_codes['mace_train'], protocol='fast', overrides={'refine': refine}
    )
    node = submit_and_await(builder, timeout=1200)
    assert node.exit_status == DistillWorkChain.exit_codes.ERROR_STUDENT_CELL_RUNAWAY.status, node.exit_message
    weights = sha256sum(chgnet_weights_path())

    # refinement: round 0 explored with the first student, its frames joined the data, the retrained student was
    # checked by a second exploration; the model output is the retrained one
    rounds = node.outputs.refinement['rounds']
    assert [r['round'] for r in rounds] == [0, 1]
    assert rounds[0]['frames_labelled'] > 0 and rounds[0]['retrained_validation'] is not None
    assert not rounds[1]['exploration']['holds_cell'] and rounds[1]['retrained_validation'] is None
    trains = [c for c in node.called if c.process_type.endswith('nmcml.mace.train')]
    explores = sorted((c for c in node.called if c.base.links.get_incoming(link_label_filter='models__student').all()),
                      key=lambda c: c.ctime)  # fmt: skip
    assert len(trains) == 2 and len(explores) == 2
    assert explores[0].inputs.models.student.uuid == min(trains, key=lambda c: c.ctime).outputs.model.uuid
    first_train = min(trains, key=lambda c: c.ctime)
    assert node.outputs.model.uuid == max(trains, key=lambda c: c.ctime).outputs.model.uuid
    assert node.outputs.training_set.num_frames > first_train.inputs.training_set.num_frames
    everything = node.outputs.training_set.get_frames() + node.outputs.validation_set.get_frames()
    explored = [a for a in everything if a.info['config_type'] == 'student_md']  # split 90/10 like the rest
    assert len(explored) == rounds[0]['frames_labelled']  # round 0's frames joined; the last check's did not
    assert all(a.info['teacher_weights_sha256'] == weights for a in explored)

    # the model names its teacher: extras and the graph (model <- train <- training_set <- split <- label job)
    model = node.outputs.model
    assert model.base.extras.get(EXTRAS_TEACHER)['weights_sha256'] == weights
    assert sorted(model.elements) == ['Co', 'Li', 'Mn', 'Ni', 'O']
    train = model.creator
    label = first_train.inputs.training_set.creator.inputs.training_set.creator
    assert train.inputs.training_set.uuid == node.outputs.training_set.uuid
    assert label.process_type.endswith('nmcml.teacher.label') and label.inputs.teacher.value == 'chgnet'
    assert node.outputs.teacher_identity['weights_sha256'] == weights

    # every frame carries the teacher's identity; MD snapshots are in
    frames = node.outputs.training_set.get_frames() + node.outputs.validation_set.get_frames()
    assert all(a.info['teacher_weights_sha256'] == weights and a.info['teacher'] == 'chgnet' for a in frames)
    assert any(a.info['config_type'] == 'teacher_md' for a in frames)
    assert node.outputs.training_set.dft_settings['engine'] == 'teacher'
    assert label.outputs.labelled.base.attributes.get('teacher')['name'] == 'chgnet'

    # the distilled model is a foundation model for nmcml.finetune
    held_out = node.outputs.validation_set
    finetune = FinetuneWorkChain.get_builder_from_protocol(
        nmcml_codes['mace_train'],
        held_out,
        validation_set=held_out,
        foundation_model=model,
        protocol='demo',
        overrides={'committee_size': 1, 'train': {'parameters': {'max_num_epochs': 1}}},
    )
    tuned = submit_and_await(finetune, timeout=600)
    assert tuned.is_finished_ok, (tuned.exit_status, tuned.exit_message)
    member = tuned.outputs.models['member_0']
    assert isinstance(member, MaceModel) and member.sha256 != model.sha256
    assert set(member.elements) == set(model.elements)

    # ... and runs NMC811 MD at 600 K without blowing up (stop rules: atoms closer than 0.7 Å, temperature runaway)
    nmc = structures.to_structure_data(structures.build_nmc(40, x_li=1.0, seed=0))
    Md = CalculationFactory('nmcml.md')
    md = Md.get_builder()
    md.code = nmcml_codes['engine']
    md.structure = nmc
    md.models = {'m0': member}
    md.device = orm.Str('cpu')
    md.parameters = orm.Dict({'temperature_K': 600.0, 'steps': 200, 'trajectory_stride': 10, 'seed': 1})
    md_node = submit_and_await(md, timeout=600)
    assert md_node.is_finished_ok, (md_node.exit_status, md_node.exit_message)
    summary = md_node.outputs.output_parameters.get_dict()
    assert summary['steps_run'] == 200 and summary['stopped_by'] is None
    with md_node.outputs.trajectory.as_path() as path:
        trajectory = read(path, index=':', format='extxyz')
    closest = min(float(np.min(a.get_all_distances(mic=True)[np.triu_indices(len(a), 1)])) for a in trajectory)
    temperatures = [a.info['temperature'] for a in trajectory]
    assert closest > 1.2, closest  # Li-O ~2.0 Å, O-O ~2.6 Å: anything near 1 Å is a collapse
    assert max(temperatures) < 1500, temperatures


def test_reuse_from_the_machine_cache(nmcml_codes, tiny_foundation_model, tmp_path, monkeypatch):
    """A distilled model cached on the machine is imported into a new profile, not distilled again (no submit)."""
    import json
    import shutil

    from aiida_nmcml.workflows import distill

    monkeypatch.setenv('NMCML_CACHE', str(tmp_path))
    monkeypatch.setattr('aiida.engine.submit', lambda *a, **k: pytest.fail('must not distil when a model is cached'))
    key = distill.distill_key('demo', 'chgnet')
    cached = distill.machine_cache_dir() / f'distilled-chgnet-demo-{key}.model'
    cached.parent.mkdir(parents=True)
    shutil.copy(tiny_foundation_model, cached)
    cached.with_suffix('.json').write_text(json.dumps({'name': 'chgnet', 'weights_sha256': 'abc'}))
    node = distill.get_or_distill_foundation('demo', echo=lambda m: None)
    assert node.is_stored and node.base.extras.get(distill.EXTRAS_TEACHER)['name'] == 'chgnet'
    assert distill.find_distilled('demo', 'chgnet').uuid == node.uuid
    assert distill.get_or_distill_foundation('demo', echo=lambda m: None).uuid == node.uuid  # found in the profile
    assert distill.find_distilled('fast', 'chgnet') is None  # another recipe is another key


def test_cli_reuses_and_prints_the_model(nmcml_codes, tiny_foundation_model, tmp_path, monkeypatch):
    """`aiida-nmcml foundation distill` prints pk, uuid and sha256; a missing optional teacher is a clear error."""
    import json
    import shutil

    from click.testing import CliRunner

    from aiida_nmcml.cli.foundation import cmd_distill
    from aiida_nmcml.engine.teacher import teacher_available
    from aiida_nmcml.workflows import distill

    monkeypatch.setenv('NMCML_CACHE', str(tmp_path))
    key = distill.distill_key('fast', 'chgnet')
    cached = distill.machine_cache_dir() / f'distilled-chgnet-fast-{key}.model'
    cached.parent.mkdir(parents=True)
    shutil.copy(tiny_foundation_model, cached)
    cached.with_suffix('.json').write_text(json.dumps({'name': 'chgnet'}))
    result = CliRunner().invoke(cmd_distill, ['--protocol', 'fast'], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    node = distill.find_distilled('fast', 'chgnet')
    assert f'model pk: {node.pk}' in result.output and f'model sha256: {node.sha256}' in result.output
    if not teacher_available('sevennet-0'):
        result = CliRunner().invoke(cmd_distill, ['--teacher', 'sevennet-0'])
        assert result.exit_code != 0 and 'aiida-nmcml[sevennet]' in result.output


def test_the_shipped_demo_model_is_the_current_recipe_and_loads():
    """The demo foundation shipped in the package (saves the 10-18 min distillation of the README's first command)
    belongs to the current `demo` recipe, its metadata name its hash, and mace loads it into a working potential.

    If this fails after an edit of the demo distillation recipe (protocol or sampler): rebuild it with
    `aiida-nmcml foundation distill --protocol demo --force` and copy the model and its .json from
    ~/.cache/aiida-nmcml/foundation into aiida_nmcml/resources/foundation (docs/foundation.md).
    """
    import json

    from ase.build import bulk

    from aiida_nmcml.data.model import sha256_file
    from aiida_nmcml.workflows import distill

    path = distill.shipped_foundation('demo', 'chgnet')
    assert path is not None, f'no shipped demo model for recipe {distill.distill_key("demo", "chgnet")}'
    meta = json.loads(path.with_suffix('.json').read_text())
    assert meta['model_sha256'] == sha256_file(path) and meta['name'] == 'chgnet'
    assert meta['distill_key'] == distill.distill_key('demo', 'chgnet')
    from aiida_nmcml.engine.common import mace_calculator

    atoms = bulk('NiO', 'rocksalt', a=4.17).repeat((2, 1, 1))
    atoms.calc = mace_calculator(path)
    assert np.isfinite(atoms.get_potential_energy()) and np.abs(atoms.get_forces()).max() < 1e-3  # symmetric cell


def test_the_shipped_model_is_used_when_nothing_is_cached(nmcml_codes, tmp_path, monkeypatch):
    """A fresh machine (empty cache, empty profile) imports the shipped demo model instead of distilling."""
    from aiida_nmcml.workflows import distill

    monkeypatch.setenv('NMCML_CACHE', str(tmp_path))
    monkeypatch.setattr('aiida.engine.submit', lambda *a, **k: pytest.fail('must not distil: a model is shipped'))
    node = distill.get_or_distill_foundation('demo', echo=lambda m: None)
    assert 'shipped with aiida-nmcml' in node.source and node.sha256 == distill._sha(distill.shipped_foundation('demo'))
    assert distill.find_distilled('demo', 'chgnet').uuid == node.uuid
    assert node.base.extras.get(distill.EXTRAS_TEACHER)['weights_sha256']  # the teacher's identity travels with it
    assert distill.shipped_foundation('fast') is None  # only the demo recipe is shipped

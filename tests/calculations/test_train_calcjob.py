"""MaceTrainCalculation: input files, validation before submission, and real ``mace_run_train`` runs.

The trainings are real (tiny model, 2 epochs, ≤ 24 frames) and run through the calcjob on localhost.
"""

from __future__ import annotations

import ast
import io
import json
import math

import numpy as np
import pytest
import yaml
from aiida import orm
from aiida.engine import run_get_node
from ase.data import atomic_numbers
from train_helpers import TINY_PARAMETERS, train_builder

from aiida_nmcml.calculations.train import MaceTrainCalculation
from aiida_nmcml.data.model import MaceModel
from aiida_nmcml.data.trainingset import TrainingSet


def _dry_run(builder):
    builder.metadata.dry_run = True
    builder.metadata.store_provenance = False
    _, node = run_get_node(builder)
    import pathlib

    return pathlib.Path(node.dry_run_info['folder'])


@pytest.fixture
def foundation(tiny_foundation_model):
    return MaceModel.get_or_create(tiny_foundation_model)


def e0s_for(foundation_model, training_set):
    """The E0s the calcjob needs with a foundation model, made as nmcml.finetune makes them (a calcfunction)."""
    from aiida_nmcml.workflows.finetune import compute_e0s

    return compute_e0s(foundation_model, training_set)


def naive_inputs(foundation_model, training_set) -> dict:
    """E0s plus the foundation copy that carries them (mace-torch copies the foundation's E0 buffer in naive mode)."""
    from aiida_nmcml.workflows.finetune import prepare_member_model

    e0s = e0s_for(foundation_model, training_set)
    model = prepare_member_model(foundation_model, orm.Int(1), orm.Dict({'readout_init': 'none'}), e0s)
    return {'foundation_model': model, 'e0s': e0s}


def test_multihead_inputs_are_written_from_nodes(nmcml_codes, train_sets, foundation):
    """Config from the nodes; data and foundation model copied from the repository; hash checked before mace runs."""
    builder = train_builder(
        nmcml_codes['mace_train'],
        train_sets['second'],
        seed=7,
        foundation_model=foundation,
        replay_set=train_sets['first'],
        validation_set=train_sets['valid'],
        e0s=e0s_for(foundation, train_sets['second']),
    )
    folder = _dry_run(builder)
    config = yaml.safe_load((folder / 'config.yaml').read_text())
    assert config['seed'] == 7
    assert config['foundation_model'] == 'foundation.model'
    assert config['multiheads_finetuning'] is True
    assert config['pt_train_file'] == 'replay.xyz'
    assert config['valid_file'] == 'valid.xyz'
    # the fine-tuning head gets the plugin's E0s for every foundation element, not the foundation's (review B2)
    e0s = ast.literal_eval(config['E0s'])
    assert sorted(e0s) == sorted(foundation.base.attributes.get('atomic_numbers'))
    assert e0s == {atomic_numbers[k]: v for k, v in builder.e0s.get_dict()['e0s'].items()}
    assert config['energy_key'] == 'REF_energy'
    assert 'valid_fraction' not in config
    script = (folder / '_aiidasubmit.sh').read_text()
    assert f'{foundation.sha256}  foundation.model' in script
    assert script.index('sha256sum') < script.index('mace_run_train')
    # dry run copies local_copy_list into the folder: the bytes of the nodes, not user paths
    assert (folder / 'foundation.model').read_bytes() == foundation.get_content(mode='rb')
    assert (folder / 'replay.xyz').read_bytes() == train_sets['first'].get_content(mode='rb')


def test_naive_mode_switches_multihead_off(nmcml_codes, train_sets, foundation):
    folder = _dry_run(train_builder(nmcml_codes['mace_train'], train_sets['second'],
                                    **naive_inputs(foundation, train_sets['second'])))  # fmt: skip
    config = yaml.safe_load((folder / 'config.yaml').read_text())
    assert config['multiheads_finetuning'] is False
    assert 'pt_train_file' not in config
    assert config['valid_fraction'] == pytest.approx(0.1)


def _raw_set(frames_text: str, elements, num_frames) -> TrainingSet:
    """A TrainingSet built around TrainingSet.from_frames' own checks, as an older or foreign node could be."""
    node = TrainingSet(io.BytesIO(frames_text.encode()), filename='frames.xyz')
    node.base.attributes.set('num_frames', num_frames)
    node.base.attributes.set('num_labelled', num_frames)
    node.base.attributes.set('elements', elements)
    return node.store()


def _nan_set(toy_frames):
    from ase.io import write

    frames = [a.copy() for a in toy_frames[:3]]
    for a, b in zip(frames, toy_frames[:3], strict=True):
        a.info.update(b.info)
        a.arrays['REF_forces'] = b.arrays['REF_forces'].copy()
    frames[1].arrays['REF_forces'][0, 0] = np.nan
    handle = io.StringIO()
    write(handle, frames, format='extxyz')
    return _raw_set(handle.getvalue(), ['Li', 'Ni', 'O'], 3)


def test_nan_in_dataset_refused_before_training(nmcml_codes, toy_frames):
    with pytest.raises(ValueError, match='non-finite'):
        TrainingSet.from_frames([*toy_frames[:2], _with_nan(toy_frames[2])])
    with pytest.raises(ValueError, match='frame 1 has non-finite'):
        run_get_node(train_builder(nmcml_codes['mace_train'], _nan_set(toy_frames)))


def _with_nan(atoms):
    atoms = atoms.copy()
    atoms.info['REF_energy'] = math.nan
    return atoms


@pytest.mark.parametrize(
    ('case', 'message'),
    [
        ('empty', 'empty'),
        ('reserved', 'may not set'),
        ('replay_without_foundation', 'replay_set'),
        ('missing_elements', "lacks \\['Fe'\\]"),
        ('device', 'device must be'),
        ('no_e0s', 'needs the `e0s` input'),
        ('e0s_and_parameter', 'may not set E0s'),
        ('e0s_not_carried', 'does not carry the E0s'),
    ],
)
def test_bad_inputs_refused_with_a_clear_message(case, message, nmcml_codes, train_sets, foundation):
    code = nmcml_codes['mace_train']
    toy_frames = train_sets['valid'].get_frames()
    if case == 'empty':
        builder = train_builder(code, TrainingSet.from_frames([]).store())
    elif case == 'reserved':
        builder = train_builder(code, train_sets['first'], parameters={**TINY_PARAMETERS, 'train_file': '/home/x.xyz'})
    elif case == 'replay_without_foundation':
        builder = train_builder(code, train_sets['first'], replay_set=train_sets['second'])
    elif case == 'missing_elements':
        frames = [a.copy() for a in toy_frames[:3]]
        for a, b in zip(frames, toy_frames[:3], strict=True):
            a.info.update(b.info)
            a.arrays['REF_forces'] = b.arrays['REF_forces']
        symbols = frames[0].get_chemical_symbols()
        symbols[1] = 'Fe'
        frames[0].set_chemical_symbols(symbols)
        builder = train_builder(code, TrainingSet.from_frames(frames).store(), foundation_model=foundation)
    elif case == 'no_e0s':  # mace would pad elements absent from the data with E0 = 0 (review B3)
        builder = train_builder(code, train_sets['first'], foundation_model=foundation)
    elif case == 'e0s_not_carried':  # mace-torch would overwrite them with the foundation's own E0 buffer
        builder = train_builder(code, train_sets['first'], foundation_model=foundation,
                                e0s=e0s_for(foundation, train_sets['first']))  # fmt: skip
    elif case == 'e0s_and_parameter':
        builder = train_builder(code, train_sets['first'], foundation_model=foundation,
                                parameters={**TINY_PARAMETERS, 'E0s': 'estimated'},
                                e0s=e0s_for(foundation, train_sets['first']))  # fmt: skip
    else:
        builder = train_builder(code, train_sets['first'], device=orm.Str('gpu'))
    with pytest.raises(ValueError, match=message):
        run_get_node(builder)


def _check_trained(node, elements):
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    model = node.outputs.model
    assert model.source == 'training'
    assert set(model.elements) >= set(elements)
    metrics = node.outputs.metrics.get_dict()
    for subset in ('train', 'valid'):
        for key in ('rmse_e_per_atom', 'rmse_f', 'rmse_stress'):
            assert math.isfinite(metrics[subset][key]) and metrics[subset][key] > 0, (subset, key)
    assert math.isfinite(metrics['valid']['mae_f']) and 0 < metrics['valid']['mae_f'] <= metrics['valid']['rmse_f']
    curve = node.outputs.learning_curve
    assert len(curve.get_array('epoch')) == metrics['epochs'] == TINY_PARAMETERS['max_num_epochs']
    # the curve's last point is the final validation error reported by mace-torch's own table (meV rounding)
    assert curve.get_array('rmse_f')[-1] == pytest.approx(metrics['valid']['rmse_f'], abs=2e-4)
    assert 'compiled_model' in node.outputs
    # the job summarised its model itself (engine/model_metadata.py): the daemon stored it without unpickling
    summary = json.loads(node.outputs.retrieved.base.repository.get_object_content('model_metadata.json'))
    assert summary['sha256'] == model.sha256 and summary['elements'] == model.elements
    return metrics


def test_from_scratch(scratch_training, train_sets):
    _check_trained(scratch_training, train_sets['first'].elements)
    assert scratch_training.outputs.model.heads == ['Default']
    model = scratch_training.outputs.model
    model.verify()
    assert model.architecture['num_interactions'] == TINY_PARAMETERS['num_interactions']


def test_naive_finetune_from_scratch_model(nmcml_codes, scratch_training, train_sets):
    foundation = scratch_training.outputs.model
    _, node = run_get_node(
        train_builder(
            nmcml_codes['mace_train'],
            train_sets['second'],
            seed=2,
            validation_set=train_sets['valid'],
            parameters={'max_num_epochs': 2},
            **naive_inputs(foundation, train_sets['second']),
        )
    )
    _check_trained(node, train_sets['second'].elements)
    assert node.outputs.model.sha256 != foundation.sha256
    assert node.outputs.model.r_max == foundation.r_max
    assert node.outputs.model.heads == ['Default']


def test_multihead_finetune_with_local_replay(nmcml_codes, scratch_training, train_sets):
    foundation = scratch_training.outputs.model
    _, node = run_get_node(
        train_builder(
            nmcml_codes['mace_train'],
            train_sets['second'],
            seed=3,
            foundation_model=foundation,
            replay_set=train_sets['first'],
            validation_set=train_sets['valid'],
            parameters={'max_num_epochs': 2},
            e0s=e0s_for(foundation, train_sets['second']),
        )
    )
    metrics = _check_trained(node, train_sets['second'].elements)
    assert metrics['head'] == 'Default'
    assert set(node.outputs.model.heads) == {'pt_head', 'Default'}
    stdout = node.outputs.retrieved.get_object_content('mace_train.out')
    assert 'pt_head' in stdout and 'Downloading' not in stdout


def test_nan_loss_has_its_own_exit_code(nmcml_codes, train_sets):
    """An absurd learning rate makes the loss NaN; mace-torch exits 0 and writes a model: the parser must catch it."""
    parameters = {**TINY_PARAMETERS, 'max_num_epochs': 2, 'lr': 1.0e12}
    _, node = run_get_node(train_builder(nmcml_codes['mace_train'], train_sets['first'], seed=4, parameters=parameters))
    assert node.exit_status == MaceTrainCalculation.exit_codes.ERROR_NAN_LOSS.status
    assert 'model' not in node.outputs
    assert 'learning rate' in node.exit_message


def test_cuda_without_gpu_has_its_own_exit_code(nmcml_codes, train_sets):
    """No GPU here: device=cuda fails inside mace_run_train, and the exit code says to request one."""
    _, node = run_get_node(
        train_builder(nmcml_codes['mace_train'], train_sets['first'], seed=6, device=orm.Str('cuda'))
    )
    assert node.exit_status == MaceTrainCalculation.exit_codes.ERROR_DEVICE_UNAVAILABLE.status
    assert 'GPU jobs' in node.exit_message


def test_set_smaller_than_a_batch_still_trains(nmcml_codes, train_sets, foundation):
    """Two frames and batch_size 4: mace drops incomplete training batches, so the calcjob caps the batch size.

    Found by the demo: the first labelled batch of a campaign is often smaller than the protocol's batch size.
    """
    two = TrainingSet.from_frames(train_sets['second'].get_frames()[:2]).store()
    parameters = {**TINY_PARAMETERS, 'max_num_epochs': 1, 'batch_size': 4}
    naive = naive_inputs(foundation, two)
    builder = train_builder(nmcml_codes['mace_train'], two, parameters=parameters,
                            validation_set=train_sets['valid'], **naive)  # fmt: skip
    config = yaml.safe_load((_dry_run(builder) / 'config.yaml').read_text())
    assert config['batch_size'] == 2
    assert config['E0s'].startswith('{') and config['foundation_model_elements'] is True
    builder = train_builder(nmcml_codes['mace_train'], two, parameters=parameters,
                            validation_set=train_sets['valid'], **naive)  # fmt: skip
    _, node = run_get_node(builder)
    assert node.is_finished_ok, (node.exit_status, node.exit_message)


def test_finetuned_model_keeps_every_foundation_element(nmcml_codes, train_sets, foundation, tmp_path):
    """Fine-tuned on Li/Ni/O frames only, the model must still evaluate NMC811 cells with Mn and Co.

    Found by the demo: mace-torch shrinks a fine-tuned model to the elements of its data unless told otherwise.
    """
    import numpy as np
    from mace.calculators import MACECalculator

    from aiida_nmcml.structures import build_nmc

    lini = [a for a in train_sets['second'].get_frames() if set(a.get_chemical_symbols()) <= {'Li', 'Ni', 'O'}]
    assert len(lini) >= 2
    subset = TrainingSet.from_frames(lini[:4]).store()
    parameters = {**TINY_PARAMETERS, 'max_num_epochs': 1}
    _, node = run_get_node(train_builder(nmcml_codes['mace_train'], subset, parameters=parameters,
                                         validation_set=train_sets['valid'],
                                         **naive_inputs(foundation, subset)))  # fmt: skip
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    model = node.outputs.model
    assert set(model.elements) == set(foundation.elements) >= {'Mn', 'Co'}
    atoms = build_nmc(40, seed=0)
    assert {'Mn', 'Co'} <= set(atoms.get_chemical_symbols())
    atoms.calc = MACECalculator(model_paths=str(model.copy_to(tmp_path / 'm.model')), device='cpu',
                                default_dtype='float64')  # fmt: skip
    assert np.all(np.isfinite(atoms.get_forces()))


def test_e0s_of_elements_absent_from_linio2_data_are_shifted_not_zero(nmcml_codes, foundation, tmp_path):
    """Review B3: fine-tuned on LiNiO2 frames only, the E0s of Mn and Co must be the foundation's shifted, not 0.

    Found while fixing it: in naive mode mace-torch 0.3.16 does not even keep its own `estimated` E0s, because
    ``load_foundations_elements`` copies the foundation's E0 buffer (same shape with ``foundation_model_elements``)
    over them; the fine-tuned model had exactly the foundation's E0s. The plugin's E0s reach the model only through
    the foundation copy that carries them (``prepare_member_model``).

    The labels are the toy foundation's own Morse energies shifted by -5 eV/atom, as labels from another DFT code
    sit on another reference. The fitted common shift is then -5 eV/atom plus the tiny foundation's own mean error
    on these frames (it is a 5-epoch toy model: ~0.5 eV/atom). The fine-tuned model's E0s are the foundation's
    shifted by that common shift for Mn and Co (absent from the data), and an NMC811 cell (40 atoms, never seen in
    training) keeps the foundation's energy up to the same constant shift: tolerance 0.1 eV/atom (stated: two epochs
    at lr 1e-3 move the toy network by a few 10 meV/atom; the unshifted E0s of the code before this change miss by
    the whole ~4.5 eV/atom shift).
    """
    from mace.calculators import MACECalculator

    from aiida_nmcml.structures import build_nmc
    from aiida_nmcml.testing.toymodel import toy_frames

    shift = -5.0
    lini = []
    for atoms in toy_frames(40, seed=41):
        if set(atoms.get_chemical_symbols()) <= {'Li', 'Ni', 'O'}:
            atoms.info['REF_energy'] += shift * len(atoms)
            lini.append(atoms)
    assert len(lini) >= 8
    data = TrainingSet.from_frames(lini).store()
    naive = naive_inputs(foundation, data)
    e0s = naive['e0s']
    content = e0s.get_dict()
    assert content['source']['Mn'] == content['source']['Co'] == 'shift'
    assert content['absent_elements'] == ['Co', 'Mn']
    assert content['rank_deficient'] is True  # LiNiO2 frames always 1:1:2: Li, Ni, O cannot be separated
    assert 'cannot separate' in content['warning'] and 'absent' in content['warning']
    common = content['common_shift_per_atom']
    assert common == pytest.approx(shift, abs=1.0)
    # the common shift is the count-weighted mean residual of the foundation's own predictions on the data
    from mace.calculators import MACECalculator as _Calc

    calc = _Calc(model_paths=str(foundation.copy_to(tmp_path / 'f.model')), device='cpu', default_dtype='float64')
    residual, natoms = [], []
    for atoms in data.get_frames():
        ref = atoms.info['REF_energy']
        atoms.calc = calc
        residual.append(ref - atoms.get_potential_energy())
        natoms.append(len(atoms))
    residual, natoms = np.array(residual), np.array(natoms)
    assert common == pytest.approx(float(residual @ natoms / (natoms @ natoms)), abs=1e-6)

    parameters = {**TINY_PARAMETERS, 'max_num_epochs': 2, 'lr': 1e-3}
    _, node = run_get_node(train_builder(nmcml_codes['mace_train'], data, parameters=parameters, **naive))  # fmt: skip
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    assert node.outputs.metrics['e0s_rank_deficient'] is True
    assert 'absent' in node.outputs.metrics['e0s_warning']

    model = node.outputs.model.load_model()
    from aiida_nmcml.analysis.e0s import foundation_e0s

    trained = foundation_e0s(model)
    original = foundation_e0s(foundation.load_model())
    for symbol in ('Mn', 'Co'):
        assert trained[symbol] != 0.0
        assert trained[symbol] == pytest.approx(original[symbol] + common, abs=1e-9)
        assert trained[symbol] == pytest.approx(content['e0s'][symbol], abs=1e-9)

    cell = build_nmc(40, seed=0)
    assert {'Mn', 'Co'} <= set(cell.get_chemical_symbols())
    energies = {}
    for key, node_model in (('trained', node.outputs.model), ('foundation', foundation)):
        path = node_model.copy_to(tmp_path / f'{key}.model')
        atoms = cell.copy()
        atoms.calc = MACECalculator(model_paths=str(path), device='cpu', default_dtype='float64')
        energies[key] = atoms.get_potential_energy()
    per_atom = (energies['trained'] - energies['foundation'] - common * len(cell)) / len(cell)
    assert abs(per_atom) < 0.1, per_atom

"""``nmcml.active_learning`` without a daemon: the loop's rules (pure), its calcfunctions on synthetic frames, its
protocols and input validation, and its exploration step on mocked MD children (factories).
The end-to-end loop with real pw.x and MACE is tests/workflows/test_active_learning_daemon.py."""

from __future__ import annotations

import io

import numpy as np
import pytest
from aiida import orm

from aiida_nmcml.analysis import active_learning as rules
from aiida_nmcml.data.trainingset import TrainingSet
from aiida_nmcml.workflows.active_learning import (
    ActiveLearningWorkChain,
    check_new_labels,
    exploration_structures,
    model_lattice_check,
    select_explored_frames,
)


# ------------------------------------------------------------------------------------------------------ rules
@pytest.mark.parametrize(('supercell', 'x_li'), [(40, 1.0), (40, 0.5), (80, 0.25), (80, 0.95)])
def test_expected_ni_states_agree_with_the_structure_builder(supercell, x_li):
    """Two implementations of the same charge balance: the counts of the builder's oxidation states."""
    from aiida_nmcml.structures import build_nmc

    atoms = build_nmc(supercell, x_li=x_li, seed=1)
    states = atoms.arrays['oxidation_state'][np.array(atoms.get_chemical_symbols()) == 'Ni']
    expected = rules.expected_ni_states(atoms.get_chemical_symbols())
    assert expected == {f'Ni{q}+': int((states == q).sum()) for q in (2, 3, 4)}


def test_ni_moment_pattern():
    symbols = ['Li'] * 2 + ['Ni'] * 2 + ['O'] * 4  # Li2Ni2O4: two Ni3+
    assert rules.expected_ni_states(symbols) == {'Ni2+': 0, 'Ni3+': 2, 'Ni4+': 0}
    good = rules.ni_moment_pattern(symbols, [0, 0, 0.95, -1.05, 0.02, 0, 0, 0])
    assert good['match'] and good['off_by'] == 0
    # one Ni2+-like and one Ni4+-like site: a disproportionated spin local minimum
    bad = rules.ni_moment_pattern(symbols, [0, 0, 1.7, 0.1, 0, 0, 0, 0])
    assert bad['match'] is False and bad['off_by'] == 2 and bad['found'] == {'Ni2+': 1, 'Ni3+': 0, 'Ni4+': 1}
    assert rules.ni_moment_pattern(symbols, [0, 0, 1.7, 0.1, 0, 0, 0, 0], tolerance=2)['match']
    assert rules.ni_moment_pattern(symbols, None)['match'] is None
    assert rules.expected_ni_states(['Ni', 'O', 'O', 'O', 'O']) is None  # Ni8+: no assignment


def test_stopping_rules():
    counts = {'a': {'fraction_accurate': 0.97}, 'b': {'fraction_accurate': 0.94}}
    assert rules.accuracy_rule(counts, 0.95)[0] is False
    assert rules.accuracy_rule({'a': {'fraction_accurate': 0.95}}, 0.95)[0] is True
    assert rules.accuracy_rule({}, 0.95)[0] is False
    targets = {'forces_rmse_meV_per_A': 60.0, 'energy_rmse_meV_per_atom': 3.0, 'stress_rmse_GPa': None}
    summary = {'forces_rmse_meV_per_A': 55.0, 'energy_rmse_meV_per_atom': 2.0, 'stress_rmse_GPa': 9.0}
    met, checked = rules.targets_rule(summary, targets)
    assert met and set(checked) == {'forces_rmse_meV_per_A', 'energy_rmse_meV_per_atom'}
    assert not rules.targets_rule({**summary, 'energy_rmse_meV_per_atom': None}, targets)[0]  # missing: not met
    assert not rules.targets_rule(summary, None)[0]


def test_parameters_schema_names_the_closest_key():
    errors = rules.PARAMETERS.errors({'max_iteration': 3})
    assert len(errors) == 1 and "did you mean 'max_iterations'" in errors[0]
    assert rules.PARAMETERS.errors({'accurate_fraction': 1.5})
    assert rules.PARAMETERS.errors({'trust_lower': 0.3, 'trust_upper': 0.1})
    assert rules.PARAMETERS.errors({'temperatures_K': [-5.0]})
    assert rules.PARAMETERS.errors({'targets': {'force_rmse': 1.0}})
    assert not rules.PARAMETERS.errors({'targets': None, 'retrain_from': 'previous'})


def test_compare_lattice_and_its_schema():
    reference = {'x1': {'a': 2.87, 'c': 14.2}, 'x05': {'a': 2.82, 'c': 14.45}}
    model = {
        'x1': {'a': 2.87 * 1.009, 'c': 14.2 * 0.995, 'converged': True, 'x_li': 1.0},
        'x05': {'a': 2.82, 'c': 14.45 * 1.012, 'converged': True},  # c 1.2 % off
    }
    result = rules.compare_lattice(model, reference, 1.0)
    assert result['per_structure']['x1']['within'] and not result['per_structure']['x05']['within']
    assert result['per_structure']['x05']['c_error_percent'] == pytest.approx(1.2)
    assert result['per_structure']['x1']['a_error_percent'] == pytest.approx(0.9)
    assert not result['all_within'] and result['missing'] == []
    assert rules.compare_lattice(model, reference, 1.5)['all_within']
    unconverged = {**model, 'x1': {**model['x1'], 'converged': False}}
    assert not rules.compare_lattice(unconverged, reference, 1.5)['per_structure']['x1']['within']
    missing = rules.compare_lattice({'x1': model['x1']}, reference, 1.5)
    assert missing['missing'] == ['x05'] and not missing['all_within']
    # the schema: the reference is required, lengths positive, unknown keys refused
    assert not rules.LATTICE_CHECK.errors({'reference': reference})
    assert rules.LATTICE_CHECK.errors({})
    assert rules.LATTICE_CHECK.errors({'reference': {'x1': {'a': -2.87, 'c': 14.2}}})
    assert rules.LATTICE_CHECK.errors({'reference': {'x1': {'a': 2.87}}})
    assert "did you mean 'tolerance_percent'" in rules.LATTICE_CHECK.errors({'reference': reference,
                                                                             'tolerance': 1.0})[0]  # fmt: skip


def test_model_lattice_check_relaxes_and_compares(aiida_profile, tiny_foundation_model):
    """The calcfunction relaxes with the model, records a/c against the reference, and links both."""
    from aiida_nmcml.data.model import MaceModel
    from aiida_nmcml.structures import layered_parent, to_structure_data

    model = MaceModel.get_or_create(tiny_foundation_model)
    structure = to_structure_data(layered_parent(primitive=False))  # 12 atoms, a = 2.87, c = 14.2 Å
    # a few FIRE steps only (cheap): the record says whether it converged, and 'within' requires it
    check = orm.Dict({'reference': {'x1': {'a': 2.87, 'c': 14.2}}, 'fmax': 0.03, 'max_steps': 12})
    record = model_lattice_check(model, check, x1=structure)
    result = record.get_dict()
    entry = result['per_structure']['x1']
    assert entry['x_li'] == 1.0 and result['model']['x1']['layers'] == 3  # the hexagonal cell: three slabs
    assert entry['a'] != pytest.approx(2.87, rel=1e-3)  # relaxed by the (toy) model, not the start
    assert entry['a_error_percent'] == pytest.approx(100 * (entry['a'] - 2.87) / 2.87)
    within = entry['converged'] and abs(entry['a_error_percent']) <= 1 and abs(entry['c_error_percent']) <= 1
    assert entry['within'] == within and result['all_within'] == within
    assert result['settings'] == {'fmax': 0.03, 'max_steps': 12, 'mode': 'full', 'member': 0}
    linked = {n.pk for n in record.creator.base.links.get_incoming().all_nodes()}
    assert {model.pk, structure.pk, check.pk} <= linked


# ------------------------------------------------------------------------------------------------ calcfunctions
def _trajectory(deviations, steps=None, n_atoms=4, seed=0):
    """An MD trajectory file as the engine writes it: info step / max_force_dev, sublattice labels carried."""
    from ase import Atoms
    from ase.io import write

    rng = np.random.default_rng(seed)
    frames = []
    for i, d in enumerate(deviations):
        atoms = Atoms('LiNiO2', positions=rng.uniform(0, 4, (n_atoms, 3)), cell=np.eye(3) * 4, pbc=True)
        atoms.arrays['sublattice'] = np.array(['li', 'tm', 'o', 'o'])
        atoms.info['step'] = (steps or list(range(0, 10 * len(deviations), 10)))[i]
        if d is not None:
            atoms.info['max_force_dev'] = d
        frames.append(atoms)
    handle = io.StringIO()
    write(handle, frames, format='extxyz')
    return orm.SinglefileData(io.BytesIO(handle.getvalue().encode()), filename='trajectory.extxyz')


def _settings(**kwargs):
    base = {
        'iteration': 1, 'trust_lower': 0.05, 'trust_upper': 0.3, 'trust_upper_factor': 6.0, 'min_spread': 1e-3,
        'min_step_gap': 0, 'descriptors': 'none', 'max_selected': 10, 'held_out_per_condition': 0,
        'conditions': {
            'traj_0': {'condition': 'a_T300', 'structure': 'a', 'temperature_K': 300.0, 'x': 1.0},
            'traj_1': {'condition': 'a_T900', 'structure': 'a', 'temperature_K': 900.0, 'x': 1.0},
        },
    }  # fmt: skip
    base.update(kwargs)
    return orm.Dict(base)


def test_select_explored_frames_counts_caps_and_holds_out():
    t300 = _trajectory([0.01, 0.02, 0.1, 0.2, None, 0.5], seed=1)  # unmonitored frame ignored
    t900 = _trajectory([0.01, 0.1, 0.12, 0.15, 0.2, 0.25, 0.9], seed=2)
    out = select_explored_frames(_settings(max_selected=3, held_out_per_condition=1), traj_0=t300, traj_1=t900)
    summary = out['summary'].get_dict()
    per = summary['counts_per_condition']
    held = out['held_out'].get_frames()
    assert len(held) == 2 and {a.info['al_condition'] for a in held} == {'a_T300', 'a_T900'}
    # 5 + 7 monitored frames, one held out per condition: the others are counted
    assert per['a_T300']['total'] + per['a_T900']['total'] == 10
    assert summary['counts']['selected'] == 3 and len(out['selected'].get_frames()) == 3
    held_steps = {(a.info['al_condition'], a.info['al_step']) for a in held}
    for atoms in out['selected'].get_frames():
        assert 0.05 <= atoms.info['max_force_dev'] <= 0.3  # in the band
        assert (atoms.info['al_condition'], atoms.info['al_step']) not in held_steps
        assert atoms.info['config_type'] == 'al_selected' and list(atoms.arrays['sublattice']) == ['li', 'tm', 'o', 'o']
    assert per['a_T900']['discarded'] == 1 and per['a_T300']['discarded'] == 1


def test_select_explored_frames_band_from_calibration_and_refusal():
    t300 = _trajectory([0.01, 0.02, 0.1, 0.2, 0.5])
    t900 = _trajectory([0.01, 0.1, 0.15, 0.2])
    calibration = orm.Dict({'trust_lower': 0.12, 'trust_upper': 0.3, 'negligible_spread': False})
    out = select_explored_frames(_settings(trust_lower=None, trust_upper=None), traj_0=t300, traj_1=t900,
                                 calibration=calibration)  # fmt: skip
    summary = out['summary'].get_dict()
    assert summary['trust_band'] == {'lower': 0.12, 'upper': 0.3, 'source': 'calibration'}
    assert sorted(a.info['max_force_dev'] for a in out['selected'].get_frames()) == [0.15, 0.2, 0.2]
    # a committee without spread: refused, nothing selected
    flat = _trajectory([1e-5, 2e-5, 1e-5])
    out = select_explored_frames(_settings(trust_lower=0.0), traj_0=flat, traj_1=_trajectory([1e-5, 3e-5]))
    assert 'min_spread' in out['summary']['refused'] and 'selected' not in out
    negligible = orm.Dict({'negligible_spread': True, 'trust_lower': 1e-6, 'trust_upper': 1e-5})
    out = select_explored_frames(_settings(trust_lower=None, trust_upper=None), traj_0=t300, traj_1=t900,
                                 calibration=negligible)  # fmt: skip
    assert 'negligible' in out['summary']['refused']


def test_check_new_labels_rejects_or_flags_spin_minima():
    from ase import Atoms

    def frame(moments, key):
        atoms = Atoms(
            'Li2Ni2O4', positions=np.random.default_rng(0).uniform(0, 5, (8, 3)), cell=np.eye(3) * 5, pbc=True
        )
        atoms.info.update({'REF_energy': -1.0, 'label_key': key})
        atoms.arrays['REF_forces'] = np.zeros((8, 3))
        atoms.arrays['REF_magmoms'] = np.array([0, 0, *moments, 0, 0, 0, 0], dtype=float)
        return atoms

    labelled = TrainingSet.from_frames([frame([1.0, 0.9], 'frame_0'), frame([1.7, 0.0], 'frame_1')])
    sources = [Atoms('Li2Ni2O4', cell=np.eye(3) * 5, pbc=True) for _ in range(2)]
    for i, atoms in enumerate(sources):
        atoms.info.update({'al_condition': f'c{i}', 'al_step': 10 * i})
    unlabelled = TrainingSet.from_frames(sources)
    out = check_new_labels(labelled, unlabelled, orm.Dict({'magnetic_check': 'reject', 'magnetic_tolerance': 0}))
    report = out['report'].get_dict()
    assert report['accepted'] == 1 and [m['label_key'] for m in report['mismatch']] == ['frame_1']
    (kept,) = out['accepted'].get_frames()
    assert kept.info['al_condition'] == 'c0' and kept.info['al_step'] == 0  # the loop's info is carried over
    out = check_new_labels(labelled, unlabelled, orm.Dict({'magnetic_check': 'flag', 'magnetic_tolerance': 0}))
    frames = out['accepted'].get_frames()
    assert len(frames) == 2 and frames[1].info['al_spin_mismatch'] and frames[1].info['al_condition'] == 'c1'


# ----------------------------------------------------------------------------------------- protocols / inputs
def test_exploration_cells_are_exact_nmc811():
    inputs = ActiveLearningWorkChain.get_protocol_inputs('moderate')
    cells = exploration_structures(inputs['exploration'])
    assert len(cells) == 9 + 3 + 3 + 3
    for key, structure in cells.items():
        symbols = structure.get_ase().get_chemical_symbols()
        n = {el: symbols.count(el) for el in ('Li', 'Ni', 'Mn', 'Co', 'O')}
        assert n['Ni'] == 8 * n['Mn'] == 8 * n['Co'], key  # exactly 8:1:1
        n_tm = n['Ni'] + n['Mn'] + n['Co']
        assert n_tm in (20, 40) and n['O'] == 2 * n_tm, key  # DFT-sized: 80 or 160 sites
        x_li = float(key.split('_x')[1][:5].replace('_', '.'))
        assert key.startswith(f'n{4 * n_tm}_') and n['Li'] == pytest.approx(x_li * n_tm), key
    plain = cells['n80_x0_500'].get_ase()
    strained = cells['n80_x0_500_strain_ap2_cm2'].get_ase()
    lengths, strained_lengths = plain.cell.lengths(), strained.cell.lengths()
    assert strained_lengths[0] == pytest.approx(1.02 * lengths[0], rel=1e-6)
    assert strained.get_volume() == pytest.approx(plain.get_volume() * 1.02**2 * 0.98, rel=1e-6)


@pytest.mark.parametrize('protocol', ['demo', 'fast', 'moderate', 'precise'])
def test_protocol_builders(protocol, nmcml_codes, tiny_foundation_model):
    from aiida_nmcml.data.model import MaceModel
    from aiida_nmcml.structures import build_nmc, to_structure_data

    model = MaceModel.get_or_create(tiny_foundation_model)
    builder = ActiveLearningWorkChain.get_builder_from_protocol(
        engine_code=nmcml_codes['engine'], dft_code=nmcml_codes['pw'], train_code=nmcml_codes['mace_train'],
        committee=[model, model], structures=[to_structure_data(build_nmc(40, seed=0))], foundation_model=model,
        protocol=protocol, overrides={'label': {'qe': {'pseudo_family': nmcml_codes['pseudo_family']}}},
    )  # fmt: skip
    parameters = builder.parameters.get_dict()
    assert not rules.PARAMETERS.errors(parameters)
    assert set(parameters) == set(rules.PARAMETERS.fields)
    if protocol == 'moderate':  # the targets
        assert parameters['targets'] == {
            'forces_rmse_meV_per_A': 60.0, 'energy_rmse_meV_per_atom': 3.0, 'stress_rmse_GPa': 0.3,
        }  # fmt: skip
        assert parameters['accurate_fraction'] == 0.95 and parameters['max_dft_labels'] == 1000
    assert builder.md.code.uuid == builder.evaluate.code.uuid == nmcml_codes['engine'].uuid
    assert builder.finetune.train.code.uuid == nmcml_codes['mace_train'].uuid
    assert builder.label.engine.value == 'qe'


def test_inputs_refused_before_submission(nmcml_codes, tiny_foundation_model):
    from aiida_nmcml.data.model import MaceModel
    from aiida_nmcml.structures import build_nmc, to_structure_data

    model = MaceModel.get_or_create(tiny_foundation_model)

    def build(committee, **parameters):
        builder = ActiveLearningWorkChain.get_builder_from_protocol(
            engine_code=nmcml_codes['engine'], dft_code=nmcml_codes['pw'], train_code=nmcml_codes['mace_train'],
            committee=committee, structures=[to_structure_data(build_nmc(40, seed=0))], foundation_model=model,
            protocol='demo',
            overrides={'parameters': parameters, 'label': {'qe': {'pseudo_family': nmcml_codes['pseudo_family']}}},
        )  # fmt: skip
        return builder

    from aiida.engine.utils import instantiate_process
    from aiida.manage import get_manager

    def refused(builder) -> str:
        with pytest.raises(ValueError) as info:
            instantiate_process(get_manager().get_runner(), builder)
        return str(info.value)

    assert 'at least two models' in refused(build([model]))
    assert 'no calibration' in refused(build([model, model], trust_lower=None))
    builder = build([model, model])
    builder.lattice_structures = {'x1': to_structure_data(build_nmc(40, seed=0))}
    assert 'without lattice_check' in refused(builder)
    builder.lattice_check = {'reference': {'x05': {'a': 2.82, 'c': 14.45}}}
    assert 'differ from the lattice_structures keys' in refused(builder)
    builder.lattice_check = {'reference': {'x1': {'a': 2.87, 'c': 14.2}}, 'member': 2}
    assert 'not a member of the committee' in refused(builder)
    with pytest.raises(ValueError, match="did you mean 'tolerance_percent'"):  # its schema, at build time
        builder.lattice_check = {'reference': {'x1': {'a': 2.87, 'c': 14.2}}, 'tolerance': 2.0}
    with pytest.raises(ValueError, match="did you mean 'max_iterations'"):  # the port validator, at build time
        build([model, model], max_iteration=3)


# ------------------------------------------------------------------------------- steps on mocked children
@pytest.fixture
def loop(nmcml_codes, tiny_foundation_model):
    """The work chain after ``setup``, instantiated (not run) from the demo protocol."""
    from aiida.engine.utils import instantiate_process
    from aiida.manage import get_manager

    from aiida_nmcml.data.model import MaceModel
    from aiida_nmcml.structures import build_nmc, to_structure_data

    model = MaceModel.get_or_create(tiny_foundation_model)
    builder = ActiveLearningWorkChain.get_builder_from_protocol(
        engine_code=nmcml_codes['engine'], dft_code=nmcml_codes['pw'], train_code=nmcml_codes['mace_train'],
        committee=[model, model], structures={'a': to_structure_data(build_nmc(40, seed=0))}, foundation_model=model,
        protocol='demo', overrides={'parameters': {'temperatures_K': [300.0, 900.0]},
                                    'label': {'qe': {'pseudo_family': nmcml_codes['pseudo_family']}}},
    )  # fmt: skip
    process = instantiate_process(get_manager().get_runner(), builder)
    process.setup()
    assert process.should_iterate() and process.ctx.iteration == 1
    process.ctx.conditions = process.conditions()
    return process


def _md_child(exit_status: int, trajectory=None):
    """A finished nmcml.md.base node with ``exit_status`` and, optionally, its exposed ``trajectory``."""
    from aiida.common.links import LinkType
    from aiida.engine import ProcessState

    node = orm.WorkflowNode(process_type='aiida.workflows:nmcml.md.base')
    node.set_process_state(ProcessState.FINISHED)
    node.set_exit_status(exit_status)
    node.store()
    if trajectory is not None:
        trajectory.store()
        trajectory.base.links.add_incoming(node, LinkType.RETURN, 'trajectory')
    node.seal()
    return node


def test_exploration_keeps_frames_of_stopped_runs(loop):
    """A run ended by the uncertainty stop rule (710) gives its frames; a failed run without them is reported."""
    assert list(loop.ctx.conditions) == ['traj_0', 'traj_1']
    assert [c['condition'] for c in loop.ctx.conditions.values()] == ['a_T300', 'a_T900']
    assert loop.ctx.conditions['traj_0']['x'] == 1.0
    loop.ctx.md_traj_0 = _md_child(710, _trajectory([0.1, 0.2]))
    loop.ctx.md_traj_1 = _md_child(550)  # killed without a checkpoint: nothing to harvest
    assert loop.inspect_exploration() is None
    assert list(loop.ctx.trajectories) == ['traj_0']
    loop.ctx.md_traj_0 = _md_child(350)
    assert loop.inspect_exploration().status == 570


def test_budget_rules_stop_before_an_iteration(loop):
    loop.ctx.stop = None
    loop.ctx.iteration = loop.ctx.parameters['max_iterations']
    assert not loop.should_iterate()
    assert loop.ctx.stop[:2] == ('max_iterations', 'ERROR_AL_MAX_ITERATIONS')
    loop.ctx.stop, loop.ctx.iteration, loop.ctx.n_dft = None, 0, loop.ctx.parameters['max_dft_labels']
    assert not loop.should_iterate()
    assert loop.ctx.stop[:2] == ('max_dft_labels', 'ERROR_AL_DFT_BUDGET')


def test_continuation_repeats_nothing(nmcml_codes, tiny_foundation_model, toy_frames):
    """A run continued after its last finished iteration, with the budget used up, runs no child process: the
    committee, dataset and held-out set come from the last ``iteration_metrics`` record, the numbering, DFT count and
    learning curve continue; ``get_builder_restart`` of that run continues it again in the same way."""
    from aiida.engine import run_get_node

    from aiida_nmcml.data.model import MaceModel
    from aiida_nmcml.structures import build_nmc, to_structure_data
    from aiida_nmcml.workflows.active_learning import iteration_metrics

    model = MaceModel.get_or_create(tiny_foundation_model)
    held_out = TrainingSet.from_frames(toy_frames[:1])
    records = {}
    for k in (1, 2):
        info = {'iteration': k, 'n_dft_labels': 1 + 2 * k, 'n_dft_labels_before': 2 * k - 1,
                'n_training_frames_before': 2 * (k - 1), 'n_selected': 2, 'stop_rule': None}  # fmt: skip
        summary = {'forces_rmse_meV_per_A': 100.0 / k, 'energy_rmse_meV_per_atom': 5.0, 'stress_rmse_GPa': 1.0}
        records[f'iter_{k:02d}'] = iteration_metrics(
            orm.Dict(info), training_set=TrainingSet.from_frames(toy_frames[1 : 1 + 2 * k]), held_out_set=held_out,
            model_m0=model, model_m1=model, held_out_metrics=orm.Dict({'summary': summary}),
        )  # fmt: skip
    builder = ActiveLearningWorkChain.get_builder_from_protocol(
        engine_code=nmcml_codes['engine'], dft_code=nmcml_codes['pw'], train_code=nmcml_codes['mace_train'],
        committee=[model, model], structures=[to_structure_data(build_nmc(40, seed=0))], foundation_model=model,
        protocol='demo', overrides={'label': {'qe': {'pseudo_family': nmcml_codes['pseudo_family']}}},
    )  # fmt: skip
    builder.previous_iterations = records
    _, node = run_get_node(builder)
    assert node.exit_status == 760, node.exit_message
    assert {c.process_label for c in node.called} == {'learning_curve', 'convergence_record'}
    assert node.outputs.training_set.num_frames == 4 and node.outputs.held_out_set.uuid == held_out.uuid
    assert node.outputs.convergence.get_dict()['n_dft_labels'] == 5
    assert node.outputs.learning_curve['n_dft_labels'] == [3, 5]
    assert node.outputs.learning_curve['forces_rmse_meV_per_A'] == [100.0, 50.0]

    restart = ActiveLearningWorkChain.get_builder_restart(node, parameters={'max_iterations': 2})
    assert restart.md.metadata.options.max_wallclock_seconds == builder.md.metadata.options.max_wallclock_seconds
    assert restart.training_set.uuid == records['iter_02'].creator.inputs.training_set.uuid
    _, again = run_get_node(restart)
    assert again.exit_status == 760 and {c.process_label for c in again.called} == {
        'learning_curve',
        'convergence_record',
    }
    assert again.outputs.learning_curve.get_dict() == node.outputs.learning_curve.get_dict()

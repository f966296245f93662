"""``nmcml.diffusion``: grid from the protocols, schema refusals, run flags, the D(T, x) table (unit tests, no MD),
and one end-to-end run on the daemon (tiny toy committee, 40-atom cell, two temperatures, very short runs: plumbing
and provenance; the science of the estimator is in tests/analysis/test_diffusion.py)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from aiida import orm
from ase.io import write

from aiida_nmcml.analysis import md_checks
from aiida_nmcml.workflows import diffusion as functions
from aiida_nmcml.workflows.diffusion_chain import (
    PARAMETERS,
    DiffusionWorkChain,
    build_grid,
    driver_order,
    included_runs,
    ordering_requests,
    validate_inputs,
)

GRID = {'li_contents': [0.5, 0.3], 'temperatures_K': [600.0, 800.0], 'temperatures_low_x_K': [500.0, 700.0]}


# ------------------------------------------------------------------------------------------- grid and schema
@pytest.mark.parametrize('level', ['demo', 'fast', 'moderate', 'precise'])
def test_protocol_grids(level):
    """Every level is valid; above demo >= 5 temperatures, >= 3 replicas, lower temperatures at x <= 0.4, size check;
    moderate/precise at >= 1000 atoms with in-plane widths >= 24 Å on a GPU; demo: one content, two temperatures."""
    from aiida_nmcml.structures import NmcLattice, _perpendicular_widths

    inputs = DiffusionWorkChain.get_protocol_inputs(level)
    params = inputs['parameters']
    assert PARAMETERS.errors(params) == []
    runs = build_grid(params, n_models=4)
    grid = [r for r in runs.values() if r['kind'] == 'grid']
    full = PARAMETERS.with_defaults(params)
    temps = {}
    for run in grid:
        temps.setdefault(run['x_li'], set()).add(run['temperature_K'])
    assert len(grid) == sum(len(t) for t in temps.values()) * full['n_replicas']
    assert len({r['seed'] for r in runs.values() if r['kind'] != 'model'}) == len(runs) - 1  # one seed per run
    assert [r['kind'] for r in runs.values()].count('model') == 1
    if level == 'demo':
        assert len(temps) == 1 and all(len(t) == 2 for t in temps.values())
        return
    assert full['n_replicas'] >= 3 and all(len(t) >= 5 for t in temps.values())
    assert full['size_check']['enabled'] and any(r['kind'] == 'size' for r in runs.values())
    low = [x for x in temps if x <= 0.4]
    assert low and all(min(temps[x]) < min(temps[max(temps)]) for x in low)
    assert full['production']['ensemble'] in ('nvt_bussi', 'nvt_nose_hoover')
    if level in ('moderate', 'precise'):
        lattice = NmcLattice.from_supercell(full['lattice']['supercell'])
        widths = _perpendicular_widths(lattice.cell)
        assert lattice.n_sites >= 1000 and sorted(widths)[1] >= 24.0, widths
        assert inputs['device'] == 'cuda' and 'gpu' in inputs['gpu_options']['custom_scheduler_commands']
        assert full['production']['steps'] * full['production'].get('timestep_fs', 1.0) >= 1e6  # >= 1 ns


def test_builder_gpu_directive_and_ground_state_keys(aiida_profile, nmcml_codes):
    """moderate runs on cuda and its MD jobs carry a GPU request; demo on CPU carries none; ground states may be keyed
    by x_li."""
    models = [orm.Int(0)]
    gpu = DiffusionWorkChain.get_builder_from_protocol(nmcml_codes['engine'], models, protocol='moderate')
    assert gpu.device.value == 'cuda' and 'gpu' in gpu.options['custom_scheduler_commands']
    structure = orm.StructureData(cell=[[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    cpu = DiffusionWorkChain.get_builder_from_protocol(
        nmcml_codes['engine'], models, protocol='demo', ground_states={0.5: structure}
    )
    assert 'custom_scheduler_commands' not in cpu.options and cpu.options['max_wallclock_seconds'] == 1800
    assert sorted(cpu.ground_states) == ['x0_5000']


def test_orderings_ground_state_then_random():
    """Replica 0 of a content with a GA ground state starts from it; every other ordering is random with its own seed;
    the size check has its own cell; the model check reuses its source run (no ordering, same seeds, other driver)."""
    params = {**GRID, 'n_replicas': 3, 'size_check': {'enabled': True, 'supercell': 80}}
    runs = build_grid(params, n_models=3)
    requests = ordering_requests(params, runs, ground_states={'x0_5000': None})
    assert requests['x0_5000_r0'] == {'ground_state': 'x0_5000'}
    random = {k: v for k, v in requests.items() if 'seed' in v}
    assert len(random) == 5 + 1 and len({v['seed'] for v in random.values()}) == len(random)
    assert requests['size_x0_5000_r0']['supercell'] == 80 and requests['x0_3000_r1']['supercell'] == 1200
    model = runs['x0_5000_T0800_r0_driver1']
    assert model['kind'] == 'model' and model['source'] == 'x0_5000_T0800_r0'
    assert model['seed'] == runs['x0_5000_T0800_r0']['seed']
    assert {r['temperature_K'] for r in runs.values() if r['x_li'] == 0.3} == {500.0, 700.0}


def test_schema_refusals_name_the_closest_key():
    cases = {
        'n_replica': ({**GRID, 'n_replica': 3}, "did you mean 'n_replicas'"),
        'langevin': ({**GRID, 'production': {'ensemble': 'nvt_langevin'}}, 'Langevin friction changes hop rates'),
        'isotropic': ({**GRID, 'equilibration': {'ensemble': 'npt', 'barostat': 'isotropic'}}, "'full' only"),
        'md key': ({**GRID, 'production': {'ensemble': 'nvt_bussi', 'stepz': 10}}, "did you mean 'steps'"),
        'per-run key': ({**GRID, 'production': {'ensemble': 'nve', 'temperature_K': 300}}, 'set per run'),
        'analysis': ({**GRID, 'analysis': {'start_f': 10}}, "did you mean 'start_fs'"),
        'one T': ({**GRID, 'temperatures_K': [600.0]}, 'length 1 is out of range'),
        'duplicate x': ({**GRID, 'li_contents': [0.5, 0.5]}, 'duplicates'),
        'check point': ({**GRID, 'model_check': {'x_li': 0.7}}, 'not one of li_contents'),
        'theta': ({**GRID, 'thermodynamic_factors': {'half': 2.0}}, 'is not a Li content'),
        'x range': ({**GRID, 'li_contents': [1.5]}, 'out of range'),
    }
    for name, (params, expected) in cases.items():
        errors = PARAMETERS.errors(params)
        assert errors and expected in '\n'.join(errors), (name, errors)


def test_inputs_refused_before_submission(aiida_profile):
    """The spec's validator: schema errors, a ground state for a content not in the grid, a driver beyond the
    committee, no models."""
    models = {'m0': orm.Int(0), 'm1': orm.Int(1)}
    assert 'n_replicas' in validate_inputs({'models': models, 'parameters': orm.Dict({**GRID, 'n_replica': 2})}, None)
    ground = {'x0_7000': orm.StructureData()}
    message = validate_inputs({'models': models, 'parameters': orm.Dict(GRID), 'ground_states': ground}, None)
    assert 'x0_7000' in message
    message = validate_inputs({'models': models, 'parameters': orm.Dict({**GRID, 'model_check': {'driver': 2}})}, None)
    assert 'committee has 2 members' in message
    assert 'at least one model' in validate_inputs({'parameters': orm.Dict(GRID)}, None)
    from aiida_nmcml.structures import build_nmc, to_structure_data

    small = {**GRID, 'lattice': {'supercell': 40}}
    other_cell = {'x0_5000': to_structure_data(build_nmc(80, x_li=0.5, seed=0))}
    message = validate_inputs({'models': models, 'parameters': orm.Dict(small), 'ground_states': other_cell}, None)
    assert 'has 70 atoms' in message and 'holds 35' in message
    same_cell = {'x0_5000': to_structure_data(build_nmc(40, x_li=0.5, seed=0))}
    assert validate_inputs({'models': models, 'parameters': orm.Dict(small), 'ground_states': same_cell}, None) is None
    assert validate_inputs({'models': models, 'parameters': orm.Dict(GRID)}, None) is None


def test_driver_order_and_included_runs():
    assert driver_order({'m0': 'a', 'm1': 'b', 'm2': 'c'}, 2) == {'m0': 'c', 'm1': 'a', 'm2': 'b'}
    runs = build_grid({**GRID, 'li_contents': [0.5], 'n_replicas': 2}, n_models=2)
    checks = {
        'x0_5000_T0600_r0': {'in_domain': True},
        'x0_5000_T0600_r1': {'in_domain': False, 'reasons': ['committee deviation left the trust band']},
        'x0_5000_T0800_r1': {'in_domain': True},
        'x0_5000_T0800_r0_driver1': {'in_domain': True},  # the model check is never pooled
    }
    assert included_runs(runs, checks) == {
        'x0_5000_T0600': ['x0_5000_T0600_r0'],
        'x0_5000_T0800': ['x0_5000_T0800_r1'],  # r0 failed: no checks at all
    }


# --------------------------------------------------------------------------------------------- frame checks
@pytest.fixture(scope='module')
def nmc_frames():
    """Ten frames of a 40-atom NMC811 cell at x = 0.5 with 0.05 Å noise, unwrapped, 10 fs apart."""
    from aiida_nmcml.structures import build_nmc

    atoms = build_nmc(40, x_li=0.5, seed=1)
    rng = np.random.default_rng(0)
    frames = []
    for i in range(10):
        frame = atoms.copy()
        frame.positions += 0.05 * rng.standard_normal(frame.positions.shape)
        frame.arrays['unwrapped'] = frame.positions.copy()
        frame.info['time_fs'] = 10.0 * i
        frame.info['temperature'] = 600.0
        frames.append(frame)
    return frames


def test_frame_checks_flag_migration_and_oo_contacts(nmc_frames):
    clean = md_checks.check_frames(nmc_frames)
    assert clean['tm_migrated'] == [] and clean['oo_contact_frames'] == []
    assert clean['tm_plane_spacing_A'] == pytest.approx(14.2 / 3, abs=0.05)  # c/3: three TM layers per hexagonal c
    assert 2.3 < clean['min_oo_distance_A'] < 3.0

    frames = [f.copy() for f in nmc_frames]
    tm = md_checks.tm_indices(frames[0])[3]
    oxygen = [i for i, s in enumerate(frames[0].get_chemical_symbols()) if s == 'O']
    for f in frames[6:]:
        f.arrays['unwrapped'][tm, 2] += 1.6  # 2/3 of the way to the Li plane (2.37 Å): migrating
    frames[8].positions[oxygen[1]] = frames[8].positions[oxygen[0]] + [1.2, 0, 0]  # an O-O bond of 1.2 Å
    flagged = md_checks.check_frames(frames)
    assert flagged['tm_migrated'] == [int(tm)]
    assert flagged['oo_contact_frames'] == [8] and flagged['min_oo_distance_A'] == pytest.approx(1.2, abs=1e-6)
    assert md_checks.check_frames(frames, stride=4)['oo_contact_frames'] == [8]  # every 4th frame: 0, 4, 8, 9


def test_uncertainty_band():
    series = [0.05, 0.1, 0.42, 0.2]
    assert md_checks.check_uncertainty(series, trust_upper=0.3)['outside']
    assert not md_checks.check_uncertainty(series, trust_upper=0.3, max_fraction_above=0.25)['outside']
    assert not md_checks.check_uncertainty(series, trust_upper=0.5)['outside']


def _file(frames) -> orm.SinglefileData:
    handle = io.StringIO()
    write(handle, frames, format='extxyz')
    return orm.SinglefileData(io.BytesIO(handle.getvalue().encode()), filename='trajectory.extxyz')


def test_inspect_run_production_cell_and_table(aiida_profile, nmc_frames):
    """The calcfunctions of the chain on synthetic frames: a run above the trust band is out of the domain with its
    reason; the NPT-averaged cell keeps the sublattice; the table lists used and excluded runs; the experiment entry
    is labelled raw (tracer vs chemical) and converted only where Theta is given."""
    trajectory = _file(nmc_frames)
    settings = {'trust_upper': 0.3, 'max_fraction_above': 0.0, 'oo_min_distance': 1.5, 'migration_fraction': 0.5}
    quiet, loud = orm.ArrayData(), orm.ArrayData()
    quiet.set_array('max_force_dev', np.array([0.05, 0.08, 0.1]))
    loud.set_array('max_force_dev', np.array([0.05, 0.5, 0.1]))
    good = functions.inspect_run(trajectory=trajectory, settings=orm.Dict(settings), uncertainty=quiet)
    bad = functions.inspect_run(trajectory=trajectory, settings=orm.Dict(settings), uncertainty=loud)
    assert good['checks']['in_domain'] and good['checks']['reasons'] == []
    assert not bad['checks']['in_domain'] and 'trust band' in bad['checks']['reasons'][0]
    assert good['msd'].get_array('msd_xy_A2').size == good['msd'].get_array('lag_fs').size > 0
    alone = functions.inspect_run(trajectory=trajectory, settings=orm.Dict({**settings, 'exit_status': 711}))
    assert not alone['checks']['in_domain'] and 'exit 711' in alone['checks']['reasons'][0]
    assert 'trust band was not checked' in alone['checks']['warnings'][0]

    stretched = [f.copy() for f in nmc_frames]
    for i, f in enumerate(stretched):
        f.set_cell(f.cell.array * (1 + 0.01 * i), scale_atoms=True)
    cell = functions.production_cell(trajectory=_file(stretched), fraction=orm.Float(0.5))
    expected = np.mean([f.cell.array for f in stretched[5:]], axis=0)
    assert np.allclose(cell.cell, expected)
    assert cell.base.attributes.get('nmcml_sublattice') == [str(s) for s in nmc_frames[0].arrays['sublattice']]
    # linear scale 1 + 0.01 i: the mean volume of the last half against the first frame
    change = cell.base.attributes.get('nmcml_npt_average')['volume_change']
    assert change == pytest.approx(np.mean([(1 + 0.01 * i) ** 3 for i in range(5, len(stretched))]) - 1)
    assert functions.npt_runaway(change, 0.3) is None and 'ran away' in functions.npt_runaway(change, 0.15)  # +23 %
    assert 'ran away' in functions.npt_runaway(4.4, 0.15)  # the demo foundation's 675 -> 3655 Å^3
    assert 'ran away' in functions.npt_runaway(-0.3, 0.15)  # a collapse as well

    runs = build_grid({**GRID, 'li_contents': [0.5], 'n_replicas': 2}, n_models=1)
    dropped = {'x0_5000_T0800_r1': 'NPT equilibration failed'}
    runs = {k: {**r, 'dropped': dropped.get(k)} for k, r in runs.items()}
    point = orm.Dict({'D_xy': {'D_cm2_s': 1e-6, 'D_interval_cm2_s': [5e-7, 2e-6]}, 'haven_ratio': [0.8, 0.4, 1.6]})
    arrhenius = orm.Dict({'Ea_eV': [0.3, 0.2, 0.4], 'D_300K_cm2_s': [1e-10, 1e-11, 1e-9], 'temperatures_K': [600, 800],
                          'curvature': {'checked': False}, 'uncertainty_inflation': 1.0})  # fmt: skip
    table = functions.diffusion_table(
        grid=orm.Dict({'runs': runs, 'missing': {'x0_5000_T0800': 'no in-domain run'}}),
        point_x0_5000_T0600=point,
        arrhenius_x0_5000=arrhenius,
        run_x0_5000_T0600_r0=good['checks'],
        run_x0_5000_T0600_r1=bad['checks'],
    ).get_dict()
    rows = {row['point']: row for row in table['rows']}
    assert rows['x0_5000_T0600']['runs_used'] == ['x0_5000_T0600_r0']
    assert 'trust band' in rows['x0_5000_T0600']['runs_excluded']['x0_5000_T0600_r1'][0]
    assert rows['x0_5000_T0600']['D_xy_cm2_s'] == [1e-6, 5e-7, 2e-6]
    assert rows['x0_5000_T0800']['missing'] == 'no in-domain run'
    assert rows['x0_5000_T0800']['runs_excluded']['x0_5000_T0800_r1'] == ['NPT equilibration failed']
    assert table['arrhenius']['x0_5000']['Ea_eV'] == [0.3, 0.2, 0.4]

    raw = functions.compare_with_experiment(table=orm.Dict(table), settings=orm.Dict({})).get_dict()
    entry = raw['contents']['x0_5000']
    assert entry['converted'] is None and 'tracer' in entry['raw']['what'] and 'chemical' in entry['raw']['what']
    assert entry['experiment_chemical_D_cm2_s'] == pytest.approx(7.3e-11)  # O'Regan 2022 at x = 0.5
    assert entry['raw']['log10_ratio_md_over_exp'] == pytest.approx(np.log10(1e-10 / 7.3e-11))
    converted = functions.compare_with_experiment(
        table=orm.Dict(table), settings=orm.Dict({'thermodynamic_factors': {'0.5': 40.0}})
    ).get_dict()['contents']['x0_5000']['converted']
    assert converted['chemical_D_300K_cm2_s'][0] == pytest.approx(1e-10 * 40.0 / 0.8)


def test_arrhenius_through_two_temperatures_is_stored(aiida_profile):
    """Two temperatures leave no degree of freedom: the reduced chi^2 is undefined (NaN), stored as None, not refused
    by the database (the demo grid has two temperatures)."""
    rng = np.random.default_rng(0)
    samples = {}
    for temperature, d in ((600.0, 1e-6), (800.0, 4e-6)):
        node = orm.ArrayData()
        node.set_array('tracer_xy_D_samples', d * np.exp(0.1 * rng.standard_normal(500)))
        node.base.attributes.set('temperature_K', temperature)
        samples[f't{int(temperature)}'] = node
    fit = functions.arrhenius(**samples)['result'].get_dict()
    assert fit['chi2_reduced'] is None and 0.25 < fit['Ea_eV'][0] < 0.33  # ln 4 k_B / (1/600 - 1/800) = 0.287 eV


# ------------------------------------------------------------------------------------------------ end to end
@pytest.fixture(scope='module')
def committee(tiny_foundation_model):
    """Two tiny MACE members trained with different seeds (a committee with a nonzero spread)."""
    from aiida_nmcml.data.model import MaceModel
    from aiida_nmcml.testing import toymodel

    return [MaceModel.get_or_create(tiny_foundation_model), MaceModel.get_or_create(toymodel.cached_tiny_mace(seed=2))]


@pytest.mark.daemon
def test_two_temperatures_on_the_daemon(nmcml_codes, committee, submit_and_await):
    """Demo protocol cut to 1 content x 2 temperatures x 1 replica on the 40-atom cell, 20 NPT + 60 NVT steps, plus
    the model check (member 1 driving). The toy committee is not calibrated, so the trust band is opened (the flag
    logic is tested above) and the deviation and temperature stops are off; the toy model is run cool (500/600 K)
    because it collapses within ~100 steps at 700 K.

    Checks the plumbing and the provenance: NPT -> averaged cell -> Bussi NVT through nmcml.md.base; flags, MSD curve,
    (T, x) results, Arrhenius, model check and experiment comparison stored by calcfunctions from the trajectories;
    outputs in the group."""
    overrides = {
        'parameters': {
            'temperatures_K': [500.0, 600.0],
            'n_replicas': 1,
            'equilibration': {'steps': 20, 'timestep_fs': 1.0, 'trajectory_stride': 5, 'pdamp_fs': 100.0},
            'production': {'steps': 60, 'timestep_fs': 1.0, 'trajectory_stride': 2, 'checkpoint_stride': 60,
                           'tdamp_fs': 20.0, 'uncertainty': {'stride': 10},
                           'stop': {'hard_limit': None, 'max_temperature': None}},
            'analysis': {'start_fs': 4.0, 'n_lags': 10, 'n_samples': 200},
            # the toy committee is not a potential: its NPT cell moves by more than the physical 15 % in 20 fs
            'checks': {'trust_upper': 10.0, 'max_npt_volume_change': 10.0},
        }
    }  # fmt: skip
    builder = DiffusionWorkChain.get_builder_from_protocol(
        nmcml_codes['engine'], committee, protocol='demo', overrides=overrides
    )
    builder.group_label = 'test/diffusion_e2e'
    node = submit_and_await(builder, timeout=900)
    from aiida.cmdline.utils.common import get_workchain_report

    report = get_workchain_report(node, 'REPORT')
    assert node.is_finished_ok, (node.exit_status, node.exit_message, report)

    points = ['x0_5000_T0500', 'x0_5000_T0600']
    assert sorted(node.outputs.points) == points and sorted(node.outputs.samples) == points
    runs = [f'{p}_r0' for p in points]
    assert sorted(node.outputs.run_checks) == sorted([*runs, 'x0_5000_T0600_r0_driver1'])
    table = node.outputs.table.get_dict()
    for row in table['rows']:
        assert row['runs_used'] == [f'{row["point"]}_r0'] and row['D_xy_cm2_s'][1] <= row['D_xy_cm2_s'][2]
    assert set(node.outputs.arrhenius) == {'x0_5000'}
    assert node.outputs.arrhenius_posterior['x0_5000'].get_array('Ea_eV').size == 4000
    assert 'model_check' in node.outputs, report
    assert node.outputs.model_check['kind'] == 'model'
    assert 'x0_5000' in node.outputs.experiment['contents']

    # provenance: point result <- analyse_trajectories <- NVT trajectory <- nmcml.md (Bussi) <- averaged NPT cell
    analysis = node.outputs.points['x0_5000_T0600'].creator
    trajectory = analysis.inputs['r_x0_5000_T0600_r0']
    nvt = trajectory.creator
    assert nvt.process_type.endswith('nmcml.md') and nvt.inputs.parameters['ensemble'] == 'nvt_bussi'
    assert nvt.inputs.parameters['temperature_K'] == 600.0
    start = nvt.inputs.structure.creator
    assert start.process_label == 'production_cell'
    npt = start.inputs.trajectory.creator
    assert npt.inputs.parameters['ensemble'] == 'npt' and npt.inputs.parameters['barostat'] == 'full'
    assert npt.inputs.structure.creator.process_label == 'build_orderings'
    # the model check ran on the same cell with member 1 driving
    model_nvt = node.outputs.run_checks['x0_5000_T0600_r0_driver1'].creator.inputs.trajectory.creator
    assert model_nvt.inputs.structure.uuid == nvt.inputs.structure.uuid
    assert model_nvt.inputs.models['m0'].uuid == committee[1].uuid
    assert nvt.inputs.models['m0'].uuid == committee[0].uuid

    group = orm.load_group('test/diffusion_e2e/diffusion')
    assert node.outputs.table.uuid in {n.uuid for n in group.nodes}

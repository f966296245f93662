"""``nmcml.barrier``: protocols and schema, hop planning, the per-hop table (DFT per image, Ni moment check, zero-shot)
and the work chain's failure paths on mock nmcml.neb children. The daemon run with real pw.x is in
test_barrier_daemon.py."""

from __future__ import annotations

import numpy as np
import pytest
from aiida import orm
from ase import Atoms

from aiida_nmcml.analysis.barriers import barrier_row, ni_classes, ni_pattern_changes, path_energies
from aiida_nmcml.common.exit_codes import TABLE
from aiida_nmcml.data.trainingset import TrainingSet
from aiida_nmcml.workflows.barrier import (
    PARAMETERS,
    BarrierWorkChain,
    barrier_table,
    hop_key,
    plan_hops,
    validate_parameters,
)


def neb_summary(energies, converged=True, members=None):
    energies = np.asarray(energies, dtype=float)
    top = int(1 + np.argmax(energies[1:-1]))
    summary = {
        'energies': energies.tolist(),
        'energies_relative': (energies - energies[0]).tolist(),
        'barrier_forward': float(energies.max() - energies[0]),
        'barrier_reverse': float(energies.max() - energies[-1]),
        'reaction_energy': float(energies[-1] - energies[0]),
        'climbing_image': top,
        'highest_image': top,
        'converged': converged,
        'fmax_final': 0.04 if converged else 0.3,
        'warnings': [],
    }
    if members is not None:
        members = np.asarray(members, dtype=float)
        barriers = members.max(axis=1) - members[:, 0]
        summary['committee'] = {
            'member_energies': members.tolist(),
            'member_barriers': barriers.tolist(),
            'barrier_std': float(barriers.std(ddof=1)),
            'max_force_deviation': [0.01] * len(energies),
        }
    return summary


@pytest.mark.parametrize('protocol', ['demo', 'fast', 'moderate', 'precise'])
def test_protocols_build_valid_inputs(protocol, nmcml_codes, tiny_foundation_model):
    from aiida_nmcml.data.model import MaceModel

    model = MaceModel.get_or_create(tiny_foundation_model)
    builder = BarrierWorkChain.get_builder_from_protocol(
        nmcml_codes['engine'], [model], protocol=protocol, dft_code=nmcml_codes['pw'], group_label='C'
    )
    params = builder.parameters.get_dict()
    assert PARAMETERS.errors(params) == []
    assert builder.neb.parameters['climb'] is True and builder.neb.parameters['interpolation'] == 'idpp'
    assert builder.zero_shot.universal_potential.value == 'chgnet'
    assert builder.dft.engine.value == 'qe' and builder.group_label == 'C'
    if protocol in ('moderate', 'precise'):  # the published study's scale: >= 4x4 in-plane, fmax <= 0.05
        assert params['supercell'][0] >= 4 and params['supercell'][1] >= 4
        assert builder.neb.parameters['fmax'] <= 0.05 and builder.neb.parameters['relax_cell'] == 'full'
        assert {h['kind'] for h in params['hops']} == {'odh', 'tsh'}
        assert {h['environment'] for h in params['hops']} >= {'Ni', 'Mn', 'Ni_Li'}
        assert params['composition'] == {'Ni': 0.8, 'Mn': 0.1, 'Co': 0.1}
    if protocol == 'demo':
        assert params['composition'] == {'Ni': 1.0}  # replaced, not merged with the default's Mn and Co


def test_parameters_refused_with_the_closest_key():
    hops = [{'kind': 'odh'}]
    assert "did you mean 'supercell'" in validate_parameters(orm.Dict({'supercel': 16, 'hops': hops}), None)
    message = validate_parameters(orm.Dict({'hops': [{'kind': 'odh', 'enviroment': 'Ni'}]}), None)
    assert "did you mean 'environment'" in message
    assert 'kind' in validate_parameters(orm.Dict({'hops': [{'kind': 'xyz'}]}), None)
    assert 'the same hop twice' in validate_parameters(orm.Dict({'hops': hops + hops}), None)
    assert 'ni_moment_bounds' in validate_parameters(orm.Dict({'hops': hops, 'ni_moment_bounds': [1.4, 0.5]}), None)
    # a hop the host cannot hold is refused before submission, naming it
    message = validate_parameters(
        orm.Dict({'supercell': 16, 'composition': {'Ni': 1.0}, 'hops': [{'kind': 'odh', 'environment': 'Mn'}]}), None
    )
    assert 'odh_mn_x1_0000' in message and 'Mn' in message


def test_dft_neb_parameters_refused_before_submission():
    """parameters.dft_neb (off by default): schema with the closest key, only requested hops, and hops whose host
    needs several starting moments for one element (NMC811: Ni2+ and Ni3+) refused, since aiida-quantumespresso's
    NebCalculation makes one species per element."""
    lno = {'supercell': 16, 'composition': {'Ni': 1.0}, 'hops': [{'kind': 'odh'}]}
    assert PARAMETERS.with_defaults(lno)['dft_neb']['hops'] == []  # default: no DFT NEB
    assert validate_parameters(orm.Dict({**lno, 'dft_neb': {'hops': ['odh_any_x1_0000']}}), None) is None
    message = validate_parameters(orm.Dict({**lno, 'dft_neb': {'hops': ['odh_any_x1_0000'], 'path_tr': 0.1}}), None)
    assert "did you mean 'path_thr'" in message
    assert 'CI_scheme' not in PARAMETERS.errors({**lno, 'dft_neb': {'ci_scheme': 'manual'}})[0]  # refused by choices
    message = validate_parameters(orm.Dict({**lno, 'dft_neb': {'hops': ['tsh_any_x1_0000']}}), None)
    assert "'tsh_any_x1_0000' is not one of the requested hops" in message
    nmc = {'supercell': [5, 2, 1], 'hops': [{'kind': 'odh', 'environment': 'Ni'}]}
    assert validate_parameters(orm.Dict(nmc), None) is None
    message = validate_parameters(orm.Dict({**nmc, 'dft_neb': {'hops': ['odh_ni_x1_0000']}}), None)
    assert 'several moments' in message and 'Ni' in message


def test_dft_neb_inputs_need_code_and_settings(nmcml_codes):
    from aiida_nmcml.workflows.barrier import validate_inputs

    params = orm.Dict({'supercell': 16, 'composition': {'Ni': 1.0}, 'hops': [{'kind': 'odh'}]})
    wanted = orm.Dict({**params.get_dict(), 'dft_neb': {'hops': ['odh_any_x1_0000']}})
    assert 'give dft_neb.code' in validate_inputs({'parameters': wanted}, None)
    message = validate_inputs({'parameters': params, 'dft_neb': {'code': nmcml_codes['neb']}}, None)
    assert 'parameters.dft_neb.hops is empty' in message
    assert validate_inputs({'parameters': params}, None) is None


def neb_x_output(energies, converged=True):
    """``output_parameters`` of aiida-quantumespresso's neb.x parser, with the keys the table reads."""
    params = {
        'num_of_images': len(energies),
        'converged': [converged, 7 if converged else 0],
        'path_thr': 0.05,
        'ci_scheme': 'auto',
    }
    params.update({f'pw_output_image_{i + 1}': {'energy': e} for i, e in enumerate(energies)})
    return params


def test_dft_neb_column_and_differences():
    """The neb.x barrier is DFT's own path: highest image - image 1; compared with the model and with DFT on the
    model's path; an unconverged neb.x is flagged."""
    model = [0.0, 0.2, 0.45, 0.25, 0.05]
    dft_on_model_path = {i: -100.0 + e for i, e in enumerate([0.0, 0.25, 0.5, 0.3, 0.0])}
    neb_x = neb_x_output([-3000.0, -2999.8, -2999.58, -2999.75, -3000.0])
    row = barrier_row(neb_summary(model), dft_on_model_path, None, None, dft_neb=neb_x)
    assert row['dft_neb']['barrier'] == pytest.approx(0.42) and row['dft_neb']['highest_image'] == 2
    assert row['dft_neb']['energies_relative'] == pytest.approx([0.0, 0.2, 0.42, 0.25, 0.0])
    assert row['differences']['dft_neb_minus_model'] == pytest.approx(-0.03)
    assert row['differences']['dft_neb_minus_dft_on_model_path'] == pytest.approx(-0.08)
    assert row['dft_neb']['converged'] and row['flags'] == []
    stuck = barrier_row(neb_summary(model), None, None, None, dft_neb=neb_x_output([-1.0, -0.7, -0.9], False))
    assert stuck['dft_neb']['barrier'] == pytest.approx(0.3)
    assert any('DFT NEB (neb.x) not converged' in flag for flag in stuck['flags'])
    assert 'dft_neb' not in barrier_row(neb_summary(model))


def test_plan_hops_environments_and_antisite():
    params = {
        'supercell': [4, 4, 1],
        'composition': {'Ni': 0.8, 'Mn': 0.1, 'Co': 0.1},
        'hops': [
            {'kind': 'odh', 'environment': 'Mn'},
            {'kind': 'tsh', 'environment': 'Ni'},
            {'kind': 'odh', 'environment': 'Ni_Li'},
            {'kind': 'tsh', 'x_li': 0.5},
        ],
    }
    hops = plan_hops(params)
    assert list(hops) == ['odh_mn_x1_0000', 'tsh_ni_x1_0000', 'odh_ni_li_x1_0000', 'tsh_any_x0_5000']
    assert hops['odh_mn_x1_0000'].info['nearest_tm_to_transition_point'][0] == 'Mn'
    assert hops['tsh_ni_x1_0000'].via is not None and len(hops['tsh_ni_x1_0000'].initial) == 190
    antisite = hops['odh_ni_li_x1_0000']
    on_li = (np.array(antisite.initial.get_chemical_symbols()) == 'Ni') & (
        antisite.initial.arrays['sublattice'] == 'li'
    )
    assert on_li.sum() == 1 and antisite.info['antisite_distance_A'] < 3.5  # the Ni_Li sits next to the hop
    assert hops['tsh_any_x0_5000'].initial.get_chemical_symbols().count('Li') == 24 - 2
    assert hop_key({'kind': 'tsh', 'x_li': 0.25, 'environment': 'Ni_Li'}) == 'tsh_ni_li_x0_2500'


def test_ni_moment_classes_and_pattern_changes():
    assert ni_classes([0.1, -0.9, 1.6, 1.2]) == ['Ni4+', 'Ni3+', 'Ni2+', 'Ni3+']
    moments = {0: np.array([0.9, 0.9, 0.1]), 1: np.array([0.9, 0.8, 0.2]), 2: np.array([0.1, 0.9, 0.9])}
    check = ni_pattern_changes(moments)
    assert check['flagged_images'] == [2]  # same counts, but the hole moved from Ni 2 to Ni 0
    assert check['changed_sites'] == {2: [0, 2]}
    assert check['counts'][2] == {'Ni4+': 1, 'Ni3+': 2, 'Ni2+': 0}
    assert ni_pattern_changes({1: np.array([0.9])})['reference_missing']


def test_barrier_row_model_dft_zero_shot():
    """Images in path order, the climbing image at the maximum, DFT and zero-shot relative to image 0 of the path."""
    model = [0.0, 0.2, 0.45, 0.25, 0.05]
    members = [[0.0, 0.2, 0.4, 0.2, 0.0], [0.0, 0.25, 0.5, 0.3, 0.1]]
    dft = {i: -100.0 + e for i, e in enumerate([0.0, 0.25, 0.5, 0.3, 0.0])}
    zero = {i: 7.0 + e for i, e in enumerate([0.0, 0.1, 0.36, 0.2, 0.0])}
    row = barrier_row(neb_summary(model, members=members), dft, None, zero)
    assert row['model']['climbing_image'] == 2 and row['model']['barrier'] == pytest.approx(0.45)
    assert row['model']['committee_barrier_std'] == pytest.approx(np.std([0.4, 0.5], ddof=1))
    assert row['dft']['energies_relative'] == pytest.approx([0.0, 0.25, 0.5, 0.3, 0.0])
    assert row['dft']['barrier'] == pytest.approx(0.5) and row['dft']['at_model_saddle'] == pytest.approx(0.5)
    assert row['zero_shot']['barrier'] == pytest.approx(0.36)
    assert row['differences']['dft_minus_model'] == pytest.approx(0.05)
    assert row['differences']['zero_shot_minus_dft'] == pytest.approx(-0.14)
    assert row['flags'] == []
    # an image without DFT: the barrier over those present, the missing one named and flagged
    partial = barrier_row(neb_summary(model), {0: -100.0, 1: -99.8, 3: -99.7}, None, None)
    assert partial['dft']['missing_images'] == [2, 4] and partial['dft']['barrier'] == pytest.approx(0.3)
    assert partial['dft']['at_model_saddle'] is None and 'DFT missing for images [2, 4]' in partial['flags']
    assert 'zero_shot' not in partial and partial['differences']['zero_shot_minus_model'] is None
    assert path_energies({1: 0.2}, 3)['barrier'] is None  # no initial image: no barrier
    unconverged = barrier_row(neb_summary(model, converged=False))
    assert 'model NEB not converged' in unconverged['flags'][0]


def _frame(key, energy, ni_moments):
    atoms = Atoms('LiNi2O2', positions=np.random.default_rng(len(key)).random((5, 3)) * 3, cell=[4, 4, 4], pbc=True)
    atoms.info.update({'label_key': key, 'REF_energy': energy, 'REF_stress': np.zeros(6)})
    atoms.arrays['REF_forces'] = np.zeros((5, 3))
    atoms.arrays['REF_magmoms'] = np.array([0.0, ni_moments[0], ni_moments[1], 0.0, 0.0])
    return atoms


def test_barrier_table_calcfunction_parses_each_image():
    """DFT single points are matched to their hop and image by label key; a changed Ni pattern is flagged; a hop
    whose NEB failed keeps its row with the reason."""
    hop = 'odh_ni_x1_0000'
    dft = [(0, -50.0, (0.9, 0.1)), (1, -49.7, (0.9, 0.1)), (2, -49.6, (0.1, 0.9))]
    frames = TrainingSet.from_frames([_frame(f'{hop}__image_{i:02d}', e, m) for i, e, m in reversed(dft)])
    settings = {
        'hop_info': {hop: {'kind': 'odh', 'formula': 'LiNi2O2'}, 'tsh_ni_x1_0000': {'kind': 'tsh'}},
        'failed': {'tsh_ni_x1_0000': 'model NEB failed: exit 399'},
        'dft': True,
        'zero_shot': False,
        'ni_moment_bounds': [0.5, 1.35],
    }
    table = barrier_table(
        settings=orm.Dict(settings), labelled=frames, **{f'neb__{hop}': orm.Dict(neb_summary([0.0, 0.35, 0.1]))}
    ).get_dict()
    row = table[hop]
    assert row['kind'] == 'odh' and row['hop'] == hop
    assert row['dft']['energies_relative'] == pytest.approx([0.0, 0.3, 0.4])
    assert row['dft']['barrier'] == pytest.approx(0.4) and row['dft']['highest_image'] == 2
    assert row['dft']['ni_moments']['flagged_images'] == [2]
    assert any('Ni moment pattern changes' in flag for flag in row['flags'])
    assert row['differences']['dft_minus_model'] == pytest.approx(0.05)
    assert table['tsh_ni_x1_0000']['failed'] == 'model NEB failed: exit 399'


def test_exit_codes_declared():
    spec = BarrierWorkChain.spec()
    for label in (
        'ERROR_BARRIER_NEB_FAILED',
        'ERROR_BARRIER_DFT_FAILED',
        'ERROR_BARRIER_DFT_NEB_FAILED',
        'ERROR_BARRIER_INCOMPLETE',
    ):
        assert spec.exit_codes[label].status == TABLE[label].status


def _neb_files(hop, energies, status: str) -> dict[str, bytes]:
    """Retrieved files of an nmcml.neb run on ``hop``: images along the straight path, summary, engine status."""
    import io
    import json

    from ase.io import write

    frames = []
    for index, energy in enumerate(energies):
        frame = hop.initial.copy()
        t = index / (len(energies) - 1)
        frame.positions = (1 - t) * hop.initial.positions + t * hop.final.positions
        frame.info = {'image': index, 'neb_energy': float(energy), 'climbing': index == 1}
        frame.arrays['neb_forces'] = np.zeros((len(frame), 3))
        frames.append(frame)
    buffer = io.StringIO()
    write(buffer, frames, format='extxyz')
    summary = neb_summary(energies, converged=status == 'ok')
    return {
        'neb_images.extxyz': buffer.getvalue().encode(),
        'neb_summary.json': json.dumps(summary).encode(),
        'engine_status.json': json.dumps({'status': status, 'message': 'mock'}).encode(),
    }


@pytest.fixture
def barrier_process(generate_workchain, fake_engine_code, tiny_foundation_model):
    from aiida_nmcml.data.model import MaceModel

    def make(hops):
        inputs = {
            'parameters': orm.Dict({'supercell': 16, 'composition': {'Ni': 1.0}, 'hops': hops}),
            'neb': {
                'code': fake_engine_code,
                'models': {'m0': MaceModel.get_or_create(tiny_foundation_model)},
                'parameters': orm.Dict({'n_images': 1}),
            },
            'group_label': 'mock_campaign',
        }
        process = generate_workchain('nmcml.barrier', inputs)
        process.setup()
        return process

    return make


def test_failed_and_unconverged_nebs_give_a_flagged_table(barrier_process, generate_calc_job_node):
    """One NEB stopped unconverged (740, images attached): used and flagged; one crashed (399): its row says why.
    The table is attached, the group filled, and the work chain exits 780 naming both."""
    process = barrier_process([{'kind': 'odh'}, {'kind': 'tsh'}])
    plans = plan_hops({'supercell': 16, 'composition': {'Ni': 1.0}, 'hops': [{'kind': 'odh'}]})
    odh = generate_calc_job_node(
        'nmcml.neb', files=_neb_files(plans['odh_any_x1_0000'], [0.0, 0.3, 0.05], 'neb_not_converged'), parse=True
    )
    assert odh.exit_status == 740 and 'image_structures' in odh.outputs
    tsh = generate_calc_job_node(
        'nmcml.neb', files={'engine_status.json': b'{"status": "internal_error", "message": "boom"}'}, parse=True
    )
    assert tsh.exit_status == 399
    process.ctx.neb_odh_any_x1_0000 = odh
    process.ctx.neb_tsh_any_x1_0000 = tsh
    assert process.inspect_neb() is None
    assert process.ctx.usable == ['odh_any_x1_0000'] and 'exit 399' in process.ctx.failed['tsh_any_x1_0000']
    assert not process.should_run_dft() and not process.should_run_zero_shot()
    exit_code = process.results()
    assert exit_code.status == 780
    assert 'odh_any_x1_0000: model NEB not converged' in exit_code.message and 'tsh_any_x1_0000' in exit_code.message
    table = process.outputs['table'].get_dict()
    assert table['odh_any_x1_0000']['model']['barrier'] == pytest.approx(0.3)
    assert 'dft' not in table['odh_any_x1_0000']  # no DFT asked: no DFT columns, not "missing"
    assert 'exit 399' in table['tsh_any_x1_0000']['failed']
    group = orm.load_group('mock_campaign/barriers')
    assert process.outputs['table'].uuid in {n.uuid for n in group.nodes}


def test_no_usable_neb_is_580(barrier_process, generate_calc_job_node):
    process = barrier_process([{'kind': 'odh'}])
    process.ctx.neb_odh_any_x1_0000 = generate_calc_job_node(
        'nmcml.neb', files={'engine_status.json': b'{"status": "invalid_input", "message": "bad"}'}, parse=True
    )
    exit_code = process.inspect_neb()
    assert exit_code.status == 580 and 'exit 201' in exit_code.message

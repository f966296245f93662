"""Optional DFT CI-NEB of ``nmcml.barrier`` with QE's neb.x (aiida-quantumespresso's ``NebCalculation`` on the
``nmcml-neb`` code of ``aiida-nmcml setup``).

* ``test_neb_x_inputs_from_the_model_images`` (default CI, a dry run: input files written, neb.x not run): the pw.x
  part is the single points' Hamiltonian (U, starting moments, pseudopotentials), the images are the model's, in
  order, and neb.x is told not to re-interpolate.
* ``test_barrier_demo_with_neb_x`` (marker ``extended``, on demand): the demo hop (Li3Ni4O8, far too small for a
  hop: plumbing, not a barrier) with a tiny MACE CI-NEB and then a real neb.x at plumbing DFT settings on the
  daemon; the table gets the neb.x barrier from the parsed image energies.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from aiida_nmcml.workflows.barrier import DFT_NEB, BarrierWorkChain, dft_neb_inputs, plan_hops

LNO = {'supercell': 16, 'composition': {'Ni': 1.0}, 'hops': [{'kind': 'odh'}]}
KEY = 'odh_any_x1_0000'


def _plumbing_settings(nmcml_codes) -> dict:
    from aiida_nmcml.workflows.label import LabelWorkChain

    label = LabelWorkChain.get_builder_from_protocol(
        nmcml_codes['neb'],
        engine='qe',
        protocol='plumbing',
        overrides={'qe': {'pseudo_family': nmcml_codes['pseudo_family'], 'ecutwfc': 25.0, 'ecutrho': 200.0}},
    )
    return label['settings'].get_dict()


def test_neb_x_inputs_from_the_model_images(nmcml_codes):
    from aiida.engine import run_get_node
    from aiida_quantumespresso.calculations.neb import NebCalculation as QeNebCalculation

    from aiida_nmcml.structures import to_structure_data

    hop = plan_hops(LNO)[KEY]
    middle = hop.initial.copy()
    middle.positions = (hop.initial.positions + hop.final.positions) / 2
    structures = {f'image_{i:02d}': to_structure_data(a) for i, a in enumerate([hop.initial, middle, hop.final])}
    params = DFT_NEB.with_defaults({'hops': [KEY], 'nstep_path': 7, 'path_thr': 0.1})
    inputs = dft_neb_inputs(nmcml_codes['neb'], _plumbing_settings(nmcml_codes), structures, params, KEY)
    inputs['metadata'] = {**inputs['metadata'], 'dry_run': True}  # stored inputs: aiida-qe mutates unstored dicts
    inputs['metadata'].pop('call_link_label')
    _, node = run_get_node(QeNebCalculation, **inputs)
    folder = node.dry_run_info['folder']
    with open(f'{folder}/neb.dat') as handle:
        neb_dat = handle.read().lower()
    assert 'num_of_images = 3' in neb_dat and "string_method = 'neb'" in neb_dat and 'nstep_path = 7' in neb_dat
    assert "ci_scheme = 'auto'" in neb_dat and re.search(r'path_thr = +1\.0+d-01', neb_dat)
    pw_inputs = []
    for index in (1, 2, 3):
        with open(f'{folder}/pw_{index}.in') as handle:
            pw_inputs.append(handle.read())
    first = pw_inputs[0].lower()
    assert 'tstress' not in first and 'lda_plus_u = .true.' in first and 'nspin = 2' in first
    species = first.split('atomic_species')[1].split('atomic_positions')[0].split()[::3]
    ni = species.index('ni') + 1
    moment = re.search(rf'starting_magnetization\({ni}\) += +([-+.\ded]+)', first)
    assert moment and float(moment.group(1).replace('d', 'e')) > 0.05  # Ni starts magnetic, on every image (below)
    for text in pw_inputs[1:]:  # the same Hamiltonian and moments on every image; only the positions differ
        strip = lambda t: t.split('ATOMIC_POSITIONS')[0]  # noqa: E731
        assert strip(text) == strip(pw_inputs[0])
    moving = hop.moving_index
    coordinates = [
        np.array(t.split('ATOMIC_POSITIONS')[1].splitlines()[1 + moving].split()[1:4], float) for t in pw_inputs
    ]
    np.testing.assert_allclose(coordinates[0], hop.initial.positions[moving], atol=1e-6)
    np.testing.assert_allclose(coordinates[1], middle.positions[moving], atol=1e-6)
    np.testing.assert_allclose(coordinates[2], hop.final.positions[moving], atol=1e-6)


@pytest.mark.slow
@pytest.mark.daemon
@pytest.mark.extended
def test_barrier_demo_with_neb_x(nmcml_codes, tiny_foundation_model, submit_and_await):
    from aiida_nmcml.data.model import MaceModel

    builder = BarrierWorkChain.get_builder_from_protocol(
        nmcml_codes['engine'],
        [MaceModel.get_or_create(tiny_foundation_model)],
        protocol='demo',
        dft_neb_code=nmcml_codes['neb'],
        overrides={
            'zero_shot': None,
            'parameters': {'dft_neb': {'hops': [KEY], 'nstep_path': 3, 'path_thr': 1.0}},
            'label_protocol': 'plumbing',
            'label': {'qe': {'pseudo_family': nmcml_codes['pseudo_family'], 'ecutwfc': 25.0, 'ecutrho': 200.0}},
        },
    )
    node = submit_and_await(builder, timeout=3000)
    # the toy model may not reach fmax in 30 steps, neb.x may stop at nstep_path: both give the table with 780
    assert node.is_finished_ok or node.exit_status == 780, (node.exit_status, node.exit_message)
    neb_x = next(c for c in node.called if c.process_label == 'NebCalculation' and 'images' in c.inputs)
    model = next(c for c in node.called if c.process_label == 'NebCalculation' and 'images' not in c.inputs)
    assert neb_x.inputs.code.uuid == nmcml_codes['neb'].uuid
    # neb.x started from the model's converged images, in order
    model_positions = model.outputs.images.get_positions()
    np.testing.assert_allclose(neb_x.inputs.images.get_positions(), model_positions, atol=1e-6)
    parsed = node.outputs.hops[KEY].dft_neb.get_dict()
    assert parsed['num_of_images'] == 3
    energies = [parsed[f'pw_output_image_{i}']['energy'] for i in (1, 2, 3)]
    row = node.outputs.table.get_dict()[KEY]
    assert row['dft_neb']['barrier'] == pytest.approx(max(energies) - energies[0])
    assert row['differences']['dft_neb_minus_model'] == pytest.approx(
        row['dft_neb']['barrier'] - row['model']['barrier']
    )
    magnetisations = [parsed[f'pw_output_image_{i}'].get('total_magnetization') for i in (1, 2, 3)]
    assert all(m is not None and abs(m) > 1.0 for m in magnetisations)  # started and stayed magnetic (4 Ni)

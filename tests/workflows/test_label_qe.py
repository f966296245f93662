"""nmcml.label with the real pw.x 6.7 on 4-atom LiNiO2 (`plumbing` protocol: 30/240 Ry, Gamma point, not physics).

Every DFT number asserted here comes from a real pw.x run; nothing is mocked.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from aiida import orm
from aiida.common.links import LinkType
from aiida.engine import run_get_node

from aiida_nmcml.dft.common import LabelInputError
from aiida_nmcml.workflows.label import LabelWorkChain

pytestmark = pytest.mark.slow


def linio2(rattle: float = 0.0, seed: int = 0, magmom: float = 1.0) -> orm.StructureData:
    """4-atom LiNiO2 with a Ni moment set by hand (the structures module sets it for NMC cells)."""
    from aiida_nmcml.structures import layered_parent

    atoms = layered_parent()
    if rattle:
        atoms.rattle(stdev=rattle, seed=seed)
    structure = orm.StructureData(ase=atoms)
    structure.base.attributes.set('nmcml_magmoms', [magmom if s == 'Ni' else 0.0 for s in atoms.get_chemical_symbols()])
    return structure


def demo_builder(codes, structures, frames=None, **overrides):
    """The cheap `plumbing` protocol: these tests check the machinery, not converged physics."""
    overrides = {'qe': {'pseudo_family': codes['pseudo_family'], **overrides.pop('qe', {})}, **overrides}
    return LabelWorkChain.get_builder_from_protocol(
        codes['pw'], structures, engine='qe', protocol='plumbing', overrides=overrides, frames=frames
    )


def pw_run_window(retrieved):
    """(start, end) datetimes of the pw.x run, from the stamps it prints in ``aiida.out`` (1 s resolution).

    Why: the CalcJob node's times include upload, queueing and parsing; overlap of these windows is what shows
    that the daemon ran several pw.x at once.
    """
    import datetime
    import re

    text = retrieved.base.repository.get_object_content('aiida.out')
    start = re.search(r'starts on\s+(\d+\w{3}\d{4}) at\s+([\d: ]+?)\s*$', text, re.MULTILINE)
    end = re.search(r'terminated on:\s+([\d: ]+?)\s+(\d+\w{3}\d{4})', text)
    if not (start and end):
        return None

    def stamp(day: str, clock: str):
        return datetime.datetime.strptime(f'{day} {clock.replace(" ", "0")}', '%d%b%Y %H:%M:%S')

    return stamp(start.group(1), start.group(2)), stamp(end.group(2), end.group(1))


def pw_calcs(node) -> list[orm.CalcJobNode]:
    return sorted(
        (n for n in node.called_descendants if n.process_type == 'aiida.calculations:quantumespresso.pw'),
        key=lambda n: n.ctime,
    )


@pytest.mark.parametrize('protocol', ['plumbing', 'demo', 'fast', 'moderate', 'precise'])
def test_protocols_build_pw_inputs(nmcml_codes, protocol):
    """Each level resolves to pw.x inputs: spin-polarised, U via SYSTEM (QE 6.7 ignores the HUBBARD card)."""
    from aiida_nmcml.dft.qe_inputs import pw_base_inputs

    builder = LabelWorkChain.get_builder_from_protocol(
        nmcml_codes['pw'],
        [linio2()],
        protocol=protocol,
        overrides={'qe': {'pseudo_family': nmcml_codes['pseudo_family']}},
    )
    settings = builder.settings.get_dict()
    child = pw_base_inputs(
        builder.code, builder.structures['frame_0'], settings['qe'], settings['hubbard_u'], settings['magmoms']
    )
    system = child.pw.parameters['SYSTEM']
    assert system['nspin'] == 2
    assert system['lda_plus_u'] is True
    assert system['hubbard_u'] == {'Ni': 6.2}
    assert system['starting_magnetization']['Ni'] > 0
    assert child.pw.parameters['CONTROL']['tstress'] and child.pw.parameters['CONTROL']['tprnfor']
    family = orm.load_group(nmcml_codes['pseudo_family'])
    wfc, rho = family.get_recommended_cutoffs(elements=tuple(family.elements), unit='Ry')
    if protocol == 'plumbing':
        assert (system['ecutwfc'], system['ecutrho']) == (30.0, 240.0)
        assert child.kpoints_distance.value >= 5.0  # Gamma only: plumbing, not physics
    else:  # physics: the family's density cutoff, a k-mesh by density, cold smearing for metallic cells
        assert system['ecutrho'] >= rho - 1e-9
        assert system['ecutwfc'] >= (55.0 if protocol == 'demo' else wfc - 1e-9)
        assert child.kpoints_distance.value <= 0.7
        assert system['smearing'] == 'cold'


def test_bad_inputs_are_refused_with_clear_errors(nmcml_codes):
    codes = nmcml_codes
    with pytest.raises(LabelInputError, match='unknown engine'):
        LabelWorkChain.get_builder_from_protocol(codes['pw'], [linio2()], engine='castep')

    no_cell = orm.StructureData(cell=[[0, 0, 0], [0, 0, 0], [0, 0, 0]], pbc=(False, False, False))
    no_cell.append_atom(position=(0, 0, 0), symbols='Ni')
    with pytest.raises(LabelInputError, match='no periodic 3D cell'):
        demo_builder(codes, {'bare': no_cell})

    from aiida_nmcml.structures import layered_parent

    atoms = layered_parent()
    atoms.symbols[1] = 'Fe'
    builder = demo_builder(codes, {'iron': orm.StructureData(ase=atoms)})
    with pytest.raises(ValueError, match=r"'iron' contains Fe but pseudopotential family"):
        run_get_node(builder)

    builder = demo_builder(codes, [linio2()])
    with pytest.raises(ValueError, match='unknown engine'):
        builder.engine = orm.Str('siesta')


def test_hubbard_u_acts_in_pw67(nmcml_codes):
    """U is applied by pw.x 6.7: the energy changes and the parsed output says DFT+U ran; U = 0 gives plain DFT."""
    results = {}
    for name, hubbard in (('u', {'Ni': 6.2, 'Co': 3.32, 'Mn': 3.9}), ('no_u', {})):
        builder = demo_builder(nmcml_codes, {'linio2': linio2()}, hubbard_u=hubbard)
        outputs, node = run_get_node(builder)
        assert node.is_finished_ok, (node.exit_message, node.outputs.failures.get_dict())
        (calc,) = pw_calcs(node)
        (frame,) = outputs['labelled'].get_frames()
        results[name] = (frame, calc)

    (frame_u, calc_u), (frame_0, _) = results['u'], results['no_u']
    # aiida-quantumespresso's own flag misses QE 6.7's XML layout; the U pw.x echoes in its XML is the proof
    assert json.loads(frame_u.info['dft_hubbard_u_applied']) == {'Ni': 6.2}
    assert json.loads(frame_0.info['dft_hubbard_u_applied']) == {}
    assert 'Simplified LDA+U calculation' in calc_u.outputs.retrieved.base.repository.get_object_content('aiida.out')
    assert 'lda_plus_u' in calc_u.base.repository.get_object_content('aiida.in').lower()
    assert 'hubbard_u(2)' in calc_u.base.repository.get_object_content('aiida.in').lower()
    assert abs(frame_u.info['REF_energy'] - frame_0.info['REF_energy']) > 0.1  # eV; U shifts E by eV
    assert json.loads(frame_u.info['hubbard_u']) == {'Co': 3.32, 'Mn': 3.9, 'Ni': 6.2}
    assert json.loads(frame_0.info['hubbard_u']) == {}
    # the settings that make labels (in)compatible: functional from the UPF headers, pseudopotential md5s, density
    # cutoff, smearing, U projectors; and the XML unit in which pw.x's U matched the request
    family = orm.load_group(nmcml_codes['pseudo_family'])
    assert frame_u.info['functional'] == 'PBEsol'
    assert json.loads(frame_u.info['pseudos']) == {p.element: p.md5 for p in family.nodes}
    assert (frame_u.info['ecutrho'], frame_u.info['smearing']) == (240.0, 'gaussian:0.01')
    assert frame_u.info['hubbard_projector'] == 'atomic' and 'hubbard_projector' not in frame_0.info
    assert frame_u.info['dft_hubbard_u_xml_unit'] == 'Ry' and frame_u.info['dft_code_version'].startswith('pw.x 6.7')
    assert frame_u.info['source_uuid'] == calc_u.uuid
    # a spin-polarised Ni3+ (d7, low spin) cell keeps a moment on Ni
    assert abs(frame_u.arrays['REF_magmoms'][1]) > 0.5


def test_batch_of_three_runs_concurrently_on_the_daemon(nmcml_codes, submit_and_await):
    """Three rattled cells in one submit: all labelled, each from its own pw.x, and the pw.x runs overlap in time."""
    structures = {f'rattled_{i}': linio2(rattle=0.05, seed=i) for i in range(3)}
    node = submit_and_await(demo_builder(nmcml_codes, structures), timeout=300)
    assert node.is_finished_ok, (node.exit_message, node.outputs.failures.get_dict())
    labelled = node.outputs.labelled
    assert labelled.num_frames == 3
    assert node.outputs.failures.get_dict() == {}
    frames = labelled.get_frames()
    calcs = pw_calcs(node)
    assert {f.info['source_uuid'] for f in frames} == {c.uuid for c in calcs}
    assert [f.info['label_key'] for f in frames] == sorted(structures)
    for frame in frames:
        forces = frame.arrays['REF_forces']
        assert np.abs(forces).max() > 1e-3  # rattled: non-zero forces
        assert np.allclose(forces.sum(axis=0), 0.0, atol=0.05)  # Newton's third law, within SCF noise
        assert frame.info['REF_stress'].shape == (6,)
    # provenance: the labelled set was created from the calculations' outputs
    inputs = labelled.creator.base.links.get_incoming(link_type=LinkType.INPUT_CALC).all_nodes()
    assert {n.creator.uuid for n in inputs if n.creator} >= {c.uuid for c in calcs}
    # concurrency: every pw.x started before the first one finished (stamps pw.x printed itself)
    windows = [pw_run_window(c.outputs.retrieved) for c in calcs]
    assert max(w[0] for w in windows) < min(w[1] for w in windows), windows


def test_scf_failure_goes_through_handlers_and_is_listed(nmcml_codes):
    """electron_maxstep=1 cannot converge: the restart handlers retry, then the frame is a listed failure (exit 530)."""
    builder = demo_builder(
        nmcml_codes,
        {'stubborn': linio2()},
        qe={'electrons': {'electron_maxstep': 1}, 'max_iterations': 2},
    )
    _, node = run_get_node(builder)
    assert node.exit_status == LabelWorkChain.exit_codes.ERROR_TOO_FEW_LABELLED.status
    assert 'labelled' not in node.outputs
    failure = node.outputs.failures['stubborn']
    assert failure['calculation_exit_status'] == 410  # ERROR_ELECTRONIC_CONVERGENCE_NOT_REACHED
    assert len(pw_calcs(node)) == 2  # the handler restarted once with a lower mixing_beta
    betas = [c.inputs.parameters['ELECTRONS']['mixing_beta'] for c in pw_calcs(node)]
    assert betas[1] < betas[0]


def test_crashed_frame_is_excluded_and_the_rest_kept(nmcml_codes):
    """A cell that pw.x refuses (two atoms on one site) fails; the good one is still labelled and the run succeeds."""
    from aiida_nmcml.structures import layered_parent

    atoms = layered_parent()
    atoms.positions[3] = atoms.positions[2]
    broken = orm.StructureData(ase=atoms)
    builder = demo_builder(nmcml_codes, {'good': linio2(), 'overlap': broken})
    outputs, node = run_get_node(builder)
    assert node.is_finished_ok, (node.exit_message, node.outputs.failures.get_dict())
    assert outputs['labelled'].num_frames == 1
    assert outputs['labelled'].get_frames()[0].info['label_key'] == 'good'
    assert set(outputs['failures'].get_dict()) == {'overlap'}


def test_same_structure_and_settings_reuse_the_first_result(nmcml_codes):
    """With caching on, labelling an identical structure again reuses the PwCalculation instead of running pw.x."""
    from aiida.manage.caching import enable_caching

    with enable_caching():
        first, _ = run_get_node(demo_builder(nmcml_codes, {'a': linio2(rattle=0.02, seed=11)}))
        second, node = run_get_node(demo_builder(nmcml_codes, {'a': linio2(rattle=0.02, seed=11)}))
    (calc,) = pw_calcs(node)
    assert calc.base.caching.is_created_from_cache
    e1, e2 = (o['labelled'].get_frames()[0].info['REF_energy'] for o in (first, second))
    assert e1 == e2


# ------------------------------------------------------------------------------ magnetic start (issue 8, item 1)
def md_candidate():
    """A frame as the MD engine writes it: positions, cell and sublattice labels, initial moments all zero.

    Returns the frame and the moments the builder gave the same cell.
    """
    from ase import Atoms

    from aiida_nmcml.structures import build_nmc

    built = build_nmc(4, x_li=1.0, seed=0, composition={'Ni': 1.0})
    built.rattle(stdev=0.03, seed=5)
    frame = Atoms(built.numbers, positions=built.positions, cell=built.cell, pbc=True)
    frame.arrays['sublattice'] = built.arrays['sublattice'].copy()
    frame.set_initial_magnetic_moments(np.zeros(len(frame)))
    return frame, built.get_initial_magnetic_moments()


def test_md_candidate_is_labelled_with_the_builders_moments_and_ends_magnetic(nmcml_codes):
    """B1 of the science review: an MD candidate with zero moments used to reach pw.x with starting_magnetization 0
    and converge non-magnetic. Its sublattice labels now give it the builder's moments (dft_ready)."""
    from aiida_nmcml.data.trainingset import TrainingSet

    frame, builder_moments = md_candidate()
    assert builder_moments.max() > 0  # LiNiO2: Ni3+, spin-only 1 µB
    frames = TrainingSet.from_frames([frame])
    _, node = run_get_node(demo_builder(nmcml_codes, None, frames=frames))
    assert node.is_finished_ok, (node.exit_message, node.outputs.failures.get_dict())
    (calc,) = pw_calcs(node)
    start = calc.inputs.parameters['SYSTEM']['starting_magnetization']
    ni_kinds = [kind.name for kind in calc.inputs.structure.kinds if kind.symbol == 'Ni']
    assert all(start[kind] > 0 for kind in ni_kinds), start
    (labelled,) = node.outputs.labelled.get_frames()
    np.testing.assert_allclose(labelled.get_initial_magnetic_moments(), builder_moments)
    assert labelled.info['dft_total_magnetization'] > 0.5  # µB per cell: magnetic, not the spin-symmetric solution


def test_all_zero_start_is_refused_unless_asked_for(nmcml_codes):
    """Zero moments without sublattice labels cannot be repaired: refused at submission, unless explicitly wanted."""
    from ase import Atoms

    from aiida_nmcml.data.trainingset import TrainingSet
    from aiida_nmcml.workflows.label import check_starting_moments

    frame, _ = md_candidate()
    bare = Atoms(frame.numbers, positions=frame.positions, cell=frame.cell, pbc=True)
    bare.set_initial_magnetic_moments(np.zeros(len(bare)))
    frames = TrainingSet.from_frames([bare])
    with pytest.raises(ValueError, match='all initial moments zero'):
        run_get_node(demo_builder(nmcml_codes, None, frames=frames))
    with pytest.raises(ValueError, match='allow_nonmagnetic_start'):
        run_get_node(demo_builder(nmcml_codes, {'zero': linio2(magmom=0.0)}))
    settings = demo_builder(nmcml_codes, None, frames=frames, allow_nonmagnetic_start=True).settings.get_dict()
    check_starting_moments({'zero': linio2(magmom=0.0)}, frames, settings)  # no error: asked for


# ---------------------------------------------------------------------- settings schema (issues 8 item 9 and 10)
@pytest.mark.parametrize(
    ('overrides', 'match'),
    [
        ({'qe': {'kpoint_distance': 0.15}}, "unknown key 'kpoint_distance'; did you mean 'kpoints_distance'"),
        ({'hubbard_u': {'ni': 6.2}}, "unknown element 'ni' in hubbard_u; did you mean 'Ni'"),
        ({'qe': {'kpoints_distance': -1}}, 'kpoints_distance: -1 is out of range'),
        ({'min_success_fraction': 5}, 'min_success_fraction: 5 is out of range'),
        ({'qe': {'ecutwfc': 'abc'}}, "ecutwfc: 'abc' .* is not a number"),
        ({'magmoms': {'Nii': 1.0}}, "did you mean 'Ni'"),
        ({'qe': {'system': {'smearing': 'marzari-vanderbil'}}}, "did you mean 'marzari-vanderbilt'"),
    ],
)
def test_bad_settings_are_refused_before_submission(nmcml_codes, overrides, match):
    with pytest.raises(LabelInputError, match=match):
        demo_builder(nmcml_codes, [linio2()], **overrides)


def test_bad_settings_dict_is_refused_at_submission(nmcml_codes):
    """A settings Dict built by hand (not through the protocol) is checked by the work chain's validator."""
    builder = demo_builder(nmcml_codes, [linio2()])
    settings = builder.settings.get_dict()
    settings['qe']['kpoint_distance'] = 0.15
    builder.settings = orm.Dict(settings)
    with pytest.raises(ValueError, match="did you mean 'kpoints_distance'"):
        run_get_node(builder)


def test_functional_is_read_from_the_upf_headers(nmcml_codes):
    from aiida_nmcml.dft.qe_inputs import family_functional, load_pseudo_family, upf_functional

    assert family_functional(load_pseudo_family(nmcml_codes['pseudo_family'])) == 'PBEsol'
    assert upf_functional('<PP_HEADER\n  element="Ni"\n  functional="SLA  PW   PBX  PBC"\n/>') == 'PBE'
    v1 = '<PP_HEADER>\n   0                   Version Number\n  SLA  PW   PSX  PSC  Exchange-Correlation functional\n'
    assert upf_functional(v1) == 'PBEsol'


def test_xml_hubbard_u_is_accepted_in_either_unit():
    """pw.x 6.7 writes U in Ry; other versions may write Hartree. A match in either is accepted and named."""
    from aiida_nmcml.dft.qe_outputs import HARTREE_TO_EV, RYDBERG_TO_EV, match_hubbard_u

    assert match_hubbard_u({'Ni': 6.2}, {'Ni': 6.2 / RYDBERG_TO_EV}) == ('Ry', {'Ni': 6.2})
    assert match_hubbard_u({'Ni': 6.2}, {'Ni': 6.2 / HARTREE_TO_EV}) == ('Ha', {'Ni': 6.2})
    assert match_hubbard_u({'Ni': 6.2}, {})[0] is None  # U requested, none applied: rejected
    assert match_hubbard_u({'Ni': 6.2}, {'Ni': 3.0 / RYDBERG_TO_EV})[0] is None
    assert match_hubbard_u({}, {}) == ('none', {})

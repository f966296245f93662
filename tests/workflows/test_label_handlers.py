"""The Hubbard-U sanity handler and the label work chain's bookkeeping, on mock children (nothing runs).

The pw.x XMLs are recorded from real pw.x 6.7 runs of the 4-atom LiNiO2 cell (tests/parsers/fixtures/
quantumespresso.pw/record_pw_xml.py): ``u_applied`` with U(Ni) = 6.2 eV, ``no_u`` without U. A calculation that
requested U and left the ``no_u`` XML is exactly what a pw.x that ignores the U input produces: the REJECTED path.
"""

from __future__ import annotations

import pytest
from aiida import orm

from aiida_nmcml.common.exit_codes import TABLE
from aiida_nmcml.dft.qe import NmcmlPwBaseWorkChain
from aiida_nmcml.workflows.label import LabelWorkChain

REJECTED = TABLE['ERROR_HUBBARD_U_NOT_APPLIED'].status


def linio2() -> orm.StructureData:
    from aiida_nmcml.structures import layered_parent

    atoms = layered_parent()
    structure = orm.StructureData(ase=atoms)
    structure.base.attributes.set('nmcml_magmoms', [1.0 if s == 'Ni' else 0.0 for s in atoms.get_chemical_symbols()])
    return structure


@pytest.fixture
def label_builder(nmcml_codes):
    def make(**overrides):
        overrides = {'qe': {'pseudo_family': nmcml_codes['pseudo_family']}, **overrides}
        return LabelWorkChain.get_builder_from_protocol(
            nmcml_codes['pw'], {'linio2': linio2()}, engine='qe', protocol='plumbing', overrides=overrides
        )

    return make


@pytest.fixture
def pw_process(nmcml_codes, label_builder, attach_failed_child, generate_calc_job_node):
    """``(process, child)``: an NmcmlPwBaseWorkChain after setup with one finished (exit 0) pw.x child."""
    from aiida.engine.utils import instantiate_process
    from aiida.manage import get_manager

    from aiida_nmcml.dft.adapter import get_adapter

    def make(case: str, requested: dict):
        builder = label_builder()
        adapter = get_adapter(builder.settings.get_dict(), 'qe')
        inputs = adapter.builder(builder.code, builder.structures['linio2'])
        process = instantiate_process(get_manager().get_runner(), NmcmlPwBaseWorkChain, **inputs)
        process.setup()
        system = {'ecutwfc': 30.0, **({'lda_plus_u': True, 'hubbard_u': requested} if requested else {})}
        child = generate_calc_job_node(
            'quantumespresso.pw', case=case, inputs={'parameters': orm.Dict({'SYSTEM': system})}, exit_status=0
        )
        attach_failed_child(process, child)
        return process, child

    return make


def test_builder_uses_the_subclass_with_the_sanity_handler(label_builder):
    from aiida_nmcml.dft.adapter import get_adapter

    builder = label_builder()
    child = get_adapter(builder.settings.get_dict(), 'qe').builder(builder.code, builder.structures['linio2'])
    assert child.process_class is NmcmlPwBaseWorkChain
    assert 'sanity_check_hubbard_u' in {h.__name__ for h in NmcmlPwBaseWorkChain.get_process_handlers()}


def test_u_not_applied_is_rejected_with_its_own_exit_code(pw_process):
    """U requested, pw.x's XML has no dftU: the converged run is refused (340), not restarted, not accepted."""
    process, _ = pw_process('no_u', {'Ni': 6.2})
    result = process.inspect_process()
    assert result.status == REJECTED
    assert 'requested' in result.message and "{'Ni': 6.2}" in result.message


def test_u_applied_passes(pw_process):
    """The same request with the XML of a pw.x run that applied U(Ni) = 6.2 eV (written in Ry): accepted."""
    process, child = pw_process('u_applied', {'Ni': 6.2})
    assert process.sanity_check_hubbard_u(child) is None
    assert process.inspect_process() is None
    assert process.ctx.is_finished


def test_wrong_u_is_rejected(pw_process):
    """U applied, but not the U requested (a different value): refused."""
    process, _ = pw_process('u_applied', {'Ni': 5.0})
    assert process.inspect_process().status == REJECTED


def test_plain_dft_without_u_passes(pw_process):
    process, _ = pw_process('no_u', {})
    assert process.inspect_process() is None


def test_rejected_child_is_a_listed_failure_made_by_a_calcfunction(label_builder, generate_workchain):
    """LabelWorkChain with a child that the handler refused: the frame is in `failures` with 340, no label kept."""
    from aiida.common.links import LinkType
    from plumpy import ProcessState

    process = generate_workchain('nmcml.label', dict(label_builder()))
    assert process.setup() is None
    child = orm.WorkflowNode(process_type='aiida_nmcml.dft.qe.NmcmlPwBaseWorkChain')
    child.set_process_label('NmcmlPwBaseWorkChain')
    child.set_process_state(ProcessState.FINISHED)
    child.set_exit_status(REJECTED)
    child.set_exit_message('The DFT code finished but did not apply the Hubbard U requested; the label is refused')
    child.store()
    process.ctx.child_0 = child
    process.inspect_calculations()
    assert process.results().status == LabelWorkChain.exit_codes.ERROR_TOO_FEW_LABELLED.status
    failures = process.outputs['failures']
    assert failures.get_dict()['linio2']['exit_status'] == REJECTED
    assert failures.get_dict()['linio2']['process_uuid'] == child.uuid
    assert 'labelled' not in process.outputs
    creator = failures.base.links.get_incoming(link_type=LinkType.CREATE).one().node
    assert creator.process_label == 'collect_failures'


def test_collect_failures_keys_by_frame():
    """The calcfunction alone: one record per failed frame, keyed by the user's frame key; none gives {}."""
    from aiida_nmcml.workflows.label import collect_failures

    records = {'frame_0': orm.Dict({'key': 'a', 'reason': 'x', 'exit_status': 530})}
    assert collect_failures(**records).get_dict() == {'a': {'reason': 'x', 'exit_status': 530}}
    assert collect_failures().get_dict() == {}


def test_search_keeps_the_label_checks_without_structures(label_builder):
    """nmcml.search exposes nmcml.label's inputs without `structures` (it supplies them): the other pre-submission
    checks stay on (they used to be switched off with the validator)."""
    from aiida_nmcml.workflows.search import SearchWorkChain

    builder = label_builder()
    port = SearchWorkChain.spec().inputs['label']
    values = {key: builder[key] for key in ('code', 'engine', 'settings', 'min_success_fraction')}
    assert port.validate(values) is None
    settings = builder.settings.get_dict()
    settings['qe']['kpoint_distance'] = 0.15
    message = port.validate({**values, 'settings': orm.Dict(settings)})
    assert message is not None and "did you mean 'kpoints_distance'" in str(message)


def test_truncated_pw_output_stops_the_frame_without_a_restart(nmcml_codes, label_builder, generate_calc_job_node):
    """A pw.x killed in its SCF (by a node failure or a kill the scheduler did not report): the retrieved stdout is a
    real 8-atom DFT+U output cut after SCF iteration 2, no ``JOB DONE`` and no XML. aiida-quantumespresso's parser
    calls it a failure of both output files (305), and the frame's PwBaseWorkChain stops with aiida-core's
    unhandled failure (402), without a restart; the label work chain then lists the frame in ``failures`` (shown for a
    failed child in the test above and with real pw.x in test_label_qe.py)."""
    from aiida.engine.utils import instantiate_process
    from aiida.manage import get_manager
    from aiida.plugins import CalculationFactory
    from ase.io import read
    from factories import FIXTURES

    from aiida_nmcml.dft.adapter import get_adapter

    pw_exit = CalculationFactory('quantumespresso.pw').exit_codes
    builder = label_builder()
    inputs = get_adapter(builder.settings.get_dict(), 'qe').builder(builder.code, builder.structures['linio2'])
    process = instantiate_process(get_manager().get_runner(), NmcmlPwBaseWorkChain, **inputs)
    process.setup()
    parameters = {
        'CONTROL': {'calculation': 'scf'},
        'SYSTEM': {'ecutwfc': 30.0, 'lda_plus_u': True, 'hubbard_u': {'Ni': 6.2}},
    }
    # the job's own input file, next to its recorded outputs: the structure the parser checks the output against
    atoms = read(FIXTURES / 'quantumespresso.pw' / 'killed_in_scf.in', format='espresso-in')
    child = generate_calc_job_node(
        'quantumespresso.pw',
        case='killed_in_scf',
        inputs={'parameters': orm.Dict(parameters), 'structure': orm.StructureData(ase=atoms)},
        options={'output_filename': 'aiida.out'},
        parse=True,
    )
    assert child.exit_status == pw_exit.ERROR_OUTPUT_FILES.status, (child.exit_status, child.exit_message)
    process.ctx.iteration = 1
    process.ctx.children = [child]
    result = process.inspect_process()
    # no handler of aiida-quantumespresso or ours matches: aiida-core's unhandled failure (402), no restart
    assert result.status == NmcmlPwBaseWorkChain.exit_codes.ERROR_UNHANDLED_FAILURE.status
    assert process.ctx.iteration == 1 and not process.ctx.unhandled_failure  # nothing resubmitted


def test_scheduler_walltime_kill_reruns_with_twice_the_walltime(nmcml_codes, label_builder, attach_failed_child,
                                                                generate_calc_job_node):  # fmt: skip
    """A pw.x SCF killed by SLURM at its walltime (120, before pw.x's own ``max_seconds`` stop): the frame's
    NmcmlPwBaseWorkChain reruns it from scratch with twice the walltime and ``max_seconds`` at 95 % of the new one;
    without our handler aiida-quantumespresso has none for 120 and the frame would end with 402 after one blind
    retry. A mock child (a real walltime kill of pw.x is not cheap; the SLURM stderr verdict itself is tested with
    recorded stderr in tests/parsers/test_scheduler_verdict.py)."""
    from aiida.engine.utils import instantiate_process
    from aiida.manage import get_manager
    from aiida.plugins import CalculationFactory

    from aiida_nmcml.dft.adapter import get_adapter

    walltime = CalculationFactory('quantumespresso.pw').exit_codes.ERROR_SCHEDULER_OUT_OF_WALLTIME
    builder = label_builder()
    inputs = get_adapter(builder.settings.get_dict(), 'qe').builder(builder.code, builder.structures['linio2'])
    inputs['pw']['metadata']['options']['max_wallclock_seconds'] = 600
    process = instantiate_process(get_manager().get_runner(), NmcmlPwBaseWorkChain, **inputs)
    process.setup()
    process.prepare_process()  # the parent sets max_seconds once, from the first walltime
    assert process.ctx.inputs.parameters['CONTROL']['max_seconds'] == pytest.approx(570.0)
    child = generate_calc_job_node('quantumespresso.pw', exit_status=walltime.status)
    attach_failed_child(process, child)
    process.ctx.inputs.parent_folder = child.outputs.remote_folder  # as if it had been a restart

    assert process.inspect_process().status == 0  # handled: the loop goes on
    assert not process.ctx.unhandled_failure
    assert process.ctx.inputs.metadata.options['max_wallclock_seconds'] == 1200
    assert process.ctx.inputs.parameters['CONTROL']['max_seconds'] == pytest.approx(1140.0)
    assert process.ctx.inputs.parameters['CONTROL']['restart_mode'] == 'from_scratch'
    assert 'parent_folder' not in process.ctx.inputs

"""The one exit-code table of the plugin: same status, same number, in every process (calcjobs and work chains).

Why one table: before it, out-of-memory was 311 in training and 314 in the engine, 310 meant three things, and the
work chains used 401/402, which aiida-core's ``BaseRestartWorkChain`` reserves. A restart work chain can only apply
a remedy if the status it reacts to means one thing everywhere.

Ranges by meaning (aiida-quantumespresso's convention):

=====  ==========================================================================================================
range  meaning
=====  ==========================================================================================================
1xx    scheduler (aiida-core ``CalcJob``: 110 out of memory, 120 out of walltime, ...); never redefined here
2xx    input refused at run time: no restart helps, change the inputs
3xx    output missing or corrupt: unrecoverable (301/302 are aiida-core's sub-process excepted/killed)
4xx    failed, but a run with changed inputs can succeed; the restart work chains apply the remedy where a handler
       is listed (401/402 are aiida-core's maximum iterations / unhandled failure)
5xx    a work chain's child failed for good (after its own restarts)
7xx    stopped or not converged: the outputs are usable and attached (MD stop rules, GA not converged)
=====  ==========================================================================================================

The module is pure Python (no AiiDA import) so that the compute-node engine reads its process exit codes from here
too. ``docs/dev/exit_codes.md`` is generated from :data:`TABLE` (``python -m aiida_nmcml.common.exit_codes``) and a
test checks that the file matches.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ('ENGINE_EXIT_CODES', 'ENGINE_STATUS_TO_LABEL', 'RESERVED', 'TABLE', 'ExitCodeEntry', 'declare', 'markdown')


@dataclass(frozen=True)
class ExitCodeEntry:
    """One row of the table.

    :param status: the AiiDA exit status (the same in every process that declares ``label``).
    :param label: the exit-code label (``self.exit_codes.<label>``).
    :param message: default message template.
    :param used_by: the processes that declare it (for docs).
    :param engine_status: the status name the engine writes to ``engine_status.json`` for it, if any.
    :param engine_exit: the engine's process exit code for that status (≤ 255: only for people running it by hand).
    :param remedy: what the restart work chains do about it, if anything (docs).
    :param messages: per-family message templates (``family -> template``) where the placeholders differ.
    """

    status: int
    label: str
    message: str
    used_by: tuple[str, ...]
    engine_status: str | None = None
    engine_exit: int | None = None
    remedy: str = ''
    messages: dict[str, str] = field(default_factory=dict)

    def message_for(self, family: str | None) -> str:
        return self.messages.get(family, self.message) if family else self.message


# Numbers aiida-core owns; listed so that a test can check nobody redefines them.
RESERVED: dict[int, str] = {
    110: 'ERROR_SCHEDULER_OUT_OF_MEMORY (CalcJob)',
    120: 'ERROR_SCHEDULER_OUT_OF_WALLTIME (CalcJob)',
    131: 'ERROR_SCHEDULER_INVALID_ACCOUNT (CalcJob)',
    140: 'ERROR_SCHEDULER_NODE_FAILURE (CalcJob)',
    150: 'STOPPED_BY_MONITOR (CalcJob)',
    160: 'ERROR_STASHING_FAILED (CalcJob)',
    301: 'ERROR_SUB_PROCESS_EXCEPTED (BaseRestartWorkChain)',
    302: 'ERROR_SUB_PROCESS_KILLED (BaseRestartWorkChain)',
    401: 'ERROR_MAXIMUM_ITERATIONS_EXCEEDED (BaseRestartWorkChain)',
    402: 'ERROR_UNHANDLED_FAILURE (BaseRestartWorkChain)',
}

ENGINE = ('nmcml.md', 'nmcml.ga', 'nmcml.evaluate', 'nmcml.neb')
TRAIN = ('nmcml.mace.train',)

_ENTRIES = (
    # --- 2xx: input refused at run time --------------------------------------------------------------------------
    ExitCodeEntry(
        201, 'ERROR_INVALID_INPUT', 'The engine rejected its input: {message}', ENGINE,
        engine_status='invalid_input', engine_exit=2,
    ),
    ExitCodeEntry(202, 'ERROR_EMPTY_DATASET', 'mace_run_train found no data: {detail}', TRAIN),
    ExitCodeEntry(
        203, 'ERROR_FOUNDATION_MISSING_ELEMENTS',
        'The foundation model lacks elements {missing} of the data: choose a foundation model that covers them.',
        TRAIN,
    ),
    ExitCodeEntry(
        210, 'ERROR_DEVICE_UNAVAILABLE',
        '{message}. Request a GPU node (see docs: GPU jobs) or set device=cpu.',
        (*ENGINE, *TRAIN, 'nmcml.mace.train.base', 'nmcml.md.base'),
        engine_status='device_unavailable', engine_exit=7,
        remedy='none on purpose: the restart work chains stop (no silent CPU fallback)',
        messages={
            'train': 'device=cuda but the job saw no GPU: request one (custom_scheduler_commands, docs: GPU jobs) '
            'or use device=cpu. {detail}',
        },
    ),
    ExitCodeEntry(
        220, 'ERROR_RESTART_FILES_MISSING',
        'The restart files are not in the parent folder: {message}', ('nmcml.md',),
        engine_status='restart_files_missing', engine_exit=8,
    ),
    ExitCodeEntry(
        230, 'ERROR_TEACHER_UNAVAILABLE', 'The teacher is not installed on the computer: {message}',
        ('nmcml.teacher.label',),
        engine_status='teacher_unavailable', engine_exit=9,
    ),
    # --- 3xx: output missing or corrupt (unrecoverable) ----------------------------------------------------------
    ExitCodeEntry(
        310, 'ERROR_MISSING_STATUS_FILE',
        'The engine wrote no status file and the scheduler reported no error: it was killed (walltime, out of memory '
        'on the node?). Check the scheduler output; nmcml.md.base continues such a run from its checkpoint.',
        ENGINE,
        remedy='nmcml.md.base: restart from the parent folder when a checkpoint was written',
    ),
    ExitCodeEntry(
        311, 'ERROR_MISSING_OUTPUT_FILES', 'Output files are missing from the retrieved folder: {files}',
        (*ENGINE, *TRAIN),
    ),
    ExitCodeEntry(
        320, 'ERROR_MODEL_HASH_MISMATCH', "A model file does not match its node's sha256: {message}",
        (*ENGINE, *TRAIN),
        engine_status='model_hash_mismatch', engine_exit=3,
        messages={
            'train': 'The foundation model file on the computer does not match its node sha256; it was not loaded. '
            '{detail}'
        },
    ),
    ExitCodeEntry(
        321, 'ERROR_MODEL_CORRUPT', 'A model file could not be loaded: {message}', ENGINE,
        engine_status='model_corrupt', engine_exit=4,
    ),
    ExitCodeEntry(
        330, 'ERROR_MIXED_LABELS', 'The labelled frames could not form a TrainingSet: {message}',
        ('nmcml.teacher.label',),
    ),
    ExitCodeEntry(
        340, 'ERROR_HUBBARD_U_NOT_APPLIED',
        'The DFT code finished but did not apply the Hubbard U requested; the label is refused: {message}',
        ('nmcml.label', 'NmcmlPwBaseWorkChain', 'NmcmlVaspWorkChain'),
        remedy='none on purpose (the inputs are right, the code ignored them): the frame is listed in `failures`',
    ),
    ExitCodeEntry(350, 'ERROR_TRAINING_FAILED', 'mace_run_train produced no model: {detail}', TRAIN),
    ExitCodeEntry(
        399, 'ERROR_ENGINE_INTERNAL', 'The engine crashed: {message}', ENGINE,
        engine_status='internal_error', engine_exit=99,
    ),
    # --- 4xx: recoverable with changed inputs -----------------------------------------------------------------------
    ExitCodeEntry(
        410, 'ERROR_OUT_OF_MEMORY',
        'Out of memory: {message}. Use a smaller cell, fewer replicas, committee_dtype float32, or a device with '
        'more memory.',
        (*ENGINE, *TRAIN, 'nmcml.mace.train.base', 'nmcml.md.base'),
        engine_status='out_of_memory', engine_exit=6,
        remedy='nmcml.mace.train.base: halve batch_size and valid_batch_size; nmcml.md.base: committee_dtype '
        'float32, then committee stride doubled',
        messages={
            'train': 'Out of memory: lower batch_size / valid_batch_size or use a device with more memory. {detail}'
        },
    ),
    ExitCodeEntry(
        420, 'ERROR_NAN_LOSS',
        'The loss became NaN at epoch {epoch}: lower the learning rate (lr), check the data for outliers, or use '
        'float64.',
        (*TRAIN, 'nmcml.mace.train.base'),
        remedy='nmcml.mace.train.base: float64, then lr × 0.1, restarted from scratch (bounded)',
    ),
    ExitCodeEntry(
        430, 'ERROR_NAN_FORCES', 'The model returned non-finite forces: {message}', ENGINE,
        engine_status='nan_forces', engine_exit=5,
    ),
    ExitCodeEntry(
        440, 'ERROR_NON_FINITE',
        'Positions or forces stopped being finite: {message}. Lower timestep_fs or check the model and structure.',
        ('nmcml.md',),
        engine_status='non_finite', engine_exit=23,
    ),
    # --- 5xx: a work chain's child failed for good --------------------------------------------------------------
    ExitCodeEntry(
        510, 'ERROR_MEMBERS_FAILED', 'Committee members failed: {failures}', ('nmcml.finetune',),
    ),
    ExitCodeEntry(
        511, 'ERROR_EVALUATION_FAILED', 'Committee evaluation failed: {message}', ('nmcml.finetune',),
    ),
    ExitCodeEntry(520, 'ERROR_GA_FAILED', 'the GA for x_li={x_li} failed: {reason}', ('nmcml.search',)),
    ExitCodeEntry(
        521, 'ERROR_VERIFICATION_FAILED',
        'nmcml.label failed (exit {status}); see its report. The GA candidates are outputs.', ('nmcml.search',),
    ),
    ExitCodeEntry(
        530, 'ERROR_TOO_FEW_LABELLED',
        "only {succeeded} of {total} frames were labelled (< {fraction:.0%}); see the `failures` output and the "
        "children's reports, fix the protocol (mixing, walltime, cutoffs) and relabel.",
        ('nmcml.label',),
    ),
    ExitCodeEntry(
        540, 'ERROR_NO_STRUCTURES', 'the `frames` input holds no frames to label.', ('nmcml.label',),
    ),
    ExitCodeEntry(
        550, 'ERROR_KILLED_WITHOUT_CHECKPOINT',
        'The MD was killed (walltime or no status file) before it wrote a (new) checkpoint, so a restart cannot get '
        'further: lower checkpoint_stride or raise metadata.options.max_wallclock_seconds.',
        ('nmcml.md.base',),
    ),
    ExitCodeEntry(560, 'ERROR_LABELLING_FAILED', 'Teacher labelling failed: {message}', ('nmcml.distill',)),
    ExitCodeEntry(
        561, 'ERROR_TOO_FEW_FRAMES',
        'Only {n} frames survived labelling (at least 4 needed): raise the sample sizes or max_force.',
        ('nmcml.distill',),
    ),
    ExitCodeEntry(562, 'ERROR_STUDENT_TRAINING_FAILED', 'MACE training failed: {message}', ('nmcml.distill',)),
    ExitCodeEntry(
        563, 'ERROR_STUDENT_EXPLORATION_FAILED',
        'Refinement round {round}: the student exploration job failed: {message}', ('nmcml.distill',),
    ),
    ExitCodeEntry(
        585, 'ERROR_NO_DIFFUSION_DATA',
        'no (T, x) point has an in-domain run to analyse (runs failed or flagged; see `table` and the report): '
        '{reasons}',
        ('nmcml.diffusion',),
    ),
    ExitCodeEntry(
        580, 'ERROR_BARRIER_NEB_FAILED',
        'no hop has a usable model NEB (every nmcml.neb failed): {reasons}', ('nmcml.barrier',),
    ),
    ExitCodeEntry(
        581, 'ERROR_BARRIER_DFT_FAILED',
        'the DFT check on the model path (nmcml.label) failed (exit {status}); the table holds the model (and '
        'zero-shot) barriers only', ('nmcml.barrier',),
    ),
    ExitCodeEntry(
        582, 'ERROR_BARRIER_ZERO_SHOT_FAILED',
        'the zero-shot universal-potential evaluation (nmcml.evaluate) failed (exit {status}); the table holds the '
        'model and DFT barriers', ('nmcml.barrier',),
    ),
    ExitCodeEntry(
        583, 'ERROR_BARRIER_DFT_NEB_FAILED',
        'the DFT CI-NEB (neb.x) failed for {reasons}; the table holds the other barriers', ('nmcml.barrier',),
    ),
    ExitCodeEntry(
        570, 'ERROR_AL_EXPLORATION_FAILED',
        'iteration {iteration}: no exploration MD gave frames ({message}); see the nmcml.md.base reports.',
        ('nmcml.active_learning',),
    ),
    ExitCodeEntry(
        571, 'ERROR_AL_LABELLING_FAILED', 'iteration {iteration}: nmcml.label failed (exit {status}): {message}',
        ('nmcml.active_learning',),
    ),
    ExitCodeEntry(
        572, 'ERROR_AL_TRAINING_FAILED', 'iteration {iteration}: nmcml.finetune failed (exit {status}): {message}',
        ('nmcml.active_learning',),
    ),
    ExitCodeEntry(
        573, 'ERROR_AL_EVALUATION_FAILED',
        'iteration {iteration}: nmcml.evaluate on the held-out set failed (exit {status}): {message}',
        ('nmcml.active_learning',),
    ),
    *(
        ExitCodeEntry(
            status, f'ERROR_CAMPAIGN_{stage.upper()}_FAILED',
            f'stage {stage}: {chain}<{{pk}}> failed (exit {{status}}); see its report. `aiida-nmcml campaign continue` '
            'reruns it and keeps every finished stage.',
            ('nmcml.campaign',),
        )
        for status, stage, chain in (
            (590, 'labels', 'nmcml.label'), (591, 'committee', 'nmcml.finetune'), (592, 'search', 'nmcml.search'),
            (593, 'active_learning', 'nmcml.active_learning'), (594, 'diffusion', 'nmcml.diffusion'),
            (595, 'barriers', 'nmcml.barrier'),
        )
    ),
    # --- 7xx: stopped / not converged, outputs usable -----------------------------------------------------------
    ExitCodeEntry(
        710, 'ERROR_UNCERTAINTY_EXCEEDED', 'Stopped: {message}', ('nmcml.md', 'nmcml.md.base'),
        engine_status='uncertainty_exceeded', engine_exit=20,
        remedy='nmcml.md.base: finish with the frames exposed (active learning harvests them)',
    ),
    ExitCodeEntry(
        711, 'ERROR_ATOMS_TOO_CLOSE', 'Stopped: {message}', ('nmcml.md', 'nmcml.md.base'),
        engine_status='atoms_too_close', engine_exit=21,
        remedy='nmcml.md.base: finish with the frames exposed',
    ),
    ExitCodeEntry(
        712, 'ERROR_TEMPERATURE_RUNAWAY', 'Stopped: {message}', ('nmcml.md', 'nmcml.md.base'),
        engine_status='temperature_runaway', engine_exit=22,
        remedy='nmcml.md.base: finish with the frames exposed',
    ),
    ExitCodeEntry(
        720, 'ERROR_GA_NOT_CONVERGED', '{message}', ('nmcml.ga',),
        engine_status='ga_not_converged', engine_exit=30,
    ),
    ExitCodeEntry(
        730, 'ERROR_NEGLIGIBLE_SPREAD', '{message}', ('nmcml.evaluate', 'nmcml.finetune', 'nmcml.active_learning'),
        engine_status='negligible_spread', engine_exit=31,
        remedy='none: predictions and metrics are attached, the calibration is refused',
    ),
    ExitCodeEntry(
        740, 'ERROR_NEB_NOT_CONVERGED',
        'NEB not converged: {message}', ('nmcml.neb',),
        engine_status='neb_not_converged', engine_exit=32,
        remedy='none: the images and energies so far are attached',
    ),
    ExitCodeEntry(
        750, 'ERROR_STUDENT_CELL_RUNAWAY',
        'After {rounds} refinement round(s) the student still lets {stopped} of {runs} NPT cells run away (max '
        '|V/V0 - 1| {change:.2f}): the model and data are attached; raise refine.rounds or the exploration steps.',
        ('nmcml.distill',),
        remedy='none: the model is attached; the diffusion chain refuses runs whose NPT cell runs away',
    ),
    ExitCodeEntry(
        770, 'ERROR_DIFFUSION_INCOMPLETE',
        '{missing} of {total} (T, x) points have no in-domain run or could not be analysed; the table, fits and flags '
        'of the others are attached: {details}',
        ('nmcml.diffusion',),
        remedy='none: the runs were flagged (outside the trust band, TM migration, O-O contact) or failed; see `table`',
    ),
    ExitCodeEntry(
        780, 'ERROR_BARRIER_INCOMPLETE',
        'barrier table attached, but incomplete: {details}', ('nmcml.barrier',),
        remedy='none: hops whose NEB failed or did not converge, and images without DFT, are marked in `table`',
    ),
    ExitCodeEntry(
        760, 'ERROR_AL_MAX_ITERATIONS',
        'Stopped by the iteration budget ({message}): not converged; the committee, dataset and learning curve so far '
        'are attached. Continue the loop from them (get_builder_restart) with a larger max_iterations.',
        ('nmcml.active_learning',),
    ),
    ExitCodeEntry(
        761, 'ERROR_AL_DFT_BUDGET',
        'Stopped by the DFT budget ({message}): not converged; the committee, dataset and learning curve so far are '
        'attached. Continue from them with a larger max_dft_labels.',
        ('nmcml.active_learning',),
    ),
    ExitCodeEntry(
        762, 'ERROR_AL_NO_CANDIDATES',
        'Stopped: {message}. Nothing in the trust band to label although the accuracy rule is not met (frames above '
        'the upper level only?): lower the temperatures, run shorter MD, or widen the band.',
        ('nmcml.active_learning',),
    ),
)  # fmt: skip

TABLE: dict[str, ExitCodeEntry] = {entry.label: entry for entry in _ENTRIES}

#: engine status name (``engine_status.json``) -> exit-code label
ENGINE_STATUS_TO_LABEL: dict[str, str] = {e.engine_status: e.label for e in _ENTRIES if e.engine_status}

#: engine status name -> the engine's own process exit code
ENGINE_EXIT_CODES: dict[str, int] = {'ok': 0, **{e.engine_status: e.engine_exit for e in _ENTRIES if e.engine_status}}


def _check_table() -> None:
    statuses = [e.status for e in _ENTRIES]
    if len(set(statuses)) != len(statuses) or len(TABLE) != len(_ENTRIES):
        raise RuntimeError('exit-code table: a status or a label is used twice')
    clash = sorted(set(statuses) & set(RESERVED))
    if clash:
        raise RuntimeError(f'exit-code table redefines numbers aiida-core reserves: {clash}')
    if len(set(ENGINE_EXIT_CODES.values())) != len(ENGINE_EXIT_CODES):
        raise RuntimeError('exit-code table: an engine process exit code is used twice')


_check_table()


def declare(spec, *labels: str, family: str | None = None, messages: dict[str, str] | None = None) -> None:
    """Declare ``labels`` on a process ``spec`` with the table's number and message.

    :param family: picks a family-specific message template where the table has one (``'train'``).
    :param messages: per-label message override (the number never changes).
    """
    for label in labels:
        entry = TABLE[label]
        message = (messages or {}).get(label, entry.message_for(family))
        spec.exit_code(entry.status, entry.label, message=message)


def markdown() -> str:
    """The table as markdown, written to ``docs/dev/exit_codes.md``."""
    lines = [
        '# Exit codes',
        '',
        '<!-- Generated from aiida_nmcml/common/exit_codes.py by `python -m aiida_nmcml.common.exit_codes`;',
        '     tests/common/test_exit_codes.py fails when this file and the code disagree. Do not edit by hand. -->',
        '',
        'One table for every process of the plugin: the same status has the same number everywhere.',
        '',
        '| range | meaning |',
        '|---|---|',
        '| 1xx | scheduler (aiida-core `CalcJob`, e.g. 110 out of memory, 120 out of walltime); never redefined |',
        '| 2xx | input refused at run time: no restart helps, change the inputs |',
        "| 3xx | output missing or corrupt: unrecoverable (301/302 are aiida-core's sub-process excepted/killed) |",
        '| 4xx | failed, but a run with changed inputs can succeed; the restart work chains apply the remedy where one '
        "is listed (401/402 are aiida-core's maximum iterations / unhandled failure) |",
        "| 5xx | a work chain's child failed for good (after its own restarts) |",
        '| 7xx | stopped or not converged: the outputs are usable and attached |',
        '',
        '| status | label | used by | engine status (process exit) | remedy applied | message |',
        '|---:|---|---|---|---|---|',
    ]
    for entry in sorted(_ENTRIES, key=lambda e: e.status):
        engine = f'`{entry.engine_status}` ({entry.engine_exit})' if entry.engine_status else ''
        message = entry.message.replace('|', '\\|')
        used = ', '.join(f'`{u}`' for u in entry.used_by)
        lines.append(f'| {entry.status} | `{entry.label}` | {used} | {engine} | {entry.remedy} | {message} |')
    lines += ['', 'Reserved by aiida-core (never used here for another meaning):', '']
    lines += [f'- {status}: {name}' for status, name in sorted(RESERVED.items())]
    return '\n'.join(lines) + '\n'


if __name__ == '__main__':  # pragma: no cover - a developer tool
    import pathlib
    import sys

    target = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else 'docs/dev/exit_codes.md')
    target.write_text(markdown())
    print(f'wrote {target}')

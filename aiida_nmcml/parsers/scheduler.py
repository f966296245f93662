"""The scheduler's verdict on a killed job, read from the retrieved ``_scheduler-stderr.txt`` (parsers only).

Why not rely on aiida-core alone: ``core.slurm`` sets 120 (``ERROR_SCHEDULER_OUT_OF_WALLTIME``) on the node before the
parser runs only when SLURM's ``*** JOB n ON host CANCELLED AT t DUE TO TIME LIMIT ***`` is the *first* line of the
job's stderr (``re.match`` of ``.*`` without DOTALL, aiida-core 2.9), and its accounting-based check needs ``sacct``.
Our engines print Python warnings (e3nn, torch) to that file before SLURM writes its line, so a job killed by its
walltime looked like a crash without a status file (310) and a killed training like an unknown failure, not 120: the
walltime handlers of the restart work chains did not fire as designed. Here every line of the retrieved file is
searched, so the verdict no longer depends on what else the job printed.
"""

from __future__ import annotations

import re

from aiida.engine import ExitCode

# SLURM (slurmstepd): "*** JOB 12 ON node CANCELLED AT 2026-11-26T17:50:00 DUE TO TIME LIMIT ***" (also "STEP 12.0")
SLURM_WALLTIME = re.compile(r'cancelled at .* due to time limit', re.IGNORECASE)
# SLURM: "Exceeded job memory limit", "... oom-kill event(s) ... Some of your processes may have been killed by the
# cgroup out-of-memory handler."
SLURM_MEMORY = re.compile(r'exceeded (job|step) memory limit|oom[-_ ]kill event', re.IGNORECASE)


def scheduler_stderr(parser) -> str:
    """The job's scheduler stderr from ``retrieved`` (AiiDA always retrieves it), '' when absent."""
    name = parser.node.get_option('scheduler_stderr') or '_scheduler-stderr.txt'
    if name not in parser.retrieved.base.repository.list_object_names():
        return ''
    return parser.retrieved.base.repository.get_object_content(name, mode='r')


def scheduler_exit_code(parser) -> ExitCode | None:
    """The scheduler's exit code for a job that left no result: what aiida-core set on the node, else 120 / 110 when
    the retrieved scheduler stderr says so on *any* line; None when the scheduler has nothing to say."""
    if parser.node.exit_status:
        return ExitCode(parser.node.exit_status, parser.node.exit_message)
    stderr = scheduler_stderr(parser)
    codes = parser.exit_codes
    for line in stderr.splitlines():
        if SLURM_WALLTIME.search(line):
            return codes.ERROR_SCHEDULER_OUT_OF_WALLTIME
        if SLURM_MEMORY.search(line):
            return codes.ERROR_SCHEDULER_OUT_OF_MEMORY
    return None

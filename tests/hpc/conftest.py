"""Fixtures of the HPC tests: the one-node SLURM + sshd of ``scripts/start_hpc_services.sh`` and a computer on it.

Whether these tests run is visible: when the services are absent they are skipped with the reason, except under
``CI=true`` (``.ci/run``, GitHub Actions), where they FAIL: a CI run must not pass with the cluster tests silently
skipped.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import socket
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def services_problem() -> str | None:
    """None when SLURM answers and sshd listens on the test port, else what is missing."""
    if shutil.which('sinfo') is None:
        return 'SLURM is not installed'
    try:
        cmd = ['sinfo', '-h', '-o', '%T']
        state = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f'sinfo failed: {exc}'
    if not any(state.startswith(s) for s in ('idle', 'mixed', 'allocated', 'completing')):
        return f'the SLURM node is {state or "not reachable"!r}'
    port = int(os.environ.get('NMCML_SSH_PORT', '2222'))
    with socket.socket() as sock:
        sock.settimeout(2)
        if sock.connect_ex(('127.0.0.1', port)) != 0:
            return f'no sshd on 127.0.0.1:{port}'
    if not pathlib.Path('~/.ssh/id_nmcml').expanduser().is_file():
        return 'no key ~/.ssh/id_nmcml'
    return None


@pytest.fixture(scope='session')
def hpc_services():
    problem = services_problem()
    if problem is None:
        return
    message = f'{problem}: start the services with `sudo bash scripts/start_hpc_services.sh`'
    if os.environ.get('CI', '').lower() == 'true':
        pytest.fail(f'CI=true and the SLURM/SSH services are not up ({message}); the slurm tests may not be skipped')
    pytest.skip(message)


@pytest.fixture(scope='session')
def slurm_computer(hpc_services, nmcml_codes):
    """``slurm-gpu`` (core.slurm over core.ssh to localhost:2222) and its codes, made as ``setup`` makes them."""
    from aiida_nmcml.setup.computer import ensure_slurm_computer

    computer, _ = ensure_slurm_computer('slurm-gpu')
    computer.set_minimum_job_poll_interval(2.0)  # a test cluster answers at once; real ones want >= 30 s
    return computer


@pytest.fixture(scope='session')
def slurm_codes(slurm_computer, nmcml_codes):
    from aiida import orm

    codes = {
        key: orm.load_code(f'{code.label}@{slurm_computer.label}')
        for key, code in nmcml_codes.items()
        if key in ('pw', 'neb', 'mace_train', 'engine')
    }
    return {**codes, 'pseudo_family': nmcml_codes['pseudo_family'], 'computer': slurm_computer}


@pytest.fixture
def model_node(tiny_foundation_model):
    from aiida_nmcml.data.model import MaceModel

    return MaceModel.get_or_create(tiny_foundation_model)

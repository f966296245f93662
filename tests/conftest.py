"""Session fixtures shared by every test level.

The AiiDA profile is SQLite + the built-in ZeroMQ broker, the embedded default of the README: the daemon and
``submit`` work with no services, so tests at the ``submit_and_await`` level run everywhere.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import sys

import pytest

pytest_plugins = ['aiida.tools.pytest_fixtures', 'factories']  # factories: tests/factories.py

# The daemon is started with `verdi` from PATH: make it this interpreter's, also when the venv is not activated.
os.environ['PATH'] = f'{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ.get("PATH", "")}'
os.environ.setdefault('OMP_NUM_THREADS', '1')
os.environ.setdefault('OMPI_ALLOW_RUN_AS_ROOT', '1')
os.environ.setdefault('OMPI_ALLOW_RUN_AS_ROOT_CONFIRM', '1')


# NMCML_TEST_PROFILE=production: the session profile is PostgreSQL + RabbitMQ (the production profile of the README)
# instead of the embedded default; .ci/run runs the tests marked `production` a second time that way.
PRODUCTION = os.environ.get('NMCML_TEST_PROFILE', 'embedded') == 'production'


@pytest.fixture(scope='session', autouse=True)
def aiida_profile(aiida_config, aiida_profile_factory, tmp_path_factory):
    """Override aiida's default test profile (which has no broker) with one on the ZeroMQ broker, or with
    PostgreSQL + RabbitMQ under ``NMCML_TEST_PROFILE=production`` (tests/production.py)."""
    if PRODUCTION:
        from production import production_profile

        context = production_profile(aiida_config, aiida_profile_factory, tmp_path_factory)
    else:
        context = aiida_profile_factory(aiida_config, broker_backend='core.zeromq')
    with context as profile:
        # circus' default 2 s is too short on a loaded CI machine: stopping the daemon at session end timed out
        aiida_config.set_option('daemon.timeout', 60, scope=profile.name)
        yield profile


@pytest.fixture(autouse=True)
def _caching_config_restored(aiida_profile, aiida_config):
    """Undo a test's change of ``caching.enabled_for`` (``aiida-nmcml setup`` turns DFT caching on): later tests must
    not depend on which setup test ran before them."""
    before = aiida_config.get_option('caching.enabled_for', scope=aiida_profile.name)
    yield
    if aiida_config.get_option('caching.enabled_for', scope=aiida_profile.name) != before:
        aiida_config.set_option('caching.enabled_for', before, scope=aiida_profile.name)
        aiida_config.store()


def pytest_collection_modifyitems(config, items):
    """Under NMCML_TEST_PROFILE=production only the tests marked `production` (or `production_on_demand`: too long
    for .ci/run's production pass, which does not select that marker, but runnable there by name) run; the rest ran
    on the embedded profile already. Tests marked `production_only` are skipped on the embedded profile, with the
    reason."""
    skip = pytest.mark.skip(reason='runs on the production profile: NMCML_TEST_PROFILE=production (.ci/run)')
    for item in items:
        if 'slurm' in item.keywords:
            # one SLURM node for the whole machine: under pytest-xdist (.ci/run: -n 2 --dist loadgroup) the cluster
            # tests run one after another in one worker, so their timing-based kills see no competing jobs
            item.add_marker(pytest.mark.xdist_group('slurm'))
        if PRODUCTION and not {'production', 'production_only', 'production_on_demand'} & set(item.keywords):
            item.add_marker(pytest.mark.skip(reason='NMCML_TEST_PROFILE=production runs only the `production` tests'))
        elif not PRODUCTION and 'production_only' in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope='session')
def tiny_foundation_model(tmp_path_factory) -> pathlib.Path:
    """A real MACE (8 channels, L=0, 5 epochs) trained on toy frames: the stand-in foundation model of fast tests.

    Cached in its own directory (``$NMCML_TEST_CACHE`` or ~/.cache/aiida-nmcml/test-models), keyed by the source of
    the trainer so editing it retrains; independent of pytest's cache plugin (``-p no:cacheprovider`` works).
    """
    from aiida_nmcml.testing import toymodel

    target = tmp_path_factory.mktemp('foundation') / 'tiny.model'
    shutil.copy(toymodel.cached_tiny_mace(seed=1), target)
    return target


@pytest.fixture(scope='session')
def toy_frames():
    """Labelled toy frames (pair potential, not DFT) with the REF_* keys; a fresh list per call is cheap."""
    from aiida_nmcml.testing.toymodel import toy_frames as make

    return make(24, seed=7)


@pytest.fixture(scope='session')
def nmcml_codes(aiida_profile):
    """localhost computer, codes and the offline pseudopotential family, made by the same code as ``setup``."""
    from aiida_nmcml.setup import ensure_environment

    return ensure_environment()

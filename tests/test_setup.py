"""``aiida-nmcml setup``: idempotent creation, ``--check`` on a fresh profile, and the offline pseudo family."""

import os
import pathlib
import re
import subprocess
import sys

import pytest
from aiida import orm
from click.testing import CliRunner

from aiida_nmcml.cli import cmd_root
from aiida_nmcml.setup import ensure_environment
from aiida_nmcml.setup.pseudos import DEFAULT_FAMILY, generate_mn, normalise_upf_date

BIN = pathlib.Path(sys.executable).parent


def test_setup_twice_creates_nothing_new(nmcml_codes):
    before = orm.QueryBuilder().append(orm.Node).count(), orm.QueryBuilder().append(orm.Computer).count()
    again = ensure_environment()
    after = orm.QueryBuilder().append(orm.Node).count(), orm.QueryBuilder().append(orm.Computer).count()
    assert again['created'] == []
    assert before == after
    assert again['pw'].uuid == nmcml_codes['pw'].uuid


def test_cli_setup_reports_nothing_to_create_and_check_passes(nmcml_codes):
    runner = CliRunner()
    result = runner.invoke(cmd_root, ['setup'], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert 'nothing to create' in result.output
    check = runner.invoke(cmd_root, ['setup', '--check'], catch_exceptions=False)
    assert check.exit_code == 0, check.output
    assert '✗' not in check.output


def _cli(tmp_path, *args):
    """Run the installed CLI against a private AIIDA_PATH: switching profiles in-process would close the storage of
    the session profile that the other tests share."""
    env = {**os.environ, 'AIIDA_PATH': str(tmp_path)}
    return subprocess.run([str(BIN / 'aiida-nmcml'), *args], env=env, capture_output=True, text=True, check=False)


def test_check_without_any_profile_fails_clearly(tmp_path):
    result = _cli(tmp_path, 'setup', '--check')
    assert result.returncode == 1
    assert 'profile: none configured' in result.stdout


def test_check_on_fresh_profile_fails_clearly(tmp_path):
    """A brand-new presto profile has a computer but no codes or family: --check lists them and exits 1."""
    env = {**os.environ, 'AIIDA_PATH': str(tmp_path)}
    made = subprocess.run(
        [str(BIN / 'verdi'), 'presto', '--use-zeromq', '-p', 'fresh', '--non-interactive'],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    result = _cli(tmp_path, 'setup', '--check')
    assert result.returncode == 1
    assert re.search(r'✗ code nmcml-pw: missing: run `aiida-nmcml setup`', result.stdout)
    assert re.search(rf'✗ pseudo family {DEFAULT_FAMILY}: missing', result.stdout)
    assert '✓ broker: core.zeromq' in result.stdout
    # then the real thing on that profile: setup fills the gaps, --check passes, a second setup creates nothing
    first = _cli(tmp_path, 'setup')
    assert first.returncode == 0, first.stdout + first.stderr
    assert 'created code nmcml-pw@localhost' in first.stdout
    assert 'caching enabled for aiida.calculations:quantumespresso.pw' in first.stdout
    assert _cli(tmp_path, 'setup', '--check').returncode == 0
    second = _cli(tmp_path, 'setup')
    assert 'nothing to create' in second.stdout and 'caching enabled' not in second.stdout


def test_offline_family_has_all_nmc_elements_and_cutoffs(nmcml_codes):
    from aiida_pseudo.groups.family import CutoffsPseudoPotentialFamily

    family = orm.load_group(nmcml_codes['pseudo_family'])
    assert isinstance(family, CutoffsPseudoPotentialFamily)
    assert set(family.elements) == {'Li', 'Ni', 'Mn', 'Co', 'O'}
    wfc, rho = family.get_recommended_cutoffs(elements=('Li', 'Ni', 'Mn', 'Co', 'O'), unit='Ry')
    assert wfc >= 60 and rho > wfc
    low = family.get_recommended_cutoffs(elements=('Li', 'Ni'), stringency='low', unit='Ry')
    assert low == (30.0, 240.0)


def test_generated_mn_is_identical_every_day(tmp_path):
    """ld1.x stamps today's date into the UPF: normalised, two generations give byte-identical files."""
    (tmp_path / 'a').mkdir()
    (tmp_path / 'b').mkdir()
    first = generate_mn(tmp_path / 'a').read_bytes()
    second = generate_mn(tmp_path / 'b').read_bytes()
    assert first == second
    assert b'z_valence' in first and b'element="Mn"' in first
    stamped = 'Generation date: 24Dec2031\n<PP_HEADER date="24Dec2031" element="Mn"/>'
    assert '2031' not in normalise_upf_date(stamped)


@pytest.mark.parametrize('bad', ['no-such-family'])
def test_unknown_family_is_a_clear_error(bad, nmcml_codes):
    """A message and exit 1, no traceback (ClickException, not the PseudoSetupError itself)."""
    result = CliRunner().invoke(cmd_root, ['setup', '--family', bad])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert 'aiida-pseudo install' in result.output and 'Traceback' not in result.output


def test_setup_family_becomes_the_label_default(nmcml_codes):
    """`setup --family X` makes X the family nmcml.label uses when its overrides name none (it used to be ignored)."""
    from aiida import orm
    from aiida_pseudo.groups.family import CutoffsPseudoPotentialFamily

    from aiida_nmcml.setup import configured_family, ensure_environment
    from aiida_nmcml.structures import layered_parent
    from aiida_nmcml.workflows.label import LabelWorkChain

    offline = orm.load_group(nmcml_codes['pseudo_family'])
    label = 'nmcml-test-family-copy'
    try:
        other = orm.load_group(label)
    except Exception:
        other = CutoffsPseudoPotentialFamily(label=label).store()
        other.add_nodes(list(offline.nodes))
        other.set_cutoffs(offline.get_cutoffs('normal'), 'normal', unit=offline.get_cutoffs_unit('normal'))
    structure = orm.StructureData(ase=layered_parent())
    try:
        ensure_environment(family=label)
        assert configured_family() == label
        builder = LabelWorkChain.get_builder_from_protocol(nmcml_codes['pw'], [structure], protocol='plumbing')
        assert builder.settings['qe']['pseudo_family'] == label
        explicit = {'qe': {'pseudo_family': nmcml_codes['pseudo_family']}}  # overrides still win
        builder = LabelWorkChain.get_builder_from_protocol(
            nmcml_codes['pw'], [structure], protocol='plumbing', overrides=explicit
        )
        assert builder.settings['qe']['pseudo_family'] == nmcml_codes['pseudo_family']
    finally:
        ensure_environment(family=nmcml_codes['pseudo_family'])  # the session's default again
    assert configured_family() == nmcml_codes['pseudo_family']


def test_a_profile_that_lost_its_default_user_gets_it_back(aiida_profile):
    """Two set-ups at once on a fresh machine left the profile without ``default_user_email`` (seen here): setup
    reattaches the existing user instead of failing with a TypeError traceback."""
    from aiida import orm
    from aiida.manage import get_manager

    from aiida_nmcml.setup.profile import ensure_default_user

    manager = get_manager()
    profile = manager.get_profile()
    email = orm.User.collection.get_default().email
    profile.default_user_email = None  # in memory only: the configuration file keeps it
    manager.get_profile_storage().reset_default_user()
    try:
        assert orm.User.collection.get_default() is None
        messages = []
        chosen = ensure_default_user(echo=messages.append)
        assert chosen in {user.email for user in orm.User.collection.all()}
        assert orm.User.collection.get_default().email == chosen and chosen in messages[0]
        assert ensure_default_user(echo=messages.append) is None  # nothing to do the second time
    finally:
        manager.set_default_user_email(profile, email)

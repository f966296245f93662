"""The documentation builds with Sphinx (warnings are errors) and its reference covers every nmcml process."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

DOCS = pathlib.Path(__file__).parents[2] / 'docs'


def test_docs_build_without_warnings(tmp_path):
    pytest.importorskip('myst_parser', reason='pip install -e .[docs] (scripts/bootstrap.sh installs it)')
    from aiida.plugins.entry_point import get_entry_point_names

    out = tmp_path / 'html'
    done = subprocess.run(
        [sys.executable, '-m', 'sphinx', '-W', '--keep-going', '-q', '-b', 'html', str(DOCS), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (out / 'contents.html').is_file() and (out / 'finetuning.html').is_file()
    reference = (out / 'reference' / 'processes.html').read_text()
    for group in ('aiida.workflows', 'aiida.calculations'):
        for name in get_entry_point_names(group):
            if name.startswith('nmcml.'):
                assert name in reference, name
    # generated from the specs: an exit code and an output port that exist only in the code
    assert 'ERROR_NEGLIGIBLE_SPREAD' in reference and 'reliability' in reference

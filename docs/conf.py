"""Sphinx configuration: the markdown user guide (myst-parser) plus the process reference generated from the specs.

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html`` (``pip install -e .[docs]``).
"""

from __future__ import annotations

import pathlib
import sys

HERE = pathlib.Path(__file__).parent
sys.path.insert(0, str(HERE))

import generate_reference  # noqa: E402  (docs/generate_reference.py, next to this file)

generate_reference.main()  # docs/reference/processes.md from the current specs, every build

project = 'aiida-nmcml'
author = 'aiida-nmcml developers'
extensions = ['myst_parser']
source_suffix = {'.md': 'markdown'}
root_doc = 'contents'
# docs/search.md is built as genetic_search (Sphinx's own search page is search.html)
exclude_patterns = ['_build', 'README.md', 'search.md']
myst_heading_anchors = 3
# Links from the guide into the source tree (../aiida_nmcml/...) are for readers of the repository on GitHub; in
# the built site they are not documents, which is not an error.
suppress_warnings = ['myst.xref_missing']
html_theme = 'furo'
html_title = 'aiida-nmcml'

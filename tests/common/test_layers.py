"""The import graph of ``aiida_nmcml`` has no upward edge (the layer rules of docs/dev/contracts.md).

Read from the source with ``ast`` (imports inside functions included), so it checks what the code would import on
any path, not what one test happened to import.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

PACKAGE = pathlib.Path(__file__).parents[2] / 'aiida_nmcml'

# Which top-level parts of the plugin each part may import (besides itself). Ground floor first.
ALLOWED: dict[str, set[str]] = {
    'common': set(),  # pure Python: schema, exit-code table
    'protocols': {'common'},
    'engine': {'common'},  # compute node: no AiiDA, no daemon-side code
    'analysis': {'common', 'engine'},
    'structures': {'common', 'engine'},
    'hops': {'common', 'engine', 'structures'},
    'setup': {'common', 'protocols'},  # protocols is on the ground floor (recursive_merge for job options)
    'data': {'common', 'engine', 'analysis', 'structures'},
    'testing': {'common', 'engine', 'structures', 'data'},
    'dft': {'common', 'engine', 'structures', 'data'},
    'calculations': {'common', 'engine', 'analysis', 'structures', 'data', 'dft'},
    'parsers': {'common', 'engine', 'analysis', 'structures', 'data', 'calculations'},
    'workflows': {
        'common', 'protocols', 'engine', 'analysis', 'structures', 'hops', 'setup', 'data', 'dft', 'calculations',
        'parsers', 'testing',
    },
    'report': {'common', 'engine', 'analysis', 'structures', 'data', 'workflows'},  # queries over finished work
    'cli': {'common', 'protocols', 'engine', 'structures', 'setup', 'data', 'dft', 'calculations', 'workflows'},
}  # fmt: skip

# Upward edges that exist today and are scheduled to go (issue 10, "Clean layers"); remove an entry when it is fixed.
KNOWN: dict[tuple[str, str], str] = {
    ('engine', 'structures'): 'engine/teacher.py builds sample cells with structures.py',
}


def _part(module: str) -> str:
    parts = module.split('.')
    return parts[1] if len(parts) > 1 else '__init__'


def import_edges() -> dict[tuple[str, str], list[str]]:
    """``(importer part, imported part) -> [file:line, ...]`` for every import of the plugin by the plugin."""
    edges: dict[tuple[str, str], list[str]] = {}
    for path in sorted(PACKAGE.rglob('*.py')):
        rel = path.relative_to(PACKAGE.parent).with_suffix('')
        module = '.'.join(rel.parts)
        package = module.rsplit('.', 1)[0] if path.name != '__init__.py' else module.removesuffix('.__init__')
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split('.')[: len(package.split('.')) - (node.level - 1)]
                    targets.append('.'.join(base + ([node.module] if node.module else [])))
                else:
                    targets.append(node.module or '')
            elif isinstance(node, ast.Import):
                targets.extend(alias.name for alias in node.names)
            for target in targets:
                if target.startswith('aiida_nmcml.') and _part(target) != _part(module):
                    edges.setdefault((_part(module), _part(target)), []).append(f'{rel}.py:{node.lineno}')
    return edges


def test_no_upward_import():
    bad = {
        edge: where
        for edge, where in import_edges().items()
        if edge[0] in ALLOWED and edge[1] not in ALLOWED[edge[0]] and edge not in KNOWN
    }
    assert not bad, f'upward imports (see the layer rules in docs/dev/contracts.md): {bad}'


def test_every_part_has_a_rule():
    parts = {_part('.'.join(p.relative_to(PACKAGE.parent).with_suffix('').parts)) for p in PACKAGE.rglob('*.py')}
    parts -= {'__init__', 'py'}
    assert parts <= set(ALLOWED), f'add a layer rule for {sorted(parts - set(ALLOWED))}'


def test_calculations_never_import_workflows():
    """The edge the review found (calcjobs carried ProtocolMixin from workflows/protocols) stays removed."""
    assert ('calculations', 'workflows') not in import_edges()
    assert ('calculations', 'protocols') not in import_edges()


# Imports every engine module in a fresh interpreter where ``import aiida`` (and the daemon-side layers) raise.
_BLOCKED_IMPORT = """
import importlib, importlib.abc, pathlib, sys

BLOCKED = ('aiida', 'aiida_nmcml.analysis', 'aiida_nmcml.workflows', 'aiida_nmcml.calculations', 'aiida_nmcml.data')

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + '.') for b in BLOCKED):
            raise ImportError(f'{name} is blocked: the engine runs on a compute node without it')
        return None

sys.meta_path.insert(0, Block())
for path in sorted(pathlib.Path(sys.argv[1]).glob('*.py')):
    importlib.import_module(f'aiida_nmcml.engine.{path.stem}' if path.stem != '__init__' else 'aiida_nmcml.engine')
print('ok')
"""


def test_engine_imports_without_aiida():
    """Every ``engine`` module imports on a node with no AiiDA and no daemon-side layers (module level only)."""
    result = subprocess.run(
        [sys.executable, '-c', _BLOCKED_IMPORT, str(PACKAGE / 'engine')],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0 and result.stdout.strip() == 'ok', result.stderr[-2000:]

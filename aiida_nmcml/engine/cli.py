"""``aiida-nmcml-engine SUBCOMMAND INPUT``: the one executable every nmcml CalcJob runs.

Subcommands are looked up lazily so that, e.g., the GA does not pay for importing torch until it needs a model.
Each subcommand module exposes ``run(config: dict) -> None`` and raises :class:`EngineError` for failures a user
can act on.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from .common import EXIT_CODES, EngineError, read_input, write_status

SUBCOMMANDS = {
    'md': 'aiida_nmcml.engine.md',
    'ga': 'aiida_nmcml.engine.ga',
    'evaluate': 'aiida_nmcml.engine.evaluate',
    'neb': 'aiida_nmcml.engine.neb',
    'label': 'aiida_nmcml.engine.teacher',
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='aiida-nmcml-engine', description=__doc__)
    parser.add_argument('subcommand', choices=sorted(SUBCOMMANDS))
    parser.add_argument('input', help='input file (JSON or YAML)')
    args = parser.parse_args(argv)
    try:
        module = importlib.import_module(SUBCOMMANDS[args.subcommand])
    except ModuleNotFoundError as exc:
        write_status('invalid_input', f'subcommand {args.subcommand} is not available in this installation: {exc}')
        return EXIT_CODES['invalid_input']
    try:
        config = read_input(args.input)
        module.run(config)
    except EngineError as exc:
        print(f'aiida-nmcml-engine {args.subcommand}: {exc.status}: {exc.message}', file=sys.stderr)
        write_status(exc.status, exc.message)
        return EXIT_CODES.get(exc.status, 1)
    except Exception as exc:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError) or 'out of memory' in str(exc).lower():
            write_status('out_of_memory', str(exc))
            return EXIT_CODES['out_of_memory']
        traceback.print_exc()
        write_status('internal_error', f'{type(exc).__name__}: {exc}')
        return EXIT_CODES['internal_error']
    write_status('ok')
    return 0


if __name__ == '__main__':
    sys.exit(main())

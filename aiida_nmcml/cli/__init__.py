"""The ``aiida-nmcml`` command line: a verdi-style group with ``-p/--profile``."""

from . import setup  # noqa: F401  (registers the subcommand)
from .root import cmd_root

__all__ = ('cmd_root',)

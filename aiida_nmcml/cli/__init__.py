"""The ``aiida-nmcml`` command line: a verdi-style group with ``-p/--profile``."""

from . import campaign, data, foundation, setup  # noqa: F401  (register the subcommands)
from .root import cmd_root

__all__ = ('cmd_root',)

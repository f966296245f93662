"""Root command group; subcommands register themselves by importing this module."""

import click
from aiida.cmdline.groups import VerdiCommandGroup
from aiida.cmdline.params import options, types


@click.group('aiida-nmcml', cls=VerdiCommandGroup, context_settings={'help_option_names': ['-h', '--help']})
@options.PROFILE(type=types.ProfileParamType(load_profile=True), expose_value=False)
@options.VERBOSITY()
def cmd_root():
    """aiida-nmcml: a fine-tuned MACE potential for NMC811 and the Li diffusion it predicts."""

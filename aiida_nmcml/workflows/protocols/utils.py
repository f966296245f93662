"""Backwards-compatible import path: the protocol machinery lives in :mod:`aiida_nmcml.protocols`.

It moved out of ``workflows`` so that no layer imports upwards (calcjobs used to import it from here); the YAML files
stay in this folder.
"""

from aiida_nmcml.protocols import (
    PROTOCOL_DIRECTORY,
    PROTOCOL_LEVELS,
    ProtocolMixin,
    load_protocol_inputs,
    recursive_merge,
)

__all__ = ('PROTOCOL_DIRECTORY', 'PROTOCOL_LEVELS', 'ProtocolMixin', 'load_protocol_inputs', 'recursive_merge')

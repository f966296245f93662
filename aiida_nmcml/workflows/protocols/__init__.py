"""Protocol files: one YAML per work chain with the levels demo, fast, moderate and precise."""

from aiida_nmcml.protocols import PROTOCOL_LEVELS, ProtocolMixin, recursive_merge

__all__ = ('PROTOCOL_LEVELS', 'ProtocolMixin', 'recursive_merge')

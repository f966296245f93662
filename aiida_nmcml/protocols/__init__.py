"""Protocols in the style of aiida-quantumespresso: ``default_inputs`` plus per-level overrides, then user overrides.

Protocols belong to work chains (aiida-qe never puts them on a CalcJob): ``nmcml.md.base`` carries ``md.yaml``,
``nmcml.mace.train.base`` ``train.yaml`` and so on. This package sits on the ground floor of the import graph (it
imports nothing of the plugin), so any layer may use it. The YAML files live in ``aiida_nmcml/workflows/protocols/``.

A protocol YAML looks like::

    default_protocol: moderate
    default_inputs:
        clean_workdir: false
        ...
    protocols:
        demo:      {description: ..., <keys overriding default_inputs>}
        fast:      {...}
        moderate:  {...}
        precise:   {...}
"""

from __future__ import annotations

import copy
import pathlib
from functools import cache

import yaml

PROTOCOL_LEVELS = ('demo', 'fast', 'moderate', 'precise')
PROTOCOL_DIRECTORY = pathlib.Path(__file__).parents[1] / 'workflows' / 'protocols'


def recursive_merge(left: dict, right: dict) -> dict:
    """Merge ``right`` into a deep copy of ``left``; nested dicts merge, anything else in ``right`` wins."""
    merged = copy.deepcopy(left)
    for key, value in right.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = recursive_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


@cache
def _load(path: str) -> dict:
    with open(path) as handle:
        return yaml.safe_load(handle)


class ProtocolMixin:
    """Give a work chain ``get_protocol_inputs``; subclasses set ``_protocol_filename`` (a file in this folder)."""

    _protocol_filename: str = ''

    @classmethod
    def get_protocol_filepath(cls) -> pathlib.Path:
        return PROTOCOL_DIRECTORY / cls._protocol_filename

    @classmethod
    def _load_protocol_file(cls) -> dict:
        return copy.deepcopy(_load(str(cls.get_protocol_filepath())))

    @classmethod
    def get_default_protocol(cls) -> str:
        return cls._load_protocol_file()['default_protocol']

    @classmethod
    def get_available_protocols(cls) -> dict[str, dict]:
        data = cls._load_protocol_file()
        return {name: {'description': spec.get('description', '')} for name, spec in data['protocols'].items()}

    @classmethod
    def get_protocol_inputs(cls, protocol: str | None = None, overrides: dict | None = None) -> dict:
        """Inputs of ``protocol`` with ``overrides`` merged on top. An unknown name raises ``ValueError``."""
        return load_protocol_inputs(cls._protocol_filename, protocol, overrides, owner=cls.__name__)


def load_protocol_inputs(
    filename: str, protocol: str | None = None, overrides: dict | None = None, *, owner: str = ''
) -> dict:
    """Inputs of ``protocol`` in the protocol file ``filename`` with ``overrides`` merged on top.

    For a caller that needs another work chain's protocol without its class (``nmcml.search`` reads ``ga.yaml``).
    An unknown protocol name raises ``ValueError`` listing the valid ones.
    """
    data = copy.deepcopy(_load(str(PROTOCOL_DIRECTORY / filename)))
    protocol = protocol or data['default_protocol']
    if protocol not in data['protocols']:
        raise ValueError(
            f'unknown protocol {protocol!r} for {owner or filename}; choose one of {sorted(data["protocols"])}'
        )
    level = {k: v for k, v in data['protocols'][protocol].items() if k != 'description'}
    inputs = recursive_merge(data['default_inputs'], level)
    return recursive_merge(inputs, overrides or {})

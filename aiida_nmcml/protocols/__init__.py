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

from aiida_nmcml.common.schema import closest_key

PROTOCOL_LEVELS = ('demo', 'fast', 'moderate', 'precise')
PROTOCOL_DIRECTORY = pathlib.Path(__file__).parents[1] / 'workflows' / 'protocols'

#: Override keys a builder takes besides the keys of its protocol file (popped or read by its
#: ``get_builder_from_protocol``: the work chain's own ports, or the protocol overrides of a child work chain).
OVERRIDE_KEYS: dict[str, tuple[str, ...]] = {
    'md.yaml': ('max_iterations', 'clean_workdir'),
    'ga.yaml': ('max_iterations', 'clean_workdir'),
    'search.yaml': ('ga', 'label'),
    'active_learning.yaml': ('md', 'label', 'finetune'),
}


class UnknownOverrideError(ValueError):
    """An override key that is neither in the protocol file nor taken by the builder (a typo, usually)."""


def protocol_keys(data: dict) -> set[str]:
    """Top-level keys of a protocol file: ``default_inputs`` and every level (a level may add a key)."""
    keys = set(data['default_inputs'])
    for level in data['protocols'].values():
        keys |= {key for key in level if key != 'description'}
    return keys


def check_override_keys(overrides: dict | None, valid, *, owner: str = '', path: str = 'overrides') -> None:
    """Refuse unknown top-level override keys, naming the closest valid one (aiida-qe only warns).

    Why: a misspelt override used to be merged next to the real key and ignored, so the run went ahead with the
    protocol's value and exit 0. Nested sections are checked by their own schemas (label settings, the MD / GA /
    training parameters) before submission.
    """
    if not overrides:
        return
    if not isinstance(overrides, dict):
        raise UnknownOverrideError(
            f'{path} for {owner or "this protocol"} must be a dict, got {type(overrides).__name__}'
        )
    valid = sorted(valid)
    messages = []
    for key in overrides:
        if key not in valid:
            hint = closest_key(str(key), valid)
            messages.append(
                f'{path}: unknown key {key!r}{f"; did you mean {hint!r}?" if hint else ""} '
                f'(valid keys for {owner or "this protocol"}: {", ".join(valid)})'
            )
    if messages:
        raise UnknownOverrideError('\n'.join(messages))


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


def _type_error(value, reference, path: str) -> str | None:
    """A message when ``value`` cannot stand where the protocol has ``reference`` (the protocol is the example)."""
    if reference is None or (isinstance(reference, dict) and isinstance(value, dict)):
        return None
    if value is None and not isinstance(reference, dict):
        return None  # nullable or not: the parameter's schema says (e.g. trust_lower None = from the calibration)
    kinds = (
        (bool, (bool,), 'a boolean'),
        (int, (int,), 'an integer'),
        (float, (int, float), 'a number'),
        (str, (str,), 'a string'),
        (list, (list, tuple), 'a list'),
        (dict, (dict,), 'a dict'),
    )
    for kind, accepted, name in kinds:
        if isinstance(reference, kind):
            ok = isinstance(value, accepted) and not (kind is not bool and isinstance(value, bool))
            return None if ok else f'{path}: {value!r} ({type(value).__name__}) is not {name}, as in the protocol'
    return None


#: protocol sections that hold CalcJob ``metadata.options`` (their keys are the options' names)
OPTIONS_KEYS = ('options', 'gpu_options')


def _option_errors(options: dict, where: str) -> list[str]:
    """Unknown CalcJob option names (``max_wallclock_secondss``), with the closest valid one."""
    from aiida.engine import CalcJob

    valid = sorted(CalcJob.spec_options)
    messages = []
    for key in options:
        if key not in valid:
            hint = closest_key(str(key), valid)
            messages.append(f'{where}: unknown CalcJob option {key!r}{f"; did you mean {hint!r}?" if hint else ""}')
    return messages


def check_override_types(overrides: dict, reference: dict, path: str = 'overrides') -> None:
    """Refuse override values whose type differs from the protocol's value at the same key (dicts recursively).

    Why: ``{'committee_size': []}`` or ``{'metadata': None}`` used to end in a ``TypeError`` / ``AttributeError``
    from deep inside a builder. Where the protocol has ``None``, and for ``None`` in place of a scalar, the parameter
    schemas decide; ranges and choices are checked by the schemas and port validators, before submission.
    """
    messages = []

    def walk(value, ref, where):
        message = _type_error(value, ref, where)
        if message:
            messages.append(message)
        elif where.rsplit('.', 1)[-1] in OPTIONS_KEYS and isinstance(value, dict):
            messages.extend(_option_errors(value, where))
        elif isinstance(value, dict) and isinstance(ref, dict):
            for key, item in value.items():
                if key in ref:
                    walk(item, ref[key], f'{where}.{key}')

    walk(overrides, reference, path)
    if messages:
        raise UnknownOverrideError('\n'.join(messages))


def load_protocol_inputs(
    filename: str, protocol: str | None = None, overrides: dict | None = None, *, owner: str = ''
) -> dict:
    """Inputs of ``protocol`` in the protocol file ``filename`` with ``overrides`` merged on top.

    For a caller that needs another work chain's protocol without its class (``nmcml.search`` reads ``ga.yaml``).
    An unknown protocol name raises ``ValueError`` listing the valid ones.
    """
    data = copy.deepcopy(_load(str(PROTOCOL_DIRECTORY / filename)))
    check_override_keys(overrides, protocol_keys(data) | set(OVERRIDE_KEYS.get(filename, ())), owner=owner or filename)
    protocol = protocol or data['default_protocol']
    if protocol not in data['protocols']:
        raise ValueError(
            f'unknown protocol {protocol!r} for {owner or filename}; choose one of {sorted(data["protocols"])}'
        )
    level = {k: v for k, v in data['protocols'][protocol].items() if k != 'description'}
    inputs = recursive_merge(data['default_inputs'], level)
    check_override_types(overrides or {}, inputs)
    return recursive_merge(inputs, overrides or {})

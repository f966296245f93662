"""Declared schemas for parameters dictionaries, checked before submission.

Why: a misspelt key (``temprature_K``) or a nonsense value (``timestep_fs: 0``) used to run silently with defaults or
fail late on the compute node. Every parameters dict in the plugin declares its keys here once; the same declaration
gives the port validator, the defaults and the documentation table.

The module is pure Python (no AiiDA import) so that the compute-node engine can validate its ``input.json`` with the
very same declaration.

Example::

    SCHEMA = Section(
        {
            'temperature_K': Field(float, default=300.0, min=0.0, min_exclusive=True, unit='K'),
            'ensemble': Field(str, default='nvt', choices=('nve', 'nvt', 'npt')),
            'stop': Section({'max_uncertainty': Field(float, min=0.0, nullable=True, default=None)}),
        }
    )
    errors = SCHEMA.errors({'temprature_K': 900})
    # ["parameters: unknown key 'temprature_K'; did you mean 'temperature_K'? ..."]

Errors name the full dotted path of the key, the closest valid key (``difflib``) and the allowed range or choices,
so that the message says what to do.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ('MISSING', 'Field', 'SchemaError', 'Section', 'closest_key', 'port_validator')


class _Missing:
    """Sentinel for 'no default': the key is required."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return 'MISSING'

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()


class SchemaError(ValueError):
    """Raised by :meth:`Section.check`; ``errors`` holds every message (one per offending key)."""

    def __init__(self, errors: Sequence[str]):
        self.errors = list(errors)
        super().__init__('\n'.join(self.errors))


def closest_key(key: str, valid: Sequence[str]) -> str | None:
    """Return the valid key closest to ``key`` (``difflib``, then case-insensitive), or ``None``."""
    valid = [str(v) for v in valid]
    matches = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
    if matches:
        return matches[0]
    lowered = {v.lower(): v for v in valid}
    if str(key).lower() in lowered:
        return lowered[str(key).lower()]
    matches = difflib.get_close_matches(str(key).lower(), list(lowered), n=1, cutoff=0.5)
    return lowered[matches[0]] if matches else None


def _type_name(types: tuple[type, ...]) -> str:
    names = {bool: 'a boolean', int: 'an integer', float: 'a number', str: 'a string', list: 'a list', dict: 'a dict'}
    return ' or '.join(names.get(t, t.__name__) for t in types)


def _is_instance(value: Any, kind: type) -> bool:
    """Type test with the usual JSON-ish coercions: int is a float, bool is neither int nor float."""
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if kind is list:
        return isinstance(value, (list, tuple))
    if kind is dict:
        return isinstance(value, Mapping)
    return isinstance(value, kind)


def _fmt(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


@dataclass(frozen=True)
class Field:
    """One leaf key of a parameters dict.

    :param type: allowed type or tuple of types (``float`` accepts integers; ``bool`` is never a number).
    :param default: value used when the key is absent; ``MISSING`` makes the key required.
    :param min, max: inclusive bounds unless ``min_exclusive``/``max_exclusive``.
    :param choices: allowed values (strings compared exactly).
    :param nullable: whether ``None`` is allowed.
    :param items: for ``list`` fields, the type of every item (a ``Field`` to also bound the items).
    :param min_length, max_length: bounds on the length of a list or string.
    :param check: extra callable ``value -> str | None`` returning a message when the value is refused.
    :param unit: shown in messages and docs.
    :param help: one line for the docs table.
    """

    type: type | tuple[type, ...]
    default: Any = MISSING
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    max_exclusive: bool = False
    choices: tuple | None = None
    nullable: bool = False
    items: type | tuple[type, ...] | Field | None = None
    min_length: int | None = None
    max_length: int | None = None
    allow_nonfinite: bool = False
    check: Callable[[Any], str | None] | None = None
    unit: str = ''
    help: str = ''

    @property
    def types(self) -> tuple[type, ...]:
        return self.type if isinstance(self.type, tuple) else (self.type,)

    @property
    def required(self) -> bool:
        return self.default is MISSING

    def allowed(self) -> str:
        """Human description of the allowed values, used in messages and docs."""
        if self.choices is not None:
            text = 'one of ' + ', '.join(_fmt(c) for c in self.choices)
        else:
            text = _type_name(self.types)
            bounds = []
            if self.min is not None:
                bounds.append(f'{">" if self.min_exclusive else ">="} {self.min:g}')
            if self.max is not None:
                bounds.append(f'{"<" if self.max_exclusive else "<="} {self.max:g}')
            if bounds:
                text += ' ' + ' and '.join(bounds)
            if self.unit:
                text += f' ({self.unit})'
            if self.min_length is not None or self.max_length is not None:
                lo = self.min_length if self.min_length is not None else 0
                hi = self.max_length if self.max_length is not None else '∞'
                text += f' of length {lo}..{hi}'
        if self.nullable:
            text += ', or null'
        return text

    def errors(self, value: Any, path: str) -> list[str]:
        """Return the messages for ``value`` at dotted ``path`` (empty when valid)."""
        if value is None:
            return [] if self.nullable else [f'{path}: null is not allowed; expected {self.allowed()}']
        if not any(_is_instance(value, t) for t in self.types):
            return [f'{path}: {_fmt(value)} ({type(value).__name__}) is not {self.allowed()}']
        if self.choices is not None:
            if value not in self.choices:
                hint = closest_key(value, [str(c) for c in self.choices]) if isinstance(value, str) else None
                dym = f"; did you mean '{hint}'?" if hint else ''
                return [f'{path}: {_fmt(value)} is not allowed{dym} Allowed: {self.allowed()}']
            return []
        messages = []
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            if not self.allow_nonfinite and not math.isfinite(value):
                return [f'{path}: {value} is not finite; expected {self.allowed()}']
            low_bad = self.min is not None and (value <= self.min if self.min_exclusive else value < self.min)
            high_bad = self.max is not None and (value >= self.max if self.max_exclusive else value > self.max)
            if low_bad or high_bad:
                messages.append(f'{path}: {value} is out of range; allowed: {self.allowed()}')
        if isinstance(value, (list, tuple, str)):
            n = len(value)
            if (self.min_length is not None and n < self.min_length) or (
                self.max_length is not None and n > self.max_length
            ):
                messages.append(f'{path}: length {n} is out of range; allowed: {self.allowed()}')
        if self.items is not None and isinstance(value, (list, tuple)):
            item_field = self.items if isinstance(self.items, Field) else Field(self.items)
            for i, item in enumerate(value):
                messages.extend(item_field.errors(item, f'{path}[{i}]'))
        if not messages and self.check is not None:
            message = self.check(value)
            if message:
                messages.append(f'{path}: {message}')
        return messages


@dataclass(frozen=True)
class Section:
    """A (possibly nested) mapping of declared keys.

    :param fields: key → ``Field`` or nested ``Section``.
    :param open: accept undeclared keys without checking them (for pass-through dicts such as extra
        command-line arguments); the declared keys are still checked.
    :param nullable: whether the whole section may be ``None``.
    :param required: for a nested section, whether it must be given (its defaults apply when it is absent).
    :param check: extra callable ``dict -> str | None`` for rules spanning several keys.
    :param help: one line for the docs table.
    """

    fields: Mapping[str, Field | Section] = field(default_factory=dict)
    open: bool = False
    nullable: bool = False
    required: bool = False
    check: Callable[[Mapping], str | None] | None = None
    help: str = ''

    def errors(self, value: Any, path: str = 'parameters') -> list[str]:
        """Return every message for ``value`` (empty list when valid).

        ``value`` may be a mapping or any object with ``get_dict()`` (an AiiDA ``Dict`` node), duck-typed so that this
        module needs no AiiDA import.
        """
        if value is None:
            return [] if self.nullable else [f'{path}: null is not allowed; expected a dict']
        if hasattr(value, 'get_dict') and not isinstance(value, Mapping):
            value = value.get_dict()
        if not isinstance(value, Mapping):
            return [f'{path}: {_fmt(value)} ({type(value).__name__}) is not a dict']
        messages = []
        valid = list(self.fields)
        for key in value:
            if key in self.fields or self.open:
                continue
            hint = closest_key(key, valid)
            dym = f"did you mean '{hint}'? " if hint else ''
            messages.append(f"{path}: unknown key '{key}'; {dym}Valid keys: {', '.join(sorted(valid))}")
        for key, spec in self.fields.items():
            sub = f'{path}.{key}'
            if key not in value:
                if isinstance(spec, Field) and spec.required:
                    messages.append(f'{sub}: required key is missing; expected {spec.allowed()}')
                elif isinstance(spec, Section) and spec.required:
                    messages.append(f'{sub}: required section is missing')
                continue
            messages.extend(spec.errors(value[key], sub))
        if not messages and self.check is not None:
            message = self.check(value)
            if message:
                messages.append(f'{path}: {message}')
        return messages

    def check_value(self, value: Any, path: str = 'parameters') -> None:
        """Raise :class:`SchemaError` listing every problem in ``value``."""
        messages = self.errors(value, path)
        if messages:
            raise SchemaError(messages)

    def defaults(self) -> dict:
        """The dict of every default value (nested sections included; required keys left out)."""
        out = {}
        for key, spec in self.fields.items():
            if isinstance(spec, Section):
                out[key] = spec.defaults()
            elif not spec.required:
                out[key] = spec.default
        return out

    def with_defaults(self, value: Mapping | None) -> dict:
        """Return ``value`` completed with the defaults (does not validate; call :meth:`errors` first)."""
        value = dict(value or {})
        out = {}
        for key, spec in self.fields.items():
            if isinstance(spec, Section):
                if key in value and value[key] is None and spec.nullable:
                    out[key] = None
                else:
                    out[key] = spec.with_defaults(value.get(key))
            elif key in value:
                out[key] = value[key]
            elif not spec.required:
                out[key] = spec.default
        for key in value:
            if key not in out:
                out[key] = value[key]
        return out

    def keys_flat(self, prefix: str = '') -> list[tuple[str, Field]]:
        """Every leaf as ``(dotted.key, Field)``, in declaration order."""
        rows = []
        for key, spec in self.fields.items():
            name = f'{prefix}{key}'
            if isinstance(spec, Section):
                rows.extend(spec.keys_flat(name + '.'))
            else:
                rows.append((name, spec))
        return rows

    def markdown(self) -> str:
        """A markdown table of the keys (for docs)."""
        lines = ['| key | allowed | default | meaning |', '|---|---|---|---|']
        for name, spec in self.keys_flat():
            default = 'required' if spec.required else f'`{spec.default!r}`'
            lines.append(f'| `{name}` | {spec.allowed()} | {default} | {spec.help} |')
        return '\n'.join(lines)


def port_validator(schema: Section, name: str = 'parameters') -> Callable[[Any, Any], str | None]:
    """Return an AiiDA port validator ``(value, ctx) -> str | None`` checking ``value`` against ``schema``.

    The value may be a ``Dict`` node (``get_dict`` is used) or a plain mapping.
    """

    def validator(value, _ctx=None):
        if value is None:
            return None
        messages = schema.errors(value, name)
        return '\n'.join(messages) if messages else None

    validator.__doc__ = f'Check ``{name}`` against its declared schema.'
    return validator

"""Typed JSON: dataclasses from JSON-like dicts, checked field by field, and back (no torch import here)."""

from __future__ import annotations

import dataclasses
import types
import typing
from enum import Enum
from typing import Any, TypeVar

from qkanforecast.errors import QKANForecastError

C = TypeVar("C")


def from_dict(cls: type[C], data: Any, where: str = "") -> C:
    """Build the dataclass ``cls`` from a JSON-like dict, refusing unknown keys and wrong types."""
    label = where or cls.__name__
    if not isinstance(data, dict):
        raise QKANForecastError(f"{label}: expected an object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise QKANForecastError(f"{label}: unknown key {unknown[0]!r}; known: {', '.join(fields)}")
    missing = [name for name, f in fields.items() if name not in data and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise QKANForecastError(f"{label}: missing key {missing[0]!r}")
    hints = typing.get_type_hints(cls)
    values = {key: _check_type(hints[key], value, f"{label}.{key}") for key, value in data.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:  # a check of the class itself (ConfigError passes through)
        if isinstance(exc, QKANForecastError):
            raise
        raise QKANForecastError(f"{label}: {exc}") from None


def _check_type(hint: Any, value: Any, label: str) -> Any:
    """``value`` if it fits ``hint`` (ints are accepted for floats; nested dataclasses are built)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        hint = next(a for a in options if a is not type(None))
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, label)  # type: ignore[arg-type]
    if typing.get_origin(hint) is list:
        if not isinstance(value, list):
            raise QKANForecastError(f"{label}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [_check_type(item, v, f"{label}[{i}]") for i, v in enumerate(value)]
    if isinstance(hint, type) and issubclass(hint, Enum):
        ok = isinstance(value, str)
    elif hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint in (bool, str):
        ok = isinstance(value, hint)
    else:
        ok = True
    if not ok:
        name = getattr(hint, "__name__", str(hint))
        raise QKANForecastError(f"{label}: expected {name}, got {value!r}")
    return value


def to_dict(config: Any) -> dict[str, Any]:
    """``asdict`` with Enum members as their string values (JSON-ready)."""
    return {k: _plain(v) for k, v in dataclasses.asdict(config).items()}


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value

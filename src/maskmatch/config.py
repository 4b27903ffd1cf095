"""Typed configs from YAML: dataclasses hold the fields and defaults, YAML holds values only.

An unknown key, a missing section or a value of the wrong type is an error naming the key, never a
warning. Nested dataclasses are nested mappings; tuples are YAML lists.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from maskmatch.errors import UserError

T = TypeVar("T")
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def from_dict(cls: type[T], values: dict, where: str = "") -> T:
    """Builds dataclass `cls` from a mapping, checking every key and type."""
    if not isinstance(values, dict):
        raise UserError(f"config{where}: expected a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise UserError(f"config{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(fields))})")
    kwargs = {key: _convert(hints[key], value, f"{where}.{key}") for key, value in values.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise UserError(f"config{where}: {e}") from None


def to_dict(config: Any) -> dict:
    """The plain-data form of a config, as YAML or JSON would hold it."""
    return dataclasses.asdict(config)


def load_yaml(cls: type[T], path: str | Path) -> T:
    try:
        values = yaml.safe_load(Path(path).read_text("utf-8")) or {}
    except OSError as e:
        raise UserError(f"{path}: cannot read config ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    return from_dict(cls, values)


def override(config: T, assignments: list[str]) -> T:
    """Applies `section.key=value` strings (value parsed as YAML) on top of a config."""
    values = to_dict(config)
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        if not sep:
            raise UserError(f"override {assignment!r}: expected key=value")
        *path, node = key.strip().split(".")
        target = values
        for part in path:
            if not isinstance(target.get(part), dict):
                raise UserError(f"override {assignment!r}: no section {part!r}")
            target = target[part]
        try:
            target[node] = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise UserError(f"override {assignment!r}: not a YAML value ({e.problem})") from None
    return from_dict(type(config), values)


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _convert(option, value, where)
            except UserError as e:
                errors.append(str(e))
        raise UserError(errors[0])
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"config{where}: expected a list, got {value!r}")
        args = typing.get_args(hint)
        items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        if len(items) != len(value):
            raise UserError(f"config{where}: expected {len(items)} values, got {len(value)}")
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(items, value)))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
    if hint is Any or (isinstance(hint, type) and isinstance(value, hint) and not (hint is int and isinstance(value, bool))):
        return value
    raise UserError(f"config{where}: expected {getattr(hint, '__name__', hint)}, got {value!r}")

"""Records kept as JSON (a VM's runtime record, a kept VM's, the manifests
of cache entries), written and read back through their dataclass: a file
that anyone who can write the cache may have written is read only as the
types its fields say, or not at all."""

import dataclasses
import enum
import json
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def to_json(record: object) -> str:
    """`record` (a dataclass) as indented JSON: enums by their value, tuples as lists."""
    assert dataclasses.is_dataclass(record)
    assert not isinstance(record, type)
    return json.dumps(_plain(record), indent=2) + "\n"


def _plain(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def from_json(cls: type[T], data: Any) -> T:
    """A `cls` from parsed JSON: every field without a default present, each
    of its field's type (keys no field names are ignored: a newer
    bootc-box's). TypeError or ValueError say which field is wrong."""
    if not isinstance(data, dict):
        raise TypeError(f"a {cls.__name__} is not a JSON object")
    hints = typing.get_type_hints(cls)
    values = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        if field.name in data:
            values[field.name] = _typed(hints[field.name], data[field.name], field.name)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ValueError(f"{field.name} is missing")
    return cls(**values)


def _typed(kind: Any, value: Any, name: str) -> Any:  # noqa: PLR0911 (one return per kind)
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        (inner,) = (a for a in args if a is not type(None))
        return _typed(inner, value, name)
    if origin is tuple:
        if args[0] is str and not (isinstance(value, list) and all(type(v) is str for v in value)):
            raise TypeError(f"{name} is not a list of strings")
        if not isinstance(value, list):
            raise TypeError(f"{name} is not a list")
        return tuple(_typed(args[0], v, name) for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError(f"{name} is not an object")
        return {_typed(args[0], k, name): _typed(args[1], v, name) for k, v in value.items()}
    if dataclasses.is_dataclass(kind):
        return from_json(kind, value)  # type: ignore[arg-type]
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        try:
            return kind(value)
        except ValueError:
            raise TypeError(f"{name} is not one of {[e.value for e in kind]}") from None
    if kind is float and type(value) in (int, float):
        return float(value)
    # bool is an int to Python, never to a record.
    if type(value) is not kind:
        raise TypeError(f"{name} is not {_NAMES.get(kind, kind)}")
    return value


_NAMES = {str: "a string", int: "a number", float: "a number", bool: "true or false"}

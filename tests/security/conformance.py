"""Does an event (a msgspec Struct or a dataclass) hold what its annotations promise? Codec output is typed
input to `Call`."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

import msgspec


def conforms(value: Any, hint: Any) -> bool:
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is dict:
        key, val = typing.get_args(hint) or (Any, Any)
        return isinstance(value, dict) and all(
            conforms(k, key) and conforms(v, val) for k, v in value.items()
        )
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        return isinstance(value, list) and all(conforms(v, item) for v in value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def violations(instance: Any) -> list[str]:
    """Fields of an event whose values do not match their annotation."""
    hints = typing.get_type_hints(type(instance))
    if isinstance(instance, msgspec.Struct):
        names = list(instance.__struct_fields__)
    else:
        names = [f.name for f in dataclasses.fields(instance)]
    return [
        f"{type(instance).__name__}.{name}={getattr(instance, name)!r:.60} is not {hints[name]}"
        for name in names
        if not conforms(getattr(instance, name), hints[name])
    ]

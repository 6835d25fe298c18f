"""Dataclasses back from their ``asdict()`` form: what the store reads a run's document
into. Standard library only."""

from __future__ import annotations

import types
import typing
from dataclasses import MISSING, fields, is_dataclass
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

__all__ = ["from_json"]

T = TypeVar("T")


def from_json(cls: type[T], data: Any, where: str = "") -> T:
    """A dataclass ``cls`` built from its ``asdict()`` form, nested dataclasses, tuples and
    optionals included. Missing fields take their defaults; a wrong shape raises
    ``ValueError`` naming the field."""
    if not isinstance(data, dict):
        raise ValueError(f"{where or cls.__name__}: expected an object")
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name not in data:
            continue
        values[f.name] = _convert(hints[f.name], data[f.name], f"{where}.{f.name}")
    try:
        return cls(**values)
    except TypeError as exc:
        raise ValueError(f"{where or cls.__name__}: {exc}") from None


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        if value is None:
            return None
        options = [a for a in get_args(tp) if a is not type(None)]
        if len(options) == 1:
            return _convert(options[0], value, where)
        kinds = [o for o in options if is_dataclass(o)]
        if kinds and isinstance(value, dict):
            # Several dataclasses: the first whose required fields the object has.
            for option in kinds:
                if _required(option) <= value.keys():
                    return from_json(option, value, where)  # type: ignore[arg-type]
            if len(kinds) == len(options):
                names = " or ".join(getattr(k, "__name__", str(k)) for k in kinds)
                raise ValueError(f"{where}: has the fields of no {names}")
        return value
    if origin is Literal:
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ValueError(f"{where}: expected a list")
        item = get_args(tp)[0]
        return tuple(_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected an object")
        item = get_args(tp)[1]
        return {k: _convert(item, v, f"{where}.{k}") for k, v in value.items()}
    if is_dataclass(tp):
        return from_json(tp, value, where)  # type: ignore[arg-type]
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


def _required(cls: Any) -> set[str]:
    """The fields of a dataclass that have no default."""
    return {f.name for f in fields(cls)
            if f.default is MISSING and f.default_factory is MISSING}

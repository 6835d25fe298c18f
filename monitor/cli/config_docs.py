"""The config reference, generated from the declarations in ``monitor.config``."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from monitor.config import Config

__all__ = ["config_reference"]


_NAMES = {str: "text", int: "integer", float: "number", bool: "true/false",
          timedelta: "duration", type(None): "none", Any: "any JSON value"}


def _type_name(annotation: Any) -> str:
    """Plain words (no '|', which would split a Markdown table cell)."""
    from pathlib import Path
    from types import UnionType
    from typing import Annotated, Literal, Union, get_args, get_origin

    origin = get_origin(annotation)
    if origin is Annotated:  # a type with validators, e.g. Duration
        return _type_name(get_args(annotation)[0])
    if origin in (Union, UnionType):
        return " or ".join(_type_name(a) for a in get_args(annotation))
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in get_args(annotation))
    if origin is dict:
        key, value = get_args(annotation)
        return f"mapping of {_type_name(key)} to {_type_name(value)}"
    if origin in (list, tuple):
        return f"list of {_type_name(get_args(annotation)[0])}"
    if annotation is Path:
        return "path"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section (below)"
    return _NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _default(field: Any) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    if field.default_factory is not None:
        return "(section defaults)"
    value = field.default
    if isinstance(value, timedelta):
        return f"{int(value.total_seconds())} s"
    if isinstance(value, list | tuple):
        return ", ".join(f"`{v}`" for v in value) or "empty"
    return "none" if value is None else f"`{value}`"


def _section(model: type[BaseModel], prefix: str, out: list[str]) -> None:
    nested: list[tuple[type[BaseModel], str]] = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        path = f"{prefix}{key}"
        annotation = field.annotation
        inner = getattr(annotation, "__args__", ())
        sub = next((a for a in (annotation, *inner)
                    if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if sub is not None:
            nested.append((sub, f"{path}." if annotation is sub else f"{path}.<name>."))
            if annotation is sub:
                continue
        desc = (field.description or "").replace("|", "\\|")
        out.append(f"| `{path}` | {_type_name(annotation)} | {_default(field)} | {desc} |")
    for sub, sub_prefix in nested:
        _section(sub, sub_prefix, out)


def config_reference() -> str:
    out = ["| key | type | default | meaning |", "|---|---|---|---|"]
    _section(Config, "", out)
    return "\n".join(out) + "\n"

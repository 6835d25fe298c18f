"""The config reference, generated from the declarations in ``monitor.config``."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from monitor.config import Config

__all__ = ["config_reference"]


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) or str(annotation)
    return text.replace("typing.", "").replace("pathlib.", "").replace("datetime.", "")


def _default(field: Any) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    if field.default_factory is not None:
        return "(section defaults)"
    value = field.default
    if isinstance(value, timedelta):
        return f"{int(value.total_seconds())} s"
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

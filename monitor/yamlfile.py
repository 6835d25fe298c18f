"""Reading a YAML file into a pydantic model, with errors that name the file and key path."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from monitor.errors import MonitorError

__all__ = ["load_yaml_model", "validation_message"]

M = TypeVar("M", bound=BaseModel)


def validation_message(source: str, exc: ValidationError) -> str:
    """One line per problem: ``file: key.path: what was expected (got value)``."""
    lines = []
    for err in exc.errors():
        loc = err["loc"]
        if loc and loc[-1] == "[key]":  # a mapping's key is wrong: the message names it
            loc = loc[:-2]
        path = ".".join(str(p) for p in loc) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")  # our validators' own words
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        got = "" if err["type"] in ("missing", "extra_forbidden") else f" (got {err['input']!r})"
        lines.append(f"{source}: {path}: {msg}{got}")
    return "; ".join(lines)


def read_yaml(path: Path, error: type[MonitorError]) -> Any:
    """Parse a YAML file; syntax errors name the line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte {exc.start}); a YAML file is expected") \
            from None
    try:
        return yaml.safe_load(text)
    except RecursionError:
        raise error(f"{path}: invalid YAML: nested too deeply") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown place"
        raise error(f"{path}: invalid YAML at {where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise error(f"{path}: invalid YAML: {exc}") from None


def load_yaml_model(path: Path, model: type[M], error: type[MonitorError], **context: Any) -> M:
    """Load and validate ``path`` as ``model``; raise ``error`` naming file and key path."""
    data = read_yaml(path, error)
    if not isinstance(data, dict):
        raise error(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return model.model_validate(data, context=context or None)
    except ValidationError as exc:
        raise error(validation_message(str(path), exc)) from None

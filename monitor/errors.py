"""One exception root for the project; each message names what is wrong and where."""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConfigError",
    "DatabaseError",
    "IngestError",
    "MonitorError",
    "RowProblem",
    "SchemaError",
    "UnknownModelError",
    "WatermarkMoved",
    "first_line",
    "shown",
]


class MonitorError(Exception):
    """Root of every error mqm raises on purpose; the CLI prints its message on one line."""


class ConfigError(MonitorError):
    """The config file is missing, malformed, or has a wrong or unknown key."""


class SchemaError(MonitorError):
    """A model schema file is missing, malformed, or inconsistent."""


class UnknownModelError(MonitorError):
    """A command named a model that the config does not declare."""

    def __init__(self, model: str, known: list[str]) -> None:
        names = ", ".join(sorted(known)) or "none"
        super().__init__(f"unknown model {model!r}; the config declares: {names}")
        self.model = model


class IngestError(MonitorError):
    """A log or label file could not be loaded; nothing was written."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class DatabaseError(MonitorError):
    """The database could not be reached or is at an unexpected revision."""


class WatermarkMoved(MonitorError):
    """Another writer moved the model's watermark first; this run was rolled back."""


class RowProblem(ValueError):
    """One field of one row is unusable; ``field`` names it. Collected per row by the
    loaders, so it is a ``ValueError`` rather than a ``MonitorError``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"field {field!r}: {message}")
        self.field = field
        self.detail = message


def first_line(exc: BaseException) -> str:
    """The first line of an error's message: the driver's own (SQLAlchemy's ``orig``)
    when there is one, else the exception's; its type name when the message is empty."""
    orig = getattr(exc, "orig", None)
    if orig is None:
        orig = exc
    return (str(orig).strip().splitlines() or [type(orig).__name__])[0]


def shown(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to about ``limit`` characters, for messages: a bad value may be
    a megabyte of text, or an integer too long to print."""
    try:
        text = repr(value)
    except Exception:  # e.g. an int of more digits than str() allows
        return f"<{type(value).__name__}>"
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"

"""Time in one place: UTC, windows aligned to the epoch, and parsing of user times.

Every time mqm keeps or compares is an aware UTC ``datetime``. Windows are aligned to
multiples of their size since the Unix epoch, so daily windows run from midnight UTC.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from monitor.errors import RowProblem, shown

__all__ = [
    "EPOCH",
    "aware",
    "floor_window",
    "iso_utc",
    "iso_z",
    "next_window_end",
    "parse_duration",
    "parse_time",
    "parse_until",
    "utc",
    "window_ending",
    "window_holding",
    "windows_between",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def utc(value: datetime) -> datetime:
    """The same instant in UTC; a naive time is taken as UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    if value.tzinfo is UTC:
        return value
    return value.astimezone(UTC)


def aware(value: Any) -> datetime | None:
    """A time read back from the database as aware UTC. ``min()``/``max()`` bypass the
    column type on SQLite, which then hands back naive text."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return utc(value)


def iso_utc(value: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``, to the second: the form the flag document serves."""
    return utc(value).isoformat(timespec="seconds").replace("+00:00", "Z")


def iso_z(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z``, full precision; None stays None."""
    return None if value is None else utc(value).isoformat().replace("+00:00", "Z")


# --- windows ----------------------------------------------------------------------------


def floor_window(value: datetime, size: timedelta) -> datetime:
    """Start of the aligned window of ``size`` that holds ``value``."""
    return EPOCH + ((value - EPOCH) // size) * size


def window_holding(value: datetime, size: timedelta) -> tuple[datetime, datetime]:
    """The aligned window holding ``value`` (a value on a boundary starts its window)."""
    start = floor_window(value, size)
    return start, start + size


def window_ending(end: datetime, size: timedelta) -> tuple[datetime, datetime]:
    """The window of ``size`` ending at ``end``."""
    return end - size, end


def next_window_end(watermark: datetime, size: timedelta) -> datetime:
    """End of the first aligned window that ends after ``watermark``.

    The watermark is normally an aligned end itself (then: ``watermark + size``); one
    taken from a manual ``mqm check --at`` or left by another window size is not.
    """
    return floor_window(watermark, size) + size


def windows_between(since: datetime, until: datetime, size: timedelta) -> list[datetime]:
    """Ends of the aligned windows that overlap [since, until)."""
    ends = []
    end = floor_window(since, size) + size
    while end - size < until:
        ends.append(end)
        end += size
    return ends


# --- parsing ----------------------------------------------------------------------------


def parse_time(field: str, value: Any) -> datetime:
    """A timezone-aware UTC time from a datetime, an ISO 8601 text or epoch seconds;
    ``RowProblem`` naming ``field`` otherwise, also for a time that does not exist in
    UTC (before year 1 or after 9999 once converted)."""
    if isinstance(value, datetime):
        if value.__class__.__name__ == "NaTType":
            raise RowProblem(field, "is missing")
        try:
            return utc(value)
        except OverflowError:
            raise _out_of_utc(field, value) from None
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            moment = datetime.fromtimestamp(value, tz=UTC) if math.isfinite(value) else None
        except (OverflowError, OSError, ValueError):  # 1e20, 10**400
            raise RowProblem(field, f"{shown(value)} is out of range as epoch seconds") from None
        if moment is None:
            raise RowProblem(field, "is missing")
        return moment
    if isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise RowProblem(field, f"cannot read {shown(value)} as an ISO 8601 time") from None
        try:
            return utc(parsed)
        except OverflowError:  # 0001-01-01T00:00:00+01:00 is in year 0 in UTC
            raise _out_of_utc(field, value) from None
    if value is None or (isinstance(value, str) and not value.strip()):
        raise RowProblem(field, "is missing")
    raise RowProblem(field, f"cannot read {shown(value)} as a time")


def _out_of_utc(field: str, given: Any) -> RowProblem:
    return RowProblem(field, f"{shown(given)} is out of range once converted to UTC")


def parse_duration(value: Any) -> Any:
    """Accept '30m', '6h', '1d', '2w' or a number of seconds; leave other input to pydantic."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
    return value


def parse_until(field: str, value: str, now: datetime) -> datetime:
    """An ISO 8601 time, or a duration from ``now`` ('30m', '2h', '1d'); ``RowProblem``
    naming ``field`` otherwise."""
    duration = parse_duration(value)
    if isinstance(duration, timedelta):
        return now + duration
    try:
        return parse_time(field, value)
    except RowProblem:
        raise RowProblem(field, f"cannot read {value!r} as an ISO 8601 time or a duration "
                         "such as 2h or 1d") from None

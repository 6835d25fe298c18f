"""``mqm fallback``: show the flag, force it on or off, clear an override."""

from __future__ import annotations

from datetime import datetime

import click

from monitor.cli import render
from monitor.cli.common import (
    JSON_OPTION,
    MODEL_OPTION,
    Context,
    fail_cleanly,
    pass_ctx,
    print_json,
)
from monitor.errors import MonitorError, RowProblem

__all__ = ["fallback"]


# --- fallback flag ----------------------------------------------------------------


@click.group()
def fallback() -> None:
    """The fallback flag: show it, force it on or off, clear an override."""


def _parse_until(value: str | None, now: datetime) -> datetime | None:
    """An ISO 8601 time, or a duration from now ('30m', '2h', '1d')."""
    if value is None:
        return None
    from monitor.times import parse_until

    try:
        return parse_until("--until", value, now)
    except RowProblem:
        raise MonitorError(f"--until: cannot read {value!r} as an ISO 8601 time or a duration "
                           "such as 2h or 1d") from None


def _who(by: str | None) -> str:
    if by:
        return by
    import getpass

    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name in some containers
        return "unknown"


_BY = click.option("--by", default=None, help="Who does it (default: the OS user).")
_REASON = click.option("--reason", default=None, help="Why, for the audit trail.")


@fallback.command("show")
@MODEL_OPTION
@click.option("--events", "limit", type=int, default=10, show_default=True,
              help="How many recent events to list.")
@JSON_OPTION
@pass_ctx
@fail_cleanly
def fallback_show(ctx: Context, model: str, limit: int, as_json: bool) -> None:
    """Show a model's fallback flag and its recent changes."""
    from monitor.fallback.flag import flag_document, list_events

    doc = flag_document(ctx.engine(), ctx.config, model)
    events = list_events(ctx.engine(), model, limit=limit)
    if as_json:
        print_json({"flag": doc, "events": [e.as_dict() for e in events]})
    else:
        render.print_fallback(doc, events)


@fallback.command("set")
@MODEL_OPTION
@click.option("--on/--off", "active", default=True, show_default=True,
              help="Force the flag on (serve the default prediction) or off.")
@click.option("--until", default=None,
              help="When the override ends (ISO 8601, UTC, or a duration such as 2h); "
              "default: when cleared.")
@_REASON
@_BY
@JSON_OPTION
@pass_ctx
@fail_cleanly
def fallback_set(ctx: Context, model: str, active: bool, until: str | None,
                 reason: str | None, by: str | None, as_json: bool) -> None:
    """Force a model's fallback flag on or off, beating the automatic state."""
    from datetime import UTC

    from monitor.fallback.flag import set_override

    now = datetime.now(UTC)
    doc = set_override(ctx.engine(), ctx.config, model, active=active, by=_who(by),
                       reason=reason, until=_parse_until(until, now), now=now)
    if as_json:
        print_json(doc)
    else:
        render.print_fallback(doc, [])


@fallback.command("clear")
@MODEL_OPTION
@_REASON
@_BY
@JSON_OPTION
@pass_ctx
@fail_cleanly
def fallback_clear(ctx: Context, model: str, reason: str | None, by: str | None,
                   as_json: bool) -> None:
    """Remove a model's override: the automatic state is served again."""
    from monitor.fallback.flag import clear_override

    doc = clear_override(ctx.engine(), ctx.config, model, by=_who(by), reason=reason)
    if as_json:
        print_json(doc)
    else:
        render.print_fallback(doc, [])



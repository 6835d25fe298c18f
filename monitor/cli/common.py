"""What every ``mqm`` command shares: the context (config and engine, made once), the
edge that turns a ``MonitorError`` into one line and exit 1, and the common options."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import datetime
from functools import wraps
from typing import Any, TypeVar

import click

from monitor.errors import MonitorError, RowProblem

__all__ = [
    "AT_OPTION",
    "CONFIG_HELP",
    "FAIL_ON",
    "JSON_OPTION",
    "MODEL_OPTION",
    "NO_SAVE",
    "ON_ERROR",
    "Context",
    "exit_on_status",
    "fail_cleanly",
    "parse_at",
    "pass_ctx",
    "print_json",
    "show",
]


def fail_cleanly(func: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MonitorError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)

    return wrapper


class Context:
    def __init__(self, config_file: str | None) -> None:
        self.config_file = config_file
        self._config: Any = None
        self._engine: Any = None

    @property
    def config(self) -> Any:
        if self._config is None:
            from monitor.config import load_config

            self._config = load_config(self.config_file)
        return self._config

    def engine(self, *, migrate: bool = True) -> Any:
        if self._engine is None:
            from monitor.store.db import create_engine, ensure_schema

            self._engine = create_engine(self.config.database_url)
            # Its connections closed when the command ends, not left to the collector
            # (which warns of each open PostgreSQL connection it finds).
            current = click.get_current_context(silent=True)
            if current is not None:
                current.call_on_close(self._engine.dispose)
            if migrate:
                ensure_schema(self._engine)
        return self._engine


_pass_context = click.make_pass_decorator(Context)
CONFIG_HELP = "Config file (default: $MQM_CONFIG, else ./monitor.yaml)."


def _config_after_command(ctx: click.Context, _param: click.Parameter,
                          value: str | None) -> None:
    """``mqm CMD --config FILE``: the same file as ``mqm --config FILE CMD``."""
    if value is None:
        return
    obj = ctx.find_object(Context)
    if obj is None:  # pragma: no cover - the group always makes one
        return
    if obj.config_file is not None and obj.config_file != value:
        raise click.UsageError(f"--config is given twice, as {obj.config_file} and {value}; "
                               "give it once", ctx=ctx)
    obj.config_file = value


def pass_ctx(func: Callable[..., Any]) -> Callable[..., Any]:
    """Pass the ``Context`` to a command that reads the config, and accept ``--config``
    after the command's name as well as before it."""
    return click.option(
        "--config", type=click.Path(dir_okay=False), default=None, expose_value=False,
        callback=_config_after_command, help=CONFIG_HELP + " Also accepted before the command.",
    )(_pass_context(func))


def parse_at(value: str | None) -> datetime | None:
    if value is None:
        return None
    from monitor.times import parse_time

    try:
        return parse_time("--at", value)
    except RowProblem as exc:
        raise click.BadParameter(str(exc)) from None


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


R = TypeVar("R")


def show(run: R | None, model: str, as_json: bool, printer: Callable[[R], None]) -> R:
    """Print a run as JSON or as text, and return it; no run at all means the model has
    no logs."""
    if run is None:
        raise MonitorError(f"model {model!r} has no logs yet; load some with `mqm ingest`")
    if as_json:
        print_json(run.as_dict())  # type: ignore[attr-defined]
    else:
        printer(run)
    return run


ON_ERROR = click.option(
    "--on-error", type=click.Choice(["fail", "skip"]), default="fail", show_default=True,
    help="fail: write nothing if any row is bad; skip: write the good rows, report the bad.",
)
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
MODEL_OPTION = click.option("--model", "-m", required=True, help="Model name from the config.")
AT_OPTION = click.option("--at", default=None, help="End of the window (ISO 8601, UTC); default: "
                   "the window holding the newest log.")
NO_SAVE = click.option("--no-save", is_flag=True, help="Do not store the run.")

# --fail-on: a run at or above the level makes the command exit with its status's code.
# The order is the one a run's status is made by (monitor.results): a section that could
# not run (error) outranks a warning, a critical section outranks an error.
FAIL_ON_CODES = {"warn": 3, "error": 4, "critical": 5}
FAIL_ON = click.option(
    "--fail-on", type=click.Choice(list(FAIL_ON_CODES)), default=None,
    help="Exit 3 (warn), 4 (error) or 5 (critical) when a run's status is this or worse "
    "(warn < error < critical; ok and insufficient_data never fail); default: exit 0 "
    "whatever the verdict.",
)


def exit_on_status(statuses: list[str], fail_on: str | None) -> None:
    """Exit with the code of the worst status at or above ``fail_on`` (after the output
    was printed); return when there is none."""
    if fail_on is None:
        return
    order = list(FAIL_ON_CODES)
    hits = [s for s in statuses if s in FAIL_ON_CODES
            and order.index(s) >= order.index(fail_on)]
    if not hits:
        return
    worst = max(hits, key=order.index)
    click.echo(f"exit {FAIL_ON_CODES[worst]}: {hits.count(worst)} run(s) {worst}, at or above "
               f"--fail-on {fail_on}", err=True)
    sys.exit(FAIL_ON_CODES[worst])



"""The fallback flag in the store: check runs taken in, manual overrides, their expiry,
the document served to serving, and its file.

The state machine is ``monitor.policy``; this module loads its state (one
``fallback_state`` row per model), saves it, and records every change as a
``fallback_events`` row. Each change happens in one transaction that first locks the
model's row, so replicas of the service and a CLI user never interleave.

An override's expiry is observed lazily: the next read or run after ``until`` clears
it and records an ``expiry`` event dated at ``until``. With ``fallback_dir`` set,
``<fallback_dir>/<model>.json`` holds the flag document; it is replaced atomically
whenever the document differs from it, so it also exists after the first read. Its
``stale`` is as of that write; readers that care compute it from
``last_success_at``.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from monitor.alerting import alerts_for, post_alerts
from monitor.config import Config, ModelConfig
from monitor.errors import MonitorError
from monitor.fallback.file import write_flag_file
from monitor.policy import (
    AutoState,
    Flag,
    Override,
    Rules,
    RunOutcome,
    Transition,
    advance,
    classify,
    effective_flag,
    is_stale,
    replay,
)
from monitor.store.db import Connection, Engine
from monitor.store.flags import (
    FallbackEvent,
    StoredFlag,
    insert_event,
    list_events,
    lock_flag,
    read_flag,
    save_flag,
    state_of,
)
from monitor.store.runs import latest_verdicts, previous_verdict
from monitor.times import iso_utc, utc

__all__ = [
    "FallbackEvent",
    "apply_run",
    "clear_override",
    "flag_document",
    "list_events",
    "observe_run",
    "read_document",
    "rules_of",
    "served",
    "set_override",
    "state_of",
    "write_flag_file",
]

MAX_ACTOR_LENGTH = 200  # fallback_state.override_by, fallback_events.actor


def rules_of(model_cfg: ModelConfig) -> Rules:
    cfg = model_cfg.fallback
    return Rules(bad_statuses=frozenset(cfg.bad_statuses), trip_after=cfg.trip_after,
                 recover_after=cfg.recover_after)


def _utc(value: datetime | None) -> datetime:
    """``value`` in UTC; now when None."""
    return datetime.now(UTC) if value is None else utc(value)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else iso_utc(value)


# --- rows <-> state --------------------------------------------------------------------


def _served(state: StoredFlag, now: datetime) -> bool:
    return effective_flag(state.auto, state.override, now).active


def _expire(
    conn: Connection, model: str, state: StoredFlag, now: datetime
) -> tuple[StoredFlag, list[FallbackEvent]]:
    """Clear an override that has expired by ``now``; the event is dated at its expiry."""
    over = state.override
    if over is None or not over.expired(now):
        return state, []
    assert over.until is not None
    new = replace(state, override=None, updated_at=now)
    if over.active != new.auto.active:
        new = replace(new, flag_since=over.until)
    word = "on" if over.active else "off"
    event = insert_event(
        conn, model, at=over.until, old=over.active, new=new.auto.active, kind="expiry",
        actor=None, reason=f"override (forced {word} by {over.by}) expired",
        details={"forced": over.active, "by": over.by, "reason": over.reason,
                 "set_at": _iso(over.at), "observed_at": iso_utc(now)},
    )
    return new, [event]


# --- check runs -------------------------------------------------------------------------


def observe_run(
    conn: Connection, config: Config, model: str, run: RunOutcome, *, now: datetime
) -> list[FallbackEvent]:
    """Take a finished check run into the model's flag, in the caller's transaction
    (the one that stores the run); return the events recorded.

    See ``monitor.policy`` for what counts: ``insufficient_data`` and ``error`` runs
    change nothing; a run for a window newer than the last one taken in advances the
    streaks; a recheck of an older window replays every window's latest verdict
    (``_rejudged``).
    """
    model_cfg = config.model(model)
    rules = rules_of(model_cfg)
    now = _utc(now)
    state, events = _expire(conn, model, lock_flag(conn, model, now), now)
    served_before = _served(state, now)
    last_end = state.auto.last_window_end
    if (last_end is not None and run.window_end <= _utc(last_end)
            and classify(run.status, rules) != "ignored"):
        auto, transition = _rejudged(conn, model, state.auto, run, rules, now,
                                     window=model_cfg.window)
    else:
        auto, transition = advance(state.auto, run, rules, at=now)
        if transition is not None:  # the same evidence, in words naming the windows
            why = _streak(transition, rules, model_cfg.window)
            auto, transition = replace(auto, reason=why), replace(transition, reason=why)
    if transition is not None and transition.new_active and run.advice:
        why = f"{transition.reason}; {run.advice}"
        auto, transition = replace(auto, reason=why), replace(transition, reason=why)
    if auto is state.auto:
        if events:
            save_flag(conn, model, state)
        return events
    state = replace(state, auto=auto, updated_at=now)
    if transition is not None:
        served = _served(state, now)
        if served != served_before:
            state = replace(state, flag_since=now)
        events.append(insert_event(
            conn, model, at=now, old=transition.old_active, new=transition.new_active,
            kind="auto", actor=None, reason=transition.reason,
            details={"runs": [r.as_dict() for r in transition.runs],
                     "rules": {"bad_statuses": sorted(model_cfg.fallback.bad_statuses),
                               "trip_after": model_cfg.fallback.trip_after,
                               "recover_after": model_cfg.fallback.recover_after},
                     "overridden": state.override is not None, "served_active": served},
        ))
    save_flag(conn, model, state)
    return events


_REPLAY_REASONS = 10  # windows back whose reasons are loaded: enough for any streak cited


def _rejudged(
    conn: Connection, model: str, auto: AutoState, run: RunOutcome, rules: Rules,
    now: datetime, *, window: timedelta,
) -> tuple[AutoState, Transition | None]:
    """A run for a window no newer than the last one taken in (a recheck once labels
    arrived, a backfill, a check ``--at`` an earlier time): replay the latest verdict of
    every window.

    The verdict of a window can change when its labels mature, days after the window
    was first judged (accuracy is judged only then). Replaying keeps the flag what
    the windows' latest verdicts say: a recheck that turns two past windows critical
    trips it, as those runs would have when judged in order.
    """
    history = [RunOutcome(run_id, end, status, reasons) for run_id, end, status, reasons
               in latest_verdicts(conn, model, reasons_of_last=_REPLAY_REASONS)]
    replayed, last = replay(history, rules, at=now)
    # Keep what the forward state knows that a replay cannot: when and why it last changed.
    replayed = replace(replayed, last_success_at=now, last_run_id=auto.last_run_id,
                       last_window_end=auto.last_window_end, since=auto.since,
                       reason=auto.reason)
    if replayed.active == auto.active:
        return replayed, None
    what = _what_happened(conn, model, auto, run)
    if last is not None and last.new_active == replayed.active:
        why = f"{what}; taking every window's latest verdict in window order: " + _streak(
            last, rules, window)
        runs = last.runs
    else:
        why = (f"{what}; taking every window's latest verdict in window order: no "
               f"{rules.trip_after} consecutive bad runs (trip_after {rules.trip_after}) "
               "are left")
        runs = (run,)
    return (replace(replayed, since=now, reason=why),
            Transition(at=now, old_active=auto.active, new_active=replayed.active, reason=why,
                       runs=runs))


def _what_happened(conn: Connection, model: str, auto: AutoState, run: RunOutcome) -> str:
    """What the run that made the flag be worked out again was, in the user's terms: a
    window checked again, or an earlier window checked for the first time."""
    ended = iso_utc(run.window_end)
    before = previous_verdict(conn, model, run.window_end, before=run.run_id)
    if before is not None:
        return (f"run {run.run_id} checked the window ending {ended} again ({run.status}; "
                f"run {before[0]} had found it {before[1]})")
    newest = f" (ending {iso_utc(auto.last_window_end)})" if auto.last_window_end else ""
    return (f"run {run.run_id} is the first check of the window ending {ended} "
            f"({run.status}), earlier than the newest window taken in{newest}, as `mqm "
            "backfill` and `mqm check --at` do")


def _streak(transition: Transition, rules: Rules, window: timedelta) -> str:
    """Why the automatic state changed: the streak of runs, each with its window, and the
    windows between them that gave no verdict (a streak counts runs, not windows)."""
    runs = transition.runs
    what, name, limit = (("bad", "trip_after", rules.trip_after) if transition.new_active
                         else ("ok", "recover_after", rules.recover_after))
    statuses = "/".join(sorted({r.status for r in runs}))
    cited = []
    for previous, current in zip((None, *runs[:-1]), runs, strict=True):
        text = f"run {current.run_id} (window ending {iso_utc(current.window_end)}"
        gap = 0 if previous is None else (current.window_end - previous.window_end) // window - 1
        if gap > 0:
            text += (f"; the {gap} window{'s' if gap > 1 else ''} between "
                     f"{'have' if gap > 1 else 'has'} no verdict: not checked, too few rows "
                     "or an error")
        cited.append(text + ")")
    why = (f"{len(runs)} consecutive {what} runs ({statuses}; {name} {limit}): "
           + ", ".join(cited))
    latest = runs[-1].reasons[:1] if runs else ()
    return f"{why}; latest: {latest[0]}" if latest else why


def apply_run(
    engine: Engine, config: Config, model: str, run: RunOutcome, *, now: datetime | None = None
) -> list[FallbackEvent]:
    """``observe_run`` in a transaction of its own, then the flag file brought up to date."""
    now = _utc(now)
    with engine.begin() as conn:
        events = observe_run(conn, config, model, run, now=now)
    if config.fallback_dir is not None:
        flag_document(engine, config, model, now)
    return events


# --- manual overrides -------------------------------------------------------------------


def _actor(by: str) -> str:
    by = by.strip()
    if not by or len(by) > MAX_ACTOR_LENGTH:
        raise MonitorError(f"who set the override must be named in 1 to {MAX_ACTOR_LENGTH} "
                           f"characters, got {by!r}")
    return by


def set_override(
    engine: Engine,
    config: Config,
    model: str,
    *,
    active: bool,
    by: str,
    reason: str | None = None,
    until: datetime | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Force the model's flag on (``active``) or off until ``until`` (None: until
    cleared), replacing any override; return the new flag document."""
    config.model(model)
    now = _utc(now)
    by = _actor(by)
    if until is not None:
        # Whole seconds, as the document serves it: stored and served expiry agree.
        until = _utc(until).replace(microsecond=0)
        if until <= now:
            raise MonitorError(f"the override would expire at {iso_utc(until)}, which is not "
                               f"after now ({iso_utc(now)})")
    with engine.begin() as conn:
        state, _ = _expire(conn, model, lock_flag(conn, model, now), now)
        before = _served(state, now)
        state = replace(state, updated_at=now, override=Override(
            active=active, by=by, at=now, until=until, reason=reason or None))
        if active != before:
            state = replace(state, flag_since=now)
        insert_event(conn, model, at=now, old=before, new=active, kind="manual", actor=by,
               reason=reason or None,
               details={"action": "set", "forced": active, "until": _iso(until)})
        save_flag(conn, model, state)
    return _announced(engine, config, model, now)


def clear_override(
    engine: Engine,
    config: Config,
    model: str,
    *,
    by: str,
    reason: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Remove the model's override, so the automatic state is served again; return the
    flag document. Without an override (or with an expired one) no manual event is
    recorded."""
    config.model(model)
    now = _utc(now)
    by = _actor(by)
    with engine.begin() as conn:
        state, _ = _expire(conn, model, lock_flag(conn, model, now), now)
        over = state.override
        if over is not None:
            state = replace(state, override=None, updated_at=now)
            if over.active != state.auto.active:
                state = replace(state, flag_since=now)
            insert_event(conn, model, at=now, old=over.active, new=state.auto.active, kind="manual",
                   actor=by, reason=reason or None,
                   details={"action": "clear", "forced": over.active, "set_by": over.by,
                            "until": _iso(over.until), "set_reason": over.reason})
        save_flag(conn, model, state)
    return _announced(engine, config, model, now)


# --- reading ----------------------------------------------------------------------------


def served(state: StoredFlag, model_cfg: ModelConfig, now: datetime) -> tuple[Flag, bool]:
    """The flag served at ``now`` (an expired override no longer counts) and whether it
    is stale: what the flag document and the metrics both report."""
    return (effective_flag(state.auto, state.override, now),
            is_stale(state.auto, now, model_cfg.stale_after, tracked_since=state.created_at))


def _document(model: str, model_cfg: ModelConfig, state: StoredFlag, now: datetime
              ) -> dict[str, Any]:
    flag, stale = served(state, model_cfg, now)
    return {
        "model": model,
        "active": flag.active,
        "source": flag.source,
        "reason": flag.reason,
        "since": _iso(state.flag_since),
        "expires_at": _iso(flag.expires_at),
        "stale": stale,
        "last_success_at": _iso(state.auto.last_success_at),
        "default_prediction": model_cfg.fallback.default_prediction,
        "updated_at": iso_utc(state.updated_at),
    }


def _announced(engine: Engine, config: Config, model: str, now: datetime) -> dict[str, Any]:
    """The document after an override changed it, also posted to Alertmanager when
    ``alerting.alertmanager_url`` is set."""
    doc = flag_document(engine, config, model, now)
    post_alerts(config.alerting, config.model(model), alerts_for(model, doc, None), now)
    return doc


def read_document(
    engine: Engine, config: Config, model: str, now: datetime | None = None
) -> dict[str, Any]:
    """The flag as served at ``GET /v1/models/{model}/fallback``: ``model, active, source
    (auto|manual), reason, since, expires_at, stale, last_success_at, default_prediction,
    updated_at`` (times ISO 8601 UTC with Z; ``since`` is when the served value last
    changed, null if it never did). A read: it never writes the flag file.

    It writes the store when it must: the first time a model is read (its
    ``fallback_state`` row is created, which starts its staleness clock) and when an
    override has expired (cleared, with its ``expiry`` event). Raises
    ``UnknownModelError`` for a model the config does not declare.
    """
    model_cfg = config.model(model)
    now = _utc(now)
    with engine.connect() as conn:
        state = read_flag(conn, model)
    if state is None or (state.override is not None and state.override.expired(now)):
        with engine.begin() as conn:
            state, events = _expire(conn, model, lock_flag(conn, model, now), now)
            if events:
                save_flag(conn, model, state)
    return _document(model, model_cfg, state, now)


def flag_document(
    engine: Engine, config: Config, model: str, now: datetime | None = None
) -> dict[str, Any]:
    """``read_document``, then the flag file brought up to date when ``fallback_dir`` is
    set (written only when it differs): what a change of the flag calls. Raises
    ``MonitorError`` when the file cannot be written."""
    doc = read_document(engine, config, model, now)
    if config.fallback_dir is not None:
        try:
            write_flag_file(config.fallback_dir, doc)
        except OSError as exc:
            raise MonitorError(f"{config.fallback_dir / (model + '.json')}: cannot write the "
                               f"fallback flag file: {exc.strerror or exc}") from None
    return doc



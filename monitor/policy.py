"""The fallback flag's state machine: pure, no I/O, no clock (times are passed in).

Automatic state, per model, folds the statuses of its check runs, window by window:

- A run is **bad** when its status is one of ``bad_statuses`` (default ``critical``),
  **ok** when its status is ``ok``. Anything else that is a successful run (``warn``
  when it is not configured as bad) is **in between**: it breaks both streaks, so
  the bad runs that trip the flag and the ok runs that clear it are consecutive in
  the strict sense. A model flapping between ``warn`` and ``ok`` therefore does not
  recover until it has been clean ``recover_after`` times in a row: hysteresis on
  the way back, which is the side where flapping hurts serving.
- The flag **trips** (automatic state turns active) on the ``trip_after``-th
  consecutive bad run, not before; it **recovers** on the ``recover_after``-th
  consecutive ok run.
- ``insufficient_data`` and ``error`` runs are not evidence of quality either way:
  they leave the state exactly as it was (streaks included: they are transparent,
  so ``critical, error, critical`` trips at ``trip_after: 2``). They are not
  successful runs, so they do not refresh ``last_success_at`` either.
- A run for a window **newer** than the last one the state took in advances it
  (``advance``). A rerun of an older or the same window (``recompute_immature``, a
  second ``mqm check --at``) does not advance the streaks: the caller replays the
  latest verdict of every window in window order instead (``replay``), so no window
  is counted twice, and a verdict that only a later recompute reaches (accuracy
  judged once late labels mature) still moves the flag as the windows' verdicts say.

The effective flag combines that with a manual override (forced on or off, with an
optional expiry), which beats the automatic state until it expires or is cleared.
The flag is **stale** when no successful run (``ok``, ``warn`` or ``critical``) was
taken in for longer than ``stale_after``; staleness is reported, it never changes
the flag.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from monitor.times import iso_utc

__all__ = [
    "SUCCESSFUL_STATUSES",
    "AutoState",
    "Flag",
    "Override",
    "Rules",
    "RunOutcome",
    "Transition",
    "advance",
    "classify",
    "effective_flag",
    "is_stale",
    "iso_utc",
    "replay",
]

# Runs whose checks ran on enough rows; only these say anything about quality.
SUCCESSFUL_STATUSES = frozenset({"ok", "warn", "critical"})

Kind = Literal["bad", "ok", "between", "ignored"]


@dataclass(frozen=True)
class Rules:
    """When the automatic state trips and recovers (a model's ``fallback`` config)."""

    bad_statuses: frozenset[str] = frozenset({"critical"})
    trip_after: int = 2
    recover_after: int = 3

    def __post_init__(self) -> None:
        if self.trip_after < 1 or self.recover_after < 1:
            raise ValueError("trip_after and recover_after must be at least 1")
        if not self.bad_statuses or not self.bad_statuses <= {"warn", "critical"}:
            raise ValueError("bad_statuses must be a non-empty subset of warn, critical")


@dataclass(frozen=True)
class RunOutcome:
    """What the policy needs of a finished check run; ``reasons`` name checks and
    features with their values against thresholds (``CheckRun.reasons``)."""

    run_id: int
    window_end: datetime
    status: str
    reasons: tuple[str, ...] = ()
    # What to do should this run trip the flag: roll back to the version that was ok
    # (``monitor.rollback.rollback_advice``); the trip's reason ends with it.
    advice: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out = {"run_id": self.run_id, "window_end": iso_utc(self.window_end),
               "status": self.status, "reasons": list(self.reasons)}
        if self.advice:
            out["advice"] = self.advice
        return out


@dataclass(frozen=True)
class AutoState:
    """The automatic state of one model's flag and the streaks that may change it.

    ``streak`` holds the runs of the streak that counts towards the next transition
    (bad runs while inactive, ok runs while active), at most as many as that
    transition needs; the transition cites them as its evidence.
    """

    active: bool = False
    since: datetime | None = None  # when ``active`` last changed; None: never
    reason: str | None = None  # why, as of the last transition
    bad_streak: int = 0
    ok_streak: int = 0
    streak: tuple[RunOutcome, ...] = ()
    last_run_id: int | None = None  # the last run taken in
    last_window_end: datetime | None = None
    last_success_at: datetime | None = None


@dataclass(frozen=True)
class Transition:
    """A change of the automatic state, with the runs and reasons that caused it."""

    at: datetime
    old_active: bool
    new_active: bool
    reason: str
    runs: tuple[RunOutcome, ...]


@dataclass(frozen=True)
class Override:
    """A manual override: forced on (``active``) or off, until ``until`` (None: cleared
    by hand only)."""

    active: bool
    by: str
    at: datetime
    until: datetime | None = None
    reason: str | None = None

    def expired(self, now: datetime) -> bool:
        return self.until is not None and now >= self.until


@dataclass(frozen=True)
class Flag:
    """The flag as served: the override's value while it lasts, else the automatic one."""

    active: bool
    source: Literal["auto", "manual"]
    reason: str | None
    expires_at: datetime | None


def classify(status: str, rules: Rules) -> Kind:
    """How a run of this status counts (see the module docstring)."""
    if status not in SUCCESSFUL_STATUSES:
        return "ignored"
    if status in rules.bad_statuses:
        return "bad"
    return "ok" if status == "ok" else "between"


def advance(
    state: AutoState, run: RunOutcome, rules: Rules, *, at: datetime
) -> tuple[AutoState, Transition | None]:
    """Take in one finished run at time ``at``; return the new state and the transition,
    if the automatic state changed.

    A run that is ignored (not successful, or not for a newer window) returns
    ``state`` itself.
    """
    kind = classify(run.status, rules)
    if kind == "ignored":
        return state, None
    if state.last_window_end is not None and run.window_end <= state.last_window_end:
        return state, None
    bad = state.bad_streak + 1 if kind == "bad" else 0
    ok = state.ok_streak + 1 if kind == "ok" else 0
    # The evidence kept is the streak that can flip the current state, nothing else.
    if kind == ("ok" if state.active else "bad"):
        keep = rules.recover_after if state.active else rules.trip_after
        streak = (*state.streak, run)[-keep:]
    else:
        streak = ()
    new = replace(state, bad_streak=bad, ok_streak=ok, streak=streak, last_run_id=run.run_id,
                  last_window_end=run.window_end, last_success_at=at)
    if not state.active and bad >= rules.trip_after:
        why = _why(bad, "bad", rules.trip_after, "trip_after", streak)
    elif state.active and ok >= rules.recover_after:
        why = _why(ok, "ok", rules.recover_after, "recover_after", streak)
    else:
        return new, None
    new = replace(new, active=not state.active, since=at, reason=why, streak=())
    return new, Transition(at=at, old_active=state.active, new_active=new.active, reason=why,
                           runs=streak)


def replay(
    runs: Sequence[RunOutcome], rules: Rules, *, at: datetime
) -> tuple[AutoState, Transition | None]:
    """The automatic state that ``runs`` (one verdict per window) lead to, taken in
    oldest window first, and the last transition on the way (None if there was none).

    A recheck of an older window (its labels matured) changes that window's verdict;
    replaying the latest verdict of every window gives the state the flag would be in
    had the windows been judged so from the start.
    """
    state, last = AutoState(), None
    for run in sorted(runs, key=lambda r: r.window_end):
        state, transition = advance(state, run, rules, at=at)
        last = transition or last
    return state, last


def _why(count: int, what: str, limit: int, name: str, runs: tuple[RunOutcome, ...]) -> str:
    statuses = "/".join(sorted({r.status for r in runs}))
    text = (f"{count} consecutive {what} runs ({statuses}; {name} {limit}): "
            f"runs {', '.join(str(r.run_id) for r in runs)}")
    latest = runs[-1].reasons[:1] if runs else ()
    return f"{text}; latest: {latest[0]}" if latest else text


def effective_flag(auto: AutoState, override: Override | None, now: datetime) -> Flag:
    """The override while it has not expired at ``now``, else the automatic state."""
    if override is not None and not override.expired(now):
        word = "on" if override.active else "off"
        why = f"forced {word} by {override.by}"
        return Flag(active=override.active, source="manual",
                    reason=f"{why}: {override.reason}" if override.reason else why,
                    expires_at=override.until)
    return Flag(active=auto.active, source="auto", reason=auto.reason, expires_at=None)


def is_stale(
    auto: AutoState, now: datetime, stale_after: timedelta, *, tracked_since: datetime
) -> bool:
    """True when no successful run was taken in for longer than ``stale_after``.

    Before the first successful run, the time is counted from ``tracked_since`` (when
    the model's flag was first recorded), so a new model is not stale at once.
    """
    last = auto.last_success_at or tracked_since
    return now - last > stale_after


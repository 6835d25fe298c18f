"""The fallback flag's rows: one ``fallback_state`` row per model and the
``fallback_events`` audit trail. What a change means is decided in ``monitor.fallback``;
this module only reads, locks, writes and maps rows to ``monitor.policy``'s types."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from monitor.policy import AutoState, Override, RunOutcome
from monitor.store.tables import fallback_events, fallback_state
from monitor.store.upsert import insert_if_absent
from monitor.times import iso_utc

__all__ = [
    "FallbackEvent",
    "StoredFlag",
    "flag_rows",
    "insert_event",
    "list_events",
    "lock_flag",
    "read_flag",
    "save_flag",
    "state_of",
]


@dataclass(frozen=True)
class FallbackEvent:
    """One change of a model's flag. ``kind``: ``auto`` (the automatic state changed;
    old/new are its values), ``manual`` or ``expiry`` (the served flag)."""

    id: int
    model: str
    at: datetime
    old_active: bool
    new_active: bool
    kind: str
    actor: str | None
    reason: str | None
    details: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "model": self.model, "at": iso_utc(self.at),
                "old_active": self.old_active, "new_active": self.new_active,
                "kind": self.kind, "actor": self.actor, "reason": self.reason,
                "details": self.details}


@dataclass(frozen=True)
class StoredFlag:
    """A model's flag as stored: the automatic state, any override, and since when the
    served value holds."""

    auto: AutoState
    override: Override | None
    flag_since: datetime | None
    created_at: datetime
    updated_at: datetime


def state_of(row: Any) -> StoredFlag:
    """The state held by a ``fallback_state`` row."""
    streak = tuple(
        RunOutcome(run_id=int(e["run_id"]), window_end=datetime.fromisoformat(e["window_end"]),
                   status=e["status"], reasons=tuple(e["reasons"]))
        for e in row.streak or ()
    )
    auto = AutoState(
        active=bool(row.active), since=row.since, reason=row.reason, bad_streak=row.bad_streak,
        ok_streak=row.ok_streak, streak=streak, last_run_id=row.last_run_id,
        last_window_end=row.last_window_end, last_success_at=row.last_success_at,
    )
    override = None
    if row.forced is not None:
        override = Override(active=bool(row.forced), by=row.override_by or "",
                            at=row.override_at or row.updated_at, until=row.override_until,
                            reason=row.override_reason)
    return StoredFlag(auto=auto, override=override, flag_since=row.flag_since,
                  created_at=row.created_at, updated_at=row.updated_at)


def _values_of(state: StoredFlag) -> dict[str, Any]:
    auto, over = state.auto, state.override
    return {
        "active": auto.active, "since": auto.since, "reason": auto.reason,
        "bad_streak": auto.bad_streak, "ok_streak": auto.ok_streak,
        "streak": [r.as_dict() for r in auto.streak], "last_run_id": auto.last_run_id,
        "last_window_end": auto.last_window_end, "last_success_at": auto.last_success_at,
        "forced": None if over is None else over.active,
        "override_until": None if over is None else over.until,
        "override_by": None if over is None else over.by,
        "override_reason": None if over is None else over.reason,
        "override_at": None if over is None else over.at,
        "flag_since": state.flag_since, "updated_at": state.updated_at,
    }


def read_flag(conn: Connection, model: str) -> StoredFlag | None:
    row = conn.execute(sa.select(fallback_state).where(fallback_state.c.model == model)).first()
    return None if row is None else state_of(row)


def lock_flag(conn: Connection, model: str, now: datetime) -> StoredFlag:
    """The model's state, its row created if missing and locked for this transaction.

    The INSERT comes first on purpose: on SQLite it takes the write lock (waiting for
    another writer) before anything is read, so the read cannot go stale.
    """
    insert_if_absent(conn, fallback_state,
                     {"model": model, "streak": [], "created_at": now, "updated_at": now},
                     "model")
    row = conn.execute(
        sa.select(fallback_state).where(fallback_state.c.model == model).with_for_update()
    ).one()
    return state_of(row)


def save_flag(conn: Connection, model: str, state: StoredFlag) -> None:
    conn.execute(sa.update(fallback_state).where(fallback_state.c.model == model)
                 .values(_values_of(state)))


def insert_event(conn: Connection, model: str, *, at: datetime, old: bool, new: bool, kind: str,
           actor: str | None, reason: str | None, details: dict[str, Any]) -> FallbackEvent:
    values = {"model": model, "at": at, "old_active": old, "new_active": new, "kind": kind,
              "actor": actor, "reason": reason, "details": details}
    event_id = conn.execute(
        sa.insert(fallback_events).returning(fallback_events.c.id), values
    ).scalar_one()
    return FallbackEvent(id=int(event_id), model=model, at=at, old_active=old, new_active=new,
                         kind=kind, actor=actor, reason=reason, details=details)


def list_events(engine: Engine, model: str, *, limit: int = 20) -> list[FallbackEvent]:
    """The model's flag events, newest first."""
    query = (sa.select(fallback_events).where(fallback_events.c.model == model)
             .order_by(fallback_events.c.id.desc()).limit(limit))
    with engine.connect() as conn:
        return [FallbackEvent(**{k: row._mapping[k] for k in FallbackEvent.__dataclass_fields__})
                for row in conn.execute(query)]


def flag_rows(conn: Connection, models: list[str]) -> dict[str, StoredFlag]:
    """The stored flags of ``models`` (a model never read has none)."""
    query = sa.select(fallback_state).where(fallback_state.c.model.in_(models))
    return {row.model: state_of(row) for row in conn.execute(query)}

"""The scheduler's state per model (``scheduler_state``): the watermark (end of the last
window checked), the last run, and the last error, shared by every replica; and the
guards that a run's own transaction applies, so that a second writer of the same window
(a replica that has not yet noticed it lost the model) is rolled back: the watermark's
compare-and-set for a check, and ``mark_run`` for a recheck."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from monitor.errors import MonitorError, WatermarkMoved
from monitor.store.locks import Fence, check_fence
from monitor.store.runs import LabelMark
from monitor.store.tables import check_runs, run_rechecks, scheduler_state
from monitor.store.upsert import insert_if_absent
from monitor.times import aware

__all__ = [
    "RunSuperseded",
    "advance_watermark",
    "last_checked_window_end",
    "mark_run",
    "read_watermark",
    "record_error",
    "scheduler_rows",
    "start_watermark",
]


def read_watermark(engine: Engine, model: str) -> datetime | None:
    """The model's watermark as stored (None: the scheduler has not started it yet)."""
    with engine.connect() as conn:
        return conn.execute(sa.select(scheduler_state.c.watermark)
                            .where(scheduler_state.c.model == model)).scalar_one_or_none()


def start_watermark(engine: Engine, model: str, start: datetime, now: datetime) -> None:
    """Set the watermark of a model that has none yet (another replica's start wins)."""
    t = scheduler_state
    with engine.begin() as conn:
        # The row may exist without a watermark (an error recorded before the start).
        insert_if_absent(conn, t, {"model": model, "updated_at": now}, "model")
        conn.execute(sa.update(t).where(t.c.model == model, t.c.watermark.is_(None))
                     .values(watermark=start, updated_at=now))


def advance_watermark(conn: Connection, model: str, *, expected: datetime, end: datetime,
                      run_id: int, now: datetime) -> None:
    """Compare-and-set, in the run's transaction: move the watermark from ``expected`` to
    ``end``. Raises ``WatermarkMoved`` when another writer moved it first, which rolls
    the run back."""
    t = scheduler_state
    moved = conn.execute(
        sa.update(t).where(t.c.model == model, t.c.watermark == expected)
        .values(watermark=end, last_run_id=run_id, last_run_at=now,
                last_error=None, last_error_at=None, updated_at=now)
    ).rowcount
    if moved != 1:
        raise WatermarkMoved(f"model {model!r}: the window ending {end.isoformat()} "
                             "was checked by another writer; this run is dropped")


class RunSuperseded(MonitorError):
    """A recheck's run was dropped: the run it recomputes is no longer the latest of its
    window, or another writer recomputed it first."""


def mark_run(conn: Connection, *, model: str, run_id: int, window_end: datetime,
             recomputes: int | None, labels: LabelMark | None) -> None:
    """In the run's transaction: record which run ``run_id`` recomputes and the labels it
    saw (``run_rechecks``). With ``recomputes``, this is the recheck's guard: no run is
    recomputed twice (a unique key; a concurrent writer of the same recompute waits for
    the first to end, then fails), and the recomputed run must still be the window's
    latest check run. Raises ``RunSuperseded`` otherwise, which rolls the run back."""
    try:
        conn.execute(sa.insert(run_rechecks).values(
            run_id=run_id, recomputes=recomputes,
            label_scope=None if labels is None else labels.scope,
            labels=None if labels is None else labels.count,
            label_max_id=None if labels is None else labels.max_id))
    except sa.exc.IntegrityError:
        if recomputes is None:
            raise
        raise RunSuperseded(f"model {model!r}: run {recomputes} (the window ending "
                            f"{window_end.isoformat()}) was recomputed by another writer; "
                            "this recheck is dropped") from None
    if recomputes is None:
        return
    c = check_runs.c
    latest = conn.execute(sa.select(sa.func.max(c.id)).where(
        c.model == model, c.kind == "check", c.window_end == window_end, c.id != run_id)
    ).scalar()
    if latest != recomputes:
        raise RunSuperseded(f"model {model!r}: run {recomputes} is no longer the latest of "
                            f"the window ending {window_end.isoformat()} (run {latest} is); "
                            "this recheck is dropped")


def record_error(engine: Engine, model: str, text: str, now: datetime, *,
                 fence: Fence | None = None) -> None:
    """Keep the last error of the model's checks, for every replica's status; with
    ``fence``, only while that lease holds (``LeaseLost`` otherwise)."""
    t = scheduler_state
    with engine.begin() as conn:
        if fence is not None:
            check_fence(conn, fence)
        insert_if_absent(conn, t, {"model": model, "updated_at": now}, "model")
        conn.execute(sa.update(t).where(t.c.model == model)
                     .values(last_error=text, last_error_at=now, updated_at=now))


def last_checked_window_end(engine: Engine, model: str) -> datetime | None:
    """End of the newest window a check run was stored for."""
    with engine.connect() as conn:
        last = conn.execute(
            sa.select(sa.func.max(check_runs.c.window_end))
            .where(check_runs.c.model == model, check_runs.c.kind == "check")
        ).scalar()
    return aware(last)


def scheduler_rows(engine: Engine) -> dict[str, dict[str, Any]]:
    """Every model's stored scheduler state, by model."""
    with engine.connect() as conn:
        return {row["model"]: dict(row)
                for row in conn.execute(sa.select(scheduler_state)).mappings()}

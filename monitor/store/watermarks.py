"""The scheduler's state per model (``scheduler_state``): the watermark (end of the last
window checked), the last run, and the last error, shared by every replica."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from monitor.errors import WatermarkMoved
from monitor.store.tables import check_runs, scheduler_state
from monitor.store.upsert import insert_if_absent
from monitor.times import aware

__all__ = [
    "advance_watermark",
    "last_checked_window_end",
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


def record_error(engine: Engine, model: str, text: str, now: datetime) -> None:
    """Keep the last error of the model's checks, for every replica's status."""
    t = scheduler_state
    with engine.begin() as conn:
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

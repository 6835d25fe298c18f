"""Retention: deleting a model's logs, labels and log blocks older than a horizon.

What goes, for a model and a horizon (an aligned window boundary, chosen by
``monitor.run.retention``):

- every row of ``inference_logs`` with ``ts`` before the horizon;
- every label (``ground_truth``) with ``ts`` before the horizon whose request id no
  remaining log of the model carries (a label of a kept log stays, whatever its time);
- every log block holding a row before the horizon. A block wholly before it is
  deleted and the next block takes over its id range (its rows are gone, so the next
  block still holds every row of its range), so that the compactor finds no gap to scan.
  A block across the horizon is deleted too, and the compactor builds its kept rows into
  a block again (blocks are derived data; meanwhile reads take those rows from the
  table).

Runs, their figures, the flag's state and events are not touched.

**Bounded batches.** Each batch (``batch`` rows, one block) is its own short
transaction: on SQLite the write lock is held for one batch at a time, so an ingest's
publish or an API write waits for at most one batch; on PostgreSQL a batch locks only the
rows it deletes. Logs are walked in ``ts`` order from where the last batch stopped
(``(model, ts)`` index), labels in ``(ts, id)`` order (``ix_ground_truth_model_ts``), so a
batch never scans what earlier ones left behind. Under a ``Fence`` (the scheduler's lease
of the model) each batch checks the lease in its own transaction, at its start and just
before it commits, so a replica that lost the model deletes nothing more.

**Why not partitions (PostgreSQL).** A table partitioned by time drops old rows in one
statement, but here (measured in bench/README.md, "retention.py"):

- the log table is shared by every model and retention is per model: a partition can be
  dropped only once every model's horizon has passed it, so batched deletes are needed
  anyway;
- a request id is unique per model across all time (``uq_inference_logs_model_request``,
  which makes a reloaded row a no-op); a partitioned table's unique keys must include the
  partition key, so that guarantee would need a check across every partition and a
  per-model lock around every write of every serving process's logger;
- creating a partition for a new month (logs may carry any time from 1900 to 2199) and
  dropping one lock the whole table (``ACCESS EXCLUSIVE``, queued behind every running
  read); ``DETACH ... CONCURRENTLY`` avoids that only without a default partition.

Batched deletes keep every guarantee, lock nothing that ingest or the API need, and
measured fast enough (bench/retention.py); autovacuum makes the freed space reusable.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from monitor.store.locks import Fence, bound_transaction, check_fence
from monitor.store.tables import (
    UTCDateTime,
    ground_truth,
    inference_logs,
    log_blocks,
    retention_state,
)
from monitor.store.upsert import insert_if_absent
from monitor.times import aware

__all__ = [
    "BATCH",
    "Pending",
    "RetentionResult",
    "RetentionRow",
    "delete_older",
    "pending",
    "retention_rows",
]

BATCH = 1_000  # rows per transaction: tens of milliseconds on either backend (bench/retention.py)


@dataclass
class RetentionResult:
    """What one retention pass deleted. ``complete``: it went through (False: stopped
    early by ``keep_going``; the next pass goes on). ``longest_batch``: seconds of the
    longest single transaction; ``batch_seconds``: each transaction's, by table."""

    model: str
    horizon: datetime
    logs: int = 0
    labels: int = 0
    blocks: int = 0
    profiles: int = 0  # stored reference profiles no configured reference uses
    batches: int = 0
    longest_batch: float = 0.0
    seconds: float = 0.0
    complete: bool = True
    batch_seconds: dict[str, list[float]] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Pending:
    """What a pass would delete now (``mqm retention --dry-run``)."""

    logs: int
    labels: int
    blocks: int


@contextmanager
def _batch(engine: Engine, fence: Fence | None, result: RetentionResult, table: str
           ) -> Iterator[Connection]:
    """One short transaction, fenced, timed into ``result``."""
    t0 = time.perf_counter()
    with engine.begin() as conn:
        if fence is not None:
            bound_transaction(conn, fence)
            check_fence(conn, fence)
        yield conn
        if fence is not None:  # again last: the shortest time between check and commit
            check_fence(conn, fence)
    spent = time.perf_counter() - t0
    result.batches += 1
    result.batch_seconds.setdefault(table, []).append(spent)
    result.longest_batch = max(result.longest_batch, spent)


def _label_used(model: str) -> Any:
    lg, g = inference_logs, ground_truth
    return sa.exists().where(lg.c.model == model, lg.c.request_id == g.c.request_id)


def pending(engine: Engine, model: str, horizon: datetime) -> Pending:
    """Counts of what ``delete_older`` would delete now, in one read."""
    lg, g, b = inference_logs, ground_truth, log_blocks
    kept_log = sa.exists().where(lg.c.model == model, lg.c.request_id == g.c.request_id,
                                 lg.c.ts >= horizon)
    with engine.connect() as conn:
        logs = conn.execute(sa.select(sa.func.count()).select_from(lg).where(
            lg.c.model == model, lg.c.ts < horizon)).scalar_one()
        labels = conn.execute(sa.select(sa.func.count()).select_from(g).where(
            g.c.model == model, g.c.ts < horizon, ~kept_log)).scalar_one()
        blocks = conn.execute(sa.select(sa.func.count()).select_from(b).where(
            b.c.model == model, b.c.ts_min < horizon)).scalar_one()
    return Pending(int(logs), int(labels), int(blocks))


def delete_older(
    engine: Engine,
    model: str,
    horizon: datetime,
    *,
    batch: int = BATCH,
    fence: Fence | None = None,
    keep_going: Callable[[], bool] | None = None,
    now: datetime,
) -> RetentionResult:
    """Delete the model's logs, labels and log blocks older than ``horizon`` (see the
    module docstring), in batches of ``batch`` rows, each its own transaction; record
    the pass in ``retention_state``. ``keep_going`` is asked before each batch; False
    stops the pass (``complete`` False). Raises ``LeaseLost`` when ``fence`` no longer
    holds (the batches before stay deleted: each was whole)."""
    t0 = time.perf_counter()
    result = RetentionResult(model, horizon)
    go = keep_going or (lambda: True)
    try:
        result.complete = (_delete_logs(engine, model, horizon, batch, fence, go, result)
                           and _delete_labels(engine, model, horizon, batch, fence, go,
                                              result)
                           and _delete_blocks(engine, model, horizon, fence, go, result))
    except BaseException:
        # What the batches before deleted is counted, if the store still answers.
        result.complete = False
        with contextlib.suppress(Exception):
            _record(engine, result, fence, now)
        raise
    result.seconds = time.perf_counter() - t0
    _record(engine, result, fence, now)
    return result


def _delete_logs(engine: Engine, model: str, horizon: datetime, batch: int,
                 fence: Fence | None, go: Callable[[], bool], result: RetentionResult) -> bool:
    t = inference_logs
    cursor: datetime | None = None
    while go():
        with _batch(engine, fence, result, "inference_logs") as conn:
            query = sa.select(t.c.id, t.c.ts).where(t.c.model == model, t.c.ts < horizon)
            if cursor is not None:  # rows before it were deleted by the batches before
                query = query.where(t.c.ts >= cursor)
            rows = conn.execute(query.order_by(t.c.ts).limit(batch)).all()
            if rows:
                conn.execute(sa.delete(t).where(t.c.id.in_([r.id for r in rows])))
        result.logs += len(rows)
        if len(rows) < batch:
            return True
        cursor = rows[-1].ts
    return False


def _delete_labels(engine: Engine, model: str, horizon: datetime, batch: int,
                   fence: Fence | None, go: Callable[[], bool], result: RetentionResult
                   ) -> bool:
    g = ground_truth
    cursor: tuple[datetime, int] | None = None
    used = _label_used(model).label("used")
    while go():
        with _batch(engine, fence, result, "ground_truth") as conn:
            query = sa.select(g.c.id, g.c.ts, used).where(g.c.model == model,
                                                          g.c.ts < horizon)
            if cursor is not None:  # labels kept by the batches before are not read again
                query = query.where(sa.tuple_(g.c.ts, g.c.id) > sa.tuple_(
                    sa.literal(cursor[0], UTCDateTime()), sa.literal(cursor[1], g.c.id.type)))
            rows = conn.execute(query.order_by(g.c.ts, g.c.id).limit(batch)).all()
            gone = [r.id for r in rows if not r.used]
            if gone:
                conn.execute(sa.delete(g).where(g.c.id.in_(gone)))
        result.labels += len(gone)
        if len(rows) < batch:
            return True
        cursor = (rows[-1].ts, rows[-1].id)
    return False


def _delete_blocks(engine: Engine, model: str, horizon: datetime, fence: Fence | None,
                   go: Callable[[], bool], result: RetentionResult) -> bool:
    b = log_blocks
    with engine.connect() as conn:
        old = conn.execute(sa.select(b.c.id, b.c.lo_id, b.c.hi_id, b.c.ts_max).where(
            b.c.model == model, b.c.ts_min < horizon).order_by(b.c.lo_id)).all()
    for block in old:
        if not go():
            return False
        with _batch(engine, fence, result, "log_blocks") as conn:
            gone = conn.execute(sa.delete(b).where(
                b.c.id == block.id, b.c.hi_id == block.hi_id)).rowcount
            if gone and block.ts_max < horizon:
                # Every row of its range is deleted: the next block holds all the rows of
                # the range too, and the compactor has no gap to look into.
                conn.execute(sa.update(b).where(b.c.model == model, b.c.lo_id == block.hi_id)
                             .values(lo_id=block.lo_id))
        result.blocks += gone
    return True


def _record(engine: Engine, result: RetentionResult, fence: Fence | None,
            now: datetime) -> None:
    t = retention_state
    with engine.begin() as conn:
        if fence is not None:
            bound_transaction(conn, fence)
            check_fence(conn, fence)
        insert_if_absent(conn, t, {"model": result.model, "last_run_at": now,
                                   "updated_at": now}, "model")
        values: dict[str, Any] = {
            "last_run_at": now, "updated_at": now,
            "logs_deleted": t.c.logs_deleted + result.logs,
            "labels_deleted": t.c.labels_deleted + result.labels,
            "blocks_deleted": t.c.blocks_deleted + result.blocks}
        if result.complete:
            values["horizon"] = result.horizon
        conn.execute(sa.update(t).where(t.c.model == result.model).values(**values))


@dataclass(frozen=True)
class RetentionRow:
    """A model's ``retention_state`` row."""

    model: str
    horizon: datetime | None
    last_run_at: datetime
    logs_deleted: int
    labels_deleted: int
    blocks_deleted: int


def retention_rows(conn: Connection, models: list[str]) -> dict[str, RetentionRow]:
    """The models' retention rows, in the caller's transaction (the scrape's snapshot)."""
    t = retention_state
    rows = conn.execute(sa.select(t).where(t.c.model.in_(models))).all()
    return {r.model: RetentionRow(r.model, aware(r.horizon), aware(r.last_run_at) or
                                  r.last_run_at, int(r.logs_deleted), int(r.labels_deleted),
                                  int(r.blocks_deleted)) for r in rows}

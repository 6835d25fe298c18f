"""Shared by the serve tests: the scheduler's model, days of logs, waits, lock holders."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from monitor.serve.leader import advisory_key
from monitor.store.logs import insert_logs
from tests.conftest import log

T0 = datetime(2026, 10, 1, tzinfo=UTC)
DAY = timedelta(days=1)
DELAY = timedelta(minutes=5)  # the schedule's default delay
MODEL = "loan_default"


def load_days(engine: sa.Engine, days: int, per_day: int = 12, start: datetime = T0) -> None:
    """``per_day`` logs in each of ``days`` daily windows from ``start``."""
    records = [log(d * 1000 + i, start + d * DAY + timedelta(hours=2 * i))
               for d in range(days) for i in range(per_day)]
    with engine.begin() as conn:
        insert_logs(conn, MODEL, records)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until ``predicate`` held; fails after ``timeout``."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.02)
    return time.monotonic() - started


def lock_holders(url: str) -> list[int]:
    """Backends holding the scheduler's advisory lock in this database."""
    key = advisory_key()
    eng = sa.create_engine(url)
    try:
        with eng.connect() as conn:
            return list(conn.execute(sa.text(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                "AND classid = :hi AND objid = :lo"),
                {"hi": (key >> 32) & 0xFFFFFFFF, "lo": key & 0xFFFFFFFF}).scalars())
    finally:
        eng.dispose()

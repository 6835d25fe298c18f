"""The serving-side ``InferenceLogger``: light import, exact storage, never raising or blocking."""

from __future__ import annotations

import logging
import math
import queue
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from monitor.client import InferenceLogger
from monitor.store.db import create_engine, ensure_schema
from monitor.store.tables import inference_logs

ROOT = Path(__file__).resolve().parents[2]
DOWN_URL = "postgresql+psycopg://postgres@127.0.0.1:1/nothing"

MakeLogger = Callable[..., InferenceLogger]


@pytest.fixture
def make_logger() -> Iterator[MakeLogger]:
    """Factory of loggers that are all closed (and their threads stopped) after the test."""
    made: list[InferenceLogger] = []

    def make(*args: Any, **kwargs: Any) -> InferenceLogger:
        lg = InferenceLogger(*args, **kwargs)
        made.append(lg)
        return lg

    yield make
    for lg in made:
        lg.close(timeout=5)


def read_rows(url: str, model: str = "m") -> list[dict[str, Any]]:
    eng = create_engine(url)
    try:
        with eng.connect() as conn:
            rows = conn.execute(
                sa.select(inference_logs)
                .where(inference_logs.c.model == model)
                .order_by(inference_logs.c.id)
            ).mappings()
            return [dict(r) for r in rows]
    finally:
        eng.dispose()


def typed(value: Any) -> Any:
    """The value with every leaf's type next to it: 1, 1.0 and True compare unequal here."""
    if isinstance(value, dict):
        return {k: typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [typed(v) for v in value]
    return (type(value).__name__, value)


def wait_until(condition: Callable[[], bool], what: str, limit: float = 15.0) -> None:
    """Poll for a state the background thread reaches; the limit only stops a hung test."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}")
        time.sleep(0.01)


# --- import weight ---------------------------------------------------------------------


def test_client_import_loads_no_heavy_library() -> None:
    code = (
        "import sys, monitor.client\n"
        "heavy = {'pandas', 'numpy', 'sqlalchemy', 'evidently', 'streamlit'}\n"
        "print(','.join(sorted(heavy & {m.split('.')[0] for m in sys.modules})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"importing monitor.client loaded: {done.stdout.strip()}"


# --- what is stored --------------------------------------------------------------------


def _features(i: int) -> dict[str, Any]:
    return {
        "age": 20 + i % 50,
        "income": 1000.5 + i,
        "round_float": float(i % 3),  # 2.0 must stay a float, not become 2
        "city": ("Paris", "Oslo", "Lima")[i % 3],
        # A string in a numeric feature is kept as sent: the schema check reports it.
        "score": "abc" if i % 7 == 0 else i % 10,
        "flag": i % 4 == 0,
        "missing": None,
        "tags": [i, "x", None],
    }


def test_records_are_stored_exactly_as_logged(db_url: str, make_logger: MakeLogger) -> None:
    n = 2000
    fixed_ts = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    lg = make_logger("m", db_url, model_version="v3")
    before = datetime.now(UTC)
    for i in range(n):
        if i % 100 == 0:  # an error row: no prediction
            ok = lg.log(_features(i), None, request_id=f"r-{i}", latency_ms=1.5,
                        error=True, error_message="model timed out")
        else:
            ok = lg.log(
                _features(i),
                "yes" if i % 5 == 0 else i % 2,
                request_id=f"r-{i}",
                probabilities={0: (i % 100) / 100, 1: 1 - (i % 100) / 100},
                latency_ms=float(i % 50) + 0.25,
                timestamp=fixed_ts.timestamp() if i == 1 else None,
            )
        assert ok
    assert lg.flush() is True
    after = datetime.now(UTC)
    lg.close()
    assert not lg._thread.is_alive()

    stats = lg.stats()
    assert (stats["logged"], stats["written"], stats["dropped"], stats["invalid"]) == (n, n, 0, 0)
    assert stats["write_failures"] == 0 and stats["last_error"] is None

    rows = read_rows(db_url)
    assert len(rows) == n
    by_id = {r["request_id"]: r for r in rows}
    assert set(by_id) == {f"r-{i}" for i in range(n)}
    for i in range(n):
        row = by_id[f"r-{i}"]
        assert typed(row["features"]) == typed(_features(i)), i
        assert row["model_version"] == "v3"
        assert row["ts"].tzinfo is not None and row["ts"].utcoffset() == timedelta(0)
        if i == 1:
            assert row["ts"] == fixed_ts
        else:
            assert before - timedelta(seconds=1) <= row["ts"] <= after + timedelta(seconds=1), i
        if i % 100 == 0:
            assert row["error"] is True
            assert row["prediction"] is None and row["probabilities"] is None
            assert row["error_message"] == "model timed out"
            assert row["latency_ms"] == 1.5
        else:
            assert row["error"] is False and row["error_message"] is None
            assert typed(row["prediction"]) == typed("yes" if i % 5 == 0 else i % 2)
            p = (i % 100) / 100
            assert row["probabilities"] == {"0": p, "1": 1 - p}
            assert row["latency_ms"] == float(i % 50) + 0.25
    # Some ids were checked one by one above; the spot checks make the types explicit.
    assert by_id["r-7"]["features"]["score"] == "abc"
    assert type(by_id["r-3"]["features"]["score"]) is int
    assert type(by_id["r-2"]["features"]["round_float"]) is float


def test_a_request_id_is_stored_once(db_url: str, make_logger: MakeLogger) -> None:
    lg = make_logger("m", db_url)
    assert lg.log({"a": 1}, 1, request_id="dup")
    assert lg.log({"a": 2}, 1, request_id="dup")  # same batch
    assert lg.flush()
    assert lg.log({"a": 3}, 1, request_id="dup")  # a later batch
    assert lg.log({"a": 4}, 1, request_id="other")
    assert lg.flush()
    lg.close()
    rows = read_rows(db_url)
    assert sorted(r["request_id"] for r in rows) == ["dup", "other"]
    assert next(r for r in rows if r["request_id"] == "dup")["features"] == {"a": 1}
    assert lg.stats()["write_failures"] == 0


def test_fallback_answers_are_stored_with_their_reason(db_url: str,
                                                      make_logger: MakeLogger) -> None:
    lg = make_logger("m", db_url)
    assert lg.log({"a": 1}, 1, request_id="model")
    assert lg.log({"a": 2}, 0, request_id="guard", fallback_reason="flag")
    # A default prediction of null is still a fallback answer worth counting.
    assert lg.log({"a": 3}, None, request_id="null-default", fallback_reason="timeout")
    assert lg.log({"a": 4}, 0, request_id="too-long", fallback_reason="x" * 41)
    assert lg.flush()
    lg.close()
    rows = {r["request_id"]: r["fallback_reason"] for r in read_rows(db_url)}
    assert rows == {"model": None, "guard": "flag", "null-default": "timeout"}
    assert lg.stats()["invalid"] == 1


def test_invalid_records_are_counted_and_skipped(
    db_url: str, make_logger: MakeLogger, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mqm.client")
    lg = make_logger("m", db_url)
    assert lg.log({"x": 1.0}, 1, request_id="ok-1")
    assert lg.log({"x": float("inf")}, 1, request_id="bad-inf")
    assert lg.log({"x": 2.0}, None, request_id="bad-no-prediction")
    assert lg.log({"x": 3.0}, 1, request_id="bad-proba", probabilities={"a": "high"})
    assert lg.log({"x": 4.0}, None, request_id="ok-error", error=True)
    assert lg.log({"x": float("nan")}, 0, request_id="ok-nan")
    assert lg.flush()
    lg.close()

    rows = {r["request_id"]: r for r in read_rows(db_url)}
    assert set(rows) == {"ok-1", "ok-error", "ok-nan"}
    assert rows["ok-nan"]["features"] == {"x": None}  # NaN is stored as a missing value
    stats = lg.stats()
    assert stats["invalid"] == 3
    assert stats["written"] == 3  # the refused ones are not counted as written
    assert stats["write_failures"] == 0
    skipped = [r.getMessage() for r in caplog.records if "invalid inference log" in r.getMessage()]
    assert len(skipped) == 3 and any("prediction" in m for m in skipped)


def test_a_row_the_database_refuses_does_not_block_the_others(
    db_url: str, make_logger: MakeLogger
) -> None:
    # request_id is VARCHAR(200): PostgreSQL refuses a longer one (SQLite stores it).
    long_id = "x" * 300
    lg = make_logger("m", db_url, retry_interval=0.05)
    assert lg.log({"a": 1}, 1, request_id="before")
    assert lg.log({"a": 2}, 1, request_id=long_id)
    assert lg.log({"a": 3}, 1, request_id="after")
    assert lg.flush(timeout=10)
    assert lg.log({"a": 4}, 1, request_id="later")
    assert lg.flush(timeout=10)
    lg.close()

    stored = {r["request_id"] for r in read_rows(db_url)}
    assert {"before", "after", "later"} <= stored
    stats = lg.stats()
    assert stats["write_failures"] == 0
    assert stats["invalid"] + stats["written"] == 4
    if db_url.startswith("postgresql"):
        assert long_id not in stored and stats["invalid"] == 1


def test_flush_waits_for_an_entry_the_writer_already_took(
    tmp_path: Path, make_logger: MakeLogger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """flush() must not take "queue empty" for "written": the writer may hold the entry."""

    class StallingQueue(queue.Queue):  # type: ignore[type-arg]
        def get(self, block: bool = True, timeout: float | None = None) -> Any:
            item = super().get(block, timeout)
            time.sleep(0.3)  # the writer thread is preempted right after taking the entry
            return item

    url = f"sqlite:///{tmp_path / 'store.db'}"
    eng = create_engine(url)
    ensure_schema(eng)
    eng.dispose()
    monkeypatch.setattr(queue, "Queue", StallingQueue)
    lg = make_logger("m", url)
    assert lg.log({"a": 1}, 1, request_id="r-1")
    assert lg.flush() is True
    assert [r["request_id"] for r in read_rows(url)] == ["r-1"]
    assert lg.stats()["written"] == 1


# --- failures never reach the caller ---------------------------------------------------


def test_database_down_drops_instead_of_raising_or_blocking(
    make_logger: MakeLogger, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mqm.client")
    max_queue = 50
    lg = make_logger("m", DOWN_URL, max_queue=max_queue, retry_interval=0.05)
    results = [lg.log({"i": i}, 1, request_id=f"r-{i}") for i in range(500)]
    assert results[:max_queue] == [True] * max_queue
    assert False in results
    assert lg.flush(timeout=0.2) is False  # nothing can be written
    wait_until(lambda: lg.stats()["write_failures"] >= 2, "two failed write attempts")

    # The writer holds at most max_queue entries and the queue is full: every log drops.
    filled = 0
    for _ in range(10 * max_queue):
        if not lg.log({"i": -1}, 1):
            break
        filled += 1
    extra = [lg.log({"i": -2}, 1) for _ in range(20)]
    assert extra == [False] * 20
    attempts = len(results) + filled + 1 + len(extra)
    accepted = results.count(True) + filled
    stats = lg.stats()
    assert stats["logged"] == accepted
    assert accepted <= 2 * max_queue  # memory stays bounded during the outage
    assert stats["queued"] == max_queue
    assert stats["dropped"] == attempts - accepted
    assert stats["written"] == 0
    assert "database" in stats["last_error"].lower() and "127.0.0.1:1" in stats["last_error"]
    # One warning per outage, not one per retry.
    warned = [r for r in caplog.records if "cannot write inference logs" in r.getMessage()]
    assert len(warned) == 1

    lg.close(timeout=2)
    assert not lg._thread.is_alive()
    stats = lg.stats()
    assert stats["written"] == 0
    # Entries still held at close are counted as dropped too: none is silently lost.
    assert stats["dropped"] == attempts
    assert any("were not written" in r.getMessage() for r in caplog.records)


def test_log_after_close_and_generated_request_ids(
    tmp_path: Path, make_logger: MakeLogger
) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    lg = make_logger("m", url)
    for i in range(5):
        assert lg.log({"i": i}, 1, request_id=None)
    lg.close()
    assert lg.log({"i": 99}, 1, request_id="late") is False
    assert lg.stats()["dropped"] == 1
    assert lg.flush(timeout=1) is True  # everything logged before close was written

    ids = [r["request_id"] for r in read_rows(url)]
    assert len(ids) == 5 and len(set(ids)) == 5
    assert all(isinstance(rid, str) and rid.strip() for rid in ids)
    assert "late" not in ids


def test_pending_entries_are_written_at_exit(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    script = textwrap.dedent(
        """
        import sys
        from monitor.client import InferenceLogger

        lg = InferenceLogger("m", sys.argv[1])
        for i in range(500):
            assert lg.log({"i": i}, i % 2, request_id=f"r-{i}")
        # no close(): the exit hook must write what is still queued
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, url], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    rows = read_rows(url)
    assert sorted(r["request_id"] for r in rows) == sorted(f"r-{i}" for i in range(500))
    assert all(r["features"] == {"i": int(r["request_id"][2:])} for r in rows)


@pytest.mark.postgres
def test_entries_logged_during_an_outage_are_written_after_recovery(
    pg_url: str, make_logger: MakeLogger, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mqm.client")
    server = sa.make_url(pg_url)
    name = f"mqm_late_{uuid.uuid4().hex[:12]}"  # does not exist until created below
    url = server.set(database=name).render_as_string(hide_password=False)
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        lg = make_logger("m", url, max_queue=100, retry_interval=0.05, flush_interval=0.05)
        assert all(lg.log({"i": i}, 1, request_id=f"r-{i}") for i in range(30))
        wait_until(lambda: lg.stats()["write_failures"] >= 2, "two failed write attempts")
        assert name in (lg.stats()["last_error"] or "")
        assert all(lg.log({"i": i}, 1, request_id=f"r-{i}") for i in range(30, 40))
        assert lg.stats()["written"] == 0

        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        assert lg.flush(timeout=20) is True
        assert all(lg.log({"i": i}, 1, request_id=f"r-{i}") for i in range(40, 45))
        assert lg.flush(timeout=20) is True
        lg.close(timeout=5)

        rows = read_rows(url)
        assert sorted(r["request_id"] for r in rows) == sorted(f"r-{i}" for i in range(45))
        stats = lg.stats()
        assert (stats["written"], stats["dropped"], stats["invalid"]) == (45, 0, 0)
        messages = [r.getMessage() for r in caplog.records]
        assert sum("cannot write inference logs" in m for m in messages) == 1
        assert any("writing inference logs for m again" in m for m in messages)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_log_never_raises_on_unusable_input(make_logger: MakeLogger, tmp_path: Path) -> None:
    """log() never raises, whatever it is given; the problem shows in stats()."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    lg = make_logger("m", url)
    assert lg.log(None, 1, request_id="no-features") is True  # type: ignore[arg-type]
    assert lg.log({"x": object()}, 1, request_id="odd-type") is True
    assert lg.log({"x": [math.inf]}, 1, request_id="nested-inf") is True
    assert lg.log({"x": 1}, 1, request_id="fine") is True
    assert lg.flush()
    assert lg.stats()["invalid"] == 3
    assert [r["request_id"] for r in read_rows(url)] == ["fine"]

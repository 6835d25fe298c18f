"""The serving-side ``InferenceLogger``: light import, exact storage, never raising or blocking."""

from __future__ import annotations

import logging
import math
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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.client import InferenceLogger
from monitor.store.db import create_engine, ensure_schema
from monitor.store.tables import inference_logs
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
DOWN_URL = "postgresql+psycopg://postgres@127.0.0.1:1/nothing"

MakeLogger = Callable[..., InferenceLogger]


@pytest.fixture
def make_logger() -> Iterator[MakeLogger]:
    """Factory of loggers that are all closed (and their threads stopped) after the test."""
    made: list[InferenceLogger] = []

    def make(*args: Any, migrate: bool = True, **kwargs: Any) -> InferenceLogger:
        url = args[1] if len(args) > 1 else kwargs.get("url")
        if migrate and url and url != DOWN_URL and not url.startswith("http"):
            migrated(url)  # the monitor's job (`mqm db upgrade`), never the logger's
        lg = InferenceLogger(*args, **kwargs)
        made.append(lg)
        return lg

    yield make
    for lg in made:
        lg.close(timeout=5)


def migrated(url: str) -> None:
    eng = create_engine(url)
    try:
        ensure_schema(eng)
    finally:
        eng.dispose()


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


def test_a_features_only_logger_stores_entries_without_a_prediction(
    db_url: str, make_logger: MakeLogger
) -> None:
    """Issue 13, item 11: for a model monitored on its inputs alone (contract task:
    features), ``log(features)`` is a valid entry, stored with a null prediction; the
    same entry is refused by a logger of a model with predictions."""
    inputs = make_logger("inputs", db_url, features_only=True)
    assert inputs.log({"x": 1.0}, request_id="a", latency_ms=3.0)
    assert inputs.log({"x": float("inf")}, request_id="bad")  # still checked otherwise
    assert inputs.flush()
    inputs.close()
    rows = read_rows(db_url, "inputs")
    assert [(r["request_id"], r["prediction"], r["features"]) for r in rows] == [
        ("a", None, {"x": 1.0})]
    assert inputs.stats()["invalid"] == 1 and inputs.stats()["written"] == 1
    model = make_logger("m", db_url)
    assert model.log({"x": 1.0}, request_id="no-prediction")
    assert model.flush()
    model.close()
    assert read_rows(db_url, "m") == [] and model.stats()["invalid"] == 1


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
    from mqm_client import logger as client_logger

    write = client_logger._DatabaseWriter.send

    def stalling(self: Any, items: Any) -> int:
        time.sleep(0.3)  # the writer thread is preempted right after taking the entries
        return write(self, items)

    url = f"sqlite:///{tmp_path / 'store.db'}"
    eng = create_engine(url)
    ensure_schema(eng)
    eng.dispose()
    monkeypatch.setattr(client_logger._DatabaseWriter, "send", stalling)
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
    migrated(url)
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
        lg = make_logger("m", url, max_queue=100, retry_interval=0.05, flush_interval=0.05,
                         migrate=False)
        assert all(lg.log({"i": i}, 1, request_id=f"r-{i}") for i in range(30))
        wait_until(lambda: lg.stats()["write_failures"] >= 2, "two failed write attempts")
        assert name in (lg.stats()["last_error"] or "")
        assert all(lg.log({"i": i}, 1, request_id=f"r-{i}") for i in range(30, 40))
        assert lg.stats()["written"] == 0

        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        # A database without mqm's tables is still an outage: the logger never creates them.
        wait_until(lambda: "mqm db upgrade" in (lg.stats()["last_error"] or ""),
                   "the logger says the tables are missing")
        assert lg.stats()["written"] == 0
        migrated(url)
        assert lg.flush(timeout=40) is True
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


# --- one entry never stops the others (issue 13, item 1) -------------------------------


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def test_an_entry_that_cannot_be_stored_never_blocks_the_next(
    db_url: str, make_logger: MakeLogger
) -> None:
    """Before: OverflowError / RecursionError in the writer, which retried the same batch
    forever, and every entry after it was lost."""
    lg = make_logger("m", db_url, retry_interval=0.05)
    bad = [
        lg.log({"a": 1}, 1, request_id="epoch-1e20", timestamp=1e20),
        lg.log({"a": 1}, 1, request_id="latency-10**400", latency_ms=10**400),  # type: ignore[arg-type]
        lg.log({"deep": nested(600)}, 1, request_id="nested-600"),
        lg.log({"a": "\udcff"}, 1, request_id="surrogate"),
        lg.log({"a": 1}, 1, request_id="time-nan", timestamp=math.nan),
        lg.log({"a": 10**5000}, 1, request_id="int-5000-digits"),
        lg.log({"a": 1}, 1, request_id="\ud800"),
    ]
    assert all(bad)
    assert lg.log({"a": 2}, 1, request_id="after")
    assert lg.flush(timeout=15) is True
    assert lg.log({"a": 3}, 1, request_id="later")
    assert lg.flush(timeout=15) is True
    lg.close()
    stats = lg.stats()
    assert (stats["invalid"], stats["written"], stats["write_failures"]) == (len(bad), 2, 0)
    assert sorted(r["request_id"] for r in read_rows(db_url)) == ["after", "later"]


def test_an_entry_over_the_row_limits_is_refused_before_it_is_encoded(
    tmp_path: Path, make_logger: MakeLogger, caplog: pytest.LogCaptureFixture
) -> None:
    """One entry's JSON encoding is one C call that holds the GIL, and so makes every
    log() on the serving threads wait: the row limits bound it (issue 13, item 9)."""
    caplog.set_level(logging.WARNING, logger="mqm.client")
    url = f"sqlite:///{tmp_path / 'store.db'}"
    lg = make_logger("m", url)
    assert lg.log({"text": "x" * 1_000_001}, 1, request_id="long-text")
    assert lg.log({"many": list(range(100_001))}, 1, request_id="many-values")
    assert lg.log({"a": "x" * 600_000, "b": "y" * 600_000}, 1, request_id="long-row")
    assert lg.log({"text": "x" * 100_000}, 1, request_id="fine")
    assert lg.flush()
    assert [r["request_id"] for r in read_rows(url)] == ["fine"]
    assert lg.stats()["invalid"] == 3
    messages = [r.getMessage() for r in caplog.records if "invalid inference log" in r.getMessage()]
    assert messages == [
        "mqm: invalid inference log for m skipped: RowProblem: field 'text': the row's text "
        "exceeds 1,000,000 characters",
        "mqm: invalid inference log for m skipped: RowProblem: field 'many': the row holds more "
        "than 100,000 values",
        "mqm: invalid inference log for m skipped: RowProblem: field 'b': the row's text "
        "exceeds 1,000,000 characters",
    ]


def test_log_takes_no_lock(make_logger: MakeLogger, tmp_path: Path) -> None:
    """A lock shared with the writer thread makes log() wait whenever the writer is switched
    out while holding it (queue.Queue's mutex did): log() runs no code of threading or
    queue and acquires no lock (issue 13, item 9)."""
    lg = make_logger("m", f"sqlite:///{tmp_path / 'store.db'}")
    lg.log({"warm": 1}, 1)
    calls: list[str] = []

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            calls.append(frame.f_code.co_filename)
        elif event == "c_call":
            owner = type(getattr(arg, "__self__", None)).__name__
            calls.append(f"{owner}.{arg.__name__}")

    sys.setprofile(profile)
    try:
        for i in range(50):
            lg.log({"i": i}, 1, request_id=f"r-{i}", latency_ms=1.0)
    finally:
        sys.setprofile(None)
    offending = [c for c in calls if c.endswith(("threading.py", "queue.py"))
                 or "lock" in c.lower() or c.endswith((".acquire", ".__enter__"))]
    assert offending == []
    assert lg.flush()


# Values of every kind a caller might pass by mistake, hostile ones included.
_odd_scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(), st.integers(min_value=10**300, max_value=10**6000), st.floats(),
    st.text(alphabet=st.characters(exclude_categories=[]), max_size=30),
    st.binary(max_size=10), st.datetimes(), st.datetimes(timezones=st.timezones()),
    st.decimals(), st.complex_numbers(), st.builds(object), st.just(math.inf),
    st.builds(str.__mul__, st.just("x"), st.just(1_100_000)),
    st.builds(nested, st.sampled_from([40, 600, 2000])),
)
_keys = st.one_of(st.text(alphabet=st.characters(exclude_categories=[]), max_size=8),
                  st.integers(), st.floats(), st.none(), st.booleans())
_odd_values = st.recursive(
    _odd_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.tuples(inner, inner),
                            st.dictionaries(_keys, inner, max_size=4)),
    max_leaves=12,
)
_entries = st.fixed_dictionaries({
    "features": st.one_of(st.dictionaries(_keys, _odd_values, max_size=5), _odd_values),
    "prediction": _odd_values,
    "request_id": st.one_of(st.none(), st.text(alphabet=st.characters(exclude_categories=[]),
                                               max_size=300), _odd_scalars),
    "probabilities": st.one_of(st.none(), st.dictionaries(_keys, _odd_scalars, max_size=3),
                               _odd_values),
    "latency_ms": _odd_scalars,
    "error": _odd_scalars,
    "error_message": _odd_scalars,
    "timestamp": st.one_of(_odd_scalars, st.floats(min_value=-1e20, max_value=1e20)),
    "fallback_reason": _odd_scalars,
})


def test_fuzzed_entries_never_stop_the_writer(db_url: str, make_logger: MakeLogger) -> None:
    """Arbitrary values for every field of log(): log() never raises, and each entry is
    either stored or counted invalid; the good entry logged after each one is stored."""
    lg = make_logger("m", db_url, max_queue=100_000, retry_interval=0.05)
    good: list[str] = []
    examples = 150 if db_url.startswith("sqlite") else 60

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(entry=_entries)
    def log_one(entry: dict[str, Any]) -> None:
        assert lg.log(**entry) is True
        rid = f"good-{uuid.uuid4().hex}"
        assert lg.log({"i": len(good)}, 1, request_id=rid) is True
        good.append(rid)

    log_one()
    assert lg.flush(timeout=120) is True
    lg.close()
    stats = lg.stats()
    assert stats["write_failures"] == 0, stats["last_error"]
    assert stats["written"] + stats["invalid"] == stats["logged"]
    assert set(good) <= {r["request_id"] for r in read_rows(db_url)}


def test_the_database_mode_never_creates_the_monitors_tables(
    tmp_path: Path, make_logger: MakeLogger
) -> None:
    """A store without mqm's tables is the monitor's to migrate (`mqm db upgrade`): the
    logger counts the failure, says why, keeps the entries, and creates nothing."""
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    lg = make_logger("m", url, migrate=False, retry_interval=0.05)
    assert lg.log({"a": 1}, 1, request_id="r-1")
    wait_until(lambda: lg.stats()["write_failures"] >= 2, "two failed attempts")
    stats = lg.stats()
    assert "has no mqm tables" in (stats["last_error"] or "")
    assert "mqm db upgrade" in (stats["last_error"] or "")
    assert stats["written"] == 0
    eng = create_engine(url)
    try:
        assert sa.inspect(eng).get_table_names() == []
    finally:
        eng.dispose()
    # Migrated by the monitor's side, the entries held are written.
    migrated(url)
    assert lg.flush(timeout=30) is True
    assert [r["request_id"] for r in read_rows(url)] == ["r-1"]

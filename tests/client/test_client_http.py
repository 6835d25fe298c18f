"""``InferenceLogger`` over HTTP, against a real ``mqm serve``: what it sends is stored as
logged, what the monitor refuses is counted, and a monitor that is down or refuses the
token never reaches the caller."""

from __future__ import annotations

import logging
import math
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from monitor.store.db import create_engine
from monitor.store.tables import ground_truth, inference_logs
from mqm_client import InferenceLogger
from tests.client.monitor_server import INGEST_TOKEN, MODEL, ROOT, MonitorServer, free_port
from tests.waiting import wait_until

MakeLogger = Callable[..., InferenceLogger]


@pytest.fixture(scope="module")
def monitor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MonitorServer]:
    # 100 rows per batch at most: the client's batches of 500 are split on 413.
    server = MonitorServer(tmp_path_factory.mktemp("monitor"), serve={"ingest_max_rows": 100})
    yield server
    server.stop()


@pytest.fixture
def make_logger() -> Iterator[MakeLogger]:
    made: list[InferenceLogger] = []

    def make(*args: Any, **kwargs: Any) -> InferenceLogger:
        kwargs.setdefault("flush_interval", 0.05)
        lg = InferenceLogger(*args, **kwargs)
        made.append(lg)
        return lg

    yield make
    for lg in made:
        lg.close(timeout=5)



def stored(monitor: MonitorServer, prefix: str) -> dict[str, dict[str, Any]]:
    engine = create_engine(monitor.db_url)
    try:
        t = inference_logs
        with engine.connect() as conn:
            rows = conn.execute(sa.select(t).where(t.c.request_id.like(f"{prefix}%")))
            return {r.request_id: dict(r._mapping) for r in rows}
    finally:
        engine.dispose()


def labels(monitor: MonitorServer, prefix: str) -> dict[str, Any]:
    engine = create_engine(monitor.db_url)
    try:
        t = ground_truth.c
        with engine.connect() as conn:
            return dict(conn.execute(sa.select(t.request_id, t.label)  # type: ignore[arg-type]
                                     .where(t.request_id.like(f"{prefix}%"))).all())
    finally:
        engine.dispose()


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def features(i: int) -> dict[str, Any]:
    return {"age": 20 + i % 50, "annual_income": 1000.5 + i, "credit_score": float(i % 3),
            "home_ownership": ("RENT", "OWN", "MORTGAGE")[i % 3], "has_cosigner": i % 4 == 0,
            "loan_purpose": None, "note": "abc" if i % 7 == 0 else i}


def typed(value: Any) -> Any:
    """The value with every leaf's type next to it: 1, 1.0 and True compare unequal here."""
    if isinstance(value, dict):
        return {k: typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [typed(v) for v in value]
    return (type(value).__name__, value)


def test_logs_and_labels_are_stored_as_logged(monitor: MonitorServer,
                                              make_logger: MakeLogger) -> None:
    lg = make_logger(MODEL, url=monitor.url, token=INGEST_TOKEN, model_version="2.0")
    now = time.time()
    sent = {}
    for i in range(320):
        p1 = (i % 10) / 10
        sent[f"a-{i}"] = (features(i), i % 2, {"0": 1 - p1, "1": p1})
        assert lg.log(features(i), i % 2, request_id=f"a-{i}", probabilities={"0": 1 - p1,
                                                                            "1": p1},
                      latency_ms=1.5 + i, timestamp=now - i)
    assert lg.log(features(0), None, request_id="a-fallback", fallback_reason="flag",
                  error=True, error_message="timed out")
    assert lg.log_label("a-1", 1) and lg.log_label("a-2", 0)
    assert lg.flush(timeout=30), lg.stats()
    stats = lg.stats()
    assert (stats["logged"], stats["written"], stats["invalid"], stats["dropped"]) == (
        323, 323, 0, 0), stats

    rows = stored(monitor, "a-")
    assert len(rows) == 321
    for rid, (feats, prediction, probabilities) in sent.items():
        row = rows[rid]
        assert typed(row["features"]) == typed(feats)
        assert (row["prediction"], row["probabilities"], row["model_version"]) == (
            prediction, probabilities, "2.0")
        i = int(rid[2:])
        assert row["latency_ms"] == 1.5 + i
        assert abs(row["ts"].timestamp() - (now - i)) < 1e-3
    fallback = rows["a-fallback"]
    assert (fallback["prediction"], fallback["fallback_reason"], fallback["error"],
            fallback["error_message"]) == (None, "flag", True, "timed out")
    assert labels(monitor, "a-") == {"a-1": 1, "a-2": 0}


def test_entries_the_monitor_refuses_are_counted_and_never_block_the_next(
    monitor: MonitorServer, make_logger: MakeLogger, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mqm.client")
    lg = make_logger(MODEL, url=monitor.url, token=INGEST_TOKEN)
    bad = [
        lg.log({"a": 1}, 1, request_id="b-epoch", timestamp=1e20),
        lg.log({"a": 1}, 1, request_id="b-latency", latency_ms=math.inf),
        lg.log({"a": object()}, 1, request_id="b-object"),  # not JSON: refused by the client
        lg.log({"a": nested(40)}, 1, request_id="b-deep"),
        lg.log({"a": 1}, None, request_id="b-no-prediction"),
        lg.log_label("b-label", None),
    ]
    assert all(bad)
    assert lg.log({"a": 2}, 1, request_id="b-after")
    assert lg.flush(timeout=30)
    stats = lg.stats()
    assert (stats["invalid"], stats["written"], stats["write_failures"]) == (len(bad), 1, 0)
    assert set(stored(monitor, "b-")) == {"b-after"}
    messages = "\n".join(r.getMessage() for r in caplog.records)
    assert "field 'timestamp': 1e+20 is out of range" in messages
    assert "cannot send a value of type object" in messages


def test_a_wrong_token_keeps_the_entries_and_says_why(monitor: MonitorServer,
                                                      make_logger: MakeLogger) -> None:
    lg = make_logger(MODEL, url=monitor.url, token="not-the-token", retry_interval=0.05)
    assert lg.log({"a": 1}, 1, request_id="c-1")
    wait_until(lambda: lg.stats()["write_failures"] >= 2, "two refused attempts")
    stats = lg.stats()
    assert "HTTP 401" in (stats["last_error"] or "") and stats["written"] == 0
    lg.close(timeout=2)
    assert lg.stats()["dropped"] == 1 and stored(monitor, "c-") == {}


def test_a_monitor_that_is_down_drops_and_counts(make_logger: MakeLogger) -> None:
    max_queue = 50
    lg = make_logger(MODEL, url=f"http://127.0.0.1:{free_port()}", token=INGEST_TOKEN,
                     max_queue=max_queue, retry_interval=0.05)
    results = [lg.log({"i": i}, 1) for i in range(500)]
    assert results[:max_queue] == [True] * max_queue and False in results
    wait_until(lambda: lg.stats()["write_failures"] >= 2, "two failed attempts")
    stats = lg.stats()
    assert "ConnectionRefusedError" in (stats["last_error"] or "")
    assert stats["logged"] + stats["dropped"] == 500 and stats["written"] == 0
    assert stats["logged"] <= 2 * max_queue  # memory stays bounded during the outage
    lg.close(timeout=2)
    assert lg.stats()["dropped"] == 500


def test_the_database_mode_needs_the_full_install_and_the_url_mode_the_client_only(
        tmp_path: Path) -> None:
    """In a process where ``monitor`` cannot be imported, as with the client alone."""
    code = (
        "import sys; sys.modules['monitor'] = None\n"
        "from mqm_client import InferenceLogger\n"
        "try:\n"
        "    InferenceLogger('m', url='sqlite:///x.db')\n"
        "except ValueError as exc:\n"
        "    print(exc)\n"
        "lg = InferenceLogger('m', url='http://127.0.0.1:9')\n"
        "lg.close(timeout=1)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env={"PYTHONPATH": str(ROOT / "clients" /
                                                                         "python" / "src")})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ("sqlite: a database URL needs the full mqm install; with "
                                   "mqm-client alone, pass the monitor's HTTP URL "
                                   "(http://host:port)")

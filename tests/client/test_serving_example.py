"""examples/serving end to end: the example service as a real process, logging over HTTP to
a real ``mqm serve`` on a SQLite store, its flag read from the monitor's flag files
(``fallback_dir``).

Normal traffic, then drifted traffic: the checks trip the flag and the service answers with
the default. Normal traffic again: while callers get the default, the model's shadow
predictions are logged, the checks judge the model on them, and the flag recovers. Then the
monitor's side goes away, and the service keeps answering from the last state it read.

Traffic carries ``X-Timestamp`` (the app's test hook), so each phase fills one past hourly
window, checked with ``run_check(at=...)`` as the scheduler would once it has closed.
"""

from __future__ import annotations

import functools
import http.client
import json
import os
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from monitor.config import Config, load_config
from monitor.fallback.flag import flag_document
from monitor.results import CheckRun
from monitor.run.check import run_check
from monitor.store.db import create_engine, ensure_schema
from monitor.store.tables import inference_logs
from tests.client.monitor_server import INGEST_TOKEN, MonitorServer
from tests.waiting import wait_until as _wait_until

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "examples" / "serving" / "app.py"
M = "loan_default"
ROWS = 1200  # per window: enough for the drift tests to tell normal from drifted traffic
CLIENTS = 8  # concurrent connections sending it
HOUR = timedelta(hours=1)


def _load_model() -> Callable[[dict[str, Any]], int]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("loan_model", APP.parent / "loan_model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.predict  # type: ignore[no-any-return]


model_predict = _load_model()


wait_until = functools.partial(_wait_until, every=0.02)  # processes


# --- traffic -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_rows() -> list[dict[str, Any]]:
    """The sample's reference requests, as a client would send them (JSON types, null)."""
    ref = pd.read_parquet(ROOT / "sample_data" / "reference.parquet")
    features = ref.drop(columns=["request_id", "timestamp", "prediction", "proba_0", "proba_1",
                                 "defaulted"])
    rows = features.astype(object).where(features.notna(), None).to_dict("records")
    # The example's model is the sample's deployed model: same answers on the reference.
    assert [model_predict(r) for r in rows] == ref["prediction"].tolist()
    return rows


def drifted(row: dict[str, Any]) -> dict[str, Any]:
    """The sample's covariate drift at full strength (sample_data/generate.py): incomes
    fall 25%, credit scores 40 points, debt-to-income rises 0.05."""
    return {**row, "annual_income": round(row["annual_income"] * 0.75, -1),
            "credit_score": max(300, row["credit_score"] - 40),
            "debt_to_income": round(row["debt_to_income"] + 0.05, 3)}


class Client:
    """Sends requests over keep-alive connections, one per client thread."""

    def __init__(self, port: int) -> None:
        self.port = port

    def _send(self, conn: http.client.HTTPConnection, method: str, path: str,
              body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        conn.request(method, path, body=None if body is None else json.dumps(body),
                     headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response.status, json.loads(response.read())

    def call(self, method: str, path: str, body: Any = None,
             headers: dict[str, str] | None = None) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            return self._send(conn, method, path, body, headers)
        finally:
            conn.close()

    def predict(self, features: dict[str, Any]) -> dict[str, Any]:
        status, body = self.call("POST", "/predict", features)
        assert status == 200, body
        return body  # type: ignore[no-any-return]

    def status(self) -> dict[str, Any]:
        return self.call("GET", "/status")[1]  # type: ignore[no-any-return]

    def send(self, requests: list[tuple[str, float, dict[str, Any]]]) -> list[dict[str, Any]]:
        """POST each (request id, log time, features); the answers, in order."""
        def run(chunk: list[tuple[str, float, dict[str, Any]]]) -> list[dict[str, Any]]:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                out = []
                for rid, ts, features in chunk:
                    status, body = self._send(conn, "POST", "/predict", features,
                                              {"X-Request-Id": rid, "X-Timestamp": str(ts)})
                    assert status == 200, body
                    out.append(body)
                return out
            finally:
                conn.close()

        size = -(-len(requests) // CLIENTS)
        chunks = [requests[i:i + size] for i in range(0, len(requests), size)]
        with ThreadPoolExecutor(CLIENTS) as pool:
            return [answer for part in pool.map(run, chunks) for answer in part]


# --- the monitor's side and the app --------------------------------------------------------


@pytest.fixture
def monitor(tmp_path: Path) -> Iterator[tuple[Config, sa.Engine, Path, MonitorServer]]:
    """A monitor.yaml with ``fallback_dir``, hourly windows, and its store."""
    flags = tmp_path / "flags"
    model = {
        "schema": str(ROOT / "schemas" / "loan_default.yaml"),
        "reference": str(ROOT / "sample_data" / "reference.parquet"),
        "window": "1h",
        "min_rows": 500,
        # The sample drift moves 4 of 12 columns (income, credit score, DTI, prediction):
        # a dataset drift, so critical, at a drifted share of 30%.
        "drift": {"drift_share": 0.3},
        "fallback": {"trip_after": 2, "recover_after": 2, "default_prediction": 0},
    }
    data = {"database_url": f"sqlite:///{tmp_path / 'mqm.db'}", "fallback_dir": str(flags),
            "models": {M: model}}
    path = tmp_path / "monitor.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    config = load_config(path)
    engine = create_engine(config.database_url)
    ensure_schema(engine)
    flag_document(engine, config, M)  # the flag file exists before serving starts
    server = MonitorServer(tmp_path / "serve", config=path)
    yield config, engine, flags, server
    server.stop()
    engine.dispose()


def start_app(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """The example as a process on a free port (``.port``), once it listens."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("MQM_FORCE_FALLBACK", "MQM_DATABASE_URL", "MQM_MONITOR_URL",
                         "MQM_INGEST_TOKEN", "SERVING_FLAG_SOURCE")}
    proc = subprocess.Popen([sys.executable, str(APP), "--port", "0", *args], cwd=ROOT,
                            env={**base, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "the app did not start within 30 s"
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith(f"serving {M} on http://127.0.0.1:"), (line, proc.stderr)
    except BaseException:
        stop_app(proc)
        raise
    proc.port = int(line.rsplit(":", 1)[1])  # type: ignore[attr-defined]
    return proc


def stop_app(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=10)


@pytest.fixture
def app(monitor: tuple[Config, sa.Engine, Path, MonitorServer]
        ) -> Iterator[subprocess.Popen[str]]:
    _, _, flags, server = monitor
    proc = start_app(
        "--monitor-url", server.url, "--token", INGEST_TOKEN,
        "--flag-source", str(flags), "--flag-ttl", "0.1",
        "--trust-timestamp-header",
        # Room for the shadow calls that pile up behind the answers on a busy machine: at
        # 2 per connection, a load of 7 skipped 11.8% of them, and a window whose
        # predictions are 11.8% missing warns on the prediction's null rate (limit 10%).
        # Skipping itself is tested in test_client_fallback.
        "--max-shadow-in-flight", str(8 * CLIENTS))
    yield proc
    stop_app(proc)


def post(server: MonitorServer, what: str, body: str) -> tuple[int, Any]:
    """POST a batch to the monitor, as a labelling job would."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("POST", f"/v1/models/{M}/{what}", body=body.encode(),
                     headers={"Authorization": f"Bearer {INGEST_TOKEN}"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def rows_of(engine: sa.Engine, start: datetime, end: datetime) -> dict[str, tuple[Any, ...]]:
    """request id -> (prediction, fallback_reason, error) of the window's logged rows."""
    t = inference_logs.c
    query = sa.select(t.request_id, t.prediction, t.fallback_reason, t.error).where(
        t.model == M, t.ts >= start, t.ts < end)
    with engine.connect() as conn:
        return {r.request_id: (r.prediction, r.fallback_reason, r.error)
                for r in conn.execute(query)}


# --- the story -------------------------------------------------------------------------------


def test_the_service_falls_back_on_drift_recovers_and_outlives_the_monitor(
    monitor: tuple[Config, sa.Engine, Path, MonitorServer], app: subprocess.Popen[str],
    reference_rows: list[dict[str, Any]],
) -> None:
    config, engine, flags, server = monitor
    client = Client(app.port)  # type: ignore[attr-defined]
    rng = np.random.default_rng(7)
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    starts = iter(hour - (12 - i) * HOUR for i in range(12))  # past, closed windows
    flag_file = flags / f"{M}.json"

    def traffic(shift: bool) -> tuple[datetime, dict[str, dict[str, Any]], list[dict[str, Any]]]:
        """One window of requests; (its start, features by request id, the answers)."""
        start = next(starts)
        picked = rng.choice(len(reference_rows), ROWS, replace=False)
        sent = {f"{start:%H}-{i}": drifted(reference_rows[k]) if shift else reference_rows[k]
                for i, k in enumerate(picked)}
        step = HOUR.total_seconds() / ROWS
        answers = client.send([(rid, start.timestamp() + (i + 0.5) * step, features)
                               for i, (rid, features) in enumerate(sent.items())])
        return start, sent, answers

    def check(start: datetime, sent: dict[str, Any]) -> CheckRun:
        # Every request is logged, in the background (shadow calls even after the answer).
        wait_until(lambda: len(rows_of(engine, start, start + HOUR)) == len(sent),
                   f"{len(sent)} rows logged in the window from {start}")
        run = run_check(engine, config, M, at=start + HOUR)
        assert run is not None and run.rows == len(sent)
        return run

    def flag_active() -> bool:
        return bool(json.loads(flag_file.read_text())["active"])

    def served_flag() -> dict[str, Any]:
        return client.status()["flag"]  # type: ignore[no-any-return]

    # 1. Normal traffic: the model answers; the checks find nothing. The guard logs the
    # request ids and the probabilities: labels join, and the accuracy is estimated.
    for _ in range(2):
        start, sent, answers = traffic(shift=False)
        assert answers == [{"prediction": model_predict(f), "served_by": "model", "reason": None}
                           for f in sent.values()]
        count = len(sent)
        wait_until(lambda s=start, n=count: len(rows_of(engine, s, s + HOUR)) == n,
                   "the window's rows logged")
        labelled = list(sent)[: ROWS // 2]
        label_rows = "".join(json.dumps({"request_id": rid, "defaulted": model_predict(
            sent[rid])}) + "\n" for rid in labelled)
        status, result = post(server, "labels", label_rows)
        assert (status, result["added"], result["unmatched"]) == (200, len(labelled), 0), result
        run = check(start, sent)
        assert (run.status, run.drift.status) == ("ok", "ok"), run.reasons
        performance = run.performance
        assert performance.label_coverage == 0.5
        assert performance.metrics["accuracy"] == 1.0  # labels made from the model's answers
        assert performance.estimated is not None
        assert 0.8 < performance.estimated.estimated_accuracy <= 1.0
    assert not flag_active()

    # 2. Drifted traffic: the drift check is critical; the second such run trips the flag.
    start, sent, answers = traffic(shift=True)
    assert {a["served_by"] for a in answers} == {"model"}
    run = check(start, sent)
    assert (run.status, run.drift.status) == ("critical", "critical")
    drifted_columns = {f.feature for f in run.drift.features if f.drifted}
    assert drifted_columns == {"annual_income", "credit_score", "debt_to_income", "prediction"}
    assert not flag_active()  # trip_after: 2
    start, sent, answers = traffic(shift=True)
    assert {a["served_by"] for a in answers} == {"model"}
    assert check(start, sent).status == "critical"
    assert flag_active()
    wait_until(lambda: served_flag()["active"], "the service read the flag")
    assert client.predict(reference_rows[0]) == {"prediction": 0, "served_by": "fallback",
                                                 "reason": "flag"}

    # 3. Normal traffic again. Callers get the default at once; the model runs as a shadow
    # and its own predictions are logged, so the checks judge the model, not the default.
    skipped_before = client.status()["guard"]["shadow_skipped"]
    for recovered in (False, True):
        start, sent, answers = traffic(shift=False)
        assert answers == [{"prediction": 0, "served_by": "fallback", "reason": "flag"}] * ROWS
        run = check(start, sent)
        logged = rows_of(engine, start, start + HOUR)
        assert {reason for _, reason, _ in logged.values()} == {"flag"}
        assert not any(error for _, _, error in logged.values())
        shadowed = {rid: pred for rid, (pred, _, _) in logged.items() if pred is not None}
        assert shadowed == {rid: model_predict(sent[rid]) for rid in shadowed}
        skipped = client.status()["guard"]["shadow_skipped"]
        # A call beyond max_shadow_in_flight is logged without a prediction, and counted.
        assert len(logged) - len(shadowed) == skipped - skipped_before
        skipped_before = skipped
        # Skipping is blind to the request, so the rest are a fair sample; a busy machine
        # skips more (here 0-6%), hence the loose bound.
        assert len(shadowed) >= ROWS // 2 and 1 in shadowed.values()  # 1: not the default
        prediction = run.drift.feature("prediction")
        assert prediction.score is not None and not prediction.drifted  # tested: ok
        assert (run.status, run.drift.status) == ("ok", "ok"), run.reasons
        assert flag_active() is not recovered  # recover_after: 2
    wait_until(lambda: not served_flag()["active"], "the service read the recovery")
    row = reference_rows[1]
    assert client.predict(row) == {"prediction": model_predict(row), "served_by": "model",
                                   "reason": None}

    # 4. The monitor goes away: no more runs, the flag files are gone, mqm serve is down.
    # The service keeps answering from the last state it read, without waiting on
    # anything; the logger keeps the rows it cannot post.
    engine.dispose()
    shutil.rmtree(flags)
    port = server.port
    server.stop()
    state = wait_until(lambda: (s := served_flag())["reachable"] is False and s,
                       "the service noticed the flag source is gone")
    assert state["active"] is False and state["last_error"]
    start, sent, answers = traffic(shift=False)
    assert answers == [{"prediction": model_predict(f), "served_by": "model", "reason": None}
                       for f in sent.values()]
    assert served_flag()["active"] is False
    logger = wait_until(lambda: (s := client.status()["logger"])["write_failures"] and s,
                        "the logger found the monitor down")
    assert logger["dropped"] == 0 and "Connection" in logger["last_error"]

    # The monitor comes back; a graceful stop writes what the logger still held.
    server.start(port)
    app.terminate()
    app.wait(timeout=20)
    assert app.returncode == 0
    assert len(rows_of(engine, start, start + HOUR)) == ROWS


def test_default_option_forced_fallback_and_bad_requests(
    tmp_path: Path, reference_rows: list[dict[str, Any]],
) -> None:
    """No flag source: MQM_FORCE_FALLBACK alone turns the fallback on; ``--default``
    replaces the flag document's default; X-Timestamp is ignored unless trusted. The
    monitor's URL and token come from the environment."""
    server = MonitorServer(tmp_path / "serve")
    url = server.db_url
    try:
        proc = start_app("--default", "1", env={"MQM_FORCE_FALLBACK": M,
                                                "MQM_MONITOR_URL": server.url,
                                                "MQM_INGEST_TOKEN": INGEST_TOKEN})
    except BaseException:
        server.stop()
        raise
    try:
        client = Client(proc.port)  # type: ignore[attr-defined]
        row = next(r for r in reference_rows if model_predict(r) == 0)  # not the default
        started = time.time()
        status, body = client.call("POST", "/predict", row, {"X-Timestamp": "0",
                                                              "X-Request-Id": "r-1"})
        assert (status, body) == (200, {"prediction": 1, "served_by": "fallback",
                                        "reason": "flag"})
        for method, path, payload, code in [
            ("POST", "/predict", [1, 2], 400),
            ("POST", "/predict", "x" * (65 * 1024), 413),
            ("POST", "/other", row, 404),
            ("GET", "/predict", None, 404),
        ]:
            status, body = client.call(method, path, payload)
            assert status == code and body["error"], (method, path, body)
        conn = http.client.HTTPConnection("127.0.0.1", proc.port, timeout=10)  # type: ignore[attr-defined]
        try:
            conn.request("POST", "/predict", body=b"{not json", headers={})
            response = conn.getresponse()
            assert response.status == 400 and b"error" in response.read()
        finally:
            conn.close()
        flag = client.status()["flag"]
        assert (flag["active"], flag["forced_by_env"], flag["reachable"]) == (True, True, None)
    finally:
        # Whatever happened above, neither process outlives the test.
        proc.terminate()
        try:
            proc.wait(timeout=30)  # it posts what its logger holds first
        finally:
            stop_app(proc)
            server.stop()
    assert proc.returncode == 0
    engine = create_engine(url)
    try:
        t = inference_logs.c
        with engine.connect() as conn:
            [logged] = conn.execute(sa.select(t.request_id, t.ts, t.prediction,
                                              t.probabilities, t.fallback_reason)).all()
    finally:
        engine.dispose()
    # The shadow call logged the model's own answer and probabilities; the untrusted
    # header was not the time.
    assert (logged.request_id, logged.prediction, logged.fallback_reason) == (
        "r-1", model_predict(row), "flag")
    assert set(logged.probabilities) == {"0", "1"}
    assert abs(logged.ts.timestamp() - started) < 60

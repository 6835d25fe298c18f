"""The load driver against a real HTTP server on loopback whose answers the test scripts:
every request counted once, rates bounded, default answers read from the answer or the
status, transport failures counted, bounds refused, Ctrl-C reports what was measured."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from monitor.errors import MonitorError
from monitor.loadtest.drive import Endpoint, _quantile, run_load
from monitor.loadtest.generate import RequestGenerator, row_violations
from monitor.loadtest.procstat import ProcessSampler, check_pid
from monitor.loadtest.results import DefaultRule
from monitor.schema import load_schema
from tests.conftest import ROOT
from tests.waiting import wait_until as _wait_until

SCHEMA = load_schema(ROOT / "schemas" / "loan_default.yaml")


wait_until = functools.partial(_wait_until, limit=30.0, every=0.02)  # processes


def test_every_request_is_counted_once_with_its_answer(server) -> None:  # type: ignore[no-untyped-def]
    fallbacks = []

    def answer(number: int, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
        if body is None:
            return 400, {"error": "not JSON"}
        if row_violations(SCHEMA, body):
            return 422, {"error": "breaks the contract"}
        if number % 5 == 0:
            fallbacks.append(number)
            return 200, {"prediction": 0, "served_by": "fallback"}
        return 200, {"prediction": 1, "served_by": "model"}

    srv = server(answer)
    gen = RequestGenerator(SCHEMA, None, invalid_share=0.4)
    result = run_load(Endpoint(srv.url), gen, duration=0.5, concurrency=3, seed=11)
    assert result.requests == srv.count() > 20
    assert result.ok + result.client_errors == result.requests
    assert result.server_errors == result.transport_errors == 0
    assert result.kind("valid").answers.keys() == {"200"}
    assert result.kind("malformed").answers.keys() == {"400"}
    for kind in ("wrong_type", "missing", "null", "out_of_range", "unseen_category",
                 "non_finite"):
        assert result.kind(kind).answers.keys() <= {"422"}
    assert result.errors == result.client_errors
    assert result.error_rate == round(result.errors / result.requests, 4)
    assert result.default_answers == len(fallbacks) > 0
    assert result.answered_rows == result.ok
    assert result.default_rate == round(len(fallbacks) / result.ok, 4)
    assert result.unreadable_answers == 0 and not result.interrupted
    lat = result.latency_ms
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]  # type: ignore[operator]
    assert result.body_bytes["min"] <= result.body_bytes["median"] <= result.body_bytes["max"]  # type: ignore[operator]
    assert result.rate == pytest.approx(result.requests / result.elapsed_seconds, rel=0.01)


def test_the_rate_never_exceeds_the_target(server) -> None:  # type: ignore[no-untyped-def]
    srv = server(lambda n, body, h: (200, {"served_by": "model"}))
    gen = RequestGenerator(SCHEMA, None)
    result = run_load(Endpoint(srv.url), gen, duration=1.0, rate=40, concurrency=4, seed=1)
    # Request i is due at i/40 s and none is sent before; the run lasts the duration.
    assert 0 < result.requests == srv.count() <= 40
    assert result.elapsed_seconds >= 1.0
    assert result.rate <= 40


def test_batch_answers_default_statuses_and_headers(server) -> None:  # type: ignore[no-untyped-def]
    expected = {"defaults": 0, "rows": 0}
    lock = threading.Lock()

    def answer(number: int, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
        assert headers["x-api-key"] == "s3cret" and headers["x-team"] == "risk"
        rows = body["rows"]
        with lock:
            if number % 4 == 0:  # a default by status: every row of the request
                expected["defaults"] += len(rows)
                expected["rows"] += len(rows)
                return 203, {"answers": []}
            served = ["fallback" if i % 2 else "model" for i in range(len(rows))]
            expected["defaults"] += served.count("fallback")
            expected["rows"] += len(rows)
        return 200, {"answers": [{"served_by": s} for s in served]}

    srv = server(answer)
    gen = RequestGenerator(SCHEMA, None, batch_size=(1, 6), shape="object", batch_key="rows")
    rule = DefaultRule(statuses=frozenset({203}), answers_key="answers")
    endpoint = Endpoint(srv.url, (("X-Api-Key", "s3cret"), ("X-Team", "risk")))
    result = run_load(endpoint, gen, duration=0.5, concurrency=2, default_rule=rule, seed=3)
    assert result.requests == srv.count() > 10
    assert result.rows == sum(len(b["rows"]) for b, _ in srv.received)
    assert (result.default_answers, result.answered_rows) == (expected["defaults"],
                                                             expected["rows"])
    assert result.unreadable_answers == 0
    assert result.default_rule == "answers[].served_by=fallback or status 203"


def test_answers_without_the_field_are_noted(server) -> None:  # type: ignore[no-untyped-def]
    srv = server(lambda n, body, h: (200, {"prediction": 1}))
    result = run_load(Endpoint(srv.url), RequestGenerator(SCHEMA, None), duration=0.3,
                      concurrency=1, seed=1)
    assert result.unreadable_answers == result.ok == result.requests > 0
    assert result.default_answers == 0
    assert any("did not show the default-answer field" in n for n in result.notes)


def test_transport_failures_are_counted_not_raised(server) -> None:  # type: ignore[no-untyped-def]
    srv = server(lambda n, body, h: None if n % 3 == 0 else (200, {"served_by": "model"}))
    result = run_load(Endpoint(srv.url, timeout=5), RequestGenerator(SCHEMA, None),
                      duration=0.5, concurrency=2, seed=1)
    assert result.requests == srv.count() > 10
    dropped = srv.count() // 3
    assert result.transport_errors in (dropped, dropped + 1)  # the last may be in flight
    assert set(result.kind("valid").answers) == {"200", "RemoteDisconnected"}
    assert result.errors == result.transport_errors

    srv_port = int(srv.url.rsplit(":", 1)[1].split("/")[0])
    closed = Endpoint(f"http://127.0.0.1:{srv_port + 1 if srv_port < 65535 else 1}/x")
    down = run_load(closed, RequestGenerator(SCHEMA, None), duration=0.2, concurrency=1,
                    seed=1)
    assert down.requests > 0 and down.transport_errors == down.requests
    assert down.latency_ms["p50"] is None


def test_bounds_are_refused() -> None:
    gen = RequestGenerator(SCHEMA, None)
    url = Endpoint("http://127.0.0.1:9/predict")
    for kwargs, message in [
        ({"duration": 3601}, "at most 3600 s"),
        ({"duration": 0}, "must be above 0"),
        ({"duration": 1, "rate": 20_000}, "at most 10000/s"),
        ({"duration": 1, "concurrency": 0}, "must be 1 to 256"),
    ]:
        with pytest.raises(MonitorError, match=message):
            run_load(url, gen, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(MonitorError, match="not an http"):
        run_load(Endpoint("ftp://host/x"), gen, duration=1)


def test_a_stop_returns_what_was_measured(server) -> None:  # type: ignore[no-untyped-def]
    stop = threading.Event()

    def answer(number: int, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
        if number == 30:
            stop.set()
        return 200, {"served_by": "model"}

    srv = server(answer)
    result = run_load(Endpoint(srv.url), RequestGenerator(SCHEMA, None), duration=600,
                      concurrency=2, stop=stop, seed=1)
    assert result.interrupted and result.requests == srv.count() >= 30


def test_ctrl_c_prints_what_was_measured(server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    srv = server(lambda n, body, h: (200, {"served_by": "model"}))
    config = tmp_path / "monitor.yaml"
    config.write_text(yaml.safe_dump({"database_url": f"sqlite:///{tmp_path / 'm.db'}",
                                      "models": {"loan_default": {
                                          "schema": str(ROOT / "schemas" / "loan_default.yaml"),
                                          "reference": str(ROOT / "sample_data" /
                                                           "reference.parquet")}}}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "monitor", "--config", str(config), "loadtest", "--model",
         "loan_default", srv.url, "--duration", "600", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "MQM_CONFIG"})
    try:
        wait_until(lambda: srv.count() >= 20 or proc.poll() is not None, "20 requests")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    result = json.loads(out)
    assert result["interrupted"] is True
    # Every request the client counts reached the server; at the interrupt, at most one
    # per connection may have reached the server without its answer being read (seen
    # once in 5 runs: the server counted 31, the client 30, with a connection reset).
    assert 20 <= result["requests"] <= srv.count() <= result["requests"] + result["concurrency"]
    assert result["elapsed_seconds"] < 600


def test_quantiles_are_numpys() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 1000):
        values = sorted(rng.exponential(3.0, n).tolist())
        for q in (0.5, 0.95, 0.99):
            assert _quantile(values, q) == pytest.approx(np.percentile(values, q * 100),
                                                         rel=1e-12)


def test_cpu_and_rss_of_a_busy_process() -> None:
    busy = subprocess.Popen([sys.executable, "-c",
                             "import sys, time\n"
                             "block = bytearray(60 * 2**20)\n"  # 60 MB resident
                             "for i in range(0, len(block), 4096): block[i] = 1\n"
                             "print('ready', flush=True)\n"
                             "sys.stdin.read(1)\n"  # idle until told
                             "t = time.process_time()\n"
                             "while time.process_time() - t < 1.0: pass\n"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert busy.stdout is not None and busy.stdin is not None
        assert busy.stdout.readline() == "ready\n"
        sampler = ProcessSampler(busy.pid, interval=0.1)
        sampler.start()
        busy.stdin.write("x")
        busy.stdin.flush()
        _, status, usage = os.wait4(busy.pid, 0)  # its CPU time, from the kernel at exit
        busy.returncode = os.waitstatus_to_exitcode(status)
        stats = sampler.stop()
    finally:
        if busy.returncode is None:
            busy.kill()
            busy.wait()
        busy.stdin.close()  # type: ignore[union-attr]
        busy.stdout.close()  # type: ignore[union-attr]
    assert stats.exited and stats.samples >= 2
    # The samples saw the busy second but what ran after the last one before the exit;
    # never more than the kernel counted for the whole process.
    total = usage.ru_utime + usage.ru_stime
    assert 0 < stats.cpu_seconds <= total + 0.01
    assert 0 < stats.cpu_percent <= stats.cpu_percent_peak
    assert stats.rss_mb_peak >= 60 and stats.rss_mb_start >= 60
    assert stats.rss_mb_start <= stats.rss_mb_median <= stats.rss_mb_peak
    assert total >= 1.0


def test_rss_agrees_with_ps() -> None:
    sampler = ProcessSampler(os.getpid(), interval=0.05)
    sampler.start()
    ps = int(subprocess.run(["ps", "-o", "rss=", "-p", str(os.getpid())], check=True,
                            capture_output=True, text=True).stdout) / 1024
    stats = sampler.stop()
    assert stats.rss_mb_start * 0.8 <= ps <= stats.rss_mb_peak * 1.2
    assert stats.threads_peak >= 2  # this thread and the sampler's


def test_a_pid_that_cannot_be_read_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MonitorError, match=r"--pid 999999999: no such process"):
        check_pid(999_999_999)
    with pytest.raises(MonitorError, match=r"--pid 0: no such process"):
        check_pid(0)
    with pytest.raises(MonitorError, match=r"/proc, which this system does not have"):
        check_pid(os.getpid(), proc=tmp_path)  # a /proc without entries: not Linux

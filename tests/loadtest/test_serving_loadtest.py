"""``mqm loadtest`` against the serving example (examples/serving/app.py), a real process.

The example's contract for bad input: a body that is not a JSON object is a 400; a JSON
object with wrong types, nulls, missing fields, out-of-range or non-finite numbers or unseen
categories is answered by the model with imputed or clipped values (``loan_model._number``),
a 200. So the test asserts that every invalid kind is answered that way, and that nothing
is a 5xx or a dropped connection.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from monitor.cli.main import main
from tests.client.test_serving_example import Client, start_app, stop_app
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

ROW_KINDS = ("wrong_type", "missing", "null", "out_of_range", "unseen_category", "non_finite")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "monitor.yaml"
    path.write_text(yaml.safe_dump({
        "database_url": f"sqlite:///{tmp_path / 'mqm.db'}",
        "models": {"loan_default": {"schema": str(ROOT / "schemas" / "loan_default.yaml"),
                                    "reference": str(ROOT / "sample_data" /
                                                     "reference.parquet")}}}))
    return path


def served_store(tmp_path: Path) -> str:
    """The store the example logs to (its --monitor-url takes a database URL with the full
    install), migrated as the monitor's `mqm db upgrade` would: the logger never does it."""
    from monitor.store.db import create_engine, ensure_schema

    url = f"sqlite:///{tmp_path / 'served.db'}"
    engine = create_engine(url)
    ensure_schema(engine)
    engine.dispose()
    return url


def loadtest(config: Path, url: str, *args: str) -> Any:
    result = CliRunner().invoke(main, ["--config", str(config), "loadtest", "--model",
                                       "loan_default", url, *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_loadtest_of_the_serving_example(config: Path, tmp_path: Path) -> None:
    app = start_app("--monitor-url", served_store(tmp_path))
    try:
        url = f"http://127.0.0.1:{app.port}/predict"  # type: ignore[attr-defined]
        out = loadtest(config, url, "--duration", "3", "--rate", "100", "--concurrency", "4",
                       "--invalid-share", "0.4", "--pid", str(app.pid), "--seed", "7",
                       "--json").stdout
        r = json.loads(out)
        # Request i is due at i/100 s, none before: at most 300 in the 3 s the run lasts.
        assert 0 < r["requests"] <= 300 and r["elapsed_seconds"] >= 3
        assert 0 < r["rate"] <= 100
        kinds = r["by_kind"]
        assert set(kinds) == {"valid", *ROW_KINDS, "malformed"}
        assert set(kinds["valid"]["answers"]) == {"200"}
        for kind in ROW_KINDS:  # answered by the model on imputed values, never a 5xx
            assert set(kinds[kind]["answers"]) <= {"200"}, (kind, kinds[kind])
        assert set(kinds["malformed"]["answers"]) == {"400"}
        assert r["server_errors"] == r["transport_errors"] == 0
        assert r["errors"] == r["client_errors"] == kinds["malformed"]["sent"] > 0
        assert r["default_rate"] == 0.0 and r["unreadable_answers"] == 0
        assert r["default_rule"] == "served_by=fallback"
        p = r["process"]
        assert p["pid"] == app.pid and not p["exited"] and p["samples"] >= 2
        assert p["cpu_seconds"] > 0 and p["cpu_percent"] > 0
        assert 0 < p["rss_mb_start"] <= p["rss_mb_peak"]
        # The service is still up, and its guard answered every 200 once.
        assert app.poll() is None
        assert Client(app.port).status()["guard"]["calls"] == r["ok"]  # type: ignore[attr-defined]

        # The table, with payloads made larger by longer free text.
        text = loadtest(config, url, "--duration", "1", "--rate", "50", "--text-length",
                        "1000:3000", "--pid", str(app.pid)).stdout
        lines = text.splitlines()
        assert lines[0].startswith(f"{url}: ") and "target 50 req/s" in lines[0]
        assert any(line.split()[:2] == ["latency", "ms"] and "p99" in line for line in lines)
        assert any(line.strip().startswith(f"process {app.pid}") and "CPU" in line
                   and "RSS" in line for line in lines)
        body = next(line for line in lines if line.strip().startswith("body bytes")).split()
        assert int(body[body.index("max") + 1]) > 1000
        valid = next(line for line in lines if line.strip().startswith("valid")).split()
        assert valid[1] == valid[2]  # sent == answered 200
    finally:
        stop_app(app)


def test_default_answers_are_read_from_the_answer(config: Path, tmp_path: Path) -> None:
    """Fallback forced on: every answer is the default, ``served_by: fallback``."""
    app = start_app("--monitor-url", served_store(tmp_path), "--default", "0",
                    env={"MQM_FORCE_FALLBACK": "loan_default"})
    try:
        url = f"http://127.0.0.1:{app.port}/predict"  # type: ignore[attr-defined]
        r = json.loads(loadtest(config, url, "--duration", "1", "--rate", "50",
                                "--json").stdout)
        assert r["requests"] > 0 and r["ok"] == r["requests"]
        assert r["default_answers"] == r["answered_rows"] == r["requests"]
        assert r["default_rate"] == 1.0
    finally:
        stop_app(app)


def test_the_example_answers_hostile_bodies_without_a_5xx(tmp_path: Path) -> None:
    """Found by the load test: Infinity (json reads it) or an integer past a float's range
    made the model raise (a 500); a deeply nested body or a bad Content-Length dropped the
    connection without an answer."""
    import http.client

    app = start_app("--monitor-url", served_store(tmp_path))
    try:
        port = app.port  # type: ignore[attr-defined]
        row = {"age": 45, "annual_income": 52800.0, "loan_amount": 27300.0,
               "credit_score": 765, "debt_to_income": 0.17, "employment_years": 7.9,
               "open_accounts": 6, "home_ownership": "RENT", "loan_purpose": "car",
               "has_cosigner": False, "application_channel": "web"}
        client = Client(port)
        for name, value in [("annual_income", float("inf")), ("annual_income", 10**400),
                            ("loan_amount", float("-inf")), ("age", float("nan")),
                            ("credit_score", -(10**400))]:
            status, body = client.call("POST", "/predict", {**row, name: value})
            assert status == 200 and body["served_by"] == "model", (name, value, body)
        for payload, headers in [
            (b"[" * 20_000 + b"]" * 20_000, {}),
            (b"{}", {"Content-Length": "abc"}),
            (b"{}", {"Content-Length": "-5"}),
        ]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.putrequest("POST", "/predict")
                conn.putheader("Content-Length", headers.get("Content-Length",
                                                             str(len(payload))))
                conn.endheaders(payload)
                response = conn.getresponse()
                assert response.status == 400 and b"error" in response.read()
            finally:
                conn.close()
        assert app.poll() is None
    finally:
        stop_app(app)

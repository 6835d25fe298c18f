"""The HTTP API (monitor.serve.api) on both backends: health, readiness, models, runs, the
fallback flag and its token rules, and a schemathesis run against its OpenAPI description."""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.parser import text_string_to_metric_families

from monitor.config import Config, ServeConfig
from monitor.fallback.flag import flag_document, list_events, set_override
from monitor.serve.api import ENV_TOKEN, create_app
from monitor.store.db import create_engine, ensure_schema
from monitor.store.runs import Metric, save_run
from tests.conftest import ROOT
from tests.serve.conftest import (
    check_run,
    drift_result,
    save_check_run,
    save_schema_run,
    schema_result,
)

with warnings.catch_warnings():
    # starlette 1.x warns at import that it prefers httpx2 to httpx; the client works.
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

M = "loan_default"
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def cfg(engine: sa.Engine, make_config) -> Config:  # type: ignore[no-untyped-def]
    _, config = make_config(engine.url.render_as_string(hide_password=False),
                            fallback={"default_prediction": 0})
    return config


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., TestClient]]:
    """Factory: a TestClient on ``create_app``; ``token`` None means MQM_API_TOKEN unset."""
    opened: list[TestClient] = []

    def make(engine: sa.Engine, config: Config, *, token: str | None = TOKEN,
             **kwargs: Any) -> TestClient:
        if token is None:
            monkeypatch.delenv(ENV_TOKEN, raising=False)
        else:
            monkeypatch.setenv(ENV_TOKEN, token)
        kwargs.setdefault("registry", CollectorRegistry())
        test_client = TestClient(create_app(engine, config, **kwargs))
        opened.append(test_client)
        return test_client

    yield make
    for test_client in opened:
        test_client.close()


def add_run(engine: sa.Engine, *, status: str = "ok", kind: str = "check", day: int = 1,
            finished: datetime | None = None, metrics: list[Metric] | None = None,
            reasons: tuple[str, ...] = ()) -> int:
    """A run of the window of 2026-10-``day``, stored as a complete typed document."""
    end = datetime(2026, 10, day, tzinfo=UTC) + timedelta(days=1)
    finished = finished or datetime.now(UTC)
    metrics = metrics or [Metric("run", "rows", 120.0)]
    if kind == "schema":
        return save_schema_run(engine, M, schema_result(rows=120, status=status,
                                                        reasons=reasons),
                               end=end, metrics=metrics, finished=finished)
    run = check_run(M, end=end, status=status, rows=120, reasons=reasons,
                    drift=drift_result(share_drifted=0.25))
    return save_check_run(engine, run, metrics=metrics, finished=finished)


# --- health and readiness ------------------------------------------------------------


def test_healthz_and_ready_when_young_and_fresh(engine: sa.Engine, cfg: Config,
                                                client) -> None:  # type: ignore[no-untyped-def]
    api = client(engine, cfg)
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz")
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["status"] == "ready"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["scheduler"] == {"ok": True, "running": None, "leader": None,
                                           "detail": "no scheduler in this process (API only)"}
    fresh = body["checks"]["freshness"]["models"][M]
    # Never run, but the service has just started: not held against it yet.
    assert fresh["ok"] is True and fresh["last_success_at"] is None
    assert fresh["max_age_seconds"] == 3 * 86400  # three windows by default
    assert "never run" in fresh["detail"]


def test_readyz_fails_for_a_model_that_never_ran_once_the_service_is_old(
        engine: sa.Engine, cfg: Config, client) -> None:  # type: ignore[no-untyped-def]
    api = client(engine, cfg)
    api.app.state.started_at -= timedelta(days=3, seconds=1)  # type: ignore[attr-defined]
    ready = api.get("/readyz")
    assert ready.status_code == 503
    freshness = ready.json()["checks"]["freshness"]
    assert freshness["ok"] is False and freshness["detail"] == f"stale: {M}"
    # A successful run makes it ready; an error run would not have.
    add_run(engine, status="error")
    assert api.get("/readyz").status_code == 503
    add_run(engine, status="critical", day=2)
    assert api.get("/readyz").status_code == 200


def test_readyz_fails_when_the_last_successful_run_is_too_old(
        engine: sa.Engine, cfg: Config, client) -> None:  # type: ignore[no-untyped-def]
    cfg = cfg.model_copy(update={"serve": ServeConfig(ready_max_age="1h")})
    api = client(engine, cfg)
    add_run(engine, finished=datetime.now(UTC) - timedelta(minutes=90))
    add_run(engine, kind="schema", day=2)  # a schema-only run is not a check run
    ready = api.get("/readyz")
    assert ready.status_code == 503
    model = ready.json()["checks"]["freshness"]["models"][M]
    assert model["ok"] is False and model["max_age_seconds"] == 3600
    assert 5390 < model["age_seconds"] < 5500
    assert "limit 60 min" in model["detail"]
    add_run(engine, status="warn", day=3)
    fresh = api.get("/readyz")
    assert fresh.status_code == 200
    assert fresh.json()["checks"]["freshness"]["models"][M]["age_seconds"] < 60


class FakeScheduler:
    def __init__(self, status: dict[str, Any] | Exception) -> None:
        self._status = status

    def status(self) -> dict[str, Any]:
        if isinstance(self._status, TimeoutError):
            time.sleep(1.0)  # its store does not answer
        if isinstance(self._status, Exception):
            raise self._status
        return self._status


@pytest.mark.parametrize(("status", "code", "detail"), [
    ({"running": True, "leader": True}, 200, "running, leader"),
    ({"running": True, "leader": False, "jobs": 3}, 200, "standby"),
    ({"running": False, "leader": False}, 503, "not running"),
    (RuntimeError("scheduler gone"), 503, "scheduler gone"),
    (TimeoutError(), 503, "status(): no answer within 0.5 s"),  # hangs: see FakeScheduler
])
def test_readyz_scheduler(tmp_path: Path, make_config, client, status: Any, code: int,
                          detail: str) -> None:  # type: ignore[no-untyped-def]
    _, config = make_config()
    engine = create_engine(config.database_url)
    ensure_schema(engine)
    ready = client(engine, config, scheduler=FakeScheduler(status),
                   ready_timeout=0.5).get("/readyz")
    assert ready.status_code == code
    assert detail in ready.json()["checks"]["scheduler"]["detail"]
    engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql",
                                                            marks=pytest.mark.postgres)])
def test_store_down_is_503_not_500(backend: str, tmp_path: Path, make_config, client,
                                   request: pytest.FixtureRequest) -> None:  # type: ignore[no-untyped-def]
    if backend == "sqlite":
        folder = tmp_path / "gone"
        engine = create_engine(f"sqlite:///{folder / 'store.db'}")
        ensure_schema(engine)
        engine.dispose()
        shutil.rmtree(folder)  # the file and its folder: SQLite cannot even create it again
    else:
        request.getfixturevalue("pg_url")  # skips (or fails under CI) without a server
        engine = create_engine("postgresql+psycopg://postgres@127.0.0.1:1/mqm",
                               connect_args={"connect_timeout": 2})
    _, config = make_config(engine.url.render_as_string(hide_password=False))
    api = client(engine, config)
    assert api.get("/healthz").status_code == 200
    ready = api.get("/readyz")
    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert checks["database"]["ok"] is False
    assert "cannot reach the store" in checks["database"]["detail"]
    assert checks["freshness"]["ok"] is False
    for path in ("/v1/models", f"/v1/models/{M}/fallback", f"/v1/models/{M}/runs",
                 "/v1/runs/1"):
        answer = api.get(path)
        assert answer.status_code == 503, (path, answer.text)
        assert answer.json()["detail"].startswith("the store cannot be reached")
    put = api.put(f"/v1/models/{M}/fallback", json={"active": True}, headers=AUTH)
    assert put.status_code == 503
    engine.dispose()


def test_readyz_gives_up_on_a_database_that_hangs(tmp_path: Path, make_config,
                                                  client) -> None:  # type: ignore[no-untyped-def]
    _, config = make_config()
    engine = create_engine(config.database_url)
    ensure_schema(engine)
    engine.dispose()
    sa.event.listen(engine, "connect", lambda *_: time.sleep(1.0))
    api = client(engine, config, ready_timeout=0.2)
    ready = api.get("/readyz")  # each connect sleeps 1 s: it answers without waiting for it
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"]["detail"] == "no answer within 0.2 s"


# --- metrics -------------------------------------------------------------------------


def test_metrics_at_the_exact_path(engine: sa.Engine, cfg: Config,
                                   client) -> None:  # type: ignore[no-untyped-def]
    registry = CollectorRegistry()
    Gauge("mqm_test_value", "A test gauge.", registry=registry).set(3)
    api = client(engine, cfg, registry=registry)
    scraped = api.get("/metrics", follow_redirects=False)
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(scraped.text)}
    assert families["mqm_test_value"].samples[0].value == 3


def test_metrics_default_registry(engine: sa.Engine, cfg: Config,
                                  client) -> None:  # type: ignore[no-untyped-def]
    add_run(engine)
    scraped = client(engine, cfg, registry=None).get("/metrics")
    assert scraped.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(scraped.text)}
    assert {"mqm_run_status", "mqm_fallback_active", "mqm_scrape_error"} <= set(families)
    assert families["mqm_scrape_error"].samples[0].value == 0
    statuses = {s.labels["status"]: s.value for s in families["mqm_run_status"].samples
                if s.labels["model"] == M}
    assert sum(statuses.values()) == 1  # the stored run's status, one of the five


# --- models and runs -----------------------------------------------------------------


def test_models_runs_paging_and_details(engine: sa.Engine, cfg: Config,
                                        client) -> None:  # type: ignore[no-untyped-def]
    api = client(engine, cfg)
    assert api.get("/v1/models").json() == {"models": [{
        "name": M, "window_seconds": 86400.0, "latest_run": None, "fallback_active": False,
        "fallback_stale": False}]}
    ids = [add_run(engine, day=d, status=s) for d, s in
           [(1, "ok"), (2, "warn"), (3, "critical")]]
    schema_id = add_run(engine, kind="schema", day=4)
    newest = add_run(engine, day=4, status="critical", reasons=("drift: age",), metrics=[
        Metric("run", "rows", 120.0), Metric("drift", "score", 0.31, "age"),
        Metric("drift", "score", math.nan, "income")])
    ids.append(newest)

    [model] = api.get("/v1/models").json()["models"]
    assert model["latest_run"] == {
        "id": newest, "status": "critical",
        "window": {"start": "2026-10-04T00:00:00Z", "end": "2026-10-05T00:00:00Z"},
        "finished_at": model["latest_run"]["finished_at"]}

    seen, before, pages = [], None, 0
    while True:
        params: dict[str, Any] = {"limit": 2}
        if before is not None:
            params["before"] = before
        page = api.get(f"/v1/models/{M}/runs", params=params).json()
        assert len(page["runs"]) <= 2
        seen += [r["id"] for r in page["runs"]]
        pages += 1
        before = page["next"]
        if before is None:
            break
    assert pages == 3
    assert seen == sorted([*ids, schema_id], reverse=True)  # newest first, each once
    checks = api.get(f"/v1/models/{M}/runs", params={"kind": "check"}).json()
    assert [r["id"] for r in checks["runs"]] == sorted(ids, reverse=True)
    first = checks["runs"][0]
    assert first["reasons"] == ["drift: age"] and first["kind"] == "check"
    assert first["window"] == {"start": "2026-10-04T00:00:00Z", "end": "2026-10-05T00:00:00Z"}

    detail = api.get(f"/v1/runs/{newest}").json()
    assert detail["summary"]["checks"]["drift"]["share_drifted"] == 0.25
    assert detail["metrics"] == [
        {"check": "run", "metric": "rows", "feature": None, "value": 120.0},
        {"check": "drift", "metric": "score", "feature": "age", "value": 0.31},
        {"check": "drift", "metric": "score", "feature": "income", "value": None},  # NaN
    ]
    missing = api.get("/v1/runs/999999")
    assert missing.status_code == 404 and "999999" in missing.json()["detail"]
    for bad in ("/v1/runs/0", f"/v1/runs/{2**63}", "/v1/runs/abc",
                f"/v1/models/{M}/runs?limit=0", f"/v1/models/{M}/runs?before={2**64}",
                f"/v1/models/{M}/runs?kind=other"):
        assert api.get(bad).status_code == 422, bad


def test_a_run_whose_document_cannot_be_read_is_still_served(
        engine: sa.Engine, cfg: Config, client,  # type: ignore[no-untyped-def]
        caplog: pytest.LogCaptureFixture) -> None:
    end = datetime(2026, 10, 2, tzinfo=UTC)
    summary = {"model": M, "status": "warn", "reasons": ["drift: age"],
               "checks": {"drift": {"share_drifted": 0.25}}}  # no window: no check run
    run_id = save_run(engine, model=M, kind="check", window_start=end - timedelta(days=1),
                      window_end=end, rows=120, status="warn", summary=summary, metrics=[],
                      config_hash="c" * 64, reference_version=None, started_at=end,
                      finished_at=end)
    api = client(engine, cfg)
    with caplog.at_level(logging.WARNING, logger="mqm.api"):
        [run] = api.get(f"/v1/models/{M}/runs").json()["runs"]
    assert f"run {run_id}: its document cannot be read" in caplog.text
    assert (run["id"], run["status"], run["rows"], run["reasons"], run["recomputes"]) == (
        run_id, "warn", 120, [], None)
    detail = api.get(f"/v1/runs/{run_id}").json()
    assert detail["summary"] == summary  # as stored
    assert api.get("/v1/models").json()["models"][0]["latest_run"]["id"] == run_id


def test_unknown_model_is_404(engine: sa.Engine, cfg: Config,
                              client) -> None:  # type: ignore[no-untyped-def]
    api = client(engine, cfg)
    for answer in (api.get("/v1/models/churn/fallback"), api.get("/v1/models/churn/runs"),
                   api.put("/v1/models/churn/fallback", json={"active": True}, headers=AUTH),
                   api.delete("/v1/models/churn/fallback", headers=AUTH)):
        assert answer.status_code == 404
        assert answer.json() == {
            "detail": "unknown model 'churn'; the config declares: loan_default"}


def test_a_model_name_with_a_slash_is_reachable(engine: sa.Engine, tmp_path: Path,
                                               schema_path: Path,
                                               client) -> None:  # type: ignore[no-untyped-def]
    """Clients quote a model name whole (``team%2Fchurn``); the server sees the decoded
    path, so each route takes the rest of the path up to its last segment as the name."""
    from urllib.parse import quote

    import yaml

    from monitor.config import load_config

    name = "team/churn"
    path = tmp_path / "slash.yaml"
    path.write_text(yaml.safe_dump({
        "database_url": engine.url.render_as_string(hide_password=False),
        "models": {name: {"schema": str(schema_path),
                          "reference": str(ROOT / "sample_data" / "reference.parquet"),
                          "window": "1d", "fallback": {"default_prediction": 0}}}}),
        encoding="utf-8")
    api = client(engine, load_config(path))
    assert [m["name"] for m in api.get("/v1/models").json()["models"]] == [name]
    for spelled in (quote(name, safe=""), name):
        base = f"/v1/models/{spelled}"
        assert api.get(f"{base}/runs").status_code == 200
        assert api.get(f"{base}/versions").status_code == 200
        assert api.get(f"{base}/fallback").json()["model"] == name
    put = api.put(f"/v1/models/{quote(name, safe='')}/fallback", headers=AUTH,
                  json={"active": True, "reason": "slash test"})
    assert put.status_code == 200, put.text
    assert flag_document(engine, load_config(path), name)["active"] is True
    assert api.delete(f"/v1/models/{name}/fallback", headers=AUTH).json()["active"] is False
    missing = api.get("/v1/models/team%2Fother/fallback")
    assert missing.status_code == 404
    assert missing.json()["detail"].startswith("unknown model 'team/other'")


# --- the fallback flag ----------------------------------------------------------------


def test_writes_refused_without_a_configured_token(engine: sa.Engine, cfg: Config,
                                                   client) -> None:  # type: ignore[no-untyped-def]
    api = client(engine, cfg, token=None)
    for answer in (api.put(f"/v1/models/{M}/fallback", json={"active": True}, headers=AUTH),
                   api.delete(f"/v1/models/{M}/fallback", headers=AUTH)):
        assert answer.status_code == 403
        assert "writes are disabled: set MQM_API_TOKEN" in answer.json()["detail"]
    assert api.get(f"/v1/models/{M}/fallback").json()["active"] is False
    assert list_events(engine, M) == []


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": "Bearer"},
    # Tokens are compared byte for byte: another case is another token.
    {"Authorization": f"Bearer {TOKEN.upper()}"}, {"Authorization": f"Bearer {TOKEN.title()}"},
])
def test_wrong_or_missing_token_is_401(tmp_path: Path, make_config, client,
                                       headers: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    _, config = make_config()
    engine = create_engine(config.database_url)
    ensure_schema(engine)
    api = client(engine, config)
    for answer in (api.put(f"/v1/models/{M}/fallback", json={"active": True},
                           headers=headers),
                   api.delete(f"/v1/models/{M}/fallback", headers=headers)):
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"] == "Bearer"
    assert list_events(engine, M) == []
    engine.dispose()


def test_override_set_and_cleared_through_the_api(engine: sa.Engine, cfg: Config,
                                                  client) -> None:  # type: ignore[no-untyped-def]
    api = client(engine, cfg, flag_ttl=60.0)  # any change seen below comes from the write
    before = api.get(f"/v1/models/{M}/fallback").json()
    assert (before["active"], before["source"], before["default_prediction"]) == (
        False, "auto", 0)

    until = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    put = api.put(f"/v1/models/{M}/fallback", headers=AUTH, json={
        "active": True, "until": until.isoformat(), "reason": "bad release 1.4",
        "by": "oncall@example.com"})
    assert put.status_code == 200, put.text
    doc = put.json()
    assert (doc["active"], doc["source"]) == (True, "manual")
    assert doc["expires_at"] == until.isoformat().replace("+00:00", "Z")
    assert api.get(f"/v1/models/{M}/fallback").json() == doc  # at once, despite the cache
    assert flag_document(engine, cfg, M)["active"] is True  # in the store
    [event] = list_events(engine, M)
    assert (event.kind, event.actor, event.reason, event.new_active) == (
        "manual", "oncall@example.com", "bad release 1.4", True)

    cleared = api.delete(f"/v1/models/{M}/fallback", headers=AUTH,
                         params={"reason": "rolled back"})
    assert cleared.status_code == 200
    assert (cleared.json()["active"], cleared.json()["source"]) == (False, "auto")
    assert api.get(f"/v1/models/{M}/fallback").json()["active"] is False
    assert api.get("/v1/models").json()["models"][0]["fallback_active"] is False
    latest = list_events(engine, M)[0]
    assert (latest.kind, latest.actor, latest.reason, latest.details["action"]) == (
        "manual", "api", "rolled back", "clear")

    # "by" defaults to "api"; a time without a zone is UTC; off is an override too.
    off = api.put(f"/v1/models/{M}/fallback", headers=AUTH, json={
        "active": False, "by": "  ", "until": "2099-01-01T00:00:00"})
    assert off.status_code == 200
    assert (off.json()["active"], off.json()["expires_at"]) == (False, "2099-01-01T00:00:00Z")
    assert list_events(engine, M)[0].actor == "api"


@pytest.mark.parametrize(("body", "field"), [
    ({}, "active"),
    ({"active": "maybe"}, "active"),
    # Issue 13, item 8: JSON true and false only, not what pydantic's lax mode reads as one.
    ({"active": "yes"}, "active"),
    ({"active": "true"}, "active"),
    ({"active": 1}, "active"),
    ({"active": 0}, "active"),
    ({"active": None}, "active"),
    ({"active": True, "until": 4102444800}, "until"),
    ({"active": True, "until": "2001-01-01T00:00:00Z"}, "until"),
    ({"active": True, "until": "next tuesday"}, "until"),
    ({"active": True, "until": "9999-12-31T23:00:00-05:00"}, "until"),
    ({"active": True, "reason": "a\x00b"}, "reason"),
    ({"active": True, "by": "x" * 201}, "by"),
    ({"active": True, "actor": "me"}, "actor"),
])
def test_bad_override_is_422(engine: sa.Engine, cfg: Config, client, body: dict[str, Any],
                             field: str) -> None:  # type: ignore[no-untyped-def]
    answer = client(engine, cfg).put(f"/v1/models/{M}/fallback", headers=AUTH, json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"][-1] == field
    assert list_events(engine, M) == []


@pytest.mark.parametrize(("method", "path"), [
    ("GET", f"/v1/models/{M}/runs?foo=1"),
    ("GET", f"/v1/models/{M}/runs?limit=5&Limit=1"),
    ("GET", "/v1/models?verbose=1"),
    ("GET", "/v1/runs/1?full=yes"),
    ("GET", f"/v1/models/{M}/fallback?model=other"),
    ("PUT", f"/v1/models/{M}/fallback?active=false"),
])
def test_unknown_query_parameters_are_refused_on_reads_too(
        engine: sa.Engine, cfg: Config, client, method: str,  # type: ignore[no-untyped-def]
        path: str) -> None:
    """Issue 13, item 8: a misspelt parameter must not be ignored silently, on a read
    either (it would answer something else than asked)."""
    add_run(engine)
    answer = client(engine, cfg).request(method, path, headers=AUTH, json={"active": True})
    assert answer.status_code == 422, answer.text
    name = path.rsplit("?", 1)[1].split("=")[0] if "&" not in path else "Limit"
    assert answer.json()["detail"][0]["loc"] == ["query", name]
    assert list_events(engine, M) == []


def test_known_query_parameters_still_work(engine: sa.Engine, cfg: Config,
                                           client) -> None:  # type: ignore[no-untyped-def]
    add_run(engine)
    api = client(engine, cfg)
    assert api.get(f"/v1/models/{M}/runs?limit=5&kind=check&before=100").status_code == 200
    assert api.get("/healthz?probe=lb").status_code == 200  # probes are left alone
    spec = api.get("/openapi.json").json()
    for path, ops in spec["paths"].items():
        if path.startswith("/v1/"):
            for method, op in ops.items():
                assert "422" in op["responses"], (method, path)


def test_bad_override_bodies_that_are_not_json(engine: sa.Engine, cfg: Config,
                                               client) -> None:  # type: ignore[no-untyped-def]
    api = client(engine, cfg)
    url = f"/v1/models/{M}/fallback"
    assert api.put(url, headers=AUTH, content=b"{not json").status_code == 422
    assert api.put(url, headers={**AUTH, "Content-Type": "application/json"},
                   content=b'{"active": true, "reason": "\\ud800"}').status_code == 422
    assert api.put(url, headers={**AUTH, "Content-Type": "application/json"},
                   content=b'{"active": NaN}').status_code == 422
    assert api.put(url, headers=AUTH, data={"active": "true"}).status_code == 422  # a form
    assert api.delete(url, headers=AUTH, params={"by": "a\x00"}).status_code == 422
    assert api.delete(url, headers=AUTH, params={"resaon": "typo"}).status_code == 422
    huge = api.put(url, headers=AUTH, json={"active": True, "reason": "x" * 70_000})
    assert huge.status_code == 413
    assert list_events(engine, M) == []


def test_reading_the_flag_writes_no_file(engine: sa.Engine, cfg: Config, client,  # type: ignore[no-untyped-def]
                                         tmp_path: Path) -> None:
    flags = tmp_path / "flags"
    cfg = cfg.model_copy(update={"fallback_dir": flags})
    # An override that expired an hour ago: the read clears it in the store, as
    # flag_document does, but leaves the file to the writes.
    past = datetime.now(UTC) - timedelta(hours=2)
    set_override(engine, cfg, M, active=True, by="ops", until=past + timedelta(hours=1),
                 now=past)
    (flags / f"{M}.json").unlink()
    api = client(engine, cfg, flag_ttl=0.0)
    served = api.get(f"/v1/models/{M}/fallback").json()
    assert (served["active"], served["source"]) == (False, "auto")
    assert api.get("/v1/models").json()["models"][0]["fallback_active"] is False
    assert not (flags / f"{M}.json").exists()
    assert [e.kind for e in list_events(engine, M)] == ["expiry", "manual"]
    assert flag_document(engine, cfg, M) == served  # the document flag_document computes
    # A write through the API writes the file.
    put = api.put(f"/v1/models/{M}/fallback", json={"active": True}, headers=AUTH)
    assert put.status_code == 200
    on_disk = json.loads((flags / f"{M}.json").read_text(encoding="utf-8"))
    assert on_disk == put.json()


def test_a_change_made_elsewhere_is_served_within_the_ttl(
        engine: sa.Engine, cfg: Config, client) -> None:  # type: ignore[no-untyped-def]
    now = [1000.0]  # the cache's clock, moved by hand: no sleep, no race with a busy machine
    api = client(engine, cfg, flag_ttl=0.3, flag_clock=lambda: now[0])
    assert api.get(f"/v1/models/{M}/fallback").json()["active"] is False
    # Another replica (or `mqm fallback set`) writes the store directly.
    set_override(engine, cfg, M, active=True, by="cli")
    now[0] += 0.29
    assert api.get(f"/v1/models/{M}/fallback").json()["active"] is False  # cached
    now[0] += 0.02
    assert api.get(f"/v1/models/{M}/fallback").json()["active"] is True


def test_openapi_declares_the_bearer_scheme_on_writes_only(
        engine: sa.Engine, cfg: Config, client) -> None:  # type: ignore[no-untyped-def]
    spec = client(engine, cfg).get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": "The token in MQM_API_TOKEN; "
        "posting logs and labels also takes serve.ingest_token (MQM_INGEST_TOKEN)."}
    secured = {(path, method) for path, ops in spec["paths"].items()
               for method, op in ops.items() if op.get("security")}
    assert secured == {("/v1/models/{model}/fallback", "put"),
                       ("/v1/models/{model}/fallback", "delete"),
                       ("/v1/models/{model}/logs", "post"),
                       ("/v1/models/{model}/labels", "post")}
    assert set(spec["paths"]) == {
        "/healthz", "/readyz", "/metrics", "/v1/models", "/v1/models/{model}/runs",
        "/v1/runs/{run_id}", "/v1/models/{model}/fallback", "/v1/models/{model}/logs",
        "/v1/models/{model}/labels", "/v1/models/{model}/versions"}
    # The batches are documented as what they are: JSON lines, with their bounds.
    post = spec["paths"]["/v1/models/{model}/logs"]["post"]
    assert set(post["requestBody"]["content"]) == {"application/x-ndjson"}
    assert {"200", "401", "403", "404", "413", "503"} <= set(post["responses"])


# --- schemathesis ---------------------------------------------------------------------


class _AppProxy:
    """The ASGI app under test, swapped per test: the schema is loaded at import (the
    description depends only on the model names), the store comes from fixtures."""

    def __init__(self) -> None:
        self.target: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.target(scope, receive, send)


_proxy = _AppProxy()
_proxy.target = create_app(
    sa.create_engine("sqlite://"),  # never connected: only /openapi.json is read
    Config.model_validate({"models": {M: {"schema": "loan_default.yaml",
                                          "reference": "reference.parquet"}}}),
    registry=CollectorRegistry())
schema = schemathesis.openapi.from_asgi("/openapi.json", _proxy)


@schemathesis.serializer("application/x-ndjson")
def _json_lines(ctx: Any, value: Any) -> bytes | None:
    """A posted batch is text (JSON lines); a generated one is sent as it is, lone
    surrogates and all (they become bytes that are not UTF-8, a bad row each)."""
    return None if value is None else str(value).encode("utf-8", "surrogatepass")


@pytest.fixture
def api_under_test(engine: sa.Engine, cfg: Config, monkeypatch: pytest.MonkeyPatch
                   ) -> Iterator[None]:
    monkeypatch.setenv(ENV_TOKEN, TOKEN)
    for day, status in enumerate(("ok", "critical", "critical"), start=1):
        add_run(engine, day=day, status=status,
                metrics=[Metric("run", "rows", 120.0), Metric("drift", "score", 0.2, "age")])
    _proxy.target = create_app(engine, cfg)  # as shipped: monitor.serve.metrics' registry
    yield
    _proxy.target = None


@schema.auth()
class _Token:
    """The token of the write routes, known to schemathesis as their auth: it still
    checks that a request without it is refused (ignored_auth)."""

    def get(self, case: Any, ctx: Any) -> str:
        return TOKEN

    def set(self, case: Any, data: str, ctx: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@schema.parametrize()
@settings(max_examples=15, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_schemathesis_finds_no_server_errors(case: Any, api_under_test: None) -> None:
    excluded = []
    if case.method == "PUT" and isinstance(case.body, dict) and case.body.get("until"):
        # Whether an expiry is valid depends on the clock (it must be in the future),
        # which a schema cannot say: a generated past time is rightly refused with 422.
        from schemathesis.specs.openapi.checks import positive_data_acceptance

        excluded.append(positive_data_acceptance)
    if case.method == "POST":
        # A batch is text, and any text is a batch (its bad lines are refused one by one,
        # with 200): a "wrongly typed" generated body is still text once sent.
        from schemathesis.specs.openapi.checks import negative_data_rejection

        excluded.append(negative_data_rejection)
    case.call_and_validate(excluded_checks=excluded)

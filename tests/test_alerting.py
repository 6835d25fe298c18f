"""mqm's own posts to Alertmanager's v2 API: what is posted, when, and that a failure
never stops a check. A real HTTP server on loopback stands where Alertmanager would;
the end-to-end test with the real Alertmanager is in tests/alerts/."""

from __future__ import annotations

import json
import logging
import shutil
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from monitor import alerting
from monitor.alerting import FLAG_ALERT, RUN_ALERT, alerts_for, post_alerts
from monitor.config import AlertingConfig, Config
from monitor.fallback.flag import clear_override, set_override
from monitor.run.check import run_check
from monitor.store.db import create_engine

STABLE = datetime(2026, 10, 5, tzinfo=UTC)
DRIFTED = datetime(2026, 10, 13, tzinfo=UTC)
LATER = datetime(2026, 11, 27, tzinfo=UTC)
M = "loan_default"


class Receiver:
    """Collects the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, list[dict[str, Any]]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                outer.posts.append((self.path, json.loads(self.rfile.read(length))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def alerts(self) -> dict[str, dict[str, Any]]:
        """The last posted state of each alert, by name."""
        last: dict[str, dict[str, Any]] = {}
        for _, body in self.posts:
            for alert in body:
                last[alert["labels"]["alertname"]] = alert
        return last


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    rec.server.shutdown()
    rec.server.server_close()


def _firing(alert: dict[str, Any]) -> bool:
    return datetime.fromisoformat(alert["endsAt"]) > datetime.fromisoformat(alert["startsAt"])


def test_alerts_follow_the_flag_and_the_run() -> None:
    on = {"active": True, "source": "auto", "reason": "2 critical runs in a row"}
    by_name = {a.name: a for a in alerts_for(M, on, "critical", ("drift: 5 of 12",))}
    assert by_name[FLAG_ALERT].firing and by_name[RUN_ALERT].firing
    assert "2 critical runs" in by_name[FLAG_ALERT].description
    assert "drift: 5 of 12" in by_name[RUN_ALERT].description
    off = {a.name: a for a in alerts_for(M, {"active": False}, "ok")}
    assert not off[FLAG_ALERT].firing and not off[RUN_ALERT].firing
    # Without a run (an override changed the flag) only the flag's alert is posted.
    assert [a.name for a in alerts_for(M, on, None)] == [FLAG_ALERT]


def test_a_post_carries_labels_annotations_and_ends_at(receiver: Receiver,
                                                      make_config) -> None:
    _, cfg = make_config(window="1h", schedule={"delay": "5m"})
    settings = AlertingConfig(alertmanager_url=receiver.url, labels={"team": "risk"},
                              dashboard_url="http://dash:8501/")
    now = datetime(2026, 10, 1, 12, tzinfo=UTC)
    alerts = alerts_for(M, {"active": True}, "ok")
    assert post_alerts(settings, cfg.model(M), alerts, now)
    [(path, body)] = receiver.posts
    assert path == "/api/v2/alerts"
    flag, run = body
    assert flag["labels"] == {"team": "risk", "alertname": FLAG_ALERT, "model": M,
                              "severity": "critical", "source": "mqm"}
    assert flag["annotations"]["runbook_url"].endswith("RUNBOOK.md#mqmfallbackactive")
    assert flag["annotations"]["dashboard_url"] == f"http://dash:8501/?model={M}"
    # Firing: held for two windows and the delay; not firing: ends now, which resolves it.
    ends = datetime.fromisoformat(flag["endsAt"]) - datetime.fromisoformat(flag["startsAt"])
    assert ends == timedelta(hours=2, minutes=5)
    assert run["endsAt"] == run["startsAt"]


def test_a_failed_post_is_counted_and_logged_never_raised(
        make_config, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    _, cfg = make_config()
    settings = AlertingConfig(alertmanager_url=f"http://127.0.0.1:{port}", timeout="1s")
    before = alerting.post_failures()
    with caplog.at_level(logging.WARNING, logger="mqm.alerting"):
        assert not post_alerts(settings, cfg.model(M), alerts_for(M, {"active": True}, None),
                               datetime.now(UTC))
    assert alerting.post_failures() == before + 1
    assert f"127.0.0.1:{port}" in caplog.text
    # Without a URL nothing is posted and nothing fails.
    assert post_alerts(AlertingConfig(), cfg.model(M), alerts_for(M, {}, None), LATER)


def _with_alerting(cfg: Config, url: str) -> Config:
    return cfg.model_copy(update={"alerting": AlertingConfig(alertmanager_url=url)})


def test_runs_and_overrides_post_the_truth(sample_store: Path, tmp_path: Path, make_config,
                                          receiver: Receiver) -> None:
    db = tmp_path / "store.db"
    shutil.copyfile(sample_store, db)
    _, cfg = make_config(f"sqlite:///{db}", min_rows=500, fallback={"trip_after": 2})
    cfg = _with_alerting(cfg, receiver.url)
    engine = create_engine(cfg.database_url)
    try:
        bad = run_check(engine, cfg, M, at=DRIFTED, now=LATER)
        assert bad is not None and bad.status == "critical"
        alerts = receiver.alerts()
        assert _firing(alerts[RUN_ALERT]) and not _firing(alerts[FLAG_ALERT])  # trip_after 2
        run_check(engine, cfg, M, at=DRIFTED + timedelta(days=1), now=LATER)
        assert _firing(receiver.alerts()[FLAG_ALERT])  # the second critical run trips it

        # A manual override is announced too: forced off, the flag's alert resolves.
        set_override(engine, cfg, M, active=False, by="oncall", now=LATER)
        assert not _firing(receiver.alerts()[FLAG_ALERT])
        clear_override(engine, cfg, M, by="oncall", now=LATER)
        assert _firing(receiver.alerts()[FLAG_ALERT])

        ok = run_check(engine, cfg, M, at=STABLE, now=LATER)
        assert ok is not None and ok.status == "ok"
        assert not _firing(receiver.alerts()[RUN_ALERT])
    finally:
        engine.dispose()


def test_an_unreachable_alertmanager_does_not_stop_a_check(sample_store: Path, tmp_path: Path,
                                                          make_config) -> None:
    db = tmp_path / "store.db"
    shutil.copyfile(sample_store, db)
    _, cfg = make_config(f"sqlite:///{db}", min_rows=500)
    cfg = _with_alerting(cfg, "http://127.0.0.1:9")  # discard port: refused at once
    engine = create_engine(cfg.database_url)
    try:
        run = run_check(engine, cfg, M, at=DRIFTED, now=LATER)
        assert run is not None and run.run_id is not None and run.status == "critical"
    finally:
        engine.dispose()


def test_failed_posts_are_exported(engine, make_config) -> None:  # type: ignore[no-untyped-def]
    from monitor.serve.metrics import build_registry

    _, cfg = make_config(engine.url.render_as_string(hide_password=False))
    registry = build_registry(engine, cfg)
    before = registry.get_sample_value("mqm_alert_post_failures_total")
    post_alerts(AlertingConfig(alertmanager_url="http://127.0.0.1:9", timeout="1s"),
                cfg.model(M), alerts_for(M, {"active": True}, None), LATER)
    assert registry.get_sample_value("mqm_alert_post_failures_total") == before + 1

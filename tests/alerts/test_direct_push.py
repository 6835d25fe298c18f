"""End to end without Prometheus: ``alerting.alertmanager_url`` makes ``mqm check`` post
its own alerts to the real Alertmanager (the shipped config, rendered with the webhook's
URL, group waits shortened); a critical run pages, the flag it trips pages, and a clean
window checked next resolves both. Everything listens on 127.0.0.1, on free ports.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from monitor.store.db import create_engine
from monitor.store.runs import latest_runs
from tests.alerts.stack import (
    BOUND,
    CLEAN_END,
    CRITICAL_END,
    MODEL,
    Alertmanager,
    Processes,
    Webhook,
    fast_alertmanager_config,
    mqm,
    render_alertmanager,
    require,
    wait_for,
)
from tests.conftest import ROOT


def _finished_at(db: Path, status: str) -> float:
    engine = create_engine(f"sqlite:///{db}")
    try:
        [run] = latest_runs(engine, MODEL, kind="check", limit=1)
    finally:
        engine.dispose()
    assert run.status == status
    return run.finished_at.timestamp()


@pytest.mark.slow
def test_mqm_posts_its_alerts_to_alertmanager_and_resolves_them(
        tmp_path: Path, processes: Processes, webhook: Webhook, logs_file: Path,
        small_reference: Path) -> None:
    require("prometheus-alertmanager")
    am_config = tmp_path / "alertmanager.yml"
    rendered = render_alertmanager(am_config, webhook.url("/alerts"), webhook.url("/watchdog"))
    assert rendered.returncode == 0, rendered.stderr
    fast_alertmanager_config(am_config)
    am = Alertmanager(processes, am_config)

    db = tmp_path / "mqm.db"
    config = tmp_path / "monitor.yaml"
    config.write_text(yaml.safe_dump({
        "database_url": f"sqlite:///{db}",
        "alerting": {"alertmanager_url": am.url, "labels": {"team": "risk"},
                     "dashboard_url": "http://localhost:8501"},
        "models": {MODEL: {"schema": str(ROOT / "schemas" / "loan_default.yaml"),
                           "reference": str(small_reference), "window": "1d",
                           "min_rows": 100,
                           "fallback": {"trip_after": 1, "recover_after": 1}}},
    }), encoding="utf-8")
    mqm(config, "ingest", "--model", MODEL, str(logs_file))

    before = time.monotonic()
    mqm(config, "check", "--model", MODEL, "--at", CRITICAL_END)
    stored = _finished_at(db, "critical")
    critical = wait_for(lambda: webhook.find("MqmModelCritical", "firing", after=before),
                        BOUND, "MqmModelCritical from mqm itself",
                        lambda: webhook.dump() + "\n" + processes.logs())
    to_firing = critical.wall - stored
    [alert] = critical.alerts("MqmModelCritical", "firing")
    assert alert["labels"] == {"alertname": "MqmModelCritical", "model": MODEL,
                               "severity": "critical", "source": "mqm", "team": "risk"}
    assert alert["annotations"]["runbook_url"].endswith("RUNBOOK.md#mqmmodelcritical")
    assert alert["annotations"]["dashboard_url"] == f"http://localhost:8501/?model={MODEL}"
    assert "schema" in alert["annotations"]["description"]
    assert critical.body["receiver"] == "mqm-critical"
    flag = wait_for(lambda: webhook.find("MqmFallbackActive", "firing", after=before), BOUND,
                    "MqmFallbackActive from mqm itself", webhook.dump)
    [flag_alert] = flag.alerts("MqmFallbackActive", "firing")
    assert "is on (auto)" in flag_alert["annotations"]["description"]

    before = time.monotonic()
    mqm(config, "check", "--model", MODEL, "--at", CLEAN_END)
    recovered = _finished_at(db, "ok")
    resolved = wait_for(lambda: webhook.find("MqmModelCritical", "resolved", after=before),
                        BOUND, "MqmModelCritical resolved",
                        lambda: webhook.dump() + "\n" + processes.logs())
    to_resolved = resolved.wall - recovered
    wait_for(lambda: webhook.find("MqmFallbackActive", "resolved", after=before), BOUND,
             "MqmFallbackActive resolved", webhook.dump)
    assert not [a for a in am.alerts() if a["labels"].get("source") == "mqm"
                and a["status"]["state"] == "active"]
    print(f"\ndirect push timings: critical run -> webhook {to_firing:.1f} s; "
          f"recovery run -> resolved {to_resolved:.1f} s (group_wait and group_interval 1 s)")

"""End to end with the real servers: a critical check run of a real ``mqm serve`` reaches a
webhook through Prometheus (the shipped rules, ``for:`` shortened) and Alertmanager (the
shipped config, rendered with the webhook's URL, group waits shortened); a clean window
checked next sends the resolved notice. Everything listens on 127.0.0.1, on free ports.

The seconds from each stored run to its notification are printed (``pytest -s``).
"""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.alerts.stack import (
    BOUND,
    CLEAN_END,
    CRITICAL_END,
    MODEL,
    RUNBOOK_BASE,
    Alertmanager,
    Processes,
    Prometheus,
    Webhook,
    answers,
    fast_alertmanager_config,
    fast_rules,
    free_port,
    get_json,
    loopback_prometheus_config,
    mqm,
    render_alertmanager,
    require,
    wait_for,
)
from tests.conftest import ROOT


def finished_at(port: int, status: str) -> float:
    """Unix time at which the model's newest run finished (asserting its status)."""
    runs = get_json(f"http://127.0.0.1:{port}/v1/models/{MODEL}/runs?limit=1")["runs"]
    assert runs[0]["status"] == status
    return datetime.fromisoformat(runs[0]["finished_at"].replace("Z", "+00:00")).timestamp()


def _firing(notification: Any, alertname: str) -> dict[str, Any]:
    [alert] = notification.alerts(alertname, "firing")
    return dict(alert)


@pytest.mark.slow
def test_a_critical_run_reaches_the_webhook_and_its_recovery_resolves_it(
        tmp_path: Path, processes: Processes, webhook: Webhook, logs_file: Path,
        small_reference: Path) -> None:
    for binary in ("prometheus", "prometheus-alertmanager", "promtool", "amtool"):
        require(binary)

    # The store: the logs of both days, no run yet.
    config = tmp_path / "monitor.yaml"
    config.write_text(yaml.safe_dump({
        "database_url": f"sqlite:///{tmp_path / 'mqm.db'}",
        "models": {MODEL: {"schema": str(ROOT / "schemas" / "loan_default.yaml"),
                           "reference": str(small_reference), "version": "1.4.0",
                           "window": "1d", "min_rows": 100}},
    }), encoding="utf-8")
    mqm(config, "ingest", "--model", MODEL, str(logs_file))

    # mqm serve (API and /metrics only: the test decides when runs happen).
    serve_port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("MQM_DATABASE_URL", "MQM_CONFIG")}
    serve = processes.start("serve", [
        sys.executable, "-m", "monitor", "--config", str(config), "serve",
        "--host", "127.0.0.1", "--port", str(serve_port), "--no-scheduler",
    ], cwd=tmp_path, env=env)

    # Alertmanager: the shipped config rendered as the compose entrypoint does.
    am_config = tmp_path / "alertmanager.yml"
    rendered = render_alertmanager(am_config, webhook.url("/alerts"), webhook.url("/watchdog"))
    assert rendered.returncode == 0, rendered.stderr
    fast_alertmanager_config(am_config)
    am = Alertmanager(processes, am_config)

    wait_for(lambda: serve.poll() is not None or answers(f"http://127.0.0.1:{serve_port}/healthz"),
             BOUND, "mqm serve answers", processes.logs)
    assert serve.poll() is None, processes.logs()

    # Prometheus: alerts/prometheus.yml on loopback, 1 s scrapes and evaluations, the
    # shipped rules with every for: set to 1 s.
    rules = fast_rules(tmp_path / "mqm.rules.yml", "1s")
    prom_config = loopback_prometheus_config(
        tmp_path / "prometheus.yml", rules, f"127.0.0.1:{serve_port}",
        f"127.0.0.1:{am.port}")
    prometheus = Prometheus(processes, prom_config)

    # The pipeline works before any run: mqm is scraped and the watchdog arrives.
    wait_for(lambda: prometheus.query('up{job="mqm"} == 1'), BOUND, "mqm is scraped",
             processes.logs)
    watchdog = wait_for(lambda: webhook.find("MqmWatchdog", "firing", "/watchdog"), BOUND,
                        "the watchdog reaches its receiver",
                        lambda: webhook.dump() + "\n" + processes.logs())
    assert watchdog.body["receiver"] == "mqm-watchdog"
    assert webhook.find("MqmModelCritical", "firing") is None

    # A critical run. Timings count from the run's finished_at (its commit), not from the
    # end of the `mqm check` process, which exits a while after.
    before = time.monotonic()
    result = mqm(config, "check", "--model", MODEL, "--at", CRITICAL_END)
    assert "critical" in result.stdout
    stored = finished_at(serve_port, "critical")
    note = wait_for(lambda: webhook.find("MqmModelCritical", "firing", after=before), BOUND,
                    "MqmModelCritical reaches the webhook",
                    lambda: webhook.dump() + "\n" + processes.logs())
    to_firing = note.wall - stored
    alert = _firing(note, "MqmModelCritical")
    assert note.path == "/alerts" and note.body["receiver"] == "mqm-critical"
    assert note.body["groupLabels"] == {"alertname": "MqmModelCritical", "model": MODEL}
    assert alert["labels"] == {"alertname": "MqmModelCritical", "model": MODEL,
                               "severity": "critical", "version": "1.4.0", "job": "mqm",
                               "instance": f"127.0.0.1:{serve_port}"}
    assert alert["annotations"]["runbook_url"] == f"{RUNBOOK_BASE}#mqmmodelcritical"
    assert alert["annotations"]["dashboard_url"] == f"http://localhost:8501/?model={MODEL}"
    assert alert["annotations"]["summary"] == "The latest check run of a model is critical."
    assert "is critical, over a window of 2934 rows. Critical sections: " \
        in alert["annotations"]["description"]
    assert "schema" in alert["annotations"]["description"]
    # The section alerts of the same run name the column.
    feature = wait_for(lambda: webhook.find("MqmSchemaFeatureViolations", "firing"), BOUND,
                       "the schema column alert", webhook.dump)
    columns = {a["labels"]["feature"] for a in feature.alerts("MqmSchemaFeatureViolations")}
    assert "home_ownership" in columns
    assert feature.body["receiver"] == "mqm-warning"

    # Recovery: a clean, newer window is checked; its ok run replaces the verdict.
    before = time.monotonic()
    result = mqm(config, "check", "--model", MODEL, "--at", CLEAN_END)
    assert "ok" in result.stdout
    recovered = finished_at(serve_port, "ok")
    note = wait_for(lambda: webhook.find("MqmModelCritical", "resolved", after=before),
                    BOUND, "the resolved notice of MqmModelCritical",
                    lambda: webhook.dump() + "\n" + processes.logs())
    to_resolved = note.wall - recovered
    [resolved] = note.alerts("MqmModelCritical", "resolved")
    assert resolved["labels"]["model"] == MODEL
    assert resolved["annotations"]["runbook_url"] == f"{RUNBOOK_BASE}#mqmmodelcritical"
    assert note.body["receiver"] == "mqm-critical"
    assert not [a for a in am.alerts() if a["labels"]["alertname"] == "MqmModelCritical"
                and a["status"]["state"] == "active"]

    print(f"\ne2e timings: critical run -> webhook {to_firing:.1f} s; "
          f"recovery run -> resolved {to_resolved:.1f} s "
          "(1 s scrape and evaluation, for: 1 s, group_wait and group_interval 1 s)")

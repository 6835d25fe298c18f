"""End to end with the real servers: a critical check run of a real ``mqm serve`` reaches a
webhook through Prometheus (the shipped rules, ``for:`` shortened) and Alertmanager (the
shipped config, rendered with the webhook's URL, group waits shortened); a clean window
checked next sends the resolved notice. Everything listens on 127.0.0.1, on free ports.

The seconds from each stored run to its notification are printed (``pytest -s``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.alerts.stack import (
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
    render_alertmanager,
    require,
    wait_for,
)
from tests.conftest import ROOT

MODEL = "loan_default"
CRITICAL_DAY = "2026-10-10"   # the sample's new category, wrong types, drift: critical
CLEAN_DAY = "2026-10-02"      # a clean day of the sample...
CLEAN_SHIFT_DAYS = 18         # ...replayed on 2026-10-20, after the critical one
CRITICAL_END = "2026-10-11T00:00:00Z"
CLEAN_END = "2026-10-21T00:00:00Z"
BOUND = 30.0  # seconds: the longest any single step may take


@pytest.fixture(scope="module")
def logs_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One log file: the sample's critical day, and a clean day moved after it."""
    import pandas as pd

    logs = pd.read_parquet(ROOT / "sample_data" / "production_logs.parquet")
    day = logs["timestamp"].dt.strftime("%Y-%m-%d")
    critical = logs[day == CRITICAL_DAY]
    clean = logs[day == CLEAN_DAY].copy()
    clean["timestamp"] += pd.Timedelta(days=CLEAN_SHIFT_DAYS)
    clean["request_id"] = "replay-" + clean["request_id"]
    path = tmp_path_factory.mktemp("logs") / "logs.parquet"
    pd.concat([critical, clean], ignore_index=True).to_parquet(path)
    return path


@pytest.fixture(scope="module")
def small_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2,000 rows of the sample reference: a check of a process takes about a second less."""
    import pandas as pd

    path = tmp_path_factory.mktemp("reference") / "reference.parquet"
    reference = pd.read_parquet(ROOT / "sample_data" / "reference.parquet")
    reference.sample(2000, random_state=0).to_parquet(path)
    return path


def mqm(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MQM_DATABASE_URL", "MQM_CONFIG")}
    result = subprocess.run([sys.executable, "-m", "monitor", "--config", str(config), *args],
                            capture_output=True, text=True, timeout=120, env=env,
                            cwd=config.parent, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


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
    assert to_firing < BOUND and to_resolved < BOUND

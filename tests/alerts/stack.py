"""Real Prometheus, Alertmanager and a webhook receiver on loopback, for the alerting tests.

Binaries are looked up on PATH (Debian: ``apt-get install prometheus
prometheus-alertmanager``); a missing one skips the test, or fails it when
``MQM_REQUIRE_ALERTING=1`` (set by ``.ci/run``). Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import yaml

from tests.conftest import ROOT

ALERTS = ROOT / "alerts"
RULES = ALERTS / "rules" / "mqm.rules.yml"
RULE_TESTS = ALERTS / "tests" / "mqm.rules.test.yml"
PROMETHEUS_YML = ALERTS / "prometheus.yml"
ALERTMANAGER_YML = ALERTS / "alertmanager.yml"
RENDER = ALERTS / "render-alertmanager.sh"
RUNBOOK = ALERTS / "RUNBOOK.md"
RUNBOOK_BASE = "https://github.com/mqm/mqm/blob/main/alerts/RUNBOOK.md"
ALERT_PLACEHOLDER = "http://mqm-alert-webhook.invalid/"
WATCHDOG_PLACEHOLDER = "http://mqm-watchdog-webhook.invalid/"


def require(binary: str) -> str:
    """The path of ``binary``; skips (or fails under MQM_REQUIRE_ALERTING=1) without it."""
    path = shutil.which(binary)
    if path is None:
        message = (f"{binary} is not on PATH (apt-get install prometheus "
                   "prometheus-alertmanager); alerting test skipped")
        if os.environ.get("MQM_REQUIRE_ALERTING") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def run(args: list[str], timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False,
                          **kwargs)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             on_fail: Callable[[], str] = lambda: "") -> Any:
    """The first truthy value of ``predicate()``; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}\n{on_fail()}")
        time.sleep(0.05)


def get_json(url: str, timeout: float = 5) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.HTTPError):
        return False


# --- the webhook receiver ---------------------------------------------------------------


@dataclass(frozen=True)
class Notification:
    path: str
    at: float  # time.monotonic() when it arrived
    wall: float  # time.time() when it arrived
    body: dict[str, Any]

    def alerts(self, alertname: str, status: str | None = None) -> list[dict[str, Any]]:
        return [a for a in self.body.get("alerts", [])
                if a["labels"].get("alertname") == alertname
                and (status is None or a["status"] == status)]


class Webhook:
    """An HTTP server on 127.0.0.1 recording every POSTed JSON body (Alertmanager's
    webhook payload), in a thread."""

    def __init__(self) -> None:
        self.received: list[Notification] = []
        self._lock = threading.Lock()
        received, lock = self.received, self._lock

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                with lock:
                    received.append(Notification(self.path, time.monotonic(), time.time(), body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def find(self, alertname: str, status: str, path: str | None = None,
             after: float = 0.0) -> Notification | None:
        """The first notification (after ``after``) carrying ``alertname`` in ``status``."""
        with self._lock:
            for note in self.received:
                if note.at >= after and (path is None or note.path == path) \
                        and note.alerts(alertname, status):
                    return note
        return None

    def dump(self) -> str:
        with self._lock:
            return "\n".join(
                f"{n.path} {n.body.get('receiver')} {n.body.get('status')}: "
                + ", ".join(f"{a['labels'].get('alertname')}/{a['labels'].get('model')}"
                            f"={a['status']}" for a in n.body.get("alerts", []))
                for n in self.received)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


# --- processes --------------------------------------------------------------------------


class Processes:
    """Processes started by a test, each logging to a file; stopped at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, name: str, args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        log_path = self.tmp_path / f"{name}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, **kwargs)
        self.started.append((proc, log_path))
        return proc

    def logs(self) -> str:
        return "\n".join(f"--- {path.name} (exit {proc.poll()}):\n"
                         + path.read_text(errors="replace")[-3000:]
                         for proc, path in self.started)

    def stop_all(self) -> None:
        for proc, _ in reversed(self.started):
            if proc.poll() is None:
                proc.terminate()
        for proc, _ in self.started:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def render_alertmanager(dest: Path, alert_url: str | None, watchdog_url: str | None = None,
                        template: Path = ALERTMANAGER_YML) -> subprocess.CompletedProcess[str]:
    """Run the compose entrypoint's rendering (no command: render only)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MQM_ALERT_WEBHOOK_URL", "MQM_WATCHDOG_WEBHOOK_URL")}
    env.update(MQM_AM_TEMPLATE=str(template), MQM_AM_CONFIG=str(dest))
    if alert_url is not None:
        env["MQM_ALERT_WEBHOOK_URL"] = alert_url
    if watchdog_url is not None:
        env["MQM_WATCHDOG_WEBHOOK_URL"] = watchdog_url
    return run(["sh", str(RENDER)], env=env)


def fast_alertmanager_config(config: Path, wait: str = "1s") -> None:
    """Shorten every group_wait and group_interval of ``config`` in place."""
    data = yaml.safe_load(config.read_text(encoding="utf-8"))

    def shorten(route: dict[str, Any]) -> None:
        route["group_wait"] = route["group_interval"] = wait
        for child in route.get("routes", ()):
            shorten(child)

    shorten(data["route"])
    config.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def fast_rules(dest: Path, duration: str = "1s") -> Path:
    """The shipped rules with every ``for:`` replaced by ``duration``: the expressions,
    labels and annotations under test are the shipped ones."""
    data = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    for group in data["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = duration
    dest.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return dest


class Alertmanager:
    def __init__(self, processes: Processes, config: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = processes.start("alertmanager", [
            require("prometheus-alertmanager"), f"--config.file={config}",
            f"--storage.path={processes.tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address=",
            f"--web.external-url={self.url}",
        ])
        wait_for(lambda: self.proc.poll() is not None or answers(f"{self.url}/-/ready"), 30,
                 "Alertmanager is ready", processes.logs)
        assert self.proc.poll() is None, processes.logs()

    def post(self, alerts: list[dict[str, Any]]) -> None:
        request = urllib.request.Request(
            f"{self.url}/api/v2/alerts", data=json.dumps(alerts).encode(),
            headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200

    def alerts(self) -> list[dict[str, Any]]:
        return list(get_json(f"{self.url}/api/v2/alerts"))


class Prometheus:
    """Prometheus re-sending firing alerts every ``resend_delay`` (default 1m): an alert
    that fired before Alertmanager was discovered is otherwise dropped for a minute."""

    def __init__(self, processes: Processes, config: Path, resend_delay: str = "1s") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = processes.start("prometheus", [
            require("prometheus"), f"--config.file={config}",
            f"--storage.tsdb.path={processes.tmp_path / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            f"--rules.alert.resend-delay={resend_delay}",
        ])
        wait_for(lambda: self.proc.poll() is not None or answers(f"{self.url}/-/ready"), 30,
                 "Prometheus is ready", processes.logs)
        assert self.proc.poll() is None, processes.logs()

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = get_json(f"{self.url}/api/v1/query?{urlencode({'query': expr})}")
        return list(data["data"]["result"])


def loopback_prometheus_config(dest: Path, rules: Path, target: str, alertmanager: str,
                               interval: str = "1s") -> Path:
    """alerts/prometheus.yml with loopback addresses, ``interval`` scrapes and evaluations
    and ``rules`` as its only rule file."""
    data = yaml.safe_load(PROMETHEUS_YML.read_text(encoding="utf-8"))
    data["global"].update(scrape_interval=interval, evaluation_interval=interval,
                          scrape_timeout=interval)
    data["rule_files"] = [str(rules)]
    data["alerting"]["alertmanagers"][0]["static_configs"] = [{"targets": [alertmanager]}]
    [job] = [j for j in data["scrape_configs"] if j["job_name"] == "mqm"]
    job["static_configs"] = [{"targets": [target]}]
    dest.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return dest


# --- the sample model's days, and the mqm command ---------------------------------

MODEL = "loan_default"
CRITICAL_DAY = "2026-10-10"   # the sample's new category, wrong types, drift: critical
CLEAN_DAY = "2026-10-02"      # a clean day of the sample...
CLEAN_SHIFT_DAYS = 18         # ...replayed on 2026-10-20, after the critical one
CRITICAL_END = "2026-10-11T00:00:00Z"
CLEAN_END = "2026-10-21T00:00:00Z"
BOUND = 30.0  # seconds: the longest any single step may take


def mqm(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MQM_DATABASE_URL", "MQM_CONFIG")}
    result = subprocess.run([sys.executable, "-m", "monitor", "--config", str(config), *args],
                            capture_output=True, text=True, timeout=120, env=env,
                            cwd=config.parent, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result

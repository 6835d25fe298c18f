"""alerts/alertmanager.yml: valid as shipped and once its examples are uncommented, where
each alert goes (amtool), the environment rendering of the webhook URLs, and the
inhibition while the fallback flag fires, in a real Alertmanager."""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.alerts.stack import (
    ALERT_PLACEHOLDER,
    ALERTMANAGER_YML,
    RENDER,
    RULES,
    WATCHDOG_PLACEHOLDER,
    Alertmanager,
    Processes,
    Webhook,
    fast_alertmanager_config,
    render_alertmanager,
    run,
    wait_for,
)

RECEIVER_OF_SEVERITY = {"critical": "mqm-critical", "warning": "mqm-warning",
                        "info": "mqm-info"}
DRIFT_AND_ACCURACY = {"MqmDatasetDrift", "MqmFeatureDrift", "MqmAccuracyDrop",
                      "MqmEstimatedAccuracyDrop", "MqmEstimatedMaeRise"}


def _alerts_with_severity() -> list[tuple[str, str]]:
    data = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return list(dict.fromkeys((rule["alert"], rule["labels"]["severity"])
                              for group in data["groups"] for rule in group["rules"]))


def _routes_test(amtool: str, config: Path, receiver: str,
                 labels: dict[str, str]) -> tuple[int, str]:
    result = run([amtool, "config", "routes", "test", f"--config.file={config}",
                  f"--verify.receivers={receiver}", *(f"{k}={v}" for k, v in labels.items())])
    # stdout: the receivers; stderr: amtool's notes (and why a verification failed).
    return result.returncode, result.stdout.strip() + "\n" + result.stderr


def test_amtool_accepts_the_shipped_config(amtool: str) -> None:
    result = run([amtool, "check-config", str(ALERTMANAGER_YML)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 inhibit rules" in result.stdout and "5 receivers" in result.stdout


def uncomment_examples(text: str) -> str:
    """The config with every commented example receiver block uncommented."""
    out: list[str] = []
    inside: str | None = None
    for line in text.splitlines():
        if re.match(r"\s*# --- example:", line):
            inside = line[: line.index("#")]
            continue
        if inside is not None and line.startswith(inside + "# "):
            out.append(inside + line[len(inside) + 2:])
            continue
        inside = None
        out.append(line)
    return "\n".join(out) + "\n"


def test_the_commented_receivers_are_valid_once_uncommented(amtool: str,
                                                            tmp_path: Path) -> None:
    text = uncomment_examples(ALERTMANAGER_YML.read_text(encoding="utf-8"))
    receivers = {r["name"]: r for r in yaml.safe_load(text)["receivers"]}
    assert "pagerduty_configs" in receivers["mqm-critical"]
    assert "slack_configs" in receivers["mqm-warning"]
    assert "email_configs" in receivers["mqm-info"]
    config = tmp_path / "alertmanager.yml"
    config.write_text(text, encoding="utf-8")
    result = run([amtool, "check-config", str(config)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("alertname", "severity"), _alerts_with_severity())
def test_each_alert_is_routed_by_its_severity(amtool: str, alertname: str,
                                              severity: str) -> None:
    expected = "mqm-watchdog" if alertname == "MqmWatchdog" else RECEIVER_OF_SEVERITY[severity]
    model = "all" if alertname in ("MqmWatchdog", "MqmTargetDown", "MqmScrapeError") \
        else "loan_default"
    code, output = _routes_test(amtool, ALERTMANAGER_YML, expected,
                                {"alertname": alertname, "severity": severity, "model": model})
    assert code == 0, output
    assert output.splitlines()[0] == expected


@pytest.mark.parametrize(("labels", "receiver"), [
    ({"alertname": "MqmModelCritical", "severity": "critical", "model": "churn"},
     "mqm-critical"),
    ({"alertname": "MqmFeatureDrift", "severity": "warning", "model": "churn",
      "feature": "tenure"}, "mqm-warning"),
    # The watchdog is routed apart whatever its severity.
    ({"alertname": "MqmWatchdog", "severity": "critical", "model": "all"}, "mqm-watchdog"),
    # An alert without a known severity (another team's rule) still reaches someone.
    ({"alertname": "SomethingElse"}, "mqm-default"),
    ({"alertname": "SomethingElse", "severity": "page"}, "mqm-default"),
])
def test_routes(amtool: str, labels: dict[str, str], receiver: str) -> None:
    code, output = _routes_test(amtool, ALERTMANAGER_YML, receiver, labels)
    assert code == 0, output


def test_a_wrong_receiver_is_reported(amtool: str) -> None:
    code, _ = _routes_test(amtool, ALERTMANAGER_YML, "mqm-info",
                           {"alertname": "MqmModelCritical", "severity": "critical"})
    assert code != 0  # so the cases above do check something


def test_grouping_and_inhibition() -> None:
    data = yaml.safe_load(ALERTMANAGER_YML.read_text(encoding="utf-8"))
    assert data["route"]["group_by"] == ["model", "alertname"]
    [inhibit] = data["inhibit_rules"]
    assert inhibit["source_matchers"] == ['alertname="MqmFallbackActive"']
    assert inhibit["equal"] == ["model"]
    [target] = inhibit["target_matchers"]
    names = set(re.fullmatch(r'alertname=~"(.*)"', target).group(1).split("|"))  # type: ignore[union-attr]
    assert names == DRIFT_AND_ACCURACY
    assert names <= {name for name, _ in _alerts_with_severity()}
    for receiver in data["receivers"]:
        for hook in receiver.get("webhook_configs", ()):
            assert hook["url"] in (ALERT_PLACEHOLDER, WATCHDOG_PLACEHOLDER)


# --- the environment rendering (the compose entrypoint) ----------------------------------


def _urls(config: Path) -> dict[str, list[str]]:
    data = yaml.safe_load(config.read_text(encoding="utf-8"))
    return {r["name"]: [h["url"] for h in r.get("webhook_configs", ())]
            for r in data["receivers"]}


def test_render_fills_the_webhook_urls_from_the_environment(amtool: str,
                                                            tmp_path: Path) -> None:
    config = tmp_path / "am.yml"
    url = "https://hooks.example.com/mqm?token=a&b=c/d"
    result = render_alertmanager(config, url)
    assert result.returncode == 0, result.stderr
    urls = _urls(config)
    assert urls["mqm-watchdog"] == [url]  # the watchdog defaults to the same URL
    assert all(u == [url] for name, u in urls.items() if name != "mqm-watchdog")
    check = run([amtool, "check-config", str(config)])
    assert check.returncode == 0, check.stdout + check.stderr

    result = render_alertmanager(config, url, "https://hc-ping.example.com/uuid")
    assert result.returncode == 0, result.stderr
    assert _urls(config)["mqm-watchdog"] == ["https://hc-ping.example.com/uuid"]
    assert _urls(config)["mqm-critical"] == [url]


def test_render_without_urls_keeps_the_placeholders_and_says_so(tmp_path: Path) -> None:
    config = tmp_path / "am.yml"
    result = render_alertmanager(config, None)
    assert result.returncode == 0, result.stderr
    assert "MQM_ALERT_WEBHOOK_URL is not set" in result.stderr
    assert config.read_text(encoding="utf-8") == ALERTMANAGER_YML.read_text(encoding="utf-8")


@pytest.mark.parametrize("bad", ["hooks.example.com/x", "http://x/a b", "http://x/'a'",
                                 'http://x/"', "ftp://x/"])
def test_render_refuses_a_url_that_would_break_the_yaml(tmp_path: Path, bad: str) -> None:
    config = tmp_path / "am.yml"
    result = render_alertmanager(config, bad)
    assert result.returncode == 2
    assert "MQM_ALERT_WEBHOOK_URL must" in result.stderr
    assert not config.exists()


def test_render_then_runs_the_given_command(tmp_path: Path) -> None:
    config = tmp_path / "am.yml"
    env = {**os.environ, "MQM_AM_TEMPLATE": str(ALERTMANAGER_YML), "MQM_AM_CONFIG": str(config),
           "MQM_ALERT_WEBHOOK_URL": "http://127.0.0.1:1/x"}
    count = ("import os; print(open(os.environ['MQM_AM_CONFIG']).read()"
             ".count('127.0.0.1:1/x'))")
    result = run(["sh", str(RENDER), sys.executable, "-c", count], env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "5"


# --- a real Alertmanager ------------------------------------------------------------------


def _alert(name: str, model: str, severity: str) -> dict[str, Any]:
    return {"labels": {"alertname": name, "model": model, "severity": severity},
            "annotations": {"summary": name}}


def test_drift_and_accuracy_alerts_are_held_back_while_the_flag_fires(
        tmp_path: Path, processes: Processes, webhook: Webhook) -> None:
    config = tmp_path / "am.yml"
    assert render_alertmanager(config, webhook.url("/alerts"),
                               webhook.url("/watchdog")).returncode == 0
    fast_alertmanager_config(config)
    am = Alertmanager(processes, config)
    am.post([_alert("MqmFallbackActive", "tripped", "critical"),
             _alert("MqmDatasetDrift", "tripped", "critical"),
             _alert("MqmAccuracyDrop", "tripped", "critical"),
             _alert("MqmSchemaViolations", "tripped", "warning"),
             _alert("MqmDatasetDrift", "healthy_flag", "critical")])
    started = time.monotonic()
    for name, model in (("MqmFallbackActive", "tripped"), ("MqmSchemaViolations", "tripped"),
                        ("MqmDatasetDrift", "healthy_flag")):
        note = wait_for(lambda n=name: webhook.find(n, "firing"), 15,
                        f"{name} of {model} notified", webhook.dump)
        assert note.alerts(name)[0]["labels"]["model"] == model
    # Group waits are 1 s: twice that without the inhibited ones means they were held.
    time.sleep(max(0.0, started + 3 - time.monotonic()))
    notified = {(a["labels"]["alertname"], a["labels"]["model"])
                for n in webhook.received for a in n.body["alerts"]}
    assert ("MqmDatasetDrift", "tripped") not in notified, webhook.dump()
    assert ("MqmAccuracyDrop", "tripped") not in notified, webhook.dump()
    state = {(a["labels"]["alertname"], a["labels"]["model"]): a["status"]
             for a in am.alerts()}
    assert state[("MqmDatasetDrift", "tripped")]["state"] == "suppressed"
    assert state[("MqmDatasetDrift", "tripped")]["inhibitedBy"]
    assert state[("MqmAccuracyDrop", "tripped")]["inhibitedBy"]
    assert state[("MqmDatasetDrift", "healthy_flag")]["state"] == "active"
    assert state[("MqmSchemaViolations", "tripped")]["state"] == "active"
    [critical] = [n for n in webhook.received if n.alerts("MqmFallbackActive")]
    assert critical.body["receiver"] == "mqm-critical" and critical.path == "/alerts"


def test_render_runs_on_busybox_as_in_the_alertmanager_image(tmp_path: Path) -> None:
    """prom/alertmanager has busybox's sh, awk and mv only; run the script with those."""
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox is not installed (apt-get install busybox)")
    tools = tmp_path / "bin"
    tools.mkdir()
    for applet in ("sh", "awk", "mv"):
        (tools / applet).symlink_to(busybox)
    config = tmp_path / "am.yml"
    url = "https://hooks.example.com/mqm?a=1&b=2"
    env = {"PATH": str(tools), "MQM_AM_TEMPLATE": str(ALERTMANAGER_YML),
           "MQM_AM_CONFIG": str(config), "MQM_ALERT_WEBHOOK_URL": url,
           "HOME": os.environ.get("HOME", "/")}
    result = run([str(tools / "sh"), str(RENDER)], env=env)
    assert result.returncode == 0, result.stderr
    assert {u for urls in _urls(config).values() for u in urls} == {url}
    env["MQM_ALERT_WEBHOOK_URL"] = "https://hooks.example.com/a b"
    assert run([str(tools / "sh"), str(RENDER)], env=env).returncode == 2

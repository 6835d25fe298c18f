"""The alerting rules: promtool's checks and unit tests, and the conventions every alert
follows (labels, annotations, runbook links, no thresholds copied into PromQL)."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.alerts.stack import (
    PROMETHEUS_YML,
    RULE_TESTS,
    RULES,
    RUNBOOK_BASE,
    run,
)

SEVERITIES = {"critical", "warning", "info"}
ANNOTATIONS = {"summary", "description", "runbook_url", "dashboard_url"}
MODEL_DASHBOARD = "http://localhost:8501/?model={{ $labels.model }}"
OVERVIEW_DASHBOARD = "http://localhost:8501/"


def alert_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in data["groups"] for rule in group["rules"] if "alert" in rule]


def alert_names() -> list[str]:
    return list(dict.fromkeys(rule["alert"] for rule in alert_rules()))


def test_promtool_check_rules(promtool: str) -> None:
    result = run([promtool, "check", "rules", str(RULES)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_check_config_resolves_the_rules_beside_it(promtool: str) -> None:
    result = run([promtool, "check", "config", str(PROMETHEUS_YML)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout
    assert "mqm.rules.yml" in result.stdout  # checked through the relative path


def test_promtool_unit_tests_pass(promtool: str) -> None:
    result = run([promtool, "test", "rules", str(RULE_TESTS)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_unit_tests_fail_when_the_empty_window_gate_is_dropped(promtool: str,
                                                              tmp_path: Path) -> None:
    """The unit tests are sharp: without the insufficient_data gate, an empty window (which
    today exports every contract column as missing) would page as a schema break."""
    text = RULES.read_text(encoding="utf-8")
    gated = ("mqm_schema_missing_columns > 0\n"
             "            and on(model) (mqm_rows_checked > 0)\n"
             "            and on(model) (mqm_run_status{status=\"insufficient_data\"} == 0)")
    assert gated in text
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "rules" / "mqm.rules.yml").write_text(
        text.replace(gated, "mqm_schema_missing_columns > 0"), encoding="utf-8")
    (tmp_path / "tests" / "t.yml").write_text(RULE_TESTS.read_text(encoding="utf-8"),
                                             encoding="utf-8")
    result = run([promtool, "test", "rules", str(tmp_path / "tests" / "t.yml")])
    assert result.returncode != 0
    assert "alertname: MqmSchemaMissingColumns" in result.stdout + result.stderr


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: f"{r['alert']}")
def test_every_alert_follows_the_conventions(rule: dict[str, Any]) -> None:
    name, labels, notes = rule["alert"], rule.get("labels") or {}, rule.get("annotations") or {}
    assert re.fullmatch(r"Mqm[A-Z][A-Za-z0-9]+", name)
    assert labels.get("severity") in SEVERITIES
    assert set(notes) == ANNOTATIONS
    # One rule builds every runbook link from the alert's name.
    assert notes["runbook_url"] == f"{RUNBOOK_BASE}#{name.lower()}"
    assert "{{ $value" in notes["description"]
    # The summary is static: the README's alert table quotes it.
    assert "{{" not in notes["summary"] and notes["summary"].endswith(".")
    if "model" in labels:
        # Service-wide alerts: no model series to take the label from.
        assert labels["model"] == "all"
        assert notes["dashboard_url"] == OVERVIEW_DASHBOARD
    else:
        # The model label comes from the series (the unit tests assert it).
        assert notes["dashboard_url"] == MODEL_DASHBOARD
    if name == "MqmWatchdog":
        assert "for" not in rule and rule["expr"].strip() == "vector(1)"
    else:
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), "a for: is needed"


def _numbers(expr: str) -> set[str]:
    """Numeric literals of a PromQL expression, outside strings and names."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    return set(re.findall(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])", without_strings))


def test_no_threshold_is_copied_into_promql() -> None:
    """Rules compare verdicts (== 1, == 0) and presence (> 0): mqm's thresholds stay in
    monitor.yaml and come in through exported series."""
    for rule in alert_rules():
        assert _numbers(rule["expr"]) <= {"0", "1"}, (rule["alert"], rule["expr"])


def test_quality_alerts_hold_only_for_judged_windows() -> None:
    """A window with too few rows (or none) is no evidence: every alert on a section's
    verdict or figures is gated on the run not being insufficient_data. (A run's own
    critical or warn status is never insufficient_data.)"""
    ungated = {"MqmModelCritical", "MqmModelWarning", "MqmFallbackActive",
               "MqmFallbackOverride", "MqmFallbackStale", "MqmChecksNotSucceeding",
               "MqmTargetDown", "MqmScrapeError", "MqmWatchdog"}
    gate = 'and on(model) (mqm_run_status{status="insufficient_data"} == 0)'
    for rule in alert_rules():
        expr = " ".join(rule["expr"].split())
        if rule["alert"] in ungated:
            continue
        assert gate in expr, rule["alert"]


@functools.cache
def _unit_tests() -> list[dict[str, Any]]:
    data = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))
    assert data["rule_files"] == ["../rules/mqm.rules.yml"]
    return [case for group in data["tests"] for case in group["alert_rule_test"]]


@pytest.mark.parametrize("name", alert_names())
def test_every_alert_has_unit_tests_that_fire_it_and_keep_it_quiet(name: str) -> None:
    cases = [case for case in _unit_tests() if case["alertname"] == name]
    fired = [case for case in cases if case.get("exp_alerts")]
    quiet = [case for case in cases if not case.get("exp_alerts")]
    assert fired, f"no unit test fires {name}"
    if name != "MqmWatchdog":
        assert quiet, f"no unit test keeps {name} quiet"
    for case in fired:
        for alert in case["exp_alerts"]:
            assert "model" in alert["exp_labels"] and "severity" in alert["exp_labels"]
            assert alert["exp_annotations"]["runbook_url"].endswith("#" + name.lower())


def test_the_empty_window_case_is_unit_tested() -> None:
    text = RULE_TESTS.read_text(encoding="utf-8")
    assert "mqm_schema_missing_columns{model=\"loan_default\",version=\"1.4.0\"}'\n" \
           "        values: '11x45'" in text
    quiet_at_empty = [case["alertname"] for case in _unit_tests()
                      if case["alertname"] == "MqmSchemaMissingColumns"
                      and not case.get("exp_alerts")]
    assert len(quiet_at_empty) >= 2


def test_a_features_only_model_pages_on_drift_and_never_on_accuracy(promtool: str,
                                                                   tmp_path: Path) -> None:
    """Issue 13, item 11: the shipped rules on what ``mqm serve`` exports for a real
    features-only model (contract task: features) whose last two windows drifted: the run,
    drift and flag alerts fire, and no rule waits on an accuracy series that never comes
    or takes performance's not_applicable for a failure."""
    from datetime import timedelta

    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from monitor.config import load_config
    from monitor.run.check import backfill
    from monitor.serve.metrics import build_registry
    from monitor.store.db import create_engine, ensure_schema
    from tests.conftest import FEATURES_MODEL, FEATURES_T0, load_features_only

    engine = create_engine(f"sqlite:///{tmp_path / 'inputs.db'}")
    ensure_schema(engine)
    config_path, _ = load_features_only(engine, tmp_path, [False, True, True])
    config = load_config(config_path)
    now = FEATURES_T0 + timedelta(days=3, minutes=10)
    runs = backfill(engine, config, FEATURES_MODEL, FEATURES_T0,
                    FEATURES_T0 + timedelta(days=3), now=now)
    assert [r.status for r in runs] == ["ok", "critical", "critical"]
    text = generate_latest(build_registry(engine, config, clock=lambda: now)).decode()
    engine.dispose()

    series = [{"series": 'up{job="mqm",instance="serve:8080"}', "values": "1x45"}]
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.value != sample.value:  # NaN: no such value in promtool's notation
                continue
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            series.append({"series": f"{sample.name}{{{labels}}}",
                           "values": f"{sample.value!r}x45"})
    drifted = sum(f.drifted for f in runs[-1].drift.features)
    firing = {"MqmModelCritical": 1, "MqmDatasetDrift": 1, "MqmFeatureDrift": drifted,
              "MqmFallbackActive": 1}
    tests = {"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": series,
        "promql_expr_test": [{
            "expr": f'count by (alertname) (ALERTS{{alertstate="firing",'
                    f'model="{FEATURES_MODEL}"}})',
            "eval_time": "40m",
            "exp_samples": [{"labels": f'{{alertname="{name}"}}', "value": count}
                            for name, count in firing.items()]}]}]}
    path = tmp_path / "features_only.test.yml"
    path.write_text(yaml.safe_dump(tests), encoding="utf-8")
    result = run([promtool, "test", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'status="not_applicable"' in text and "mqm_accuracy_ratio{" not in text

"""What the terminal shows (monitor.cli.render): columns that do not run into each other,
the metrics of the model's task, nothing made up for a figure that is missing."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import pytest

from monitor.cli import render
from monitor.results import ErrorSection, PerformanceResult, ServiceResult
from tests.serve.conftest import check_run, drift_result, schema_result

END = datetime(2026, 10, 2, tzinfo=UTC)


def performance(task: str, metrics: dict[str, float | None]) -> PerformanceResult:
    return PerformanceResult(task=task, rows=500, labelled_rows=450, label_coverage=0.9,
                             mature=True, metrics=metrics, reference_metrics=dict(metrics),
                             drops={k: 0.0 for k in metrics}, status="ok", reasons=())


def service(p50: float | None) -> ServiceResult:
    return ServiceResult(rows=500, errors=0, error_rate=0.0, latency_p50_ms=p50,
                         latency_p95_ms=None if p50 is None else 2 * p50,
                         latency_p99_ms=None if p50 is None else 3 * p50,
                         throughput_per_s=0.01, status="ok", reasons=())


def lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().out.splitlines()


def test_timeline_status_column_holds_insufficient_data(capsys) -> None:  # type: ignore[no-untyped-def]
    run = check_run("m", end=END, status="insufficient_data", rows=0,
                    reasons=("0 rows < min_rows 200",), schema=schema_result(rows=0))
    render.print_timeline([run])
    header, row = lines(capsys)
    assert "insufficient_data 0 rows < min_rows 200" in row
    assert row.index("0 rows <") == header.index("why")


def test_timeline_of_a_regressor_shows_mae_and_rmse(capsys) -> None:  # type: ignore[no-untyped-def]
    run = check_run("m", end=END, performance=performance(
        "regression", {"mae": 0.5312, "rmse": 0.7421}))
    render.print_timeline([run])
    header, row = lines(capsys)
    assert header.split()[6:8] == ["mae", "rmse"] and "accuracy" not in header
    assert row.split()[5:7] == ["0.5312", "0.7421"]
    classifier = check_run("m", end=END, performance=performance(
        "classification", {"accuracy": 0.84, "f1": 0.7}))
    render.print_timeline([classifier])
    header, row = lines(capsys)
    assert header.split()[6:8] == ["accuracy", "estimated"]
    assert row.split()[5] == "0.840"


def test_missing_latency_is_not_zero(capsys) -> None:  # type: ignore[no-untyped-def]
    render.print_run(check_run("m", end=END, service=service(None)))
    assert "latency p50/p95/p99 -/-/- ms" in capsys.readouterr().out
    render.print_run(check_run("m", end=END, service=service(12.5)))
    assert "latency p50/p95/p99 12.5/25.0/37.5 ms" in capsys.readouterr().out


def test_a_section_that_could_not_run_says_why_in_words(capsys) -> None:  # type: ignore[no-untyped-def]
    why = "/data/ref.parquet: reference set lacks column(s) prediction"
    run = check_run("m", end=END, status="error", reasons=(
        f"drift: could not run: RuntimeError: {why}",
        "performance: could not run: KeyError: 'label'"),
        drift=ErrorSection(error=f"RuntimeError: {why}", at="evaluate.py:130"),
        performance=ErrorSection(error="KeyError: 'label'", at="performance.py:12"))
    render.print_run(run)
    out = capsys.readouterr().out
    assert f"  drift        error             could not run: {why}" in out
    assert f"why: drift: could not run: {why}" in out
    assert "RuntimeError" not in out
    # A genuine failure keeps its type: it is the clue.
    assert "could not run: KeyError: 'label'" in out


def test_section_status_column_holds_insufficient_data(capsys) -> None:  # type: ignore[no-untyped-def]
    run = check_run("m", end=END, status="insufficient_data", rows=0,
                    schema=schema_result(rows=0, status="insufficient_data"),
                    drift=drift_result())
    render.print_run(run)
    out = lines(capsys)
    schema_line = next(ln for ln in out if ln.startswith("  schema"))
    drift_line = next(ln for ln in out if ln.startswith("  drift"))
    assert schema_line.index("violation rate") == drift_line.index("drifted share")


def test_an_unknown_model_is_one_line(make_config) -> None:
    """A real process: under pytest the log warning that doubled the line is captured."""
    path, _ = make_config()
    for command in ("check", "recheck"):
        proc = subprocess.run([sys.executable, "-m", "monitor", "--config", str(path),
                               command, "-m", "nope"], capture_output=True, text=True,
                              check=False)
        assert proc.returncode == 1
        assert (proc.stdout + proc.stderr).splitlines() == [
            "error: unknown model 'nope'; the config declares: loan_default"], command


def test_a_run_shows_its_estimate_of_either_kind(capsys) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    from monitor.results import EstimatedLossResult, EstimatedResult

    loss = EstimatedLossResult(2.1408, 1.5075, 0.42, None, 500, "warn", ("estimated mae",))
    run = check_run("m", end=END, performance=replace(
        performance("regression", {"mae": None, "rmse": None}), estimated=loss))
    render.print_run(run)
    shown = capsys.readouterr().out
    assert "estimated mae 2.141" in shown and "estimated accuracy" not in shown
    cbpe = EstimatedResult(0.8123, 0.84, 0.03, None, 500, "ok", ())
    run = check_run("m", end=END, performance=replace(
        performance("classification", {"accuracy": 0.84}), estimated=cbpe))
    render.print_run(run)
    assert "estimated accuracy 0.812" in capsys.readouterr().out

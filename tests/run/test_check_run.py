"""Whole check runs on the sample model: verdicts, explanations, persistence, late labels."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from monitor.ingest import ingest_labels, ingest_logs
from monitor.results import DriftResult, ErrorSection, PerformanceResult
from monitor.run.check import backfill, recompute_immature, run_check
from monitor.store.runs import latest_runs, run_metrics_of
from monitor.store.tables import check_runs
from tests.conftest import ROOT

DATA = ROOT / "sample_data"
STABLE = datetime(2026, 10, 5, tzinfo=UTC)      # end of the window of 10-04
DRIFTED = datetime(2026, 10, 13, tzinfo=UTC)    # end of the window of 10-12
LATER = datetime(2026, 11, 27, tzinfo=UTC)      # every label has long arrived


@pytest.fixture
def loaded(sample_store: Path, tmp_path: Path, make_config):  # type: ignore[no-untyped-def]
    """A private copy of the sample store (SQLite), and a config pointing at it."""
    path = tmp_path / "store.db"
    shutil.copyfile(sample_store, path)
    from monitor.store.db import create_engine

    eng = create_engine(f"sqlite:///{path}")
    _, cfg = make_config(f"sqlite:///{path}", min_rows=500)
    yield eng, cfg
    eng.dispose()


@pytest.mark.postgres
def test_the_same_verdicts_on_postgresql(pg_url: str, make_config, schema) -> None:
    from monitor.store.db import create_engine, ensure_schema

    eng = create_engine(pg_url)
    ensure_schema(eng)
    ingest_logs(eng, "loan_default", schema, DATA / "production_logs.parquet")
    ingest_labels(eng, "loan_default", schema, DATA / "labels.parquet")
    _, cfg = make_config(pg_url, min_rows=500)
    ok = run_check(eng, cfg, "loan_default", at=STABLE, now=LATER)
    bad = run_check(eng, cfg, "loan_default", at=DRIFTED, now=LATER)
    assert ok is not None and bad is not None
    assert (ok.status, bad.status) == ("ok", "critical")
    assert bad.performance.labelled_rows > 2000
    eng.dispose()


def test_stable_window_is_ok_and_drifted_one_is_critical_with_reasons(loaded) -> None:
    engine, cfg = loaded
    ok = run_check(engine, cfg, "loan_default", at=STABLE, now=LATER)
    assert ok is not None and ok.status == "ok", ok.reasons
    assert ok.drift.share_drifted == 0
    assert ok.performance.status == "ok"

    bad = run_check(engine, cfg, "loan_default", at=DRIFTED, now=LATER)
    assert bad is not None and bad.status == "critical"
    drift = bad.drift
    assert isinstance(drift, DriftResult)
    drifted = {f.feature for f in drift.features if f.drifted}
    assert {"annual_income", "credit_score", "debt_to_income", "home_ownership"} <= drifted
    assert "loan_amount" not in drifted and "age" not in drifted
    assert any("annual_income: wasserstein" in r for r in bad.reasons)
    perf = bad.performance
    assert isinstance(perf, PerformanceResult) and perf.estimated is not None
    assert perf.status == "critical" and perf.drops["accuracy"] > 0.1
    assert any(r.startswith("performance: accuracy") for r in bad.reasons)
    assert perf.estimated.estimated_accuracy < perf.reference_metrics["accuracy"]
    home = drift.feature("home_ownership")
    assert home.unseen_share is not None and home.unseen_share > 0.05


def test_run_json_shape_and_persistence(loaded) -> None:
    engine, cfg = loaded
    run = run_check(engine, cfg, "loan_default", at=DRIFTED, now=LATER)
    assert run is not None and run.run_id is not None
    data = run.as_dict()
    assert {"model", "window", "rows", "status", "checks"} <= set(data)
    assert set(data["checks"]) == {"schema", "drift", "performance", "service", "versions"}
    assert {"share_drifted", "dataset_drift"} <= set(data["checks"]["drift"])
    feature = data["checks"]["drift"]["features"][0]
    assert {"method", "score", "threshold", "drifted"} <= set(feature)
    stored = latest_runs(engine, "loan_default", kind="check")[0]
    assert stored.id == run.run_id and stored.status == "critical"
    # Read back from the store, the run is the same typed object again.
    assert stored.run == run
    assert stored.summary["checks"]["drift"]["share_drifted"] == data["checks"]["drift"][
        "share_drifted"]
    metrics = {(m.check, m.metric, m.feature): m.value for m in run_metrics_of(engine, run.run_id)}
    assert metrics[("drift", "drifted", "credit_score")] == 1.0
    assert metrics[("performance", "accuracy", "")] == pytest.approx(
        data["checks"]["performance"]["metrics"]["accuracy"])
    assert metrics[("service", "latency_p99_ms", "")] > 0
    # The service figures agree with an independent count over the sample file.
    logs = pd.read_parquet(DATA / "production_logs.parquet")
    day = logs[(logs.timestamp >= DRIFTED - timedelta(days=1)) & (logs.timestamp < DRIFTED)]
    assert run.rows == len(day)
    assert data["checks"]["service"]["error_rate"] == pytest.approx(day["error"].mean())
    assert data["checks"]["service"]["latency_p95_ms"] == pytest.approx(
        day["latency_ms"].quantile(0.95))


def test_insufficient_data_is_never_critical(loaded, make_config) -> None:
    engine, _ = loaded
    _, cfg = make_config(engine.url.render_as_string(hide_password=False), min_rows=100_000)
    run = run_check(engine, cfg, "loan_default", at=DRIFTED, now=LATER)
    assert run is not None and run.status == "insufficient_data"
    assert run.schema.status == "insufficient_data"


def test_a_check_that_cannot_run_is_an_error_section(loaded, make_config,
                                                     tmp_path: Path) -> None:
    engine, _ = loaded
    _, cfg = make_config(engine.url.render_as_string(hide_password=False), min_rows=500,
                         reference=str(tmp_path / "gone.parquet"))
    run = run_check(engine, cfg, "loan_default", at=STABLE, now=LATER)
    assert run is not None
    assert run.drift.status == "error"
    assert isinstance(run.drift, ErrorSection) and "gone.parquet" in run.drift.error
    assert run.schema.status == "ok"  # the others still ran
    assert run.service.status == "ok"
    assert run.status == "error"  # not critical: a failed check is no evidence of decay


def test_a_critical_section_outranks_a_check_that_cannot_run(loaded, make_config,
                                                             tmp_path: Path) -> None:
    """A failed check is no evidence either way: a section critical on its own evidence
    still makes the run critical (and so counts towards the flag)."""
    engine, _ = loaded
    _, cfg = make_config(engine.url.render_as_string(hide_password=False), min_rows=500,
                         reference=str(tmp_path / "gone.parquet"),
                         service={"max_error_rate": 0.0})
    run = run_check(engine, cfg, "loan_default", at=STABLE, now=LATER)
    assert run is not None
    assert isinstance(run.drift, ErrorSection)
    assert run.service.status == "critical"  # the window has error rows, above 0
    assert run.status == "critical"


def test_sections_run_two_at_a_time_and_the_run_is_the_same(loaded, monkeypatch) -> None:
    """Drift runs on a second thread while this one measures performance; then the
    threads take the schema check and versions in turn, one each: each pair waits at a
    barrier only two threads at once pass. The run is the same as one taken without the
    barriers."""
    import json
    import threading

    import monitor.checks.drift as drift_module
    import monitor.checks.performance as performance_module
    import monitor.checks.versions as versions_module
    from monitor.checks.schema_check import SchemaAccumulator

    engine, cfg = loaded
    before = run_check(engine, cfg, "loan_default", at=DRIFTED, now=LATER, persist=False)
    threads: dict[str, str] = {}

    def meeting(name: str, step, barrier: threading.Barrier):  # type: ignore[no-untyped-def]
        def wrapped(*args, **kwargs):  # type: ignore[no-untyped-def]
            threads[name] = threading.current_thread().name
            barrier.wait()
            return step(*args, **kwargs)
        return wrapped

    first, second = threading.Barrier(2, timeout=20), threading.Barrier(2, timeout=20)
    monkeypatch.setattr(drift_module, "check_drift",
                        meeting("drift", drift_module.check_drift, first))
    monkeypatch.setattr(performance_module, "check_performance",
                        meeting("performance", performance_module.check_performance, first))
    monkeypatch.setattr(SchemaAccumulator, "add",
                        meeting("schema", SchemaAccumulator.add, second))
    monkeypatch.setattr(versions_module, "check_versions",
                        meeting("versions", versions_module.check_versions, second))
    run = run_check(engine, cfg, "loan_default", at=DRIFTED, now=LATER, persist=False)
    assert run is not None and before is not None
    here = threading.current_thread().name
    assert threads["performance"] == here != threads["drift"]
    assert {threads["schema"], threads["versions"]} == {here, threads["drift"]}
    assert isinstance(run.drift, DriftResult) and run.drift.share_drifted > 0
    assert run.versions.status == "ok" and run.performance.status != "error"
    assert json.dumps(run.as_dict(), sort_keys=True, default=str) == \
        json.dumps(before.as_dict(), sort_keys=True, default=str)


def test_large_windows_are_sampled_but_counts_stay_exact(loaded, make_config) -> None:
    engine, exact_cfg = loaded
    _, cfg = make_config(engine.url.render_as_string(hide_password=False), min_rows=500,
                         drift={"max_exact_rows": 1000})
    exact = run_check(engine, exact_cfg, "loan_default", at=DRIFTED, now=LATER, persist=False)
    sampled = run_check(engine, cfg, "loan_default", at=DRIFTED, now=LATER, persist=False)
    assert exact is not None and sampled is not None
    assert sampled.sampled and not exact.sampled
    assert 800 < (sampled.sample_rows or 0) < 1200
    assert sampled.schema == exact.schema
    assert sampled.service == exact.service
    assert sampled.rows == exact.rows
    again = run_check(engine, cfg, "loan_default", at=DRIFTED, now=LATER, persist=False)
    assert again is not None and again.drift == sampled.drift


def test_late_labels_are_judged_once_mature(db_url: str, make_config, schema,
                                            tmp_path: Path) -> None:
    """A window checked before its labels arrived is checked again when they have."""
    from monitor.store.db import create_engine, ensure_schema

    engine = create_engine(db_url)
    ensure_schema(engine)
    _, cfg = make_config(db_url, min_rows=500)
    logs = pd.read_parquet(DATA / "production_logs.parquet")
    logs[(logs.timestamp >= DRIFTED - timedelta(days=1)) & (logs.timestamp < DRIFTED)].to_parquet(
        tmp_path / "day.parquet")
    ingest_logs(engine, "loan_default", schema, tmp_path / "day.parquet")
    labels = pd.read_parquet(DATA / "labels.parquet")
    early_cut = DRIFTED + timedelta(days=2)
    labels[labels.timestamp < early_cut].to_parquet(tmp_path / "early.parquet")
    ingest_labels(engine, "loan_default", schema, tmp_path / "early.parquet")

    first = run_check(engine, cfg, "loan_default", at=DRIFTED, now=early_cut)
    assert first is not None
    perf = first.performance
    assert isinstance(perf, PerformanceResult)
    assert not perf.mature and perf.label_coverage < 0.8
    # Realized accuracy is not judged yet, but the estimate already shows the decay.
    assert perf.status == "warn"
    assert all(r.startswith("estimated accuracy") or "not mature" in r or "labels" in r
               for r in perf.reasons)
    assert perf.estimated is not None and perf.estimated.status == "warn"

    ingest_labels(engine, "loan_default", schema, DATA / "labels.parquet")
    redone = recompute_immature(engine, cfg, "loan_default", now=early_cut + timedelta(days=5))
    assert [r.recomputes for r in redone] == [first.run_id]
    assert redone[0].performance.mature
    assert redone[0].performance.status == "critical"
    assert recompute_immature(engine, cfg, "loan_default",
                              now=early_cut + timedelta(days=5)) == []
    engine.dispose()


def test_backfill_checks_every_window_once(loaded) -> None:
    engine, cfg = loaded
    seen = []
    runs = backfill(engine, cfg, "loan_default", datetime(2026, 10, 3, 12, tzinfo=UTC),
                    datetime(2026, 10, 6, tzinfo=UTC), now=LATER, progress=seen.append)
    assert [r.end.day for r in runs] == [4, 5, 6]
    assert len(seen) == 3
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(check_runs)).scalar() == 3


# --- window boundaries ------------------------------------------------------------------

T0 = datetime(2026, 10, 1, tzinfo=UTC)


@pytest.mark.parametrize("compacted", [False, True], ids=["rows", "blocks"])
def test_a_window_holds_its_start_and_not_its_end(engine, make_config,
                                                  compacted: bool) -> None:
    """Windows are [start, end): a log at a boundary opens the next window, on the row
    path and on the block path alike, and the newest log picks the window it opens."""
    from monitor.store.compaction import compact
    from monitor.store.logs import insert_logs
    from tests.conftest import log

    stamps = [T0, T0 + timedelta(hours=12), T0 + timedelta(days=1) - timedelta(microseconds=1),
              T0 + timedelta(days=1)]
    with engine.begin() as conn:
        insert_logs(conn, "loan_default", [log(i, ts) for i, ts in enumerate(stamps)])
    if compacted:
        compact(engine, "loan_default")
    _, cfg = make_config(engine.url.render_as_string(hide_password=False), min_rows=1)

    first = run_check(engine, cfg, "loan_default", at=T0 + timedelta(days=1), persist=False)
    assert first is not None and (first.start, first.end, first.rows) == (
        T0, T0 + timedelta(days=1), 3)
    second = run_check(engine, cfg, "loan_default", at=T0 + timedelta(days=2), persist=False)
    assert second is not None and second.rows == 1
    # The newest log lies exactly on a boundary: the latest window is the one it opens.
    latest = run_check(engine, cfg, "loan_default", persist=False)
    assert latest is not None and (latest.start, latest.end, latest.rows) == (
        T0 + timedelta(days=1), T0 + timedelta(days=2), 1)

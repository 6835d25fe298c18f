"""monitor.store.history on both backends: the reads the dashboard makes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from monitor.errors import DatabaseError
from monitor.results import CheckRun, DriftResult, FeatureDrift, PerformanceResult
from monitor.store import history
from monitor.store.logs import insert_logs
from monitor.store.runs import save_run
from monitor.store.sources import BuiltinSource
from tests.conftest import log

T0 = datetime(2026, 10, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def check_run(model: str, end: datetime, status: str = "ok", *, scores: dict[str, float],
              accuracy: float = 0.8, config_hash: str = "h1") -> CheckRun:
    features = tuple(
        FeatureDrift(name, "num", "wasserstein", score, 0.1, score >= 0.1, 0.0, 0.01 * i,
                     0.01 * i, None if i % 2 else 0.5 * score)
        for i, (name, score) in enumerate(scores.items()))
    drifted = sum(f.drifted for f in features)
    drift = DriftResult(features=features, share_drifted=drifted / len(features),
                        drift_share=0.5, dataset_drift=drifted / len(features) >= 0.5,
                        rows_reference=100, rows_current=100)
    perf = PerformanceResult(task="classification", rows=100, labelled_rows=90,
                             label_coverage=0.9, mature=True, metrics={"accuracy": accuracy},
                             reference_metrics={"accuracy": 0.84},
                             drops={"accuracy": 0.84 - accuracy}, status="ok", reasons=())
    return CheckRun(model=model, start=end - DAY, end=end, rows=100, status=status, reasons=(),
                    config_hash=config_hash, reference_version="r1", drift=drift,
                    performance=perf)


def store(engine: sa.Engine, run: CheckRun, *, kind: str = "check") -> int:
    return save_run(engine, model=run.model, kind=kind, window_start=run.start,
                    window_end=run.end, rows=run.rows, status=run.status,
                    summary=run.as_dict(), metrics=run.metrics(), config_hash=run.config_hash,
                    reference_version=run.reference_version, started_at=run.end,
                    finished_at=run.end)


@pytest.fixture
def runs(engine: sa.Engine) -> dict[str, Any]:
    """Model a: 5 daily windows, the third checked twice (a recheck turned it critical);
    model b: 2 windows, the newest insufficient_data; a schema-only run of a."""
    ids: dict[str, Any] = {}
    for day in range(5):
        end = T0 + (day + 1) * DAY
        ids[f"a{day}"] = store(engine, check_run("a", end, scores={"x": 0.01 * day,
                                                                  "y": 0.05 * day}))
    ids["a2_recheck"] = store(engine, check_run(
        "a", T0 + 3 * DAY, "critical", scores={"x": 0.3, "y": 0.2}, accuracy=0.6,
        config_hash="h2"))
    ids["b0"] = store(engine, check_run("b", T0 + DAY, "warn", scores={"x": 0.5}))
    ids["b1"] = store(engine, replace(check_run("b", T0 + 2 * DAY, scores={"x": 0.0}),
                                      status="insufficient_data"))
    ids["schema"] = store(engine, check_run("a", T0 + 9 * DAY, scores={"x": 0.0}),
                          kind="schema")
    return ids


def test_window_runs_are_the_latest_run_of_each_window(engine: sa.Engine, runs) -> None:  # type: ignore[no-untyped-def]
    got = history.window_runs(engine, "a")
    assert [r.id for r in got] == [runs["a0"], runs["a1"], runs["a2_recheck"], runs["a3"],
                                   runs["a4"]]
    assert got[2].status == "critical" and got[2].config_hash == "h2"
    assert got[0].window_end == T0 + DAY and got[0].window_end.tzinfo is not None
    ranged = history.window_runs(engine, "a", since=T0 + 2 * DAY, until=T0 + 4 * DAY)
    assert [r.window_end for r in ranged] == [T0 + 3 * DAY, T0 + 4 * DAY]


def test_recent_windows_newest_first_per_model(engine: sa.Engine, runs) -> None:  # type: ignore[no-untyped-def]
    got = history.recent_windows(engine, ["a", "b", "c"], per_model=3)
    assert set(got) == {"a", "b"}
    assert [r.id for r in got["a"]] == [runs["a4"], runs["a3"], runs["a2_recheck"]]
    assert [r.id for r in got["b"]] == [runs["b1"], runs["b0"]]
    assert history.recent_windows(engine, [], per_model=3) == {}


def test_last_successes_skip_runs_that_are_no_evidence(engine: sa.Engine, runs) -> None:  # type: ignore[no-untyped-def]
    got = history.last_successes(engine, ["a", "b", "c"])
    assert got["a"].id == runs["a2_recheck"]  # the newest run stored, not the newest window
    assert got["b"].id == runs["b0"]  # insufficient_data is no success
    assert "c" not in got


def test_window_figures_of_the_latest_runs_only(engine: sa.Engine, runs) -> None:  # type: ignore[no-untyped-def]
    whole = history.window_figures(engine, "a", per_feature=False)
    assert {f.run_id for f in whole} == {runs[k] for k in ("a0", "a1", "a2_recheck", "a3",
                                                           "a4")}
    assert all(f.feature == "" for f in whole)
    accuracy = {f.run_id: f.value for f in whole if f.metric == "accuracy"}
    assert accuracy[runs["a2_recheck"]] == pytest.approx(0.6)
    scores = history.window_figures(engine, "a", since=T0 + 3 * DAY, checks=["drift"],
                                    metrics=["score"], per_feature=True)
    assert sorted((f.run_id, f.feature, f.value) for f in scores) == sorted(
        [(runs["a3"], "x", pytest.approx(0.03)), (runs["a3"], "y", pytest.approx(0.15)),
         (runs["a4"], "x", pytest.approx(0.04)), (runs["a4"], "y", pytest.approx(0.2))])


def test_window_table_pivots_the_figures_of_each_window(engine: sa.Engine, runs) -> None:  # type: ignore[no-untyped-def]
    pairs = [("drift", "share_drifted"), ("performance", "accuracy"), ("service", "error_rate")]
    got = {w.run_id: w.values for w in history.window_table(engine, "a", pairs,
                                                              since=T0 + 2 * DAY)}
    assert set(got) == {runs["a2_recheck"], runs["a3"], runs["a4"]}
    assert got[runs["a2_recheck"]] == {("drift", "share_drifted"): 1.0,
                                       ("performance", "accuracy"): pytest.approx(0.6),
                                       ("service", "error_rate"): None}
    assert history.window_table(engine, "a", []) == []


def test_figures_of_any_runs_in_batches(engine: sa.Engine, runs,  # type: ignore[no-untyped-def]
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(history, "_IDS_PER_QUERY", 2)
    ids = [runs["a0"], runs["b0"], runs["a4"]]
    got = history.figures_of(engine, ids, metrics=["share_drifted"])
    assert {(f.run_id, f.value) for f in got} == {(runs["a0"], 0.0), (runs["b0"], 1.0),
                                                  (runs["a4"], 0.5)}
    assert history.figures_of(engine, []) == []


def test_feature_buckets_sum_up_consecutive_windows(engine: sa.Engine, runs) -> None:  # type: ignore[no-untyped-def]
    # Buckets: windows ending 10-02, 10-03 | 10-04 (the recheck), 10-05 | 10-06.
    bounds = [T0 + 2 * DAY, T0 + 4 * DAY, T0 + 5 * DAY]
    got = {(b.bucket, b.feature, b.metric): b for b in history.feature_buckets(
        engine, "a", bounds, metrics=["score", "drifted", "unseen_share"])}
    first = got[(0, "y", "score")]
    assert (first.min, first.max, first.count) == (pytest.approx(0.0), pytest.approx(0.05), 2)
    second = got[(1, "x", "score")]
    assert (second.min, second.max) == (pytest.approx(0.03), pytest.approx(0.3))
    assert got[(1, "x", "drifted")].sum == 1.0  # only the recheck drifted
    assert got[(2, "y", "score")].max == pytest.approx(0.2)
    assert (0, "y", "unseen_share") not in got and got[(1, "x", "unseen_share")].count == 2
    assert history.feature_buckets(engine, "a", []) == []


def test_feature_totals_largest_first(engine: sa.Engine, runs) -> None:  # type: ignore[no-untyped-def]
    got = history.feature_totals(engine, "a", "drift", "score")
    assert [t.feature for t in got] == ["x", "y"]
    assert got[0].max == pytest.approx(0.3) and got[0].windows == 5
    assert got[0].nonzero_windows == 4
    assert got[0].mean == pytest.approx((0.0 + 0.01 + 0.3 + 0.03 + 0.04) / 5)
    assert len(history.feature_totals(engine, "a", "drift", "score", limit=1)) == 1


def test_run_settings_one_typed_run_per_setting(engine: sa.Engine, runs) -> None:  # type: ignore[no-untyped-def]
    got = history.run_settings(engine, history.window_runs(engine, "a"))
    assert set(got) == {("h1", "r1"), ("h2", "r1")}
    assert got[("h1", "r1")].run_id == runs["a4"]
    assert got[("h2", "r1")].drift.feature("x").threshold == 0.1


def test_recent_events_and_reading_errors(engine: sa.Engine) -> None:
    assert history.recent_events(engine, "a") == []
    dead = sa.create_engine("postgresql+psycopg://mqm@127.0.0.1:1/mqm?connect_timeout=2")
    with pytest.raises(DatabaseError) as caught:
        history.window_runs(dead, "a")
    message = str(caught.value)
    assert message.startswith("cannot read the store at postgresql+psycopg://mqm@127.0.0.1:1/")
    assert "\n" not in message


def test_window_sample_is_bounded_uniform_and_seeded(engine: sa.Engine) -> None:
    records = [log(i, T0 + timedelta(minutes=i), age=20 + i % 50) for i in range(300)]
    with engine.begin() as conn:
        insert_logs(conn, "loan_default", records)
    source = BuiltinSource(engine, "loan_default")
    whole = history.window_sample(source, T0, T0 + DAY, columns=["age", "missing"],
                                  prediction="prediction", rows=1000)
    assert (whole.window_rows, len(whole.frame), whole.sampled) == (300, 300, False)
    assert list(whole.frame.columns) == ["age", "missing", "prediction"]
    assert whole.frame["missing"].isna().all()
    assert sorted(whole.frame["age"]) == sorted(20 + i % 50 for i in range(300))
    some = history.window_sample(source, T0, T0 + DAY, columns=["age"], rows=50, seed=3,
                                 chunk_rows=64)
    again = history.window_sample(source, T0, T0 + DAY, columns=["age"], rows=50, seed=3,
                                  chunk_rows=64)
    assert some.sampled and len(some.frame) == 50 and some.window_rows == 300
    assert list(some.frame["age"]) == list(again.frame["age"])
    empty = history.window_sample(source, T0 + DAY, T0 + 2 * DAY, columns=["age"])
    assert empty.window_rows == 0 and len(empty.frame) == 0

"""dashboards.frames: the store's rows shaped into the pages' frames, without Streamlit."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from dashboards import frames
from monitor.checks.stattests import DELEGATED, NATIVE
from monitor.config import DRIFT_METHODS
from monitor.results import CheckRun, DriftResult, FeatureDrift, PerformanceResult
from monitor.store.flags import FallbackEvent
from monitor.store.history import BucketFigure, Figure, WindowFigures, WindowRun

T0 = datetime(2026, 10, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def window(i: int, status: str = "ok", config_hash: str = "h") -> WindowRun:
    return WindowRun(id=i + 1, model="m", window_start=T0 + i * DAY,
                     window_end=T0 + (i + 1) * DAY, rows=100, status=status,
                     finished_at=T0 + (i + 1) * DAY, config_hash=config_hash,
                     reference_version="r")


def settings(methods: dict[str, tuple[str, float]]) -> CheckRun:
    drift = DriftResult(
        features=tuple(FeatureDrift(f, "num", m, 0.0, t, False, 0.0, 0.0, 0.0, None)
                       for f, (m, t) in methods.items()),
        share_drifted=0.0, drift_share=0.4, dataset_drift=False, rows_reference=1,
        rows_current=1)
    perf = PerformanceResult(task="regression", rows=1, labelled_rows=1, label_coverage=1.0,
                             mature=True, metrics={"mae": 1.0}, reference_metrics={"mae": 2.0},
                             drops={"mae": -0.5}, status="ok", reasons=())
    return CheckRun(model="m", start=T0, end=T0 + DAY, rows=1, status="ok", reasons=(),
                    config_hash="h", reference_version="r", drift=drift, performance=perf)


def test_relative_score_puts_both_kinds_of_test_on_one_scale() -> None:
    assert frames.relative_score(0.2, 0.1, "wasserstein") == pytest.approx(2.0)
    assert frames.relative_score(0.05, 0.05, "ks") == pytest.approx(1.0)
    assert frames.relative_score(1.0, 0.05, "ks") == 0.0
    assert frames.relative_score(0.0025, 0.05, "chisquare") == pytest.approx(2.0)
    assert math.isfinite(frames.relative_score(0.0, 0.05, "z") or math.inf)
    for missing in ((None, 0.1, "psi"), (0.1, None, "psi"), (0.1, 0.1, None),
                    (float("nan"), 0.1, "psi"), (0.1, 0.0, "psi"), (0.5, 1.0, "ks")):
        assert frames.relative_score(*missing) is None


def test_p_value_methods_agree_with_the_checks() -> None:
    for name, method in NATIVE.items():
        # A p-value of 0 drifts; a distance of 0 does not.
        assert (name in frames.P_VALUE_METHODS) == method.drifted(0.0, method.threshold), name
    assert frames.P_VALUE_METHODS.issubset(DRIFT_METHODS)
    assert set(DELEGATED) - frames.P_VALUE_METHODS == {"ed"}  # energy distance


def test_window_table_has_every_window_and_what_it_was_judged_against() -> None:
    runs = [window(0), window(1, "critical")]
    figures = [WindowFigures(1, {("drift", "share_drifted"): 0.0}),
               WindowFigures(2, {("drift", "share_drifted"): 0.75,
                                 ("performance", "mae"): 3.0,
                                 ("performance", "accuracy"): None})]
    table = frames.window_table(runs, figures, {("h", "r"): settings({"x": ("psi", 0.1)})})
    assert list(table["run_id"]) == [1, 2] and list(table["status"]) == ["ok", "critical"]
    assert list(table["share_drifted"]) == [0.0, 0.75]
    assert np.isnan(table.loc[0, "mae"]) and table.loc[1, "mae"] == 3.0
    assert table["accuracy"].isna().all()
    assert list(table["drift_share_limit"]) == [0.4, 0.4]
    assert list(table["reference_mae"]) == [2.0, 2.0]
    assert np.isnan(table.loc[0, "reference_accuracy"])
    assert str(table["window_end"].dt.tz) == "UTC"
    assert table.loc[1, "window"] == "2026-10-02 00:00 → 2026-10-03 00:00 UTC"
    assert {m for _, m in frames.WINDOW_FIGURES} <= set(table.columns)
    empty = frames.window_table([], [], {})
    assert empty.empty and "accuracy" in empty.columns


def test_bucket_bounds_cut_windows_into_at_most_n_columns() -> None:
    runs = [window(i) for i in range(250)]
    bounds = frames.bucket_bounds(runs, 120)
    assert len(bounds) == 84 and bounds[0] == runs[2].window_end
    assert bounds[-1] == runs[-1].window_end
    assert frames.bucket_bounds(runs[:5], 120) == [r.window_end for r in runs[:5]]
    assert frames.bucket_bounds([], 120) == []


def test_feature_cells_keep_each_buckets_most_drifted_window() -> None:
    runs = [window(i) for i in range(4)]
    bounds = [runs[1].window_end, runs[3].window_end]
    scores = [
        BucketFigure(0, "p", "score", 0.2, 0.001, 2, 0.201),  # a p-value: the smallest
        BucketFigure(0, "d", "score", 0.3, 0.01, 2, 0.31),  # a distance: the largest
        BucketFigure(1, "d", "score", 0.05, 0.02, 2, 0.07),
        BucketFigure(1, "d", "unseen_share", 0.5, 0.5, 2, 1.0),  # not a score: ignored
    ]
    newest = [Figure(runs[1].id, "drift", "null_rate_change", "d", -0.2),
              Figure(runs[3].id, "drift", "unseen_share", "d", 0.03),
              Figure(runs[0].id, "drift", "unseen_share", "d", 0.9)]  # not a newest window
    cells = frames.feature_cells(runs, scores, bounds,
                                 {("h", "r"): settings({"p": ("ks", 0.05),
                                                        "d": ("wasserstein", 0.1)})}, newest)
    by = cells.set_index(["window_end", "feature"])
    p = by.loc[(runs[1].window_end, "p")]
    assert p["score"] == 0.001 and p["method"] == "ks" and p["windows"] == 2
    assert p["relative"] == pytest.approx(math.log(0.001) / math.log(0.05)) and p["drifted"]
    d0 = by.loc[(runs[1].window_end, "d")]
    assert d0["relative"] == pytest.approx(3.0) and d0["drifted"]
    assert d0["null_rate_change"] == -0.2 and np.isnan(d0["unseen_share"])
    d1 = by.loc[(runs[3].window_end, "d")]
    assert not d1["drifted"] and d1["unseen_share"] == 0.03
    assert d1["window_start"] == runs[2].window_start
    assert d1["window"] == "2026-10-03 00:00 → 2026-10-05 00:00 UTC"
    assert frames.feature_cells([], [], [], {}).empty


def event(kind: str, at: datetime, new: bool, **details: object) -> FallbackEvent:
    return FallbackEvent(id=1, model="m", at=at, old_active=not new, new_active=new,
                         kind=kind, actor="alice" if kind == "manual" else None,
                         reason="why", details=dict(details))


def test_flag_marks_sit_at_the_window_that_moved_the_flag() -> None:
    late = T0 + 60 * DAY  # a backfill takes windows in long after they ended
    marks = frames.flag_marks([
        event("auto", late, True, runs=[{"window_end": "2026-10-09T00:00:00Z"},
                                        {"window_end": "2026-10-10T00:00:00Z"}]),
        event("manual", T0 + 3 * DAY, False),
        event("expiry", T0 + 90 * DAY, True),
    ], T0, T0 + 30 * DAY)
    assert list(marks["time"]) == [pd.Timestamp(T0 + 3 * DAY),
                                   pd.Timestamp("2026-10-10T00:00:00Z")]
    assert list(marks["label"]) == ["flag off (manual)", "flag on (auto)"]
    assert marks["reason"].iloc[0] == "why by alice"
    assert marks["recorded_at"].iloc[1] == pd.Timestamp(late)


def test_binned_distribution_of_numbers_shares_common_bins() -> None:
    ref = pd.Series([1.0, 2.0, 3.0, 4.0], dtype=object)
    cur = pd.Series([3.0, 4.0, "N/A", None, 4.0], dtype=object)
    binned = frames.binned_distribution(ref, cur, "num", bins=3)
    for sample, counts in (("reference", [1, 1, 2]), ("current", [0, 0, 3])):
        part = binned[binned["sample"] == sample]
        assert list(part["count"]) == counts
        assert part["share"].sum() == pytest.approx(1.0)
    assert binned["start"].min() == 1.0 and binned["end"].max() == 4.0


def test_binned_distribution_of_categories_keeps_the_top_ones() -> None:
    ref = pd.Series(["a"] * 5 + ["b"] * 3 + ["c"], dtype=object)
    cur = pd.Series(["a", "OTHER", "OTHER", None], dtype=object)
    binned = frames.binned_distribution(ref, cur, "cat", top=3)
    current = binned[binned["sample"] == "current"].set_index("bin")["share"].to_dict()
    reference = binned[binned["sample"] == "reference"].set_index("bin")["share"].to_dict()
    # The 3 most frequent over both samples; c and the null fall into "(other)".
    assert current == {"a": 0.25, "b": 0.0, "OTHER": 0.5, "(other)": 0.25}
    assert reference == pytest.approx({"a": 5 / 9, "b": 3 / 9, "OTHER": 0.0, "(other)": 1 / 9})
    assert frames.binned_distribution(pd.Series([], dtype=object),
                                      pd.Series([], dtype=object), "num").empty


def test_status_rank_worst_first() -> None:
    ranked = sorted(["ok", "warn", "critical", None, "error", "insufficient_data"],
                    key=frames.status_rank, reverse=True)
    assert ranked == ["critical", "error", "warn", None, "insufficient_data", "ok"]


def test_overview_frames_worst_first_with_trends_and_notes() -> None:
    def flag(active: bool, stale: bool = False) -> dict[str, object]:
        return {"active": active, "source": "auto", "since": None, "reason": None,
                "expires_at": None, "stale": stale}

    ok = [window(i, "ok") for i in (2, 1, 0)]  # newest first
    bad = [WindowRun(**{**window(5, "critical").__dict__, "id": 9, "model": "b"})]
    figures = [Figure(1, "performance", "accuracy", "", 0.84),
               Figure(3, "performance", "accuracy", "", 0.70),
               Figure(3, "drift", "share_drifted", "", float("nan")),
               Figure(9, "performance", "mae", "", 1.5),  # b is a regressor
               Figure(9, "performance", "estimated_mae", "", 1.2)]
    table, strip = frames.overview_frames(
        ["a", "b", "c", "d"], {"a": ok, "b": bad}, {"a": ok[0]},
        {"a": flag(False), "b": flag(False), "c": flag(True), "d": flag(False, stale=True)},
        figures, {"c": "no logs"}, slots=14)
    assert list(table["model"]) == ["c", "b", "d", "a"]  # flag on, critical, no runs, ok
    row = table.set_index("model").loc["a"]
    assert row["status"] == "ok" and row["run_id"] == 3 and row["fallback"] == "off"
    assert row["performance_trend"] == [0.84, None, 0.70] and row["performance_latest"] == 0.70
    assert row["performance_metric"] == "accuracy" and pd.isna(row["estimated_latest"])
    regressor = table.set_index("model").loc["b"]
    assert (regressor["performance_metric"], regressor["performance_latest"],
            regressor["estimated_latest"]) == ("mae", 1.5, 1.2)
    assert table.set_index("model").loc["d", "performance_metric"] == ""
    assert row["drifted_latest"] is None  # NaN is no figure
    assert table.set_index("model").loc["c", "note"] == "no logs"
    assert table.set_index("model").loc["d", "status"] == "no runs"
    assert list(strip.loc[strip["model"] == "a", "slot"]) == [12, 13, 14]
    assert list(strip.loc[strip["model"] == "a", "run_id"]) == [1, 2, 3]


def test_segment_cells_keep_each_buckets_worst_status() -> None:
    runs = [window(i) for i in range(4)]
    bounds = [runs[1].window_end, runs[3].window_end]
    levels = [
        BucketFigure(0, "home=RENT", "status_level", 2.0, 0.0, 2, 2.0),  # one critical
        BucketFigure(1, "home=RENT", "status_level", 0.0, 0.0, 2, 0.0),
        BucketFigure(1, "home=OTHER", "status_level", -1.0, -1.0, 1, -1.0),
        BucketFigure(1, "home=OWN", "rows", 900.0, 800.0, 2, 1700.0),  # not a status
    ]
    cells = frames.segment_cells(runs, levels, bounds).set_index(["window_end", "segment"])
    assert cells.loc[(runs[1].window_end, "home=RENT"), "status"] == "critical"
    assert cells.loc[(runs[3].window_end, "home=RENT"), "status"] == "ok"
    assert cells.loc[(runs[3].window_end, "home=OTHER"), "status"] == "insufficient_data"
    assert len(cells) == 3
    assert frames.segment_cells([], [], []).empty


def test_estimated_table_lists_every_estimate_with_its_band() -> None:
    from monitor.results import EstimatedLossResult, EstimatedResult

    loss = EstimatedLossResult(
        2.0, 1.5, 1 / 3, None, 500, "warn", ("estimated mae ...",), sampling_error=0.05,
        lower_bound=1.85, upper_bound=2.15, metrics={"mae": 2.0, "rmse": 2.8},
        sampling_errors={"mae": 0.05, "rmse": 0.07}, lower_bounds={"mae": 1.85, "rmse": 2.59},
        upper_bounds={"mae": 2.15, "rmse": 3.01}, reference_metrics={"mae": 1.5, "rmse": 2.1})
    perf = PerformanceResult("regression", 500, 0, 0.0, False, {"mae": None, "rmse": None},
                             {"mae": 1.5, "rmse": 2.1}, {"mae": None, "rmse": None}, "warn",
                             (), estimated=loss)
    table = frames.estimated_table(perf)
    assert list(table["metric"]) == ["mae", "rmse"]
    assert list(table["estimated"]) == [2.0, 2.8] and list(table["lower"]) == [1.85, 2.59]
    assert list(table["upper"]) == [2.15, 3.01] and list(table["reference"]) == [1.5, 2.1]
    assert table["realized"].isna().all()  # no labels yet
    # A classifier's: all five metrics, the realized ones where the window has labels.
    cbpe = EstimatedResult(
        0.8, 0.84, 0.04, 0.79, 500, "ok", (), sampling_error=0.01, lower_bound=0.77,
        upper_bound=0.83, metrics={"accuracy": 0.8, "f1": 0.6, "precision": 0.7,
                                   "recall": 0.5, "roc_auc": 0.85},
        sampling_errors=dict.fromkeys(("accuracy", "f1", "precision", "recall", "roc_auc"),
                                      0.01),
        lower_bounds={"accuracy": 0.77, "f1": 0.57}, upper_bounds={"accuracy": 0.83})
    perf = PerformanceResult("classification", 500, 500, 1.0, True,
                             {"accuracy": 0.79, "f1": 0.61, "roc_auc": 0.86},
                             {"accuracy": 0.84, "f1": 0.65, "roc_auc": 0.9},
                             {"accuracy": 0.05, "f1": 0.04, "roc_auc": 0.04}, "ok", (),
                             estimated=cbpe)
    table = frames.estimated_table(perf).set_index("metric")
    assert list(table.index) == ["accuracy", "f1", "precision", "recall", "roc_auc"]
    assert table.loc["accuracy", "reference"] == 0.84  # the estimator's, not the table's
    assert table.loc["f1", "realized"] == 0.61 and np.isnan(table.loc["precision", "realized"])
    assert table.loc["f1", "lower"] == 0.57 and np.isnan(table.loc["f1", "upper"])
    skipped = PerformanceResult("regression", 0, 0, 0.0, False, {}, {}, {}, "skipped", (),
                                estimated=EstimatedLossResult(None, None, None, None, 0,
                                                              "skipped", ("no estimator",)))
    assert frames.estimated_table(skipped).empty


def test_version_table_one_row_per_version_first_seen_first() -> None:
    from monitor.rollback import VersionWindow, summarize

    t0 = datetime(2026, 10, 1, tzinfo=UTC)
    day = timedelta(days=1)
    rows = [VersionWindow(i, t0 + i * day, t0 + (i + 1) * day, "ok", True, version,
                          {"rows": 100.0, "errors": 1.0, "labelled_rows": 90.0,
                           "correct": correct, "prediction_drifted": float(i == 2)})
            for i in range(3) for version, correct in (("1.4.0", 80.0), ("1.5.0", 60.0))
            if version == "1.4.0" or i > 0]
    table = frames.version_table(summarize(rows))
    assert table["version"].tolist() == ["1.4.0", "1.5.0"]
    assert table["windows"].tolist() == [3, 2] and table["rows"].tolist() == [300, 200]
    assert table["accuracy"].tolist() == pytest.approx([80 / 90, 60 / 90])
    assert table["error_rate"].tolist() == pytest.approx([0.01, 0.01])
    assert table["prediction_drift"].tolist() == ["1 of 3 windows", "1 of 2 windows"]
    assert table["first_seen"].tolist() == [t0, t0 + day]


def test_run_versions_one_row_per_version_and_per_pair() -> None:
    from monitor.results import VersionComparison, VersionFigures, VersionsResult

    section = VersionsResult(
        versions=(VersionFigures("1.4.0", 100, 1, 0.01, 50.0, 90, 80, 80 / 90),
                  VersionFigures("1.5.0", 60, 0, 0.0, None, 50, 30, 0.6)),
        comparisons=(VersionComparison("1.4.0", "1.5.0", "accuracy", 80 / 90, 0.6, 1e-4,
                                       "1.4.0"),), mature=True, alpha=0.05)
    versions, pairs = frames.run_versions(section)
    assert versions["version"].tolist() == ["1.4.0", "1.5.0"]
    assert versions["labelled_rows"].tolist() == [90, 50]
    assert versions["latency_p95_ms"].isna().tolist() == [False, True]
    assert pairs.to_dict("records") == [{"a": "1.4.0", "b": "1.5.0", "basis": "accuracy",
                                         "value_a": 80 / 90, "value_b": 0.6, "p_value": 1e-4,
                                         "better": "1.4.0"}]
    empty = VersionsResult(versions=(), comparisons=(), mature=False, alpha=0.05)
    assert frames.run_versions(empty)[1].empty

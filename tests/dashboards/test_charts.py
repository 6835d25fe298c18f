"""dashboards.charts: the Vega-Lite specs, built and validated without a browser."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest

from dashboards import charts, frames
from monitor.store.flags import FallbackEvent
from monitor.store.history import WindowRun

T0 = datetime(2026, 10, 1, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture
def windows() -> pd.DataFrame:
    runs = [WindowRun(id=i + 1, model="m", window_start=T0 + i * DAY,
                      window_end=T0 + (i + 1) * DAY, rows=100,
                      status="critical" if i > 3 else "ok", finished_at=T0, config_hash="h",
                      reference_version="r") for i in range(6)]
    table = frames.window_table(runs, [], {})
    table["share_drifted"] = [0, 0, 0, 0.2, 0.6, 0.6]
    table["dataset_drift"] = [0, 0, 0, 0, 1, 1]
    table["accuracy"] = [0.84, 0.84, 0.83, 0.80, 0.71, 0.70]
    table["reference_accuracy"] = 0.84
    table["estimated_accuracy"] = [0.84, 0.84, 0.84, 0.82, 0.77, 0.76]
    table["mae"] = 1.0
    table["reference_mae"] = 0.9
    table["label_coverage"] = [0.9, 0.9, 0.9, 0.9, 0.5, 0.1]
    table["mature"] = [1, 1, 1, 1, 0, 0]
    return table


@pytest.fixture
def marks() -> pd.DataFrame:
    return frames.flag_marks([FallbackEvent(
        1, "m", T0 + 30 * DAY, False, True, "auto", None, "2 bad runs",
        {"runs": [{"window_end": "2026-10-06T00:00:00Z"}]})], None, None)


def spec(chart: Any) -> dict[str, Any]:
    return chart.to_dict()  # validates against the Vega-Lite schema


def data_of(chart: Any, layer: int = 0) -> pd.DataFrame:
    """A layer's data (Altair lifts data shared by the layers to the layer chart)."""
    import altair as alt

    part = chart.layer[layer] if hasattr(chart, "layer") else chart
    return chart.data if part.data is alt.Undefined else part.data


def test_domain_is_iso_utc() -> None:
    assert charts.domain_of(T0, T0 + DAY) == ("2026-10-01T00:00:00Z", "2026-10-02T00:00:00Z")


def test_status_strip_is_sized_at_the_top_and_selects_a_run(windows: pd.DataFrame,
                                                             marks: pd.DataFrame) -> None:
    domain = charts.domain_of(T0, T0 + 6 * DAY)
    chart = charts.status_strip(windows, domain, marks, selectable=True)
    out = spec(chart)
    assert out["height"] == 190 and out["width"] == "container"
    cells, rule, label = out["layer"]
    assert "height" not in cells  # Vega-Lite sizes a layer as a whole
    params = out.get("params") or cells["params"]  # Altair may lift them to the top
    assert params[0]["name"] == "window"
    assert params[0]["select"]["fields"] == ["run_id"]
    assert cells["encoding"]["color"]["scale"]["domain"] == list(charts.STATUS_COLORS)
    assert cells["encoding"]["x"]["scale"] == {"type": "utc", "domain": list(domain)}
    assert rule["mark"]["type"] == "rule" and label["mark"]["type"] == "text"
    assert list(data_of(chart, 1)["label"]) == ["flag on (auto)"]
    assert len(spec(charts.status_strip(windows))["layer"]) == 1  # no flag changes, no rules


def test_drift_share_marks_dataset_drift_and_the_limit(windows: pd.DataFrame) -> None:
    windows["drift_share_limit"] = 0.5
    chart = charts.drift_share_chart(windows)
    out = spec(chart)
    assert out["layer"][1]["encoding"]["y"]["field"] == "drift_share_limit"
    assert list(data_of(chart)["dataset"]) == ["no column drifted"] * 3 + [
        "columns drifted", "dataset drifted", "dataset drifted"]


def test_heatmap_puts_the_most_drifted_features_on_top() -> None:
    cells = pd.DataFrame({
        "window_start": pd.to_datetime([T0, T0, T0 + DAY, T0 + DAY], utc=True),
        "window_end": pd.to_datetime([T0 + DAY, T0 + DAY, T0 + 2 * DAY, T0 + 2 * DAY],
                                     utc=True),
        "feature": ["calm", "wild", "calm", "wild"], "method": "psi", "threshold": 0.1,
        "score": [0.01, 0.05, 0.02, 0.5], "relative": [0.1, 0.5, 0.2, 5.0],
        "drifted": [False, False, False, True], "windows": 1,
        "null_rate_change": [0.0, 0.0, 0.1, 0.0],
        "unseen_share": [None, None, None, 0.2]})
    chart = charts.drift_heatmap(cells)
    out = spec(chart)
    encoding = out["layer"][0]["encoding"]
    assert encoding["y"]["sort"] == ["wild", "calm"]
    assert encoding["color"]["scale"]["domain"] == [0, 1, 3]
    assert {"null_rate_change", "unseen_share", "score", "threshold", "method"} <= {
        t["field"] for t in encoding["tooltip"]}
    assert data_of(chart)["relative_shown"].max() == 3.0  # clamped for the colour


def test_performance_chart_shows_the_estimate_beside_accuracy(windows: pd.DataFrame) -> None:
    chart = charts.performance_chart(windows, "accuracy")
    spec(chart)
    long, reference = data_of(chart, 0), data_of(chart, 1)
    assert set(long["series"]) == {"realized", "estimated"}
    assert set(reference["series"]) == {"reference"}
    assert spec(chart)["layer"][1]["mark"]["strokeDash"] == [5, 4]
    realized = long[long["series"] == "realized"]
    assert set(realized["maturity"]) == {"mature", "immature"}
    assert set(realized.loc[realized["maturity"] == "immature", "fill"]) == {"#ffffff"}
    # Points sit mid-window, lined up with the windows' cells.
    assert long["window_mid"].iloc[0] == pd.Timestamp(T0 + DAY / 2)
    regression = charts.performance_chart(windows, "mae")
    assert set(data_of(regression, 0)["series"]) == {"realized"}
    assert set(data_of(regression, 1)["series"]) == {"reference"}


@pytest.mark.parametrize("build", [
    lambda w: charts.label_coverage_chart(w, 0.8),
    lambda w: charts.violation_chart(w.assign(violation_rate=0.01), 0.01, 0.05),
    lambda w: charts.latency_chart(w.assign(latency_p50_ms=10.0, latency_p95_ms=20.0,
                                            latency_p99_ms=30.0), max_p99_ms=50.0),
    lambda w: charts.rates_chart(w.assign(error_rate=0.0, fallback_rate=0.1), 0.05),
])
def test_every_time_chart_is_a_valid_spec_with_flags(windows: pd.DataFrame, marks: pd.DataFrame,
                                                     build: Any) -> None:
    plain = spec(build(windows))
    assert plain["width"] == "container" and plain["height"] > 150


def test_overview_strip_rows_in_the_given_order() -> None:
    strip = pd.DataFrame({
        "model": ["b", "a"], "slot": [14, 14], "run_id": [2, 1], "status": ["ok", "critical"],
        "rows": [1, 1], "window_start": pd.to_datetime([T0, T0], utc=True),
        "window_end": pd.to_datetime([T0 + DAY, T0 + DAY], utc=True)})
    out = spec(charts.overview_strip(strip, ["a", "b"], selectable=True))
    assert out["encoding"]["y"]["sort"] == ["a", "b"]
    assert out["params"][0]["select"]["fields"] == ["run_id", "model"]


def test_distribution_chart_numbers_overlaid_categories_side_by_side() -> None:
    ref = pd.Series([1.0, 2.0, 3.0], dtype=object)
    num = spec(charts.distribution_chart(frames.binned_distribution(ref, ref, "num"), "x",
                                         "num"))
    assert num["encoding"]["x"]["bin"] == "binned" and num["encoding"]["y"]["stack"] is None
    cat = spec(charts.distribution_chart(
        frames.binned_distribution(pd.Series(["a", "b"]), pd.Series(["b", "c"]), "cat"), "x",
        "cat"))
    assert cat["encoding"]["xOffset"]["field"] == "sample"


def test_the_estimate_has_its_band_under_the_lines(windows: pd.DataFrame) -> None:
    banded = windows.assign(
        estimated_accuracy_lower=windows["estimated_accuracy"] - 0.03,
        estimated_accuracy_upper=windows["estimated_accuracy"] + 0.03)
    chart = charts.performance_chart(banded, "accuracy")
    layers = spec(chart)["layer"]
    assert layers[0]["mark"]["type"] == "area"  # drawn first: under the lines
    band = data_of(chart, 0)
    assert list(band["estimated_accuracy_upper"] - band["estimated_accuracy_lower"]) == \
        pytest.approx([0.06] * len(windows))
    # Without the bounds (runs stored before the band existed) the chart has no band.
    assert spec(charts.performance_chart(windows, "accuracy"))["layer"][0]["mark"] != "area"


def test_segment_strip_puts_the_worst_segments_on_top() -> None:
    from monitor.store.history import BucketFigure, WindowRun

    t0 = datetime(2026, 10, 1, tzinfo=UTC)
    runs = [WindowRun(i + 1, "m", t0 + i * timedelta(days=1),
                      t0 + (i + 1) * timedelta(days=1), 100, "ok", t0, "h", "r")
            for i in range(2)]
    levels = [BucketFigure(0, "a=x", "status_level", 0.0, 0.0, 1, 0.0),
              BucketFigure(1, "a=y", "status_level", 2.0, 2.0, 1, 2.0),
              BucketFigure(1, "a=x", "status_level", 1.0, 1.0, 1, 1.0)]
    cells = frames.segment_cells(runs, levels, [r.window_end for r in runs])
    out = spec(charts.segment_status_chart(cells, charts.domain_of(t0, runs[-1].window_end)))
    y = out["layer"][0]["encoding"]["y"]
    assert y["field"] == "segment" and y["sort"] == ["a=y", "a=x"]
    assert out["layer"][0]["encoding"]["color"]["scale"]["domain"][:3] == [
        "ok", "warn", "critical"]


def test_a_regressors_estimated_mae_is_drawn_with_its_band(windows: pd.DataFrame) -> None:
    """Estimated vs realized MAE over windows: the estimate where labels are missing too,
    its band under the lines; a metric without an estimate keeps the plain chart."""
    estimated = pd.Series([0.9, 0.9, 0.95, 1.1, 1.3, 1.4])
    banded = windows.assign(estimated_mae=estimated, estimated_mae_lower=estimated - 0.05,
                            estimated_mae_upper=estimated + 0.05)
    chart = charts.performance_chart(banded, "mae")
    out = spec(chart)
    assert out["layer"][0]["mark"]["type"] == "area"
    assert out["layer"][0]["encoding"]["y"]["field"] == "estimated_mae_lower"
    long = data_of(chart, 1)
    assert set(long["series"]) == {"realized", "estimated"}
    assert list(long.loc[long["series"] == "estimated", "value"]) == list(estimated)
    assert "estimated without labels" in str(out["title"])
    assert spec(charts.performance_chart(banded, "rmse"))["layer"][0]["mark"] != "area"


def test_multivariate_chart_draws_the_auc_its_interval_and_the_threshold(
        windows: pd.DataFrame, marks: pd.DataFrame) -> None:
    windows["auc"] = [0.50, 0.51, float("nan"), 0.55, 0.78, 0.80]
    windows["auc_lower"] = windows["auc"] - 0.02
    windows["auc_upper"] = windows["auc"] + 0.02
    windows["auc_threshold"] = [0.6, 0.6, 0.6, 0.6, 0.7, 0.7]
    chart = charts.multivariate_chart(windows, charts.domain_of(T0, T0 + 6 * DAY), marks)
    out = spec(chart)
    band, line, _points, threshold = out["layer"][:4]
    assert band["mark"]["type"] == "area" and band["encoding"]["y2"]["field"] == "auc_upper"
    assert line["encoding"]["y"]["field"] == "auc"
    assert threshold["mark"]["strokeDash"] == [5, 4]
    # A window without the section (NaN) is left out of the line, not drawn at 0.
    assert list(data_of(chart, 1)["auc"]) == [0.50, 0.51, 0.55, 0.78, 0.80]
    assert list(data_of(chart, 3)["auc_threshold"]) == [0.6] * 4 + [0.7] * 2
    assert "95% CI" in out["title"]["text"] if isinstance(out["title"], dict) \
        else "95% CI" in out["title"]


def test_version_chart_draws_each_version_realized_and_estimated(marks: pd.DataFrame) -> None:
    from monitor.rollback import VersionWindow

    rows = [VersionWindow(i, T0 + i * DAY, T0 + (i + 1) * DAY, "ok", i < 2, version,
                          {"rows": 100.0, "accuracy": acc, "estimated_accuracy": acc + 0.01})
            for i in range(3) for version, acc in (("1.4.0", 0.84), ("1.5.0", 0.70))]
    table = frames.version_windows(rows)
    # Realized accuracy of immature windows is left out; the estimate stays.
    assert table["accuracy"].isna().tolist() == [False, False, False, False, True, True]
    chart = charts.version_chart(table, charts.domain_of(T0, T0 + 3 * DAY), marks)
    drawn = spec(chart)
    assert drawn["layer"][1]["mark"]["strokeDash"] == [5, 4]
    realized, estimated = data_of(chart, 0), data_of(chart, 1)
    assert set(realized["version"]) == set(estimated["version"]) == {"1.4.0", "1.5.0"}
    assert len(realized) == 4 and len(estimated) == 6

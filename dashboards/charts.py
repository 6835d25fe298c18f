"""Vega-Lite charts (Altair) built by pure functions: frames in, chart specs out.

Nothing here reads the store or draws: a test builds a chart and reads ``to_dict()``
without a browser. Time axes are UTC and share the page's domain (``Domain``), so that
the charts of a model page line up window for window.

Speed: conditions and constants are columns of the data (``scale=None``) or mark
properties, never ``alt.condition``/``alt.value``/``alt.datum`` encodings: Altair builds
each of those from a dict by hashing its whole schema, about 20 ms apiece.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import altair as alt
import numpy as np
import pandas as pd

__all__ = [
    "STATUS_COLORS",
    "Domain",
    "distribution_chart",
    "domain_of",
    "drift_heatmap",
    "drift_share_chart",
    "flag_layers",
    "label_coverage_chart",
    "latency_chart",
    "overview_strip",
    "performance_chart",
    "rates_chart",
    "segment_status_chart",
    "status_strip",
    "version_chart",
    "violation_chart",
]

STATUS_COLORS = {
    "ok": "#2e7d32",
    "warn": "#f9a825",
    "critical": "#c62828",
    "error": "#6a1b9a",
    "insufficient_data": "#9e9e9e",
}
_STATUS_SCALE = alt.Scale(domain=list(STATUS_COLORS), range=list(STATUS_COLORS.values()))
_WIDTH = "container"
_Y_AXIS = 130  # pixels for every time chart's y axis (its labels and title)
Domain = tuple[str, str]  # ISO 8601 UTC ("...Z"); Vega-Lite misreads epoch numbers here


def _tips(*items: str | alt.Tooltip) -> list[alt.Tooltip]:
    """Tooltip channels, typed: a bare shorthand would cost Altair a ``from_dict``."""
    return [alt.Tooltip(i) if isinstance(i, str) else i for i in items]


def domain_of(since: datetime, until: datetime) -> Domain:
    """The time axis of a page: from ``since`` to ``until``."""
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    return (pd.Timestamp(since).tz_convert("UTC").strftime(fmt),
            pd.Timestamp(until).tz_convert("UTC").strftime(fmt))


def _x(domain: Domain | None, *, title: str | None = None, axis: bool = True) -> alt.X:
    scale = alt.Scale(type="utc", domain=list(domain)) if domain else alt.Scale(type="utc")
    return alt.X("window_start:T", title=title, scale=scale,
                 axis=alt.Axis(format="%b %d", labelAngle=0) if axis else None)


def _x_mid(domain: Domain | None) -> alt.X:
    """Points and lines sit in the middle of their window, so they line up with the
    windows' cells in the other charts."""
    scale = alt.Scale(type="utc", domain=list(domain)) if domain else alt.Scale(type="utc")
    return alt.X("window_mid:T", title=None, scale=scale,
                 axis=alt.Axis(format="%b %d", labelAngle=0))


def _mid(frame: pd.DataFrame) -> pd.Series:
    return frame["window_start"] + (frame["window_end"] - frame["window_start"]) / 2


def _minutes(values: pd.Series) -> np.ndarray:
    """'2026-10-09 00:00' (UTC) per time, formatted by numpy (pandas' strftime is 20x
    slower)."""
    naive = values.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[m]")
    return np.char.replace(np.datetime_as_string(naive, unit="m"), "T", " ")


def _window_text(frame: pd.DataFrame) -> pd.Series:
    """'2026-10-09 00:00 → 2026-10-10 00:00 UTC' for tooltips (the ``window`` column when
    the frame has it)."""
    if "window" in frame.columns:
        return frame["window"]
    if frame.empty:
        return pd.Series([], index=frame.index, dtype=object)
    text = np.char.add(np.char.add(_minutes(frame["window_start"]), " → "),
                       np.char.add(_minutes(frame["window_end"]), " UTC"))
    return pd.Series(text, index=frame.index, dtype=object)


def _finish(layers: Sequence[alt.Chart | alt.LayerChart], marks: pd.DataFrame | None, *,
            height: int | alt.Step, title: str, labels: bool = False) -> alt.LayerChart:
    """The layers, then the fallback-flag changes (``flag_layers``), sized and titled at
    the top: Vega-Lite sizes a layer as a whole, never its children."""
    extra = flag_layers(marks, labels=labels) if marks is not None else []
    # One width for every y axis, so that the plots of a page line up window for window.
    return (alt.layer(*layers, *extra).properties(width=_WIDTH, height=height, title=title)
            .configure_axisY(minExtent=_Y_AXIS, maxExtent=_Y_AXIS))


def status_strip(windows: pd.DataFrame, domain: Domain | None = None,
                 marks: pd.DataFrame | None = None, *, selectable: bool = False,
                 height: int = 190) -> alt.LayerChart:
    """One coloured cell per window (its latest run's status), the flag changes labelled.
    ``selectable``: a click selects the window's ``run_id`` (selection parameter
    ``window``)."""
    data = windows[["run_id", "window_start", "window_end", "status", "rows"]].assign(
        window=_window_text(windows), lane="windows")
    cells = alt.Chart(data).mark_rect(stroke="white", strokeWidth=0.5).encode(
        x=_x(domain),
        x2=alt.X2("window_end"),
        y=alt.Y("lane:N", title=None, axis=alt.Axis(ticks=False, domain=False)),
        color=alt.Color("status:N", scale=_STATUS_SCALE, title=None,
                        legend=alt.Legend(orient="bottom")),
        tooltip=_tips("window:N", "status:N", alt.Tooltip("rows:Q", format=","),
                 alt.Tooltip("run_id:Q", title="run")),
    )
    if selectable:
        cells = cells.add_params(alt.selection_point(name="window", fields=["run_id"],
                                                     on="click"))
    return _finish([cells], marks, height=height, title="Status per window", labels=True)


def segment_status_chart(cells: pd.DataFrame, domain: Domain | None = None,
                         marks: pd.DataFrame | None = None, *, row_height: int = 24
                         ) -> alt.LayerChart:
    """Segment x window: each segment's status (the worst of the windows a cell covers),
    segments that were ever critical on top. Expects ``frames.segment_cells`` output."""
    rank = {"critical": 3, "warn": 2, "ok": 1, "insufficient_data": 0}
    order = (cells.assign(rank=cells["status"].map(rank)).groupby("segment")["rank"].max()
             .sort_values(ascending=False, kind="stable").index.tolist())
    rects = alt.Chart(cells).mark_rect(stroke="white", strokeWidth=0.5).encode(
        x=_x(domain),
        x2=alt.X2("window_end"),
        y=alt.Y("segment:N", sort=order, title=None,
                axis=alt.Axis(labelOverlap=False, labelLimit=_Y_AXIS - 10)),
        color=alt.Color("status:N", scale=_STATUS_SCALE, title=None,
                        legend=alt.Legend(orient="bottom")),
        tooltip=_tips("segment:N", "window:N", "status:N",
                      alt.Tooltip("windows:Q", title="windows in the cell")),
    )
    return _finish([rects], marks, height=max(row_height * len(order), 60) + 90,
                   title="Status per segment (column=value) and window")


def flag_layers(marks: pd.DataFrame | None, *, labels: bool = False) -> list[alt.Chart]:
    """Each fallback-flag change as a vertical dashed rule (black: on, grey: off),
    labelled when ``labels``; none when there is no change."""
    if marks is None or marks.empty:
        return []
    data = marks.assign(
        when=pd.Series(_minutes(marks["recorded_at"]), index=marks.index) + " UTC",
        colour=marks["state"].map({"on": "#111111"}).fillna("#777777"))
    colour = alt.Color("colour:N", scale=None)
    base = alt.Chart(data).encode(x=alt.X("time:T"))
    out = [base.mark_rule(strokeWidth=2, strokeDash=[6, 3]).encode(
        color=colour,
        tooltip=_tips("label:N", "reason:N", alt.Tooltip("when:N", title="recorded")))]
    if labels:
        # Above the plot, where no cell's colour hides it.
        out.append(base.mark_text(align="left", baseline="bottom", dx=4, y=-3, fontSize=12,
                                  fontWeight="bold")
                   .encode(text=alt.Text("label:N"), color=colour))
    return out


def drift_share_chart(windows: pd.DataFrame, domain: Domain | None = None,
                      marks: pd.DataFrame | None = None) -> alt.LayerChart:
    """Share of drifted columns per window (red where the dataset drifted) and the
    drifted-share limit it was judged against (dashed)."""
    data = windows[["window_start", "window_end", "share_drifted", "dataset_drift",
                    "drift_share_limit"]].assign(window=_window_text(windows))
    data["dataset"] = "no column drifted"
    data.loc[data["share_drifted"] > 0, "dataset"] = "columns drifted"
    data.loc[data["dataset_drift"] == 1.0, "dataset"] = "dataset drifted"
    base = alt.Chart(data)
    bars = base.mark_rect(stroke="white", strokeWidth=0.5).encode(
        x=_x(domain), x2=alt.X2("window_end"),
        y=alt.Y("share_drifted:Q", title=None, scale=alt.Scale(domain=[0, 1]),
                axis=alt.Axis(format="%", tickCount=4)),
        y2=alt.Y2Datum(0),
        color=alt.Color("dataset:N", title=None,
                        scale=alt.Scale(domain=["dataset drifted", "columns drifted",
                                                "no column drifted"],
                                        range=["#c62828", "#fb8c00", "#b0bec5"]),
                        legend=alt.Legend(orient="top")),
        tooltip=_tips("window:N", alt.Tooltip("share_drifted:Q", format=".0%", title="drifted"),
                 alt.Tooltip("drift_share_limit:Q", format=".0%", title="limit")),
    )
    limit = base.mark_rule(strokeDash=[5, 4], color="#333333", strokeWidth=1.5).encode(
        x=_x(domain), x2=alt.X2("window_end"), y=alt.Y("drift_share_limit:Q"))
    return _finish([bars, limit], marks, height=270,
                   title="Dataset drift: share of drifted columns (dashed: the limit)")


def drift_heatmap(cells: pd.DataFrame, domain: Domain | None = None,
                  marks: pd.DataFrame | None = None, *, row_height: int = 24
                  ) -> alt.LayerChart:
    """Feature x window: each column's drift score relative to its threshold (1: at the
    threshold; see ``frames.relative_score``), most drifted features on top; cells of
    windows that drifted are outlined. Expects ``frames.bucket_features`` output."""
    data = cells.assign(
        window=_window_text(cells),
        relative_shown=cells["relative"].clip(upper=3.0),
        drifted_text=np.where(cells["drifted"].astype(bool), "yes", "no"),
        outline=np.where(cells["drifted"].astype(bool), "#000000", "#ffffff"),
        outline_width=np.where(cells["drifted"].astype(bool), 1.5, 0.5),
    )
    order = (cells.groupby("feature")["relative"].max().fillna(-1.0)
             .sort_values(ascending=False).index.tolist())
    rects = alt.Chart(data).mark_rect().encode(
        x=_x(domain),
        x2=alt.X2("window_end"),
        y=alt.Y("feature:N", sort=order, title=None,
                axis=alt.Axis(labelOverlap=False, labelLimit=_Y_AXIS - 10)),
        color=alt.Color(
            "relative_shown:Q", title="score / threshold",
            scale=alt.Scale(domain=[0, 1, 3], range=["#f1f8e9", "#ffb74d", "#b71c1c"],
                            clamp=True),
            legend=alt.Legend(orient="top", gradientLength=160)),
        stroke=alt.Stroke("outline:N", scale=None),
        strokeWidth=alt.StrokeWidth("outline_width:Q", scale=None),
        tooltip=_tips(
            "feature:N", "window:N", "method:N",
            alt.Tooltip("score:Q", format=".4g"), alt.Tooltip("threshold:Q", format=".4g"),
            alt.Tooltip("relative:Q", format=".2f", title="score vs threshold"),
            alt.Tooltip("drifted_text:N", title="drifted"),
            alt.Tooltip("windows:Q", title="windows in the cell"),
            alt.Tooltip("null_rate_change:Q", format="+.2%", title="null-rate change"),
            alt.Tooltip("unseen_share:Q", format=".2%", title="unseen share"),
        ),
    )
    return _finish([rects], marks, height=max(row_height * len(order), 60) + 150,
                   title="Drift per feature, relative to its threshold (outlined: drifted; "
                   "hover for null-rate change and unseen share)")


_SERIES_COLORS = alt.Scale(domain=["realized", "estimated", "reference"],
                           range=["#1565c0", "#8e24aa", "#616161"])


def performance_chart(windows: pd.DataFrame, metric: str, domain: Domain | None = None,
                      marks: pd.DataFrame | None = None) -> alt.LayerChart:
    """The realized ``metric`` per window against the reference's (dashed), with its
    estimate without labels beside it where the windows have one (``estimated_<metric>``:
    a classifier's accuracy, f1 and roc_auc, a regressor's mae and rmse) and its band;
    hollow points: labels not mature yet."""
    estimated = f"estimated_{metric}"
    keep = ["window_start", "window_end", metric, f"reference_{metric}", "label_coverage",
            "mature"]
    has_estimate = estimated in windows.columns and bool(windows[estimated].notna().any())
    if has_estimate:
        keep.append(estimated)
    data = windows[keep].assign(window=_window_text(windows), window_mid=_mid(windows))
    renames = {metric: "realized", f"reference_{metric}": "reference",
               estimated: "estimated"}
    long = data.rename(columns=renames).melt(
        id_vars=["window_start", "window_end", "window_mid", "window", "label_coverage",
                 "mature"],
        value_vars=[v for k, v in renames.items() if k in data.columns],
        var_name="series", value_name="value").dropna(subset=["value"])
    long["maturity"] = long["mature"].map({1.0: "mature", 0.0: "immature"}).fillna("unknown")
    colours = dict(zip(_SERIES_COLORS.domain, _SERIES_COLORS.range, strict=True))
    # Hollow points where the labels are not mature yet.
    long["fill"] = np.where(long["maturity"] == "immature", "#ffffff",
                            long["series"].map(colours))
    colour = alt.Color("series:N", scale=_SERIES_COLORS, title=None,
                       legend=alt.Legend(orient="top"))
    x, y = _x_mid(domain), alt.Y("value:Q", title=None, scale=alt.Scale(zero=False))
    measured = alt.Chart(long[long["series"] != "reference"])
    reference = alt.Chart(long[long["series"] == "reference"])
    lines = measured.mark_line(interpolate="monotone", strokeWidth=2.5).encode(
        x=x, y=y, color=colour)
    dashed = reference.mark_line(interpolate="step-after", strokeWidth=2,
                                 strokeDash=[5, 4]).encode(x=x, y=y, color=colour)
    points = measured.mark_point(size=50, filled=True).encode(
        x=x, y=y, color=colour, fill=alt.Fill("fill:N", scale=None),
        tooltip=_tips("window:N", "series:N", alt.Tooltip("value:Q", format=".4f"),
                 alt.Tooltip("label_coverage:Q", format=".1%", title="label coverage"),
                 "maturity:N"),
    )
    layers: list[alt.Chart] = [lines, dashed, points]
    bounds = [f"{estimated}_lower", f"{estimated}_upper"]
    if has_estimate and set(bounds) <= set(windows.columns):
        band = windows[bounds].assign(window_mid=_mid(windows)).dropna()
        if len(band):
            # The estimate's band (3 sampling errors): its drop warns only outside it.
            layers.insert(0, alt.Chart(band).mark_area(
                interpolate="monotone", opacity=0.15, color=colours["estimated"]).encode(
                x=x, y=alt.Y(f"{bounds[0]}:Q", title=None, scale=alt.Scale(zero=False)),
                y2=f"{bounds[1]}:Q"))
    title = (f"{metric}: realized vs reference (dashed), estimated without labels (band: "
             "3 sampling errors)" if has_estimate
             else f"{metric}: realized vs reference (dashed)")
    return _finish(layers, marks, height=340, title=title)


def multivariate_chart(windows: pd.DataFrame, domain: Domain | None = None,
                       marks: pd.DataFrame | None = None) -> alt.LayerChart:
    """The domain classifier's cross-validated AUC per window with its 95% interval (band),
    against the threshold above which a window has multivariate drift (dashed)."""
    data = windows[["window_start", "window_end", "auc", "auc_lower", "auc_upper",
                    "auc_threshold"]].assign(window=_window_text(windows),
                                             window_mid=_mid(windows))
    measured = data.dropna(subset=["auc"])
    x = _x_mid(domain)
    y = alt.Y("auc:Q", title=None, scale=alt.Scale(zero=False))
    band = alt.Chart(measured).mark_area(interpolate="monotone", opacity=0.2,
                                         color="#00897b").encode(
        x=x, y=alt.Y("auc_lower:Q", title=None, scale=alt.Scale(zero=False)),
        y2="auc_upper:Q")
    line = alt.Chart(measured).mark_line(interpolate="monotone", strokeWidth=2.5,
                                         color="#00897b").encode(x=x, y=y)
    points = alt.Chart(measured).mark_point(size=50, filled=True, color="#00897b").encode(
        x=x, y=y, tooltip=_tips("window:N", alt.Tooltip("auc:Q", format=".3f", title="AUC"),
                                alt.Tooltip("auc_lower:Q", format=".3f", title="95% CI low"),
                                alt.Tooltip("auc_upper:Q", format=".3f", title="95% CI high"),
                                alt.Tooltip("auc_threshold:Q", format=".2f",
                                            title="threshold")))
    threshold = alt.Chart(data.dropna(subset=["auc_threshold"])).mark_line(
        interpolate="step-after", strokeDash=[5, 4], strokeWidth=2, color="#c62828").encode(
        x=x, y=alt.Y("auc_threshold:Q", title=None))
    return _finish([band, line, points, threshold], marks, height=260,
                   title="Multivariate drift: domain classifier AUC (band: 95% CI; dashed: "
                   "threshold; 0.5: the window looks like the reference)")


def label_coverage_chart(windows: pd.DataFrame, min_coverage: float,
                         domain: Domain | None = None,
                         marks: pd.DataFrame | None = None) -> alt.LayerChart:
    """Share of each window's predictions that have a label (blue: mature, light:
    immature), and the coverage at which a window is mature (dashed)."""
    data = windows[["window_start", "window_end", "label_coverage", "mature"]].assign(
        window=_window_text(windows),
        maturity=windows["mature"].map({1.0: "mature", 0.0: "immature"}).fillna("unknown"))
    bars = alt.Chart(data).mark_rect(stroke="white", strokeWidth=0.5).encode(
        x=_x(domain), x2=alt.X2("window_end"),
        y=alt.Y("label_coverage:Q", title=None, axis=alt.Axis(format="%", tickCount=3),
                scale=alt.Scale(domain=[0, 1])),
        y2=alt.Y2Datum(0),
        color=alt.Color("maturity:N", title=None, legend=alt.Legend(orient="top"),
                        scale=alt.Scale(domain=["mature", "immature", "unknown"],
                                        range=["#64b5f6", "#e3f2fd", "#eeeeee"])),
        tooltip=_tips("window:N", alt.Tooltip("label_coverage:Q", format=".1%"), "maturity:N"),
    )
    rule = alt.Chart(pd.DataFrame({"y": [min_coverage]})).mark_rule(
        strokeDash=[5, 4], color="#333333").encode(y=alt.Y("y:Q"))
    return _finish([bars, rule], marks, height=210,
                   title="Label coverage (dashed: coverage at which a window is mature)")


def violation_chart(windows: pd.DataFrame, warn: float, critical: float,
                    domain: Domain | None = None,
                    marks: pd.DataFrame | None = None) -> alt.LayerChart:
    """Share of rows violating the contract per window, against the warn (amber) and
    critical (red) limits."""
    data = windows[["window_start", "window_end", "violation_rate"]].assign(
        window=_window_text(windows))
    bars = alt.Chart(data).mark_rect(color="#5c6bc0", stroke="white", strokeWidth=0.5).encode(
        x=_x(domain), x2=alt.X2("window_end"),
        y=alt.Y("violation_rate:Q", title=None, axis=alt.Axis(format="%")),
        y2=alt.Y2Datum(0),
        tooltip=_tips("window:N", alt.Tooltip("violation_rate:Q", format=".2%")),
    )
    limits = pd.DataFrame({"y": [warn, critical], "limit": ["warn", "critical"]})
    rules = alt.Chart(limits).mark_rule(strokeDash=[5, 4]).encode(
        y=alt.Y("y:Q"),
        color=alt.Color("limit:N", title=None, legend=alt.Legend(orient="top"),
                        scale=alt.Scale(domain=["warn", "critical"],
                                        range=["#f9a825", "#c62828"])),
        tooltip=_tips("limit:N", alt.Tooltip("y:Q", format=".2%", title="rate")))
    return _finish([bars, rules], marks, height=280,
                   title="Schema: share of rows violating the contract")


def _lines(windows: pd.DataFrame, columns: Sequence[str], names: Sequence[str],
           y_format: str, domain: Domain | None) -> alt.Chart:
    data = windows[["window_start", "window_end", *columns]].assign(
        window=_window_text(windows), window_mid=_mid(windows)).rename(
        columns=dict(zip(columns, names, strict=True)))
    long = data.melt(id_vars=["window_start", "window_end", "window_mid", "window"],
                     value_vars=list(names), var_name="series",
                     value_name="value").dropna(subset=["value"])
    return alt.Chart(long).mark_line(point=True, interpolate="monotone").encode(
        x=_x_mid(domain),
        y=alt.Y("value:Q", title=None, axis=alt.Axis(format=y_format)),
        color=alt.Color("series:N", title=None, sort=list(names),
                        legend=alt.Legend(orient="top")),
        tooltip=_tips("window:N", "series:N", alt.Tooltip("value:Q", format=y_format)),
    )


def latency_chart(windows: pd.DataFrame, domain: Domain | None = None,
                  max_p99_ms: float | None = None,
                  marks: pd.DataFrame | None = None) -> alt.LayerChart:
    """Latency p50, p95 and p99 per window (milliseconds), with the p99 limit if set."""
    layers: list[alt.Chart] = [_lines(
        windows, ["latency_p50_ms", "latency_p95_ms", "latency_p99_ms"], ["p50", "p95", "p99"],
        ",.0f", domain)]
    if max_p99_ms is not None:
        layers.append(alt.Chart(pd.DataFrame({"y": [max_p99_ms]})).mark_rule(
            strokeDash=[5, 4], color="#f9a825").encode(y=alt.Y("y:Q")))
    return _finish(layers, marks, height=290, title="Latency (ms)")


def rates_chart(windows: pd.DataFrame, max_error_rate: float,
                domain: Domain | None = None,
                marks: pd.DataFrame | None = None) -> alt.LayerChart:
    """Error rate and fallback rate (requests answered with the default) per window,
    with the error-rate limit (dashed red)."""
    lines = _lines(windows, ["error_rate", "fallback_rate"], ["error rate", "fallback rate"],
                   ".1%", domain)
    rule = alt.Chart(pd.DataFrame({"y": [max_error_rate]})).mark_rule(
        strokeDash=[5, 4], color="#c62828").encode(y=alt.Y("y:Q"))
    return _finish([lines, rule], marks, height=290,
                   title="Share of requests failed or answered with the default (dashed: the "
                   "error-rate limit)")


def overview_strip(strip: pd.DataFrame, models: Sequence[str], *,
                   selectable: bool = False) -> alt.Chart:
    """Recent windows of every model: one row per model (in ``models`` order), newest
    window on the right. ``selectable``: a click selects the cell's ``run_id``."""
    data = strip.assign(window=_window_text(strip))
    slots = int(strip["slot"].max()) if len(strip) else 1
    chart = alt.Chart(data).mark_rect(stroke="white", strokeWidth=1.5).encode(
        x=alt.X("slot:O", title=f"last {slots} windows (newest on the right)",
                axis=alt.Axis(labels=False, ticks=False)),
        y=alt.Y("model:N", sort=list(models), title=None),
        color=alt.Color("status:N", scale=_STATUS_SCALE, title="status",
                        legend=alt.Legend(orient="top")),
        tooltip=_tips("model:N", "window:N", "status:N", alt.Tooltip("rows:Q", format=","),
                 alt.Tooltip("run_id:Q", title="run")),
    ).properties(width=_WIDTH, height=alt.Step(30), title="Recent windows")
    if selectable:
        pick = alt.selection_point(name="cell", fields=["run_id", "model"], on="click")
        chart = chart.add_params(pick)
    return chart


def distribution_chart(binned: pd.DataFrame, feature: str, kind: str) -> alt.Chart:
    """Reference against current: shares per bin (numbers, overlaid) or per category
    (side by side). Expects ``frames.binned_distribution`` output."""
    colors = alt.Scale(domain=["reference", "current"], range=["#78909c", "#e53935"])
    tooltip = _tips("sample:N", "bin:N", alt.Tooltip("share:Q", format=".2%"),
                    alt.Tooltip("count:Q", format=","))
    if kind == "num":
        chart = alt.Chart(binned).mark_bar(opacity=0.55, binSpacing=0).encode(
            x=alt.X("start:Q", title=feature, bin="binned"),
            x2=alt.X2("end"),
            y=alt.Y("share:Q", title="share of rows", axis=alt.Axis(format="%"),
                    stack=None),
            color=alt.Color("sample:N", scale=colors, title=None,
                            legend=alt.Legend(orient="top")),
            tooltip=tooltip)
    else:
        order = (binned.drop_duplicates("bin").sort_values("order")["bin"].tolist()
                 if len(binned) else [])
        chart = alt.Chart(binned).mark_bar().encode(
            x=alt.X("bin:N", sort=order, title=feature, axis=alt.Axis(labelAngle=-30)),
            xOffset=alt.XOffset("sample:N", sort=["reference", "current"]),
            y=alt.Y("share:Q", title="share of rows", axis=alt.Axis(format="%")),
            color=alt.Color("sample:N", scale=colors, title=None,
                            legend=alt.Legend(orient="top")),
            tooltip=tooltip)
    return chart.properties(width=_WIDTH, height=360,
                            title=f"{feature}: reference against this window")


def version_chart(windows: pd.DataFrame, domain: Domain | None = None,
                  marks: pd.DataFrame | None = None) -> alt.LayerChart:
    """Each model version's accuracy per window (``frames.version_windows``): realized
    (solid, mature windows) and estimated (dashed), one colour per version."""
    data = windows.assign(window=_window_text(windows), window_mid=_mid(windows))
    long = data.melt(id_vars=["window_start", "window_end", "window_mid", "window", "version",
                              "rows"],
                     value_vars=["accuracy", "estimated_accuracy"], var_name="series",
                     value_name="value").dropna(subset=["value"])
    long["series"] = long["series"].map({"accuracy": "realized",
                                         "estimated_accuracy": "estimated"})
    colour = alt.Color("version:N", title="version", legend=alt.Legend(orient="top"))
    x, y = _x_mid(domain), alt.Y("value:Q", title=None, scale=alt.Scale(zero=False))
    realized = alt.Chart(long[long["series"] == "realized"])
    estimated = alt.Chart(long[long["series"] == "estimated"])
    tips = _tips("window:N", "version:N", "series:N", alt.Tooltip("value:Q", format=".4f"),
                 alt.Tooltip("rows:Q", format=","))
    layers: list[alt.Chart] = [
        realized.mark_line(interpolate="monotone", strokeWidth=2.5).encode(
            x=x, y=y, color=colour),
        estimated.mark_line(interpolate="monotone", strokeWidth=1.5, strokeDash=[5, 4]
                            ).encode(x=x, y=y, color=colour),
        alt.Chart(long).mark_point(size=50, filled=True).encode(
            x=x, y=y, color=colour, tooltip=tips),
    ]
    return _finish(layers, marks, height=260,
                   title="accuracy by model version: realized (solid), estimated (dashed)")

"""Model: one model's windows over a time range, every check side by side on one time axis,
with the fallback flag's changes marked."""

from __future__ import annotations

import streamlit as st

from dashboards import charts, data, frames, nav

s = data.store()
models = list(s.config.models)
if not models:
    st.info("The config declares no models.")
    st.stop()
asked = nav.param("model")
if asked is not None and asked not in models:
    st.error(f"Unknown model {asked!r}; the config declares: {', '.join(models)}")
    st.stop()

top = st.columns([2, 2, 3])
model = top[0].selectbox("Model", models, index=models.index(asked) if asked else 0,
                         key="model")
labels = list(nav.RANGES)
days_param = nav.int_param("days")
default = next((label for label, days in nav.RANGES.items()
                if days is not None and days == days_param), "30 days")
if nav.param("days") == "all":
    default = "all"
range_label = top[1].selectbox("Time range (ending at the newest window)", labels,
                               index=labels.index(default), key="range")
days = nav.RANGES[range_label]
st.query_params["model"] = model
st.query_params["days"] = "all" if days is None else str(days)

view = data.model_history(model, days)
flag = data.flag_view(model).document
st.title(model)
if view.windows.empty:
    st.info(f"No check runs for {model} yet. `mqm serve` checks it on its schedule; "
            "`mqm check --model M` or `mqm backfill` checks windows now.")
    st.stop()

model_cfg = s.config.model(model)
w = view.windows
latest = w.iloc[-1]
head = st.columns(5)
head[0].metric("Latest status", str(latest["status"]))
head[1].metric("Fallback flag", "ON" if flag["active"] else "off",
               help=f"source {flag['source']}; {flag['reason'] or 'no reason recorded'}")
head[2].metric("Windows shown", len(w))
head[3].metric("Critical windows", int((w["status"] == "critical").sum()))
head[4].metric("Newest window end", f"{latest['window_end']:%Y-%m-%d}",
               help=nav.utc_text(latest["window_end"]))
st.caption(f"{nav.utc_text(view.since)} to {nav.utc_text(view.until)}. Dashed vertical "
           "lines: fallback flag changes (black: on, grey: off), at the window whose verdict "
           "moved the flag. [Flag and overrides](" + nav.link("fallback", model=model) + ")")

domain = charts.domain_of(w["window_start"].min(), w["window_end"].max())
marks = view.flags

event = st.altair_chart(
    charts.status_strip(w, domain, marks, selectable=True),
    on_select="rerun", key="status_strip", width="stretch")
picked = nav.selected(event, "window")
if picked and picked.get("run_id") is not None:
    nav.open_run(model, int(picked["run_id"]))
st.caption("Click a window to open its run.")

st.subheader("Drift")
st.altair_chart(charts.drift_share_chart(w, domain, marks), width="stretch")
if view.features.empty:
    st.info("No per-feature drift figures in this range.")
else:
    cells = view.features
    st.altair_chart(charts.drift_heatmap(cells, domain, marks), width="stretch")
    if cells["windows"].max() > 1:
        st.caption(f"{len(w)} windows grouped into columns of up to {cells['windows'].max()}: "
                   "a cell's colour is its most drifted window's; its null-rate change and "
                   "unseen share are its newest window's.")
if w["auc"].notna().any():  # multivariate.enabled: the windows' rows taken together
    st.altair_chart(charts.multivariate_chart(w, domain, marks), width="stretch")

if view.segments is not None and not view.segments.empty:
    st.subheader("Segments")
    st.altair_chart(charts.segment_status_chart(view.segments, domain, marks),
                    width="stretch")
    st.caption("Each segment's checks (schema, drift against the reference rows of the "
               "same segment, accuracy, estimate) per window; segments.severity caps what "
               "a segment does to the run's status. Open a run for the figures.")
elif model_cfg.segments.columns:
    st.subheader("Segments")
    st.info("No segment figures in this range.")

st.subheader("Accuracy")
# A metric shows once the windows have it realized (labels) or estimated (no labels).
available = [m for m in frames.PERFORMANCE_METRICS if w[m].notna().any()
             or (f"estimated_{m}" in w.columns and w[f"estimated_{m}"].notna().any())]
if view.task == "features":
    st.info("Does not apply: the contract declares no prediction (task: features), so the "
            "inputs are monitored alone (schema, drift, null rates, service).")
elif not available:
    st.info("No accuracy figures: no labels joined in this range and no estimate (or no "
            "reference labels).")
else:
    preferred = "accuracy" if "accuracy" in available else available[0]
    metric = st.segmented_control("Metric", available, default=preferred, key="metric") or preferred
    st.altair_chart(charts.performance_chart(w, metric, domain, marks), width="stretch")
if view.task != "features":
    st.altair_chart(charts.label_coverage_chart(w, model_cfg.performance.min_label_coverage,
                                                domain, marks), width="stretch")

if view.task != "features":
    st.subheader("Model versions")
    versions = data.model_versions(model, view.since if days else None)
    if versions.table.empty:
        st.info("No versions recorded in this range: runs record each version's figures "
                "from the logs' model_version.")
    else:
        if versions.best is not None and versions.p_value is not None:
            st.success(f"Best recent version: **{versions.best}** (p={versions.p_value:.2g}). "
                       + versions.text)
        else:
            st.info(versions.text)
        st.altair_chart(charts.version_chart(versions.windows, domain, marks),
                        width="stretch")
        table = versions.table.assign(first_seen=versions.table["first_seen"].map(nav.utc_text),
                                      last_seen=versions.table["last_seen"].map(nav.utc_text))
        st.dataframe(table, hide_index=True, width="stretch", column_config={
            "rows": st.column_config.NumberColumn("rows", format="localized"),
            "accuracy": st.column_config.NumberColumn("accuracy", format="%.3f"),
            "estimated_accuracy": st.column_config.NumberColumn("estimated", format="%.3f"),
            "error_rate": st.column_config.NumberColumn("errors", format="percent"),
            "latency_p95_ms": st.column_config.NumberColumn("p95 ms", format="%.0f"),
        })

st.subheader("Schema")
left, right = st.columns([2, 1])
left.altair_chart(
    charts.violation_chart(w, model_cfg.schema_check.warn_violation_rate,
                           model_cfg.schema_check.critical_violation_rate, domain, marks),
    width="stretch")
right.markdown("**Top violating columns**")
if view.violators.empty:
    right.write("No violations in this range.")
else:
    right.dataframe(view.violators[["column", "max_rate", "mean_rate", "windows_violating"]],
                    hide_index=True, width="stretch", column_config={
                        "max_rate": st.column_config.NumberColumn("worst window",
                                                                  format="percent"),
                        "mean_rate": st.column_config.NumberColumn("mean", format="percent"),
                        "windows_violating": st.column_config.NumberColumn("windows"),
                    })

st.subheader("Service")
left, right = st.columns(2)
left.altair_chart(charts.latency_chart(w, domain, model_cfg.service.max_latency_p99_ms, marks),
                  width="stretch")
right.altair_chart(charts.rates_chart(w, model_cfg.service.max_error_rate, domain, marks),
                   width="stretch")

if not marks.empty:
    with st.expander(f"Fallback flag changes ({len(marks)})"):
        st.dataframe(marks.assign(time=marks["time"].map(nav.utc_text),
                                  recorded_at=marks["recorded_at"].map(nav.utc_text))
                     [["time", "label", "reason", "recorded_at"]],
                     hide_index=True, width="stretch")

st.subheader("Windows")
newest_first = w.iloc[::-1]
choices = {f"{nav.utc_text(r.window_end)} · {r.status} · run {r.run_id}": int(r.run_id)
           for r in newest_first.itertuples()}
pick_col, button_col = st.columns([3, 1])
choice = pick_col.selectbox("Open a window", list(choices), key="window_pick")
if button_col.button("Open run", key="open_run", type="primary"):
    nav.open_run(model, choices[choice])
table = newest_first.assign(window_end=newest_first["window_end"].map(nav.utc_text))
st.dataframe(
    table, hide_index=True, width="stretch", key="windows",
    column_order=["window_end", "status", "rows", "share_drifted", "auc", "violation_rate",
                  *(("mae", "estimated_mae") if view.task == "regression"
                    else ("accuracy", "estimated_accuracy")), "label_coverage",
                  "latency_p99_ms",
                  "error_rate", "fallback_rate", "run_id"],
    column_config={
        "window_end": "window end",
        "rows": st.column_config.NumberColumn("rows", format="localized"),
        "share_drifted": st.column_config.NumberColumn("drifted share", format="percent"),
        "auc": st.column_config.NumberColumn("multivariate AUC", format="%.3f"),
        "violation_rate": st.column_config.NumberColumn("schema violations",
                                                        format="percent"),
        "accuracy": st.column_config.NumberColumn("accuracy", format="%.3f"),
        "estimated_accuracy": st.column_config.NumberColumn("estimated", format="%.3f"),
        "mae": st.column_config.NumberColumn("mae", format="%.4g"),
        "estimated_mae": st.column_config.NumberColumn("estimated mae", format="%.4g"),
        "label_coverage": st.column_config.NumberColumn("labels", format="percent"),
        "latency_p99_ms": st.column_config.NumberColumn("p99 ms", format="%.0f"),
        "error_rate": st.column_config.NumberColumn("errors", format="percent"),
        "fallback_rate": st.column_config.NumberColumn("fallback", format="percent"),
        "run_id": st.column_config.NumberColumn("run"),
    },
)

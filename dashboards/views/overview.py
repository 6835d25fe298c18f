"""Overview: every configured model, worst first, with its flag and recent windows."""

from __future__ import annotations

import streamlit as st

from dashboards import charts, data, nav

st.title("Model quality")
s = data.store()
view = data.overview()
table = view.models
st.caption(f"Store `{s.url}` · {len(table)} model(s) · figures are at most {data.TTL} s old")

if table.empty:
    st.info("The config declares no models: add one under `models:` in monitor.yaml.")
    st.stop()

cols = st.columns(4)
cols[0].metric("Models", len(table))
cols[1].metric("Critical", int((table["status"] == "critical").sum()))
cols[2].metric("Fallback on", int((table["fallback"] == "ON").sum()))
cols[3].metric("Without runs", int((table["status"] == "no runs").sum()))

for row in table[table["fallback"] == "ON"].itertuples(index=False):
    since = f" since {nav.utc_text(row.since)}" if row.since else ""
    until = f", until {nav.utc_text(row.expires_at)}" if row.expires_at else ""
    st.warning(f"**[{row.model}]({nav.link('model', model=row.model)})** is served its "
               f"fallback: the flag is ON{since} ({row.source}{until}). {row.reason or ''}",
               icon=":material/emergency:")

if view.strip.empty:
    st.info("No check runs yet. `mqm serve` checks every model on its schedule; "
            "`mqm backfill --model M --since T1 --until T2` checks past windows now.")
else:
    event = st.altair_chart(
        charts.overview_strip(view.strip, table["model"].tolist(), selectable=True),
        on_select="rerun", key="strip", width="stretch")
    picked = nav.selected(event, "cell")
    if picked and picked.get("run_id") is not None:
        nav.open_run(str(picked["model"]), int(picked["run_id"]))
    st.caption("Click a window to open its run.")

shown = table.assign(
    link=[nav.link("model", model=m) for m in table["model"]],
    window_end=table["window_end"].map(nav.utc_text),
    since=table["since"].map(lambda v: nav.utc_text(v) if v else ""),
    expires_at=table["expires_at"].map(lambda v: nav.utc_text(v) if v else ""),
    last_success=table["last_success"].map(nav.utc_text),
    fallback=[f"{flag} (stale)" if stale else flag
              for flag, stale in zip(table["fallback"], table["stale"], strict=True)],
)
trend = st.column_config.LineChartColumn
st.dataframe(
    shown,
    hide_index=True,
    width="stretch",
    column_order=["link", "status", "fallback", "since", "window_end",
                  "drifted_latest", "drifted_trend", "performance_metric",
                  "performance_latest", "performance_trend", "estimated_latest",
                  "violations_latest", "last_success", "source",
                  "expires_at", "reason", "note"],
    column_config={
        "link": st.column_config.LinkColumn("model", display_text=r"model\?model=(.*)"),
        "status": st.column_config.TextColumn("latest status"),
        "fallback": st.column_config.TextColumn(
            "fallback flag", help="stale: no successful check run for longer than stale_after"),
        "since": st.column_config.TextColumn("flag since"),
        "window_end": st.column_config.TextColumn("latest window end"),
        "drifted_latest": st.column_config.NumberColumn("drifted", format="percent"),
        "drifted_trend": trend("drift trend", y_min=0.0, y_max=1.0, width="small"),
        "performance_metric": st.column_config.TextColumn(
            "metric", help="accuracy for a classifier, MAE for a regressor"),
        "performance_latest": st.column_config.NumberColumn("performance", format="%.3f"),
        "performance_trend": trend("performance trend", width="small"),
        "estimated_latest": st.column_config.NumberColumn(
            "estimated", format="%.3f", help="the metric estimated before labels arrive"),
        "violations_latest": st.column_config.NumberColumn("violations", format="percent"),
        "last_success": st.column_config.TextColumn("last successful check"),
        "source": st.column_config.TextColumn("flag source"),
        "expires_at": st.column_config.TextColumn("override expires"),
        "reason": st.column_config.TextColumn("flag reason", width="large"),
        "note": st.column_config.TextColumn("note", width="large"),
    },
    key="models",
)
for note in table.loc[table["note"] != "", ["model", "note"]].itertuples(index=False):
    st.info(f"**{note.model}**: {note.note}")

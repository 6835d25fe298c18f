"""Run: one check run as stored, section by section, with the distributions of a drifted
column and the Evidently report of its window."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboards import charts, data, frames, nav
from monitor.errors import MonitorError
from monitor.results import (
    DriftResult,
    ErrorSection,
    EstimatedLossResult,
    MultivariateResult,
    NotApplicable,
    PerformanceResult,
    SchemaResult,
    SegmentsResult,
    ServiceResult,
    VersionsResult,
)

s = data.store()
run_id = nav.int_param("run")
if run_id is None:
    st.title("Run")
    models = list(s.config.models)
    if not models:
        st.info("The config declares no models.")
        st.stop()
    asked = nav.param("model")
    model = st.selectbox("Model", models,
                         index=models.index(asked) if asked in models else 0, key="model")
    windows = data.model_history(model, None).windows
    if windows.empty:
        st.info(f"No check runs for {model} yet.")
        st.stop()
    choices = {f"{nav.utc_text(r.window_end)} · {r.status} · run {r.run_id}": int(r.run_id)
               for r in windows.iloc[::-1].itertuples()}
    choice = st.selectbox("Window", list(choices), key="window_pick")
    if st.button("Open run", type="primary", key="open_run"):
        nav.open_run(model, choices[choice])
    st.stop()

view = data.run_view(run_id)
if view is None:
    st.title("Run")
    st.error(f"No run with id {run_id} in the store (pruned, or another store?).")
    st.stop()
st.query_params["model"] = view.model
st.query_params["run"] = str(view.id)

st.title(f"{view.model}: run {view.id}")
st.caption(f"Window {nav.utc_text(view.window_start)} → {nav.utc_text(view.window_end)} · "
           f"{view.kind} run finished {nav.utc_text(view.finished_at, seconds=True)} · "
           f"[all windows of {view.model}]({nav.link('model', model=view.model)})")
run = view.run
if run is None:
    st.metric("Status", view.status)
    st.info("A schema-only run (`mqm schema check`): its document as stored.")
    st.json(view.summary)
    st.stop()

head = st.columns(5)
head[0].metric("Status", run.status)
head[1].metric("Rows", f"{run.rows:,}")
head[2].metric("Sampled", f"{run.sample_rows:,} rows" if run.sampled and run.sample_rows
               else "no")
head[3].metric("Reference version", (run.reference_version or "none")[:8],
               help=run.reference_version or "no reference set")
head[4].metric("Recheck of run", str(run.recomputes) if run.recomputes else "none",
               help="The earlier run of this window that this one recomputed, once more "
               "labels had arrived.")
if run.reasons:
    st.markdown("**Reasons**\n\n" + "\n".join(f"- {r}" for r in run.reasons))
else:
    st.markdown("**Reasons:** none, every check passed its limits.")
st.caption(f"config hash `{run.config_hash[:12]}`")


def shown(section: object, name: str) -> bool:
    """Say why a section is missing or failed; True when it ran and can be shown."""
    if section is None:
        st.info(f"This run has no {name} section.")
        return False
    if isinstance(section, ErrorSection):
        st.error(f"The {name} check could not run: {section.error} (at {section.at})")
        return False
    if isinstance(section, NotApplicable):
        st.info(f"The {name} check does not apply: {section.reason}.")
        return False
    return True


tabs = st.tabs(["Drift", "Schema", "Performance", "Service", "Versions", "Segments",
               "Multivariate", "Report"])

with tabs[0]:
    drift = run.drift
    if shown(drift, "drift") and isinstance(drift, DriftResult):
        cols = st.columns(4)
        cols[0].metric("Status", drift.status)
        cols[1].metric("Drifted share", f"{drift.share_drifted:.0%}",
                       help=f"limit {drift.drift_share:.0%}")
        cols[2].metric("Dataset drift", "yes" if drift.dataset_drift else "no")
        cols[3].metric("Rows (reference / window)",
                       f"{drift.rows_reference:,} / {drift.rows_current:,}")
        features = pd.DataFrame([{
            "feature": f.feature, "kind": f.kind, "method": f.method, "score": f.score,
            "threshold": f.threshold, "drifted": f.drifted,
            "vs threshold": frames.relative_score(f.score, f.threshold, f.method),
            "null rate (ref)": f.null_rate_reference, "null rate": f.null_rate_current,
            "null-rate change": f.null_rate_change, "unseen share": f.unseen_share,
            "error": f.error or "",
        } for f in drift.features])
        features = features.sort_values(["drifted", "vs threshold"], ascending=False,
                                        na_position="last", ignore_index=True)
        st.dataframe(features, hide_index=True, width="stretch", key="features",
                     column_config={
                         "score": st.column_config.NumberColumn(format="%.4g"),
                         "threshold": st.column_config.NumberColumn(format="%.4g"),
                         "vs threshold": st.column_config.NumberColumn(format="%.2f"),
                         "null rate (ref)": st.column_config.NumberColumn(format="percent"),
                         "null rate": st.column_config.NumberColumn(format="percent"),
                         "null-rate change": st.column_config.NumberColumn(format="percent"),
                         "unseen share": st.column_config.NumberColumn(format="percent"),
                     })
        st.markdown("**Distribution: reference against this window**")
        names = features["feature"].tolist()
        kinds = {f.feature: f.kind for f in drift.features}
        asked = nav.param("feature")
        feature = st.selectbox("Column", names,
                               index=names.index(asked) if asked in names else 0,
                               key="feature")
        if feature:
            st.query_params["feature"] = feature
            try:
                sample = data.feature_sample(view, feature, kinds[feature])
            except MonitorError as exc:
                st.warning(f"Cannot read the window's logs for the plot: {exc}")
            else:
                st.altair_chart(charts.distribution_chart(sample.binned, feature, sample.kind),
                                width="stretch", key="distribution")
                st.caption(f"Window: {sample.sample_rows:,} of {sample.window_rows:,} rows "
                           f"(a uniform sample, seeded by the run); reference: "
                           f"{sample.reference_rows:,} rows.")

with tabs[1]:
    schema = run.schema
    if shown(schema, "schema") and isinstance(schema, SchemaResult):
        cols = st.columns(4)
        cols[0].metric("Status", schema.status)
        cols[1].metric("Rows violating", f"{schema.violation_rate:.2%}",
                       help=f"{schema.violating_rows:,} rows")
        cols[2].metric("Missing columns", len(schema.missing_columns))
        cols[3].metric("Unexpected columns", len(schema.unexpected_columns))
        columns = pd.DataFrame([{
            "column": c.column, "role": c.role, "type": c.expected_type or "", "state": c.state,
            "violations": c.violation_rate, "type mismatches": c.type_mismatch_rate,
            "out of range": c.out_of_range_rate, "unseen categories": c.unseen_category_rate,
            "nulls": c.null_rate, "nulls allowed": c.nulls_allowed,
            "examples": ", ".join(c.examples),
        } for c in schema.columns]).sort_values("violations", ascending=False,
                                                 ignore_index=True)
        st.dataframe(columns, hide_index=True, width="stretch", key="schema_columns",
                     column_config={name: st.column_config.NumberColumn(format="percent")
                                    for name in ("violations", "type mismatches",
                                                 "out of range", "unseen categories",
                                                 "nulls")})
        if schema.missing_columns:
            st.error("Missing: " + ", ".join(schema.missing_columns))
        if schema.unexpected_columns:
            st.warning("Unexpected: " + ", ".join(schema.unexpected_columns))

with tabs[2]:
    perf = run.performance
    if shown(perf, "performance") and isinstance(perf, PerformanceResult):
        cols = st.columns(4)
        cols[0].metric("Status", perf.status)
        cols[1].metric("Label coverage", f"{perf.label_coverage:.1%}",
                       help=f"{perf.labelled_rows:,} of {perf.rows:,} rows labelled")
        cols[2].metric("Labels mature", "yes" if perf.mature else "not yet")
        est = perf.estimated
        loss = isinstance(est, EstimatedLossResult)
        metric, value, reference, drop = (est.headline if est is not None
                                          else ("", None, None, None))
        cols[3].metric("Estimated MAE" if loss else "Estimated accuracy",
                       "n/a" if value is None or est is None else f"{value:.4g}",
                       help=("direct loss estimation, without labels" if loss else
                             "confidence-based, without labels") + (
                           f"; band {est.lower_bound:.4g} .. {est.upper_bound:.4g} "
                           f"(3 sampling errors of {est.sampling_error:.4g})"
                           if est and est.lower_bound is not None
                           and est.upper_bound is not None and est.sampling_error is not None
                           else ""))
        rows = [{"metric": name, "window": value,
                 "reference": perf.reference_metrics.get(name), "drop": perf.drops.get(name)}
                for name, value in perf.metrics.items()]
        # One frame from every row (a concat of frames warns where one column is all None).
        if value is not None:
            rows.append({"metric": f"estimated {metric}", "window": value,
                         "reference": reference, "drop": drop})
        metrics = pd.DataFrame(rows, columns=["metric", "window", "reference", "drop"])
        st.dataframe(metrics, hide_index=True, width="stretch", key="metrics",
                     column_config={c: st.column_config.NumberColumn(format="%.4f")
                                    for c in ("window", "reference", "drop")})
        st.caption(f"Task: {perf.task}. Drops are absolute for accuracy, f1 and roc_auc, "
                   "relative for mae and rmse; positive is worse.")
        estimates = frames.estimated_table(perf)
        if len(estimates):
            st.markdown("**Estimated without labels** "
                        + ("(direct loss estimation)" if loss else "(CBPE)"))
            st.dataframe(estimates, hide_index=True, width="stretch", key="estimates",
                         column_config={
                             **{c: st.column_config.NumberColumn(format="%.4f") for c in
                                ("estimated", "lower", "upper", "reference", "realized")},
                             "sampling_error": st.column_config.NumberColumn(
                                 "sampling error", format="%.4f")})
            st.caption("Band: the estimate ± 3 sampling errors. Realized: the window's own "
                       "figure on its labelled rows, once labels arrive.")

with tabs[3]:
    service = run.service
    if shown(service, "service") and isinstance(service, ServiceResult):
        cols = st.columns(6)
        cols[0].metric("Status", service.status)
        for col, (label, value) in zip(cols[1:4], (
                ("p50", service.latency_p50_ms), ("p95", service.latency_p95_ms),
                ("p99", service.latency_p99_ms)), strict=True):
            col.metric(f"Latency {label}", "n/a" if value is None else f"{value:,.1f} ms")
        cols[4].metric("Error rate", f"{service.error_rate:.2%}",
                       help=f"{service.errors:,} of {service.rows:,} requests")
        cols[5].metric("Fallback rate", "n/a" if service.fallback_rate is None
                       else f"{service.fallback_rate:.2%}")
        st.caption(f"Throughput {service.throughput_per_s:,.3f} requests/s.")
        if service.fallbacks:
            st.dataframe(pd.DataFrame(sorted(service.fallbacks.items()),
                                      columns=["fallback reason", "rows"]), hide_index=True)

with tabs[4]:
    versions = run.versions
    if shown(versions, "versions") and isinstance(versions, VersionsResult):
        table, pairs = frames.run_versions(versions)
        st.caption("Each model version of the window against the reference, and each pair "
                   "compared on this window's traffic (labels mature: "
                   f"{'yes' if versions.mature else 'not yet'}; significance "
                   f"{versions.alpha:g}). Over many windows: the model page.")
        st.dataframe(table, hide_index=True, width="stretch", key="run_versions",
                     column_config={
                         "rows": st.column_config.NumberColumn(format="localized"),
                         "error_rate": st.column_config.NumberColumn("errors",
                                                                     format="percent"),
                         "latency_p95_ms": st.column_config.NumberColumn("p95 ms",
                                                                         format="%.1f"),
                         "accuracy": st.column_config.NumberColumn(format="%.4f"),
                         "estimated_accuracy": st.column_config.NumberColumn(
                             "estimated", format="%.4f"),
                         "prediction_drift_score": st.column_config.NumberColumn(
                             "prediction drift", format="%.4g"),
                     })
        if not pairs.empty:
            st.dataframe(pairs, hide_index=True, width="stretch", key="version_pairs",
                         column_config={
                             "value_a": st.column_config.NumberColumn(format="%.4f"),
                             "value_b": st.column_config.NumberColumn(format="%.4f"),
                             "p_value": st.column_config.NumberColumn(format="%.3g"),
                         })

with tabs[5]:
    segments = run.segments
    if segments is None:
        st.info("This run has no segments (segments.columns in the model's config).")
    elif shown(segments, "segments") and isinstance(segments, SegmentsResult):
        cols = st.columns(3)
        cols[0].metric("Status", segments.status,
                       help=f"the worst segment's, capped at severity {segments.severity}")
        cols[1].metric("Segments", len(segments.segments))
        cols[2].metric("Degraded", sum(s.status in ("warn", "critical")
                                       for s in segments.segments))
        st.dataframe(frames.segment_table(segments), hide_index=True, width="stretch",
                     key="segments", column_config={
                         "rows": st.column_config.NumberColumn(format="localized"),
                         "drifted share": st.column_config.NumberColumn(format="percent"),
                         "violations": st.column_config.NumberColumn(format="percent"),
                         "accuracy": st.column_config.NumberColumn(format="%.3f"),
                         "estimated accuracy": st.column_config.NumberColumn(format="%.3f"),
                     })
        folded = {c: n for c, n in segments.folded.items() if n}
        if folded:
            st.caption("Folded into __other__: " + ", ".join(
                f"{n} values of {c}" for c, n in folded.items()))

with tabs[6]:
    multivariate = run.multivariate
    if multivariate is None:
        st.info("This run has no multivariate section (multivariate.enabled is off).")
    elif shown(multivariate, "multivariate") and isinstance(multivariate, MultivariateResult):
        cols = st.columns(4)
        cols[0].metric("Status", multivariate.status)
        if multivariate.auc is None:
            st.info("Not judged: " + "; ".join(multivariate.reasons))
        else:
            cols[1].metric("Domain classifier AUC", f"{multivariate.auc:.3f}",
                           help=f"95% CI {multivariate.auc_lower:.3f} .. "
                           f"{multivariate.auc_upper:.3f}, {multivariate.folds}-fold "
                           "cross-validated; 0.5: the window looks like the reference")
            cols[2].metric("AUC threshold", f"{multivariate.auc_threshold}")
            error = multivariate.reconstruction_error
            cols[3].metric("PCA reconstruction error",
                           "n/a" if error is None else f"{error:.3f}",
                           help=None if error is None else
                           f"reference band {multivariate.reconstruction_lower:.3f} .. "
                           f"{multivariate.reconstruction_upper:.3f} (mean +- 3 sigma), "
                           f"{multivariate.components} components")
            st.caption(f"95% CI {multivariate.auc_lower:.3f} .. {multivariate.auc_upper:.3f}; "
                       f"{multivariate.rows_current:,} window rows against "
                       f"{multivariate.rows_reference:,} reference rows.")
            if multivariate.top_features:
                st.markdown("**What moved** (permutation importance: the drop of the "
                            "held-out AUC when the feature is shuffled)")
                st.dataframe(pd.DataFrame([{"feature": f.feature, "importance": f.importance}
                                           for f in multivariate.top_features]),
                             hide_index=True, width="stretch", key="top_features",
                             column_config={"importance": st.column_config.NumberColumn(
                                 format="%.4f")})
            elif multivariate.auc_lower is not None and multivariate.auc_lower <= 0.5:
                st.caption("No feature is named: the AUC's interval holds 0.5, so the "
                           "classifier cannot tell the window from the reference.")

with tabs[7]:
    st.markdown("The Evidently report of this window (drift, and classification or "
                "regression quality on the labelled rows), computed on a bounded sample. "
                "It takes a few seconds.")
    key = f"report-{view.id}"
    if st.button("Build the Evidently report", key="build_report"):
        with st.spinner("Building the report…"):
            try:
                st.session_state[key] = data.build_report(view.id)
            except MonitorError as exc:
                st.error(f"Cannot build the report: {exc}")
    if key in st.session_state:
        st.download_button("Download the report (HTML)", st.session_state[key],
                           file_name=f"mqm-{view.model}-run-{view.id}.html",
                           mime="text/html", key="download_report")

"""An HTML report of a stored run: its verdict and reasons first, then what each check saw,
with Evidently's drift and quality views of the run's window.

The report describes the window as the run saw it: the drift view is computed on every
row of the window (a uniform sample of ``sample`` rows when it holds more), with the
method and threshold the run used for each column it tested, so that its drifted
columns are the run's whenever it looks at the same rows; the quality view needs labels,
so it is computed on the labelled rows of those, and says so. The schema and service
figures are the run's own, on every row. The report states which rows it used.
"""

from __future__ import annotations

import html
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitor.config import Config
from monitor.errors import MonitorError
from monitor.results import (
    CheckRun,
    DriftResult,
    ErrorSection,
    MultivariateResult,
    NotApplicable,
    PerformanceResult,
    SchemaResult,
    ServiceResult,
    VersionsResult,
)
from monitor.run.model import resolve
from monitor.run.reference import drift_columns
from monitor.run.reference_file import read_reference
from monitor.schema import ModelSchema, label_text
from monitor.store.db import Engine
from monitor.store.runs import RunRecord, get_run
from monitor.typed_json import from_json

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["MIN_LABELLED", "ReportSummary", "write_report"]

MIN_LABELLED = 100  # fewer labelled rows: no quality view
_PREDICTION = "prediction"  # the prediction's column in the report's frames


@dataclass(frozen=True)
class ReportSummary:
    """What a report was computed on, and the drift it found next to the run's."""

    run_id: int
    status: str
    window_rows: int  # rows the window holds now
    run_rows: int  # rows the run saw
    rows: int  # window rows the drift view is computed on
    reference_rows: int  # reference rows it is compared with
    labelled_rows: int  # rows of the quality view; 0: none
    tested: int  # columns tested for drift
    drifted: int  # of those, drifted in the report
    run_drifted: int | None  # of those, drifted in the run (None: the run has no drift)


@dataclass(frozen=True)
class _Verdict:
    """The stored run as the report shows it: a check run, or a schema-only run."""

    record: RunRecord
    run: CheckRun | None
    schema: SchemaResult | ErrorSection | None
    reasons: tuple[str, ...]


def _verdict(record: RunRecord) -> _Verdict:
    try:
        if record.kind == "check":
            run = record.run
            assert run is not None
            return _Verdict(record, run, run.schema, run.reasons)
        schema = from_json(SchemaResult, record.summary, "summary")
        return _Verdict(record, None, schema, schema.reasons)
    except (ValueError, TypeError) as exc:
        raise MonitorError(f"run {record.id}: its stored document cannot be read: {exc}") \
            from None


def write_report(engine: Engine, config: Config, run_id: int, output: Path, *,
                 sample: int = 20_000) -> ReportSummary:
    """Write the report of run ``run_id`` to ``output``; return what it was computed on.

    ``sample``: at most this many window rows (a uniform sample, seeded by the run id)
    and reference rows are given to Evidently.
    """
    import numpy as np
    import pandas as pd

    record = get_run(engine, run_id)
    if record is None:
        raise MonitorError(f"no run with id {run_id}")
    verdict = _verdict(record)
    model = resolve(engine, config, record.model)
    schema, source = model.schema, model.source
    total = source.count(record.window_start, record.window_end)
    if total == 0:
        raise MonitorError(f"run {run_id}: the window holds no logs any more")
    rng = np.random.default_rng(run_id)
    parts = []
    for window in source.iter_chunks(record.window_start, record.window_end, 200_000):
        part = window.features.copy()
        part["__prediction"] = window.meta["prediction"].to_numpy()
        part["__error"] = window.meta["error"].to_numpy(dtype=bool)
        part["__label"] = window.labels.to_numpy()
        for cls in window.probabilities.columns:
            part[f"__proba_{cls}"] = window.probabilities[cls].to_numpy()
        if total > sample:
            part = part[rng.random(len(part)) < sample / total]
        parts.append(part)
    current = pd.concat(parts, ignore_index=True)
    reference = read_reference(model.config.reference)
    reference_total = len(reference)
    if reference_total > sample:
        reference = reference.sample(n=sample, random_state=0)

    kinds = drift_columns(schema)
    pred = schema.prediction_column  # None: a features-only model (task: features)
    # The columns the run tested, with its method and threshold each (by the report's
    # names: the prediction is "prediction"); without a drift section, every column
    # with Evidently's defaults.
    drift = verdict.run.drift if verdict.run is not None else None
    methods: dict[str, str] = {}
    thresholds: dict[str, float] = {}
    run_drifted = None
    if isinstance(drift, DriftResult):
        tested = [f for f in drift.features if f.error is None and f.method is not None
                  and f.feature in kinds]
        for feat in tested:
            name = _PREDICTION if feat.feature == pred else feat.feature
            methods[name] = feat.method  # type: ignore[assignment]
            if feat.threshold is not None:
                thresholds[name] = feat.threshold
        columns = [_PREDICTION if f.feature == pred else f.feature for f in tested]
        run_drifted = sum(f.drifted for f in tested)
        drift_share = drift.drift_share
    else:
        columns = [_PREDICTION if c == pred else c for c in kinds]
        drift_share = model.config.drift.drift_share
    feature_kinds = {c: k for c, k in kinds.items() if c != pred}
    target = schema.target.column if schema.target else None
    proba_map = schema.prediction.probability_columns if schema.prediction else {}
    ref = _normalise(reference, schema, feature_kinds, pred, target, proba_map)
    cur = _normalise(current, schema, feature_kinds, pred and "__prediction", "__label",
                     {cls: f"__proba_{cls}" for cls in proba_map})
    answered = ~current["__error"].to_numpy(dtype=bool) & current["__prediction"].notna(
        ).to_numpy()
    labelled = cur[answered & cur["target"].notna().to_numpy()] if "target" in cur and \
        pred is not None else cur.iloc[:0]
    with_quality = len(labelled) >= MIN_LABELLED and "target" in ref

    drift_snapshot, quality_snapshot = _evidently(
        ref, cur, labelled if with_quality else None, schema, feature_kinds, columns,
        drift_share=drift_share, methods=methods, thresholds=thresholds)
    drifted = _drifted_count(drift_snapshot)
    summary = ReportSummary(
        run_id=run_id, status=record.status, window_rows=total, run_rows=record.rows,
        rows=len(cur), reference_rows=len(ref), labelled_rows=len(labelled) if with_quality
        else 0, tested=len(columns), drifted=drifted, run_drifted=run_drifted)
    widgets = _head(verdict, summary, reference_total=reference_total,
                    labelled_found=len(labelled), sample=sample,
                    features_only=schema.features_only)
    _write(output, _title(verdict), widgets, drift_snapshot, quality_snapshot, summary)
    return summary


def _normalise(frame: pd.DataFrame, schema: ModelSchema, feature_kinds: Mapping[str, str],
               prediction: str | None, label: str | None, probas: dict[str, str]
               ) -> pd.DataFrame:
    """The columns Evidently gets, typed as the run's checks read them (no prediction for
    a features-only model)."""
    import numpy as np
    import pandas as pd

    out = pd.DataFrame(index=frame.index)
    for col, kind in feature_kinds.items():
        values = frame[col] if col in frame else pd.Series(np.nan, index=frame.index)
        out[col] = (pd.to_numeric(values, errors="coerce") if kind == "num"
                    else label_text(values))
    is_cls = schema.task == "classification"
    if prediction is None:
        return out
    out[_PREDICTION] = label_text(frame[prediction]) if is_cls else pd.to_numeric(
        frame[prediction], errors="coerce")
    if label is not None and label in frame:
        out["target"] = label_text(frame[label]) if is_cls else pd.to_numeric(
            frame[label], errors="coerce")
    for cls, col in probas.items():
        if col in frame:
            out[f"proba_{cls}"] = pd.to_numeric(frame[col], errors="coerce")
    return out


def _evidently(ref: pd.DataFrame, cur: pd.DataFrame, labelled: pd.DataFrame | None,
               schema: ModelSchema, feature_kinds: Mapping[str, str], columns: list[str], *,
               drift_share: float, methods: dict[str, str], thresholds: dict[str, float]
               ) -> tuple[Any, Any]:
    """Evidently's drift snapshot of ``cur`` and, given ``labelled`` rows, its quality
    snapshot of them."""
    with warnings.catch_warnings():
        # Evidently's import and its stat tests warn about their own internals.
        warnings.simplefilter("ignore")
        from evidently import (
            BinaryClassification,
            DataDefinition,
            Dataset,
            MulticlassClassification,
            Regression,
            Report,
        )
        from evidently.presets import (
            ClassificationPreset,
            DataDriftPreset,
            RegressionPreset,
        )

        is_cls = schema.task == "classification"
        numerical = [c for c, k in feature_kinds.items() if k == "num"]
        categorical = [c for c, k in feature_kinds.items() if k == "cat"]
        if schema.prediction is not None:
            (categorical if is_cls else numerical).append(_PREDICTION)
        plain = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
        drift = Report([DataDriftPreset(
            columns=columns, drift_share=drift_share, per_column_method=methods or None,
            per_column_threshold=thresholds or None)]).run(
            Dataset.from_pandas(cur[columns], data_definition=plain),
            Dataset.from_pandas(ref[columns], data_definition=plain))
        if labelled is None:
            return drift, None
        extra: dict[str, Any] = {}
        classes = [str(c) for c in ((schema.prediction and schema.prediction.classes) or [])]
        probas = [f"proba_{c}" for c in classes if f"proba_{c}" in labelled]
        if is_cls and len(classes) == 2:
            pos = classes[-1]
            extra["classification"] = [BinaryClassification(
                target="target", prediction_labels=_PREDICTION,
                prediction_probas=f"proba_{pos}" if f"proba_{pos}" in labelled else None,
                pos_label=pos)]
            preset: Any = ClassificationPreset()
        elif is_cls:
            extra["classification"] = [MulticlassClassification(
                target="target", prediction_labels=_PREDICTION,
                prediction_probas=probas if len(probas) == len(classes) else None)]
            preset = ClassificationPreset()
        else:
            extra["regression"] = [Regression(target="target", prediction=_PREDICTION)]
            preset = RegressionPreset()
        keep = [_PREDICTION, "target", *probas]
        definition = DataDefinition(
            numerical_columns=probas if is_cls else [_PREDICTION, "target"],
            categorical_columns=[_PREDICTION, "target"] if is_cls else [], **extra)
        quality = Report([preset]).run(
            Dataset.from_pandas(labelled[keep], data_definition=definition),
            Dataset.from_pandas(ref[keep], data_definition=definition))
        return drift, quality


def _drifted_count(snapshot: Any) -> int:
    for metric in snapshot.dict()["metrics"]:
        if str(metric.get("metric_name", "")).startswith("DriftedColumnsCount"):
            return int(metric["value"]["count"])
    raise MonitorError("Evidently's drift report has no drifted-columns count")


# --- what the report says before Evidently's views --------------------------------------


def _title(verdict: _Verdict) -> str:
    record = verdict.record
    return (f"{record.model}: window {record.window_start:%Y-%m-%d %H:%M} to "
            f"{record.window_end:%Y-%m-%d %H:%M} UTC: {record.status.upper()} "
            f"(run {record.id})")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _rows_used(summary: ReportSummary, *, reference_total: int, labelled_found: int,
               sample: int, features_only: bool) -> list[str]:
    if summary.rows == summary.window_rows:
        window = f"all {summary.window_rows:,} rows of the window"
    else:
        window = (f"a uniform sample of {summary.rows:,} of the window's "
                  f"{summary.window_rows:,} rows (seeded by the run id; --sample {sample})")
    if summary.window_rows != summary.run_rows:
        window += f"; the window holds {summary.window_rows:,} rows now, the run saw " \
                  f"{summary.run_rows:,}"
    reference = (f"all {reference_total:,} reference rows" if summary.reference_rows
                 == reference_total else f"a sample of {summary.reference_rows:,} of the "
                 f"{reference_total:,} reference rows")
    run = ("the run's method and threshold for each of the "
           f"{summary.tested} columns it tested" if summary.run_drifted is not None
           else f"Evidently's default test for each of the {summary.tested} columns")
    lines = [f"Drift: {window}, against {reference}, with {run}: {summary.drifted} of "
             f"{summary.tested} columns drifted"
             + (f" (the run: {summary.run_drifted} of {summary.tested})."
                if summary.run_drifted is not None else ".")]
    if features_only:
        lines.append("Quality: does not apply: the contract declares no prediction "
                     "(task: features).")
    elif summary.labelled_rows:
        lines.append(f"Quality: the {summary.labelled_rows:,} labelled rows of those "
                     "(labels as stored now), against the reference's labels.")
    else:
        lines.append(f"Quality: not shown: {labelled_found:,} labelled rows, at least "
                     f"{MIN_LABELLED} are needed.")
    lines.append("Schema and service: the run's own figures, on every row of the window.")
    return lines


def _sections_table(verdict: _Verdict) -> list[list[str]]:
    run = verdict.run
    if run is None:
        sch = verdict.schema
        return [["schema", sch.status if sch else "-",
                 f"violation rate {_pct(sch.violation_rate)}"
                 if isinstance(sch, SchemaResult) else ""]]
    rows = []
    for name, sec in run.sections.items():
        if isinstance(sec, ErrorSection):
            rows.append([name, "error", f"could not run: {sec.error}"])
        elif isinstance(sec, NotApplicable):
            rows.append([name, sec.status, f"does not apply: {sec.reason}"])
        elif isinstance(sec, SchemaResult):
            rows.append([name, sec.status, f"violation rate {_pct(sec.violation_rate)} "
                         f"({sec.violating_rows:,} of {sec.rows:,} rows)"])
        elif isinstance(sec, DriftResult):
            tested = [f for f in sec.features if f.error is None]
            rows.append([name, sec.status, f"{sum(f.drifted for f in tested)} of "
                         f"{len(tested)} columns drifted (share {_pct(sec.share_drifted)}, "
                         f"dataset drift at {_pct(sec.drift_share)})"])
        elif isinstance(sec, PerformanceResult):
            shown = ", ".join(f"{k} {_num(v)} (reference {_num(sec.reference_metrics.get(k))})"
                              for k, v in sec.metrics.items() if v is not None)
            metric, value, _, _ = (sec.estimated.headline if sec.estimated is not None
                                   else ("", None, None, None))
            estimated = f"; estimated {metric} {_num(value)}" if value is not None else ""
            rows.append([name, sec.status, f"labels {_pct(sec.label_coverage)} "
                         f"({'mature' if sec.mature else 'not mature'}); "
                         f"{shown or 'no labelled rows'}" + estimated])
        elif isinstance(sec, ServiceResult):
            rows.append([name, sec.status, f"errors {_pct(sec.error_rate)}; latency p50/p95/"
                         f"p99 {_num(sec.latency_p50_ms)}/{_num(sec.latency_p95_ms)}/"
                         f"{_num(sec.latency_p99_ms)} ms"])
        elif isinstance(sec, MultivariateResult):
            rows.append([name, sec.status, "; ".join(sec.reasons) if sec.auc is None else
                         f"domain classifier AUC {_num(sec.auc)} (95% CI {_num(sec.auc_lower)}"
                         f"-{_num(sec.auc_upper)}, threshold {_num(sec.auc_threshold)}); top "
                         "features: " + (", ".join(f.feature for f in sec.top_features)
                                         or "none")])
        elif isinstance(sec, VersionsResult):
            shown = "; ".join(
                f"{v.version}: {v.rows:,} rows, accuracy {_num(v.accuracy)}, estimated "
                f"{_num(v.estimated_accuracy)}" for v in sec.versions)
            rows.append([name, sec.status, "; ".join([shown or "no rows", *sec.reasons])])
    return rows


def _schema_rows(schema: SchemaResult) -> list[list[str]]:
    return [[c.column, c.role, c.expected_type or "-", c.state, _pct(c.null_rate),
             "yes" if c.nulls_allowed else "no", _pct(c.type_mismatch_rate),
             _pct(c.out_of_range_rate), _pct(c.unseen_category_rate), _pct(c.violation_rate),
             ", ".join(c.examples)] for c in schema.columns]


def _head(verdict: _Verdict, summary: ReportSummary, *, reference_total: int,
          labelled_found: int, sample: int, features_only: bool) -> list[Any]:
    from evidently.legacy.renderers.html_widgets import (
        CounterData,
        counter,
        table_data,
        text_widget,
    )

    record = verdict.record
    reasons = "\n".join(f"- {r}" for r in verdict.reasons) or "- none: every check passed"
    used = "\n".join(f"- {line}" for line in _rows_used(
        summary, reference_total=reference_total, labelled_found=labelled_found,
        sample=sample, features_only=features_only))
    widgets = [
        counter(title=_title(verdict), counters=[
            CounterData("model", record.model),
            CounterData("window end (UTC)", f"{record.window_end:%Y-%m-%d %H:%M}"),
            CounterData("status", record.status.upper()),
            CounterData("rows", f"{record.rows:,}"),
            CounterData("run", f"{record.id} ({record.kind})"),
        ]),
        text_widget(title="Verdict", text=f"**{record.status.upper()}**, because:\n\n"
                    f"{reasons}\n\nFinished {record.finished_at:%Y-%m-%d %H:%M:%S} UTC; "
                    f"reference version {record.reference_version or '-'}; settings "
                    f"{record.config_hash[:12]}."),
        text_widget(title="What this report is computed on", text=used),
        table_data(title="Checks", column_names=["check", "status", "figures"],
                   data=_sections_table(verdict)),
    ]
    sch = verdict.schema
    if isinstance(sch, SchemaResult):
        lines = [f"Missing columns: {', '.join(sch.missing_columns)}."] if \
            sch.missing_columns else []
        if sch.unexpected_columns:
            lines.append(f"Unexpected columns: {', '.join(sch.unexpected_columns)}.")
        if lines:
            widgets.append(text_widget(title="Schema", text="\n\n".join(lines)))
        widgets.append(table_data(
            title=f"Schema: the contract, per column ({sch.violating_rows:,} of "
                  f"{sch.rows:,} rows violate it)",
            column_names=["column", "role", "type", "state", "nulls", "nulls allowed",
                          "type mismatch", "out of range", "unseen", "violating", "examples"],
            data=_schema_rows(sch)))
    elif isinstance(sch, ErrorSection):
        widgets.append(text_widget(title="Schema", text=f"could not run: {sch.error}"))
    return widgets


def _write(output: Path, title: str, head: list[Any], drift: Any, quality: Any,
           summary: ReportSummary) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from evidently.core.metric_types import render_widgets
        from evidently.legacy.renderers.html_widgets import group_widget

    def view(snapshot: Any, what: str) -> Any:
        # Evidently's own page, less its top group: its widgets and its tests.
        return group_widget(title=what, widgets=[*snapshot._widgets,
                                                 *snapshot._tests_widgets])

    widgets = [*head, view(drift, f"Drift: {summary.rows:,} window rows against "
                                  f"{summary.reference_rows:,} reference rows")]
    if quality is not None:
        widgets.append(view(quality, f"Quality: {summary.labelled_rows:,} labelled rows"))
    page = render_widgets(widgets)
    page = page.replace("<head>", f"<head>\n<title>{html.escape(title)}</title>", 1)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(page, encoding="utf-8")

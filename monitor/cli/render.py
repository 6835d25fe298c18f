"""Terminal views of check runs: what the CLI prints, kept apart from parsing."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import click

from monitor.results import (
    CheckRun,
    DriftResult,
    ErrorSection,
    EstimatedResult,
    MultivariateResult,
    NotApplicable,
    PerformanceResult,
    SchemaResult,
    SegmentsResult,
    ServiceResult,
    VersionsResult,
)
from monitor.times import iso_z

if TYPE_CHECKING:
    from monitor.rollback import VersionVerdict

# Wide enough for the longest status, insufficient_data, and a space.
_STATUS = 18

__all__ = [
    "fmt",
    "print_fallback",
    "print_run",
    "print_runs",
    "print_schema_run",
    "print_segment_timeline",
    "print_timeline",
    "print_versions",
    "run_listing",
]


def print_schema_run(run: Any) -> None:
    res = run.result
    click.echo(
        f"{run.model}  window {run.start:%Y-%m-%d %H:%M} .. {run.end:%Y-%m-%d %H:%M} UTC  "
        f"rows {res.rows}  status {res.status.upper()}  violation rate {res.violation_rate:.2%}"
    )
    header = f"  {'column':<22}{'nulls':>8}{'type':>8}{'range':>8}{'unseen':>8}  examples"
    click.echo(header)
    for col in res.columns:
        if col.state != "present":
            click.echo(f"  {col.column:<22}{col.state.upper()}")
            continue
        if not col.violation_rate and not col.null_rate:
            continue
        click.echo(
            f"  {col.column:<22}{col.null_rate:>8.2%}{col.type_mismatch_rate:>8.2%}"
            f"{col.out_of_range_rate:>8.2%}{col.unseen_category_rate:>8.2%}  "
            + ", ".join(col.examples)
        )
    for reason in res.reasons[:3]:
        click.echo(f"  why: {reason}")


def fmt(value: Any, kind: str = "rate") -> str:
    if value is None:
        return "-"
    return f"{value:.2%}" if kind == "rate" else f"{value:.3f}"


def _ratio(value: float | None) -> str:
    """A classifier's metric (accuracy, f1, roc_auc): three decimals."""
    return fmt(value, "num")


def _num(value: float | None) -> str:
    """A metric of the target's unit (mae, rmse): four significant digits."""
    return "-" if value is None else f"{value:.4g}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


# A section that could not run records ``<exception type>: <message>``. For mqm's own
# errors (a reference set that lacks a column, a contract that cannot be read) the
# message is written for the user and the type says nothing; for any other failure the
# type is the clue, and stays.
_OWN_ERRORS = re.compile(
    r"\b(?:RuntimeError|MonitorError|ConfigError|SchemaError|IngestError|DatabaseError): ")


def _readable(text: str) -> str:
    return _OWN_ERRORS.sub("", text, count=1)


def _section_line(name: str, status: str, text: str) -> None:
    click.echo(f"  {name:<13}{status:<{_STATUS}}" + text)


def print_run(run: CheckRun) -> None:
    """A terminal summary of one run: status, why, and a line per check."""
    sampled = f"  (sampled {run.sample_rows} rows)" if run.sampled else ""
    click.echo(
        f"{run.model}  window {run.start:%Y-%m-%d %H:%M} .. {run.end:%Y-%m-%d %H:%M} UTC  "
        f"rows {run.rows}  status {run.status.upper()}{sampled}"
        + (f"  run {run.run_id}" if run.run_id else "")
    )
    for name, sec in run.sections.items():
        if isinstance(sec, ErrorSection):
            _section_line(name, "error", f"could not run: {_readable(sec.error)}")
            continue
        if isinstance(sec, NotApplicable):
            _section_line(name, sec.status, f"does not apply: {sec.reason}")
            continue
        if isinstance(sec, SchemaResult):
            _section_line(name, sec.status, f"violation rate {fmt(sec.violation_rate)}")
        elif isinstance(sec, DriftResult):
            _section_line(name, sec.status, f"drifted share {fmt(sec.share_drifted)} "
                          f"(limit {fmt(sec.drift_share)})")
            for feat in sec.features:
                if feat.drifted and feat.score is not None and feat.threshold is not None:
                    click.echo(f"    {feat.feature:<22} {feat.method:<14} score "
                               f"{feat.score:.4g} >= threshold {feat.threshold:.4g}"
                               if feat.method not in ("ks", "chisquare", "z") else
                               f"    {feat.feature:<22} {feat.method:<14} p-value "
                               f"{feat.score:.3g} < threshold {feat.threshold:.3g}")
        elif isinstance(sec, PerformanceResult):
            number = _ratio if sec.task == "classification" else _num
            shown = ", ".join(
                f"{k} {number(v)} (ref {number(sec.reference_metrics.get(k))})"
                for k, v in sec.metrics.items() if v is not None)
            metric, value, _, _ = (sec.estimated.headline if sec.estimated is not None
                                   else ("", None, None, None))
            estimated = f"  estimated {metric} {number(value)}" if value is not None else ""
            _section_line(name, sec.status, f"labels {fmt(sec.label_coverage)}  "
                          f"{shown or 'no labels yet'}" + estimated)
        elif isinstance(sec, ServiceResult):
            _section_line(name, sec.status, f"errors {fmt(sec.error_rate)}  latency "
                          f"p50/p95/p99 {_ms(sec.latency_p50_ms)}/{_ms(sec.latency_p95_ms)}/"
                          f"{_ms(sec.latency_p99_ms)} ms")
        elif isinstance(sec, SegmentsResult):
            _print_segments(name, sec)
        elif isinstance(sec, MultivariateResult):
            _section_line(name, sec.status, multivariate_summary(sec))
        elif isinstance(sec, VersionsResult):
            _section_line(name, sec.status, ", ".join(
                f"{v.version} {v.rows} rows accuracy {_ratio(v.accuracy)} estimated "
                f"{_ratio(v.estimated_accuracy)}" for v in sec.versions) or "no rows")
            for reason in sec.reasons:
                click.echo(f"    {reason}")
    for reason in run.reasons[:8]:
        click.echo(f"  why: {_readable(reason)}")


def _print_segments(name: str, sec: SegmentsResult) -> None:
    """The segments section: a line per segment, its verdict and what it was compared
    with."""
    bad = sum(seg.status in ("warn", "critical") for seg in sec.segments)
    _section_line(name, sec.status, f"{len(sec.segments)} segments of "
                  f"{', '.join(sec.columns)}: {bad} degraded (severity {sec.severity})")
    for seg in sec.segments:
        drift = seg.drift if isinstance(seg.drift, DriftResult) else None
        perf = seg.performance if isinstance(seg.performance, PerformanceResult) else None
        accuracy = perf.metrics.get("accuracy") if perf is not None else None
        versus = ("" if seg.status == "insufficient_data" else
                  "  vs whole reference" if seg.reference == "whole" else
                  f"  vs {seg.reference_rows} reference rows")
        click.echo(f"    {seg.key[:30]:<31}{seg.rows:>7} rows  {seg.status:<{_STATUS}}"
                   f"drifted {fmt(drift.share_drifted if drift else None):>7}  "
                   f"accuracy {_ratio(accuracy):>5}{versus}")


def print_segment_timeline(runs: list[CheckRun]) -> None:
    """Each segment's verdict per window, one line per segment (``.`` ok, ``W`` warn,
    ``C`` critical, ``-`` too few rows, blank: not in that window)."""
    marks = {"ok": ".", "warn": "W", "critical": "C", "insufficient_data": "-"}
    order: dict[str, dict[int, str]] = {}
    for i, run in enumerate(runs):
        sec = run.section("segments")
        if isinstance(sec, SegmentsResult):
            for seg in sec.segments:
                order.setdefault(seg.key, {})[i] = marks[seg.status]
    if not order:
        return
    click.echo("  per segment, one mark per window (. ok, W warn, C critical, - too few rows):")
    for key, seen in order.items():
        click.echo(f"  {key[:30]:<31}" + "".join(seen.get(i, " ") for i in range(len(runs))))
def multivariate_summary(sec: MultivariateResult) -> str:
    """The domain classifier's AUC with its interval and threshold, the reconstruction
    error against its band, and what moved; or why it could not judge."""
    if sec.auc is None:
        return "; ".join(sec.reasons) or "not judged"
    text = (f"AUC {sec.auc:.3f} (95% CI {_ratio(sec.auc_lower)}-{_ratio(sec.auc_upper)}, "
            f"threshold {_num(sec.auc_threshold)}) on {sec.rows_current} vs "
            f"{sec.rows_reference} rows")
    if sec.reconstruction_error is not None:
        text += (f"  PCA error {sec.reconstruction_error:.3f} (band "
                 f"{_num(sec.reconstruction_lower)}..{_num(sec.reconstruction_upper)})")
    if sec.top_features:
        text += "  top: " + ", ".join(f.feature for f in sec.top_features[:3])
    return text


def _task(runs: list[CheckRun]) -> str:
    for run in runs:
        perf = run.section("performance")
        if isinstance(perf, PerformanceResult):
            return perf.task
    if runs and all(isinstance(r.performance, NotApplicable) for r in runs):
        return "features"
    return "classification"


def print_timeline(runs: list[CheckRun]) -> None:
    """One line per run. A classifier's lines show accuracy and its estimate, a
    regressor's its MAE and RMSE, a features-only model's neither."""
    task = _task(runs)
    regression = task == "regression"
    first, second = ("mae", "rmse") if regression else ("accuracy", "estimated")
    if task == "features":
        _features_timeline(runs)
        return
    # The domain classifier's AUC, only when some run has the (opt-in) section.
    auc_column = any(run.multivariate is not None for run in runs)
    click.echo(f"  {'window end (UTC)':<18}{'rows':>7}{'schema':>9}{'drifted':>9}"
               + (f"{'mv auc':>8}" if auc_column else "")
               + f"{first:>10}{second:>10}{'labels':>8}  {'status':<{_STATUS}}why")
    for run in runs:
        schema, drift, perf = run.section("schema"), run.section("drift"), run.section(
            "performance")
        one = two = coverage = None
        if isinstance(perf, PerformanceResult):
            coverage = perf.label_coverage
            if regression:
                one, two = perf.metrics.get("mae"), perf.metrics.get("rmse")
            else:
                one = perf.metrics.get("accuracy")
                two = (perf.estimated.estimated_accuracy
                       if isinstance(perf.estimated, EstimatedResult) else None)
        number = _num if regression else _ratio
        shown = number(one), number(two)
        why = _readable(run.reasons[0]) if run.reasons and run.status != "ok" else ""
        click.echo(
            f"  {run.end:%Y-%m-%d %H:%M}  {run.rows:>7}"
            f"{fmt(schema.violation_rate if isinstance(schema, SchemaResult) else None):>9}"
            f"{fmt(drift.share_drifted if isinstance(drift, DriftResult) else None):>9}"
            + (f"{_auc(run):>8}" if auc_column else "")
            + f"{shown[0]:>10}{shown[1]:>10}"
            f"{fmt(coverage):>8}  {run.status:<{_STATUS}}{why[:90]}"
        )


def _auc(run: CheckRun) -> str:
    sec = run.section("multivariate")
    return _ratio(sec.auc) if isinstance(sec, MultivariateResult) else "-"


def _features_timeline(runs: list[CheckRun]) -> None:
    """A features-only model's lines: no accuracy, estimate or labels to show."""
    click.echo(f"  {'window end (UTC)':<18}{'rows':>7}{'schema':>9}{'drifted':>9}  "
               f"{'status':<{_STATUS}}why")
    for run in runs:
        schema, drift = run.section("schema"), run.section("drift")
        why = _readable(run.reasons[0]) if run.reasons and run.status != "ok" else ""
        click.echo(
            f"  {run.end:%Y-%m-%d %H:%M}  {run.rows:>7}"
            f"{fmt(schema.violation_rate if isinstance(schema, SchemaResult) else None):>9}"
            f"{fmt(drift.share_drifted if isinstance(drift, DriftResult) else None):>9}  "
            f"{run.status:<{_STATUS}}{why[:90]}"
        )


def print_fallback(doc: dict[str, Any], events: list[Any]) -> None:
    """A flag document and its recent events (newest first)."""
    state = "ON" if doc["active"] else "off"
    since = f" since {doc['since']}" if doc["since"] else ""
    until = f" until {doc['expires_at']}" if doc["expires_at"] else ""
    click.echo(f"{doc['model']}  fallback {state} ({doc['source']}){since}{until}")
    if doc["reason"]:
        click.echo(f"  why: {doc['reason']}")
    stale = "  STALE: no recent successful run" if doc["stale"] else ""
    click.echo(f"  last successful run: {doc['last_success_at'] or 'never'}{stale}")
    click.echo(f"  default prediction: {json.dumps(doc['default_prediction'])}")
    if events:
        click.echo("  events:")
    for ev in events:
        change = f"{'ON' if ev.old_active else 'off'} -> {'ON' if ev.new_active else 'off'}"
        by = f" by {ev.actor}" if ev.actor else ""
        click.echo(f"    {ev.at:%Y-%m-%d %H:%M:%S}  {ev.kind:<7}{change:<11}{by}  "
                   f"{(ev.reason or '')[:120]}")


def run_listing(record: Any) -> dict[str, Any]:
    """A stored run (``monitor.store.runs.RunRecord``) as ``mqm runs --json`` lists it:
    the fields of the API's run summaries."""
    reasons: list[str] = list(record.summary.get("reasons") or ())
    recomputes = record.summary.get("recomputes")
    return {
        "id": record.id, "model": record.model, "kind": record.kind,
        "status": record.status,
        "window": {"start": iso_z(record.window_start), "end": iso_z(record.window_end)},
        "rows": record.rows, "reasons": [str(r) for r in reasons],
        "recomputes": recomputes if isinstance(recomputes, int) else None,
        "config_hash": record.config_hash, "reference_version": record.reference_version,
        "started_at": iso_z(record.started_at), "finished_at": iso_z(record.finished_at),
    }


def print_runs(records: list[Any]) -> None:
    """``mqm runs``: one line per stored run, newest first."""
    click.echo(f"  {'run':>6}  {'kind':<7}{'window end (UTC)':<18}{'rows':>8}  "
               f"{'status':<{_STATUS}}{'finished (UTC)':<18}why")
    for record in records:
        row = run_listing(record)
        why = row["reasons"][0] if row["reasons"] and record.status != "ok" else ""
        if row["recomputes"] is not None:
            why = f"(again, after run {row['recomputes']}) {why}"
        click.echo(f"  {record.id:>6}  {record.kind:<7}{record.window_end:%Y-%m-%d %H:%M}  "
                   f"{record.rows:>8}  {record.status:<{_STATUS}}"
                   f"{record.finished_at:%Y-%m-%d %H:%M}  {why[:100]}")


def print_versions(model: str, verdict: VersionVerdict) -> None:
    """``mqm versions``: each version's windows and figures, then the verdict."""
    if not verdict.versions:
        click.echo(f"{model}: no versions stored yet; check runs record them "
                   f"(`mqm check --model {model}`)")
        return
    click.echo(f"  {'version':<14}{'first seen':<18}{'last seen':<18}{'windows':>8}{'rows':>9}"
               f"{'accuracy':>10}{'estimated':>10}{'errors':>8}{'p95 ms':>8}  prediction drift")
    for v in verdict.versions:
        drift = (f"{v.prediction_drifted_windows} of {v.prediction_tested_windows} windows"
                 if v.prediction_tested_windows else "-")
        click.echo(f"  {v.version:<14}{v.first_seen:%Y-%m-%d %H:%M}  {v.last_seen:%Y-%m-%d %H:%M}  "
                   f"{v.windows:>8}{v.rows:>9}{_ratio(v.accuracy):>10}"
                   f"{_ratio(v.estimated_accuracy):>10}{fmt(v.error_rate):>8}"
                   f"{_ms(v.latency_p95_ms):>8}  {drift}")
    click.echo("")
    sure = ""
    if verdict.p_value is not None and verdict.confidence is not None and verdict.best:
        # Rounding must not claim certainty: p=1e-18 is "> 99.9%", not "100.0%".
        level = ("> 99.9%" if verdict.confidence > 0.999 else f"{verdict.confidence:.1%}")
        sure = f" (confidence {level}, p={verdict.p_value:.2g})"
    click.echo(f"best recent version: {verdict.best or 'no evidence'}{sure}")
    click.echo(f"  {verdict.text}")

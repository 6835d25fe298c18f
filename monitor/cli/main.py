"""The ``mqm`` command: parses, calls the library, and turns MonitorErrors into one line."""

from __future__ import annotations

import gc
import sys
from pathlib import Path
from typing import Any

import click

from monitor.cli import render
from monitor.cli.common import (
    AT_OPTION,
    CONFIG_HELP,
    FAIL_ON,
    JSON_OPTION,
    MODEL_OPTION,
    NO_SAVE,
    ON_ERROR,
    Context,
    exit_on_status,
    fail_cleanly,
    parse_at,
    pass_ctx,
    print_json,
    show,
)
from monitor.cli.fallback import fallback
from monitor.cli.loadtest import loadtest
from monitor.errors import MonitorError

__all__ = ["main", "run"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config", "config_file", type=click.Path(dir_okay=False), default=None,
    help=CONFIG_HELP + " Also accepted after the command.",
)
@click.version_option(package_name="mqm")
@click.pass_context
def main(ctx: click.Context, config_file: str | None) -> None:
    """mqm, the model-quality monitor."""
    ctx.obj = Context(config_file)


# --- db ---------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Database schema management."""


@db.command("upgrade")
@pass_ctx
@fail_cleanly
def db_upgrade(ctx: Context) -> None:
    """Migrate the database to this mqm's newest revision."""
    from monitor.store.db import safe_url, upgrade

    engine = ctx.engine(migrate=False)
    before, after = upgrade(engine)
    where = safe_url(ctx.config.database_url)
    if before == after:
        click.echo(f"{where}: already at revision {after}")
    else:
        click.echo(f"{where}: upgraded from {before or 'empty'} to {after}")


# --- ingestion --------------------------------------------------------------------

def _report(report: Any, as_json: bool, what: str) -> None:
    # Warnings go to stderr in both forms, so that --json output stays one document.
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        print_json(report.as_dict())
        return
    unmatched = "" if report.unmatched is None else f", {report.unmatched} match no log"
    click.echo(
        f"{report.file}: {report.rows} {what} rows read, {report.added} added, "
        f"{report.already_stored} already stored, {report.bad} bad{unmatched}"
    )
    for line in report.problems[:20]:
        click.echo(f"  skipped {line}")
    if report.bad > 20:
        click.echo(f"  ... and {report.bad - 20} more")


@main.command()
@MODEL_OPTION
@click.argument("file", type=click.Path(path_type=Path))
@ON_ERROR
@JSON_OPTION
@pass_ctx
@fail_cleanly
def ingest(ctx: Context, model: str, file: Path, on_error: str, as_json: bool) -> None:
    """Load inference logs from a CSV, Parquet or JSON-lines FILE."""
    from monitor.ingest import ingest_logs
    from monitor.schema import load_schema

    model_cfg = ctx.config.model(model)
    schema = load_schema(model_cfg.schema_path)
    report = ingest_logs(ctx.engine(), model, schema, file, on_error=on_error,  # type: ignore[arg-type]
                         default_version=model_cfg.version, blocks=model_cfg.compacted)
    _report(report, as_json, "log")


@main.command()
@MODEL_OPTION
@click.argument("file", type=click.Path(path_type=Path))
@ON_ERROR
@JSON_OPTION
@pass_ctx
@fail_cleanly
def labels(ctx: Context, model: str, file: Path, on_error: str, as_json: bool) -> None:
    """Load ground-truth labels (request_id, label, optional timestamp) from FILE."""
    from monitor.ingest import ingest_labels
    from monitor.schema import load_schema

    schema = load_schema(ctx.config.model(model).schema_path)
    report = ingest_labels(ctx.engine(), model, schema, file, on_error=on_error)  # type: ignore[arg-type]
    _report(report, as_json, "label")


# --- schema -----------------------------------------------------------------------


@main.group()
def schema() -> None:
    """Model contracts: draft one, check a window against one."""


@schema.command("infer")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model", "-m", required=True, help="Model name to write into the contract.")
@click.option("--prediction", default=None,
              help="Column holding the model's prediction (default: the column named "
              "'prediction', else the only one whose name holds 'pred').")
@click.option("--target", default=None, help="Column holding the label, if any.")
@click.option("--proba-prefix", default="proba_", show_default=True,
              help="Prefix of class-probability columns.")
@click.option("--no-prediction", "features_only", is_flag=True,
              help="A features-only contract (task: features): the model's inputs are "
              "monitored alone, without prediction or target; every column but request_id, "
              "timestamp and model_version is a feature.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write here instead of standard output (refuses to overwrite).")
@fail_cleanly
def schema_infer(file: Path, model: str, prediction: str | None, target: str | None,
                 proba_prefix: str, features_only: bool, output: Path | None) -> None:
    """Draft a contract from a reference set (CSV or Parquet).

    The reference set is what the model's logs are compared with: its features, the
    model's prediction (and, for a classifier, the class probabilities, in columns named
    PREFIX<class>), and the label (--target) for accuracy. With --no-prediction, the
    features alone.
    """
    from monitor.run.reference_file import read_reference
    from monitor.schema import infer_schema, schema_to_yaml

    frame = read_reference(file)
    draft, ranges = infer_schema(frame, model=model, prediction=prediction, target=target,
                                 probability_prefix=proba_prefix, features_only=features_only)
    if draft.prediction is not None and prediction is None:
        click.echo(f"prediction column: {draft.prediction.column!r} (guessed from its name; "
                   "--prediction COL chooses another)", err=True)
    text = f"# Drafted by `mqm schema infer` from {file.name}; review before use.\n"
    text += schema_to_yaml(draft, ranges)
    if output is None:
        click.echo(text, nl=False)
        return
    if output.exists():
        raise MonitorError(f"{output}: already exists; not overwriting")
    output.write_text(text, encoding="utf-8")
    click.echo(f"wrote {output} ({len(draft.features)} features)")


@schema.command("check")
@MODEL_OPTION
@AT_OPTION
@NO_SAVE
@JSON_OPTION
@pass_ctx
@fail_cleanly
def schema_check(ctx: Context, model: str, at: str | None, no_save: bool,
                 as_json: bool) -> None:
    """Check the latest window of a model's logs against its contract."""
    from monitor.run.check import run_schema_check

    run = run_schema_check(ctx.engine(), ctx.config, model, at=parse_at(at),
                           persist=not no_save)
    show(run, model, as_json, render.print_schema_run)


# --- check runs -------------------------------------------------------------------


@main.command()
@MODEL_OPTION
@AT_OPTION
@NO_SAVE
@JSON_OPTION
@FAIL_ON
@pass_ctx
@fail_cleanly
def check(ctx: Context, model: str, at: str | None, no_save: bool, as_json: bool,
          fail_on: str | None) -> None:
    """Run every check on one window of a model's logs and store the run."""
    from monitor.run.check import compact_quietly, run_check

    ctx.config.model(model)  # an unknown model fails here, once, naming the known ones
    compact_quietly(ctx.engine(), ctx.config, model)
    run = run_check(ctx.engine(), ctx.config, model, at=parse_at(at), persist=not no_save)
    exit_on_status([show(run, model, as_json, render.print_run).status], fail_on)


@main.command()
@MODEL_OPTION
@click.option("--since", required=True, help="Start (ISO 8601, UTC).")
@click.option("--until", required=True, help="End (ISO 8601, UTC).")
@JSON_OPTION
@FAIL_ON
@pass_ctx
@fail_cleanly
def backfill(ctx: Context, model: str, since: str, until: str, as_json: bool,
             fail_on: str | None) -> None:
    """Run every check on each window between --since and --until."""
    from monitor.run.check import backfill as run_backfill
    from monitor.run.check import windows_between

    start, end = parse_at(since), parse_at(until)
    assert start is not None and end is not None
    if end <= start:
        raise MonitorError("--until must be after --since")
    total = len(windows_between(start, end, ctx.config.model(model).window))
    with click.progressbar(length=total, label=f"checking {total} windows",
                           file=sys.stderr) as bar:
        runs = run_backfill(ctx.engine(), ctx.config, model, start, end,
                            progress=lambda _run: bar.update(1))
    if as_json:
        print_json([r.as_dict() for r in runs])
    else:
        render.print_timeline(runs)
    exit_on_status([r.status for r in runs], fail_on)


@main.command()
@click.option("--model", "-m", default=None, help="Model name from the config; default: all "
              "models whose logs are in mqm's own table.")
@click.option("--rebuild", is_flag=True, help="Drop the model's log blocks and build them "
              "again (after logs were deleted or changed by hand).")
@JSON_OPTION
@pass_ctx
@fail_cleanly
def compact(ctx: Context, model: str | None, rebuild: bool, as_json: bool) -> None:
    """Copy new logs and labels into columnar log blocks, which checks read fast."""
    from monitor.run.check import compact_logs
    from monitor.store.block_reader import delete_blocks

    names = [model] if model else [name for name, cfg in ctx.config.models.items()
                                   if cfg.source.kind == "builtin"]
    engine = ctx.engine()
    results = []
    for name in names:
        ctx.config.model(name)  # an unknown model fails here, naming it
        if rebuild:
            delete_blocks(engine, name)
        result = compact_logs(engine, ctx.config, name)
        if result is None:
            raise MonitorError(f"{name}: log blocks are only for mqm's own log table, with "
                               "schedule.compact_every set")
        results.append(result)
    if as_json:
        print_json([{"model": r.model, "rows": r.rows, "blocks": r.blocks,
                      "labels_refreshed": r.labels, "seconds": round(r.seconds, 3)}
                     for r in results])
        return
    for r in results:
        click.echo(f"{r.model}: {r.rows:,} new log rows into {r.blocks} block(s), labels of "
                   f"{r.labels} block(s) brought up to date, in {r.seconds:.2f} s")


@main.command()
@click.option("--model", "-m", default=None, help="Model name from the config; default: all "
              "models with a retention.")
@click.option("--dry-run", is_flag=True, help="Only say what would be deleted.")
@JSON_OPTION
@pass_ctx
@fail_cleanly
def retention(ctx: Context, model: str | None, dry_run: bool, as_json: bool) -> None:
    """Delete logs, labels and log blocks older than each model's retention, in short
    batches (what `mqm serve` does every schedule.retention_every), for cron."""
    from monitor.run.retention import apply_retention, retention_plan
    from monitor.times import iso_z

    names = [model] if model else [name for name, cfg in ctx.config.models.items()
                                   if cfg.retention_period is not None]
    engine = ctx.engine()
    out: list[dict[str, Any]] = []
    for name in names:
        ctx.config.model(name)  # an unknown model fails here, naming it
        plan = retention_plan(engine, ctx.config, name)
        doc: dict[str, Any] = {"model": name, "horizon": iso_z(plan.horizon),
                               "held_by_watermark": plan.held_by_watermark,
                               "dry_run": dry_run}
        if plan.pending is None:
            doc.update(logs=0, labels=0, blocks=0, profiles=0)
        elif dry_run:
            doc.update(logs=plan.pending.logs, labels=plan.pending.labels,
                       blocks=plan.pending.blocks, profiles=0)
        else:
            result = apply_retention(engine, ctx.config, name)
            assert result is not None  # the plan had a horizon
            doc.update(horizon=iso_z(result.horizon), logs=result.logs,
                       labels=result.labels, blocks=result.blocks, profiles=result.profiles,
                       batches=result.batches,
                       longest_batch_seconds=round(result.longest_batch, 4),
                       seconds=round(result.seconds, 3), complete=result.complete)
        out.append(doc)
    if as_json:
        print_json(out)
        return
    for doc in out:
        if doc["horizon"] is None:
            click.echo(f"{doc['model']}: retention is off (null): nothing to delete")
            continue
        held = " (held at the scheduler's watermark: later windows are not checked yet)" \
            if doc["held_by_watermark"] else ""
        counts = (f"{doc['logs']:,} logs, {doc['labels']:,} labels and {doc['blocks']:,} "
                  f"log blocks from before {doc['horizon']}{held}")
        if dry_run:
            click.echo(f"{doc['model']}: would delete {counts}")
        else:
            profiles = (f"; {doc['profiles']} reference profiles no configured reference uses"
                        if doc["profiles"] else "")
            click.echo(f"{doc['model']}: deleted {counts}, in {doc['seconds']:.2f} s "
                       f"({doc['batches']} batches, the longest "
                       f"{doc['longest_batch_seconds']:.3f} s){profiles}")


@main.command()
@MODEL_OPTION
@JSON_OPTION
@pass_ctx
@fail_cleanly
def recheck(ctx: Context, model: str, as_json: bool) -> None:
    """Re-run recent windows whose accuracy was not judged yet for want of labels."""
    from monitor.run.check import compact_quietly, recompute_immature

    ctx.config.model(model)  # an unknown model fails here, once, naming the known ones
    compact_quietly(ctx.engine(), ctx.config, model)
    runs = recompute_immature(ctx.engine(), ctx.config, model)
    if as_json:
        print_json([r.as_dict() for r in runs])
    elif not runs:
        click.echo("no window is waiting for labels")
    else:
        render.print_timeline(runs)


@main.command()
@MODEL_OPTION
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True,
              help="How many runs to list, newest first.")
@JSON_OPTION
@pass_ctx
@fail_cleanly
def runs(ctx: Context, model: str, limit: int, as_json: bool) -> None:
    """List a model's stored runs, newest first, with the ids `mqm report` takes."""
    from monitor.store.runs import latest_runs

    ctx.config.model(model)  # an unknown model fails here, naming the known ones
    records = latest_runs(ctx.engine(), model, limit=limit)
    if as_json:
        print_json([render.run_listing(r) for r in records])
    elif not records:
        click.echo(f"{model}: no runs yet; `mqm check --model {model}` makes one")
    else:
        render.print_runs(records)


@main.command()
@MODEL_OPTION
@click.option("--since", default=None,
              help="Only windows ending after this time (ISO 8601, UTC); default: all stored.")
@JSON_OPTION
@pass_ctx
@fail_cleanly
def versions(ctx: Context, model: str, since: str | None, as_json: bool) -> None:
    """List a model's versions over its stored runs and say which recent one is best."""
    from monitor.rollback import verdict
    from monitor.store.versions import version_windows

    ctx.config.model(model)  # an unknown model fails here, naming the known ones
    found = verdict(version_windows(ctx.engine(), model, since=parse_at(since)))
    if as_json:
        print_json({"model": model, **found.as_dict()})
    else:
        render.print_versions(model, found)


@main.command()
@click.option("--run", "run_id", type=int, required=True, help="Run id (see `mqm runs`).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              required=True, help="HTML file to write.")
@click.option("--sample", type=click.IntRange(min=1), default=20_000, show_default=True,
              help="At most this many rows of the window (a uniform sample) and of the "
              "reference are given to Evidently.")
@pass_ctx
@fail_cleanly
def report(ctx: Context, run_id: int, output: Path, sample: int) -> None:
    """Write an HTML report of a stored run: its verdict and reasons, its checks, the
    schema per column, and Evidently's drift and quality views of its window."""
    from monitor.run.report import write_report

    done = write_report(ctx.engine(), ctx.config, run_id, output, sample=sample)
    rows = (f"all {done.rows:,} window rows" if done.rows == done.window_rows
            else f"{done.rows:,} of {done.window_rows:,} window rows (a uniform sample)")
    run = f" (the run: {done.run_drifted})" if done.run_drifted is not None else ""
    quality = (f"quality on {done.labelled_rows:,} labelled rows" if done.labelled_rows
               else "no quality view (too few labelled rows)")
    click.echo(f"wrote {output}: run {run_id} ({done.status}); drift on {rows}: "
               f"{done.drifted} of {done.tested} columns drifted{run}; {quality}")


# --- the service ------------------------------------------------------------------


@main.command()
@click.option("--host", default=None, help="Address to listen on (default: serve.host).")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Port to listen on (default: serve.port).")
@click.option("--no-scheduler", is_flag=True,
              help="Serve the API only; run no checks (for API-only replicas).")
@pass_ctx
@fail_cleanly
def serve(ctx: Context, host: str | None, port: int | None, no_scheduler: bool) -> None:
    """Run the HTTP API and the scheduled checks until SIGTERM or SIGINT."""
    from monitor.serve.process import serve as run_service

    sys.exit(run_service(ctx.config, scheduler=not no_scheduler, host=host, port=port,
                         engine=ctx.engine()))


# --- config -----------------------------------------------------------------------


@main.group("config")
def config_group() -> None:
    """The config file."""


@config_group.command("reference")
def config_reference() -> None:
    """Print the config reference (Markdown), generated from the declarations."""
    from monitor.cli.config_docs import config_reference as render

    click.echo(render(), nl=False)


@main.group("metrics")
def metrics_group() -> None:
    """The Prometheus metrics of mqm serve."""


@metrics_group.command("reference")
def metrics_reference() -> None:
    """Print the metric reference (Markdown), generated from the declarations."""
    from monitor.serve.metrics import metric_reference

    click.echo(metric_reference(), nl=False)


@main.group("alerts")
def alerts_group() -> None:
    """The Prometheus alert rules shipped in alerts/."""


@alerts_group.command("reference")
@click.option("--rules", "rules_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=Path("alerts/rules/mqm.rules.yml"), show_default=True,
              help="The rules file to describe.")
@fail_cleanly
def alerts_reference(rules_path: Path) -> None:
    """Print the alert table (Markdown) of the README, generated from the rules file."""
    from monitor.cli.alerts_docs import alert_reference

    click.echo(alert_reference(rules_path), nl=False)


@config_group.command("check")
@pass_ctx
@fail_cleanly
def config_check(ctx: Context) -> None:
    """Validate the config file and, for every model, its contract, its schedule and the
    columns of its reference set; exit 1 on any error."""
    from monitor.cli.config_check import check_config

    cfg = ctx.config
    findings = check_config(cfg)
    for finding in findings:
        click.echo(f"{finding.level}: {finding.message}", err=True)
    if any(f.level == "error" for f in findings):
        sys.exit(1)
    click.echo(f"ok: {len(cfg.models)} model(s): {', '.join(cfg.models)}")


# --- demo -------------------------------------------------------------------------


@main.command()
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder with the sample data (default: sample_data/ beside the config).")
@pass_ctx
@fail_cleanly
def demo(ctx: Context, data: Path | None) -> None:
    """Load the sample model's data and run every check on it day by day."""
    from monitor.cli.demo import run_demo

    runs = run_demo(ctx.config, ctx.engine(), data, echo=click.echo)
    render.print_timeline(runs)
    click.echo("")
    render.print_segment_timeline(runs)
    bad = [r for r in runs if r.status in ("warn", "critical")]
    click.echo("")
    click.echo(f"{len(runs)} windows checked, {len(bad)} degraded. Details of one: "
               "`mqm check --model loan_default --at 2026-10-12T00:00:00Z`; "
               "an HTML report: `mqm report --run ID -o report.html`, with an ID from "
               "`mqm runs --model loan_default`.")
    from monitor.fallback.flag import flag_document

    flag = flag_document(ctx.engine(), ctx.config, "loan_default")
    state = "ON" if flag["active"] else "off"
    click.echo(f"Fallback flag: {state} ({flag['source']})"
               + (f": {flag['reason']}" if flag.get("reason") else "")
               + ". Serving reads it from `mqm fallback show --model loan_default`, the API or "
               "mqm_client.FallbackFlag.")
    from monitor.rollback import verdict
    from monitor.store.versions import version_windows

    click.echo("")
    click.echo("Model versions (`mqm versions --model loan_default`):")
    render.print_versions("loan_default", verdict(version_windows(ctx.engine(), "loan_default")))


# --- dashboard --------------------------------------------------------------------


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address the dashboard listens on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8501, show_default=True,
              help="Port of the dashboard.")
@pass_ctx
@fail_cleanly
def dashboard(ctx: Context, host: str, port: int) -> None:
    """Run the Streamlit quality dashboard on the store (see README, Dashboard)."""
    import importlib.util
    import os

    from monitor.config import ENV_CONFIG, config_path

    ctx.config  # noqa: B018 -- a bad config fails here, in one line, not in the browser
    spec = importlib.util.find_spec("dashboards")
    if spec is None or spec.origin is None:
        raise MonitorError("the dashboards package is not installed with mqm")
    app = Path(spec.origin).parent / "app.py"
    env = {**os.environ, ENV_CONFIG: str(config_path(ctx.config_file).resolve())}
    command = [sys.executable, "-m", "streamlit", "run", str(app),
               "--server.headless", "true", "--browser.gatherUsageStats", "false",
               "--server.port", str(port), "--server.address", host,
               "--client.toolbarMode", "viewer"]
    click.echo(f"mqm dashboard on http://{host}:{port}", err=True)
    # Streamlit takes over the process: signals (docker stop, Ctrl-C) reach it directly.
    os.execve(sys.executable, command, env)


main.add_command(fallback)
main.add_command(loadtest)


def run() -> None:
    """The ``mqm`` program: ``main``, then the exit without the interpreter's last
    garbage collections. Those walk every object pandas, SQLAlchemy and the rest made at
    import, 0.1-0.15 s of each command (a whole 1M-row ``mqm check`` is 2 s). Frozen
    objects are skipped by them; each is still freed, and every exit handler runs.
    Only here, not in ``main``: a process that goes on after a command (a test) keeps
    collecting what it makes."""
    try:
        main(prog_name="mqm")
    finally:
        gc.freeze()


if __name__ == "__main__":  # pragma: no cover
    run()

"""``mqm loadtest``: load a serving endpoint with requests made from a model's contract and
reference set, and print throughput, latency, error and default-answer rates, and the
serving process's CPU and memory."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from monitor.cli.common import (
    JSON_OPTION,
    MODEL_OPTION,
    Context,
    fail_cleanly,
    pass_ctx,
    print_json,
)
from monitor.errors import MonitorError

if TYPE_CHECKING:
    from monitor.loadtest.results import LoadTestResult

__all__ = ["loadtest"]


def _span(text: str, what: str) -> tuple[int, int]:
    """``N`` or ``MIN:MAX`` as (min, max)."""
    low, _, high = text.partition(":")
    try:
        bounds = (int(low), int(high or low))
    except ValueError:
        raise click.BadParameter(f"{text!r}: give N or MIN:MAX", param_hint=what) from None
    return bounds


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise click.BadParameter(f"{text!r}: give 'Name: value'", param_hint="--header")
    return name.strip(), value.strip()


@click.command()
@MODEL_OPTION
@click.argument("url")
@click.option("--duration", type=float, default=10.0, show_default=True,
              help="Seconds to send requests for (at most 3600).")
@click.option("--rate", type=float, default=None,
              help="Requests per second to aim at (at most 10000); default: as fast as the "
              "connections go.")
@click.option("--concurrency", "-c", type=int, default=4, show_default=True,
              help="Connections sending at once (1 to 256), each kept alive.")
@click.option("--batch-size", default="1", show_default=True,
              help="Rows per request: N, or MIN:MAX drawn uniformly per request.")
@click.option("--body", "shape", type=click.Choice(["record", "list", "object"]),
              default="record", show_default=True,
              help="record: one JSON object of features; list: a JSON list of them; object: "
              "the list under --batch-key.")
@click.option("--batch-key", default="instances", show_default=True,
              help="With --body object: the key of the list of rows.")
@click.option("--invalid-share", type=float, default=0.0, show_default=True,
              help="Share of requests (0 to 1) with one row broken, to exercise the "
              "service's handling of bad input.")
@click.option("--invalid-kinds", default=None,
              help="Comma-separated ways to break a row: wrong_type, missing, null, "
              "out_of_range, unseen_category, malformed; default: every one the contract "
              "allows.")
@click.option("--text-length", default=None,
              help="Free-text (string) features get random text of N or MIN:MAX characters, "
              "to vary the payload size; default: the reference's values.")
@click.option("--no-reference", is_flag=True,
              help="Draw values from the contract alone, not from the reference set's rows.")
@click.option("--default-field", default="served_by=fallback", show_default=True,
              help="FIELD=VALUE (or FIELD: truthy) in a 2xx answer that marks a default "
              "answer; '' for none.")
@click.option("--default-status", type=int, multiple=True,
              help="A status code that marks a default answer (repeatable).")
@click.option("--answers-key", default=None,
              help="Key of the per-row answers' list in a batch answer (default: the answer "
              "itself, or its items when it is a list).")
@click.option("--header", "headers", multiple=True,
              help="An extra request header, 'Name: value' (repeatable).")
@click.option("--timeout", type=float, default=10.0, show_default=True,
              help="Seconds to wait for one answer.")
@click.option("--pid", type=int, default=None,
              help="Process whose CPU and memory to sample (Linux /proc) during the run.")
@click.option("--seed", type=int, default=None, help="Seed of the generated requests.")
@JSON_OPTION
@pass_ctx
@fail_cleanly
def loadtest(ctx: Context, model: str, url: str, duration: float, rate: float | None,
             concurrency: int, batch_size: str, shape: str, batch_key: str,
             invalid_share: float, invalid_kinds: str | None, text_length: str | None,
             no_reference: bool, default_field: str, default_status: tuple[int, ...],
             answers_key: str | None, headers: tuple[str, ...], timeout: float,
             pid: int | None, seed: int | None, as_json: bool) -> None:
    """Send requests made from model M's contract to URL (POST, JSON) and report
    throughput, latency, error and default-answer rates, and the CPU and memory of --pid.

    Ctrl-C stops early and reports what was measured so far.
    """
    from monitor.loadtest.drive import Endpoint, run_load
    from monitor.loadtest.generate import RequestGenerator, reference_rows
    from monitor.loadtest.results import DefaultRule
    from monitor.schema import load_schema

    if timeout <= 0:
        raise click.BadParameter("must be above 0", param_hint="--timeout")
    field, sep, value = default_field.partition("=")
    rule = DefaultRule(field=field.strip() or None, value=value if sep else None,
                       statuses=frozenset(default_status), answers_key=answers_key)
    model_cfg = ctx.config.model(model)
    schema = load_schema(model_cfg.schema_path)
    rows = None
    dropped = 0
    if not no_reference:
        from monitor.run.reference_file import read_reference

        rows, dropped = reference_rows(schema, read_reference(model_cfg.reference))
    generator = RequestGenerator(
        schema, rows, batch_size=_span(batch_size, "--batch-size"),
        shape=shape,  # type: ignore[arg-type]
        batch_key=batch_key, invalid_share=invalid_share,
        invalid_kinds=[k.strip() for k in invalid_kinds.split(",") if k.strip()]
        if invalid_kinds is not None else None,
        text_length=_span(text_length, "--text-length") if text_length else None)
    if dropped:
        click.echo(f"warning: {dropped} reference row(s) break the contract; not sent",
                   err=True)
    endpoint = Endpoint(url, tuple(_header(h) for h in headers), timeout)
    pace = f"{rate:g} req/s" if rate else "as fast as possible"
    click.echo(f"loading {url} for {duration:g} s, {pace}, {concurrency} connection(s); "
               "Ctrl-C stops early", err=True)
    result = run_load(endpoint, generator, duration=duration, rate=rate,
                      concurrency=concurrency, default_rule=rule, pid=pid, seed=seed)
    if as_json:
        print_json(result.as_dict())
    else:
        print_result(result)
    if result.requests == 0:
        raise MonitorError("no request was sent")


def print_result(r: LoadTestResult) -> None:
    """The result as a table."""
    target = f"target {r.target_rate:g} req/s" if r.target_rate else "as fast as possible"
    stopped = " (interrupted)" if r.interrupted else ""
    lat = r.latency_ms

    def ms(key: str) -> str:
        value = lat[key]
        return "-" if value is None else f"{value:.1f}"

    def share(part: int, whole: int) -> str:
        return f"{part / whole:.1%}" if whole else "-"

    lines = [
        f"{r.url}: {r.elapsed_seconds:.1f} s{stopped}, {r.concurrency} connection(s), "
        f"{target}, seed {r.seed}",
        f"  {'requests':<16}{r.requests:,} ({r.rows:,} rows)",
        f"  {'throughput':<16}{r.rate:,.1f} req/s, {r.rows_per_second:,.1f} rows/s",
        f"  {'latency ms':<16}p50 {ms('p50')}  p95 {ms('p95')}  p99 {ms('p99')}  "
        f"max {ms('max')}",
        f"  {'errors':<16}{r.errors:,} ({share(r.errors, r.requests)}): 4xx "
        f"{r.client_errors:,}, 5xx {r.server_errors:,}, transport {r.transport_errors:,}",
        f"  {'default answers':<16}{r.default_answers:,} of {r.answered_rows:,} rows answered "
        f"({share(r.default_answers, r.answered_rows)}; {r.default_rule})",
        f"  {'body bytes':<16}min {r.body_bytes['min']}  median {r.body_bytes['median']}  "
        f"max {r.body_bytes['max']}",
    ]
    p = r.process
    if p is not None:
        gone = ", exited during the run" if p.exited else ""
        lines.append(f"  {'process ' + str(p.pid):<16}CPU {p.cpu_percent:.1f}% of one core "
                     f"(peak {p.cpu_percent_peak:.1f}%), RSS {p.rss_mb_start:.1f} MB at "
                     f"start, median {p.rss_mb_median:.1f}, peak {p.rss_mb_peak:.1f}; "
                     f"{p.threads_peak} threads at most; {p.samples} samples{gone}")
    lines.append(f"  {'this client':<16}CPU {r.client_cpu_percent:.1f}% of one core")
    answers = sorted({a for o in r.by_kind for a in o.answers},
                     key=lambda a: (not a.isdigit(), a))
    lines.append("")
    lines.append(f"  {'input':<18}{'sent':>8}" + "".join(f"{a:>10}" for a in answers))
    for o in r.by_kind:
        lines.append(f"  {o.kind:<18}{o.sent:>8,}"
                     + "".join(f"{o.answers.get(a, 0):>10,}" for a in answers))
    for note in r.notes:
        lines.append(f"note: {note}")
    click.echo("\n".join(lines))

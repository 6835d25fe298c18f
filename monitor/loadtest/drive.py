"""Sends generated requests to an HTTP endpoint and measures the answers.

``concurrency`` threads, each with one keep-alive connection (``http.client``), send
requests for ``duration`` seconds. With a ``rate``, request *i* is due at
``start + i / rate`` and no thread sends it before: the achieved rate never exceeds the
target, and falls below it when the service (or this machine) cannot keep up; without
one, each thread sends its next request as soon as the last is answered. Bodies are made
before a request's clock starts, so a latency is the service's answer time alone (with
the network and this process's reading of the answer).

Bounds: at most ``MAX_DURATION`` seconds, ``MAX_RATE`` requests per second and
``MAX_CONCURRENCY`` connections. A KeyboardInterrupt (Ctrl-C) stops sending, waits for the
requests in flight, and returns what was measured, marked ``interrupted``.
"""

from __future__ import annotations

import http.client
import random
import statistics
import threading
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from monitor.errors import MonitorError
from monitor.loadtest.generate import RequestGenerator
from monitor.loadtest.procstat import ProcessSampler, ProcessStats
from monitor.loadtest.results import DefaultRule, LoadTestResult, Outcomes

__all__ = ["MAX_CONCURRENCY", "MAX_DURATION", "MAX_RATE", "Endpoint", "run_load"]

MAX_DURATION = 3600.0
MAX_RATE = 10_000.0
MAX_CONCURRENCY = 256


@dataclass(frozen=True)
class Endpoint:
    """Where requests go: a POST of a JSON body to ``url``, with extra ``headers``."""

    url: str
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = 10.0

    def connection(self) -> http.client.HTTPConnection:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise MonitorError(f"{self.url}: not an http:// or https:// URL")
        kind = http.client.HTTPSConnection if parts.scheme == "https" else \
            http.client.HTTPConnection
        return kind(parts.hostname, parts.port, timeout=self.timeout)

    @property
    def target(self) -> str:
        parts = urlsplit(self.url)
        return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


class _Tally:
    """One thread's measurements, merged at the end (no lock on the hot path)."""

    def __init__(self) -> None:
        self.latencies = array("d")  # seconds, answers with a status
        self.sizes = array("l")  # body bytes
        self.outcomes: Counter[tuple[str, str]] = Counter()
        self.rows = 0
        self.defaults = 0
        self.answered_rows = 0
        self.unreadable = 0


def run_load(
    endpoint: Endpoint,
    generator: RequestGenerator,
    *,
    duration: float,
    rate: float | None = None,
    concurrency: int = 4,
    default_rule: DefaultRule | None = None,
    pid: int | None = None,
    seed: int | None = None,
    sample_interval: float = 0.5,
    stop: threading.Event | None = None,
    on_start: Callable[[], None] | None = None,
) -> LoadTestResult:
    """Send requests for ``duration`` seconds (or until ``stop`` is set, or Ctrl-C) and
    measure them; with ``pid``, the CPU and memory of that process over the run."""
    if not 0 < duration <= MAX_DURATION:
        raise MonitorError(f"duration {duration:g} s: must be above 0 and at most "
                           f"{MAX_DURATION:g} s")
    if rate is not None and not 0 < rate <= MAX_RATE:
        raise MonitorError(f"rate {rate:g}/s: must be above 0 and at most {MAX_RATE:g}/s")
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise MonitorError(f"concurrency {concurrency}: must be 1 to {MAX_CONCURRENCY}")
    endpoint.connection()  # a bad URL fails here, once
    rule = default_rule or DefaultRule()
    if seed is None:
        seed = random.SystemRandom().randrange(2**32)
    sampler = ProcessSampler(pid, sample_interval) if pid is not None else None
    stop = stop or threading.Event()
    tallies = [_Tally() for _ in range(concurrency)]
    ticket = iter(range(2**63))
    ticket_lock = threading.Lock()
    start = end = 0.0  # set just before the threads start

    def worker(index: int) -> None:
        tally = tallies[index]
        rng = random.Random(seed * 1_000_003 + index)
        conn = endpoint.connection()
        headers = {"Content-Type": "application/json", **dict(endpoint.headers)}
        try:
            while not stop.is_set():
                request = generator.request(rng)
                if rate is not None:
                    with ticket_lock:
                        due = start + next(ticket) / rate
                    if due >= end:  # the last due request was sent: wait out the duration
                        stop.wait(max(0.0, end - time.monotonic()))
                        return
                    if stop.wait(max(0.0, due - time.monotonic())):
                        return
                elif time.monotonic() >= end:
                    return
                began = time.perf_counter()
                try:
                    conn.request("POST", endpoint.target, body=request.body, headers=headers)
                    response = conn.getresponse()
                    body = response.read()
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()  # the next request opens a new connection
                    outcome = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
                    tally.outcomes[request.kind, outcome] += 1
                    tally.sizes.append(len(request.body))
                    tally.rows += request.rows
                    continue
                tally.latencies.append(time.perf_counter() - began)
                tally.outcomes[request.kind, str(response.status)] += 1
                tally.sizes.append(len(request.body))
                tally.rows += request.rows
                defaults, answered, readable = rule.read(response.status, body, request.rows)
                if 200 <= response.status < 300 or response.status in rule.statuses:
                    tally.defaults += defaults
                    tally.answered_rows += answered
                    tally.unreadable += not readable
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(i,), name=f"mqm-loadtest-{i}",
                                daemon=True) for i in range(concurrency)]
    cpu_before = time.process_time()
    if sampler is not None:
        sampler.start()
    if on_start is not None:
        on_start()
    start = time.monotonic()
    end = start + duration
    for thread in threads:
        thread.start()
    interrupted = False
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
    except KeyboardInterrupt:
        interrupted = True
        stop.set()
        for thread in threads:
            thread.join()
    elapsed = time.monotonic() - start
    cpu = time.process_time() - cpu_before
    process = sampler.stop() if sampler is not None else None
    return _result(endpoint, tallies, rule, duration=duration, elapsed=elapsed, rate=rate,
                   concurrency=concurrency, seed=seed, generator=generator, process=process,
                   client_cpu=100.0 * cpu / elapsed if elapsed > 0 else 0.0,
                   interrupted=interrupted or (stop.is_set() and elapsed < duration))


def _quantile(values: list[float], q: float) -> float:
    """The q-quantile with linear interpolation between order statistics (numpy's
    default method, and statistics.quantiles' "inclusive")."""
    if len(values) == 1:
        return values[0]
    position = (len(values) - 1) * q
    low = int(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)


def _result(endpoint: Endpoint, tallies: list[_Tally], rule: DefaultRule, *, duration: float,
            elapsed: float, rate: float | None, concurrency: int, seed: int,
            generator: RequestGenerator, process: ProcessStats | None, client_cpu: float,
            interrupted: bool) -> LoadTestResult:
    outcomes: Counter[tuple[str, str]] = Counter()
    latencies: list[float] = []
    sizes: list[int] = []
    for tally in tallies:
        outcomes.update(tally.outcomes)
        latencies.extend(tally.latencies)
        sizes.extend(tally.sizes)
    latencies.sort()
    share = generator.invalid_share
    kinds = (["valid"] if share < 1 else []) + (list(generator.invalid_kinds) if share else [])
    kinds += sorted({k for k, _ in outcomes} - set(kinds))
    by_kind = []
    for kind in kinds:
        answers = {o: n for (k, o), n in sorted(outcomes.items()) if k == kind}
        by_kind.append(Outcomes(kind, sum(answers.values()), answers))
    totals: Counter[str] = Counter()
    for (_, outcome), n in outcomes.items():
        totals[outcome] += n
    every = Outcomes("all", sum(totals.values()), dict(totals))
    requests = every.sent
    rows = sum(t.rows for t in tallies)
    answered_rows = sum(t.answered_rows for t in tallies)
    defaults = sum(t.defaults for t in tallies)
    ms = [v * 1000 for v in latencies]
    errors = every.count(400, 600) + every.transport_errors
    notes = []
    if rate is not None and elapsed > 0 and requests / elapsed < 0.9 * rate:
        notes.append(f"the target rate was not reached ({requests / elapsed:.1f} of "
                     f"{rate:g}/s): the service or this machine could not keep up, or "
                     f"{concurrency} connections are too few for the service's latency")
    unreadable = sum(t.unreadable for t in tallies)
    if unreadable:
        notes.append(f"{unreadable} answer(s) did not show the default-answer field "
                     f"({rule.describe()}); they count as the model's")
    return LoadTestResult(
        url=endpoint.url, duration_seconds=duration, elapsed_seconds=round(elapsed, 3),
        target_rate=rate, concurrency=concurrency, seed=seed,
        invalid_share=generator.invalid_share, requests=requests, rows=rows,
        rate=round(requests / elapsed, 2) if elapsed > 0 else 0.0,
        rows_per_second=round(rows / elapsed, 2) if elapsed > 0 else 0.0,
        latency_ms={
            "p50": round(_quantile(ms, 0.5), 3) if ms else None,
            "p95": round(_quantile(ms, 0.95), 3) if ms else None,
            "p99": round(_quantile(ms, 0.99), 3) if ms else None,
            "max": round(ms[-1], 3) if ms else None,
            "mean": round(statistics.fmean(ms), 3) if ms else None,
        },
        body_bytes={"min": min(sizes) if sizes else None,
                    "median": int(statistics.median(sizes)) if sizes else None,
                    "max": max(sizes) if sizes else None},
        ok=every.count(200, 300), client_errors=every.count(400, 500),
        server_errors=every.count(500, 600), transport_errors=every.transport_errors,
        errors=errors, error_rate=round(errors / requests, 4) if requests else 0.0,
        default_rule=rule.describe(), default_answers=defaults, answered_rows=answered_rows,
        default_rate=round(defaults / answered_rows, 4)
        if answered_rows and (rule.field or rule.statuses) else None,
        unreadable_answers=unreadable, by_kind=tuple(by_kind),
        process=process,
        client_cpu_percent=round(client_cpu, 1), interrupted=interrupted, notes=tuple(notes),
    )

"""Per-call overhead of the serving-side client: guard, FallbackFlag and InferenceLogger.

Run by hand, not by pytest::

    .venv/bin/python bench/client.py [--number 200000] [--repeats 7]

Each figure is the median over ``--repeats`` runs of the time per call, in microseconds,
of a loop of ``--number`` calls (``timeit``, GC off), minus the same loop calling the bare
predict function. Targets: guard with a cached flag and no timeout adds < 2 us; ``log()`` on
the caller's thread adds < 10 us, also with the database down, and never blocks (the
slowest single call of a run is printed too).

Then what a model that never answers costs the caller (the tests assert only that it gets
the default while the model is still held): the wait of a call that times out, beyond its
``timeout``, and of a call answered by the flag while its shadow call hangs; medians with
the range, over ``--hung`` calls.

Over HTTP (the client alone, ``mqm_client``): ``log()`` to a real ``mqm serve`` started
here (``--no-scheduler``, a SQLite store, a free loopback port) and to a monitor that is
down (a closed port); and the monitor-down run of the issue: ``--down-calls`` (100,000)
calls at ``--down-rate`` (20,000) a second, timed one by one, GC on, with the default queue:
the slowest call, how many took over 1 ms (beside a bare loop timed the same way, and the
GC passes), and the drops counted. Importing ``mqm_client`` in a fresh process is timed
(median and range of 9) and its new modules checked against ``sys.stdlib_module_names``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitor.client import FallbackFlag, InferenceLogger, guard  # noqa: E402
from monitor.store.db import create_engine, ensure_schema  # noqa: E402

DOWN_URL = "postgresql+psycopg://postgres@127.0.0.1:1/x"
TOKEN = "bench-token"
MODEL = "bench_model"
ROW = {"age": 41, "income": 52_000.5, "city": "Oslo", "tenure": 7, "score": 0.61,
       "has_card": True, "loans": 2, "channel": "web", "region": "north", "segment": "b"}


def predict(features: dict[str, Any]) -> int:
    return 1


def per_call_us(fn: Callable[..., Any], number: int, repeats: int) -> float:
    """Median time per call of ``fn(ROW)``, in microseconds."""
    timer = timeit.Timer("fn(row)", globals={"fn": fn, "row": ROW})
    return statistics.median(timer.repeat(repeat=repeats, number=number)) / number * 1e6


def slowest_us(fn: Callable[..., Any], number: int) -> tuple[float, float]:
    """(99.9th percentile, maximum) of single calls timed one by one, in microseconds."""
    clock = time.perf_counter_ns
    times = []
    for _ in range(number):
        started = clock()
        fn(ROW)
        times.append(clock() - started)
    times.sort()
    return times[int(len(times) * 0.999)] / 1000, times[-1] / 1000


class NullLogger:
    """Takes the guard's rows and drops them (a shadow call needs a logger)."""

    def log(self, features: Any, prediction: Any, **fields: Any) -> bool:
        return True


def hung_call_ms(number: int) -> dict[str, list[float]]:
    """Caller's wait, in ms, of calls on a model that never answers (until released at
    the end): timed out (``timeout`` 50 ms, minus it) and answered by the flag (shadow)."""
    held = threading.Event()

    def never(features: dict[str, Any]) -> int:
        held.wait()
        return 1

    waits: dict[str, list[float]] = {"timeout": [], "shadow": []}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / f"{MODEL}.json").write_text(json.dumps({"active": True}))
        flag = FallbackFlag(MODEL, tmp, ttl=3600, background=False)
        flag.refresh()
        # Enough workers and shadow slots that no call queues behind a hung one.
        timed = guard(never, default=0, timeout=0.05, max_in_flight=number + 1)
        shadowed = guard(never, default=0, flag=flag, logger=NullLogger(),
                         max_shadow_in_flight=number + 1)
        try:
            for name, fn, less in (("timeout", timed, 50.0), ("shadow", shadowed, 0.0)):
                for _ in range(number):
                    started = time.perf_counter()
                    fn(ROW)
                    waits[name].append((time.perf_counter() - started) * 1000 - less)
        finally:
            held.set()  # the hung calls finish in the background
    return waits


def import_ms(module: str = "monitor.client", times: int = 5) -> tuple[float, float, float]:
    """(median, min, max) milliseconds to import ``module`` in a fresh process."""
    code = (f"import time; s = time.perf_counter(); import {module}; "
            "print(time.perf_counter() - s)")
    runs = [float(subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                                 capture_output=True, text=True).stdout) * 1000
            for _ in range(times)]
    return statistics.median(runs), min(runs), max(runs)


def foreign_modules(module: str) -> list[str]:
    """Modules that importing ``module`` loads from outside the standard library (and
    itself): none for the client."""
    code = ("import sys; before = set(sys.modules); import " + module + "; "
            "print(','.join(sorted(n for n in set(sys.modules) - before "
            "if n.split('.')[0] not in sys.stdlib_module_names "
            f"and n.split('.')[0] != {module.split('.')[0]!r})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()
    return out.split(",") if out else []


def start_monitor(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``mqm serve --no-scheduler`` on a free loopback port, taking posted logs."""
    import socket
    import urllib.request

    config = folder / "monitor.yaml"
    config.write_text(json.dumps({
        "database_url": f"sqlite:///{folder / 'http.db'}",
        "models": {MODEL: {"schema": str(ROOT / "schemas" / "loan_default.yaml"),
                           "reference": str(ROOT / "sample_data" / "reference.parquet")}}}))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MQM_")}
    env["MQM_INGEST_TOKEN"] = TOKEN
    proc = subprocess.Popen([sys.executable, "-m", "monitor", "--config", str(config), "serve",
                             "--no-scheduler", "--port", str(port)], cwd=folder, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1):
                return proc, url
        except OSError:
            time.sleep(0.1)
    raise SystemExit("mqm serve did not start")


def closed_port_url() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=200_000, help="calls per run")
    parser.add_argument("--repeats", type=int, default=7, help="runs per figure (median)")
    parser.add_argument("--hung", type=int, default=200,
                        help="calls on a model that never answers, per figure")
    parser.add_argument("--down-calls", type=int, default=100_000,
                        help="log() calls timed one by one with the monitor down (HTTP)")
    parser.add_argument("--down-rate", type=int, default=20_000,
                        help="calls per second of that run")
    args = parser.parse_args()
    n, r = args.number, args.repeats
    logging.getLogger("mqm.client").setLevel(logging.ERROR)  # the DB-down warnings

    def row(name: str, value: float, note: str = "", unit: str = "us") -> None:
        print(f"{name:<58} {value:8.3f} {unit}  {note}", flush=True)

    print(f"python {sys.version.split()[0]}, {n:,} calls per run, median of {r} runs; "
          f"load average {os.getloadavg()[0]:.2f}")
    row("import monitor.client, fresh process", import_ms()[0], "median of 5", unit="ms")
    median, low, high = import_ms("mqm_client", 9)
    foreign = foreign_modules("mqm_client")
    row("import mqm_client, fresh process", median,
        f"median of 9 ({low:.1f}-{high:.1f}), target < 50 ms; modules from outside the "
        f"standard library: {', '.join(foreign) or 'none'}", unit="ms")

    bare = per_call_us(predict, n, r)
    row("bare predict(row)", bare, "the baseline")

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / f"{MODEL}.json").write_text(json.dumps({"active": False}))
        flag = FallbackFlag(MODEL, tmp, ttl=3600, background=False)
        flag.refresh()
        row("flag.is_active()", per_call_us(lambda _row: flag.is_active(), n, r) - bare,
            "added")

        plain = guard(predict, default=0, flag=flag)
        row("guard(flag=cached, default=0), model path", per_call_us(plain, n, r) - bare,
            "added, target < 2 us")
        bounded = guard(predict, default=0, flag=flag, max_in_flight=64)
        row("guard(..., max_in_flight=64)", per_call_us(bounded, n, r) - bare, "added")
        timed = guard(predict, default=0, flag=flag, timeout=1.0)
        row("guard(..., timeout=1.0): worker-thread hand-off",
            per_call_us(timed, max(1, n // 20), r) - bare, "added")

        (Path(tmp) / f"{MODEL}.json").write_text(json.dumps({"active": True}))
        flag.refresh()
        row("guard(flag=active, default=0), flag path", per_call_us(plain, n, r) - bare,
            "added (the model is not called)")

    # InferenceLogger.log on the caller's thread. The median: a fresh logger per run, with
    # room for the whole run, so that every call queues an entry (not a drop). The tail: a
    # logger with the default queue (10,000), its calls timed one by one with GC on, as in
    # serving; a stall there is the writer thread holding the GIL (switched every 5 ms) or a
    # GC pass, never I/O on the caller's thread.
    log_n = max(1, n // 4)
    with tempfile.TemporaryDirectory() as tmp:
        monitor, monitor_url = start_monitor(Path(tmp))
        for name in ("store.db", *(f"guard{i}.db" for i in range(r))):
            engine = create_engine(f"sqlite:///{Path(tmp) / name}")
            ensure_schema(engine)  # the monitor's `mqm db upgrade`: the logger never does it
            engine.dispose()
        for label, url in (("SQLite file", f"sqlite:///{Path(tmp) / 'store.db'}"),
                           ("PostgreSQL down", DOWN_URL),
                           ("HTTP to mqm serve", monitor_url),
                           ("HTTP, monitor down", closed_port_url())):
            runs = []
            for _ in range(r):
                logger = InferenceLogger(MODEL, url, token=TOKEN, max_queue=log_n + 10)
                runs.append(timeit.Timer("log(row, 1, latency_ms=1.0)",
                                         globals={"log": logger.log, "row": ROW}).timeit(log_n))
                logger.close(timeout=0.5)
            us = statistics.median(runs) / log_n * 1e6 - bare
            logger = InferenceLogger(MODEL, url, token=TOKEN)
            logger.log(ROW, 1)
            logger.flush(timeout=5)  # the writer has imported its driver (or failed to connect)
            p999, worst = slowest_us(lambda row, log=logger.log: log(row, 1), log_n)
            row(f"InferenceLogger.log, {label}", us,
                f"added, target < 10 us; default queue: p99.9 {p999:.1f} us, slowest "
                f"{worst:,.0f} us, dropped {logger.stats()['dropped']:,} of {log_n + 1:,}")
            logger.close(timeout=0.5)

        # Database down for good: the queue is full and log() drops, without blocking.
        logger = InferenceLogger(MODEL, DOWN_URL, max_queue=1000)
        for _ in range(1000):
            logger.log(ROW, 1)
        log = logger.log
        us = per_call_us(lambda row: log(row, 1), n, r) - bare
        row("InferenceLogger.log, PostgreSQL down, queue full (drops)", us,
            f"added; dropped {logger.stats()['dropped']:,}")
        logger.close(timeout=0.5)

        # The guard's hand-off to a real logger, once log() accepts fallback_reason.
        if "fallback_reason" in inspect.signature(InferenceLogger.log).parameters:
            runs = []
            for i in range(r):
                logger = InferenceLogger(MODEL, f"sqlite:///{Path(tmp) / f'guard{i}.db'}",
                                         max_queue=log_n + 10)
                logged = guard(predict, default=0, logger=logger)
                runs.append(timeit.Timer("fn(row)", globals={"fn": logged, "row": ROW})
                            .timeit(log_n))
                assert logged.stats()["log_failures"] == 0, logged.stats()
                logger.close(timeout=0.5)
            row("guard(default=0, logger=SQLite InferenceLogger)",
                statistics.median(runs) / log_n * 1e6 - bare, "added: guard + log()")
        else:
            print("guard + InferenceLogger: skipped, InferenceLogger.log has no "
                  "fallback_reason yet (the guard would count a log failure per call)")
        monitor.terminate()
        monitor.wait(30)

    # The monitor down, over HTTP: every call timed one by one (GC on), the default queue
    # (10,000): the queue fills, then each call drops. None may block. The same loop
    # around a bare function first: its slow calls are the machine's (the OS scheduler,
    # GC), not the logger's.
    clock = time.perf_counter_ns
    times = []
    gap = int(1e9 / args.down_rate)
    due = clock()
    for _ in range(args.down_calls):
        due += gap
        while clock() < due:
            pass
        started = clock()
        predict(ROW)
        times.append(clock() - started)
    bare_over, bare_worst = sum(t > 1_000_000 for t in times), max(times)
    print(f"bare loop of {args.down_calls:,} calls, timed the same way: slowest "
          f"{bare_worst / 1000:,.0f} us, over 1 ms: {bare_over}")
    import gc

    # Garbage-collection passes of this process during the run, over 1 ms: the caller's
    # own allocations pay them, with or without the logger.
    gc_pauses: list[int] = []
    gc_started = [0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started[0] = clock()
        elif clock() - gc_started[0] > 1_000_000:
            gc_pauses.append(clock() - gc_started[0])

    # Twice: as the process is, then after gc.freeze() (what a serving process can do once
    # started: its start-up objects leave the collector's generations, so that a full
    # collection no longer walks them; this bench's own heap holds SQLAlchemy and more).
    for frozen in (False, True):
        if frozen:
            gc.collect()
            gc.freeze()
        gc_pauses.clear()
        gc.callbacks.append(on_gc)
        logger = InferenceLogger(MODEL, closed_port_url(), token=TOKEN, retry_interval=0.05)
        times = []
        # Paced as serving traffic is (--down-rate calls a second), so that the writer
        # thread works meanwhile: it encodes what it holds, fails to connect, retries.
        due = clock()
        for i in range(args.down_calls):
            due += gap
            while clock() < due:
                pass
            started = clock()
            logger.log(ROW, 1, request_id=f"d-{i}")
            times.append(clock() - started)
        gc.callbacks.remove(on_gc)
        time.sleep(1.0)  # let the writer try the monitor a few times
        stats = logger.stats()
        logger.close(timeout=0.5)
        times.sort()
        over = sum(t > 1_000_000 for t in times)
        median_us = times[len(times) // 2] / 1000
        p999_us = times[int(len(times) * 0.999)] / 1000
        print(f"monitor down (HTTP){', after gc.freeze()' if frozen else ''}, "
              f"{args.down_calls:,} log() calls at {args.down_rate:,}/s: median "
              f"{median_us:.2f} us, p99.9 {p999_us:.1f} us, slowest {times[-1] / 1000:,.0f} us,"
              f" over 1 ms: {over}; dropped {stats['dropped']:,}, queued {stats['queued']:,}, "
              f"failed attempts {stats['write_failures']}; GC passes over 1 ms: "
              f"{len(gc_pauses)}" + (f" (longest {max(gc_pauses) / 1000:,.0f} us)"
                                     if gc_pauses else ""), flush=True)

    # A model that never answers: what the caller waits, one call at a time.
    hung = hung_call_ms(args.hung)
    for name, label, note in (
            ("timeout", "guard(timeout=0.05), model hung: wait beyond the timeout",
             "the default, after the timeout"),
            ("shadow", "guard(flag=active, logger), model hung: caller's wait",
             "the default at once; the shadow call hangs")):
        waits = hung[name]
        row(label, statistics.median(waits),
            f"{note}; range {min(waits):.3f}-{max(waits):.3f} ms over {len(waits)} calls",
            unit="ms")


if __name__ == "__main__":
    main()

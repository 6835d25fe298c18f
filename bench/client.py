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
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
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

DOWN_URL = "postgresql+psycopg://postgres@127.0.0.1:1/x"
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


def import_ms() -> float:
    code = ("import time; s = time.perf_counter(); import monitor.client; "
            "print(time.perf_counter() - s)")
    runs = [float(subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                                 capture_output=True, text=True).stdout) for _ in range(5)]
    return statistics.median(runs) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=200_000, help="calls per run")
    parser.add_argument("--repeats", type=int, default=7, help="runs per figure (median)")
    parser.add_argument("--hung", type=int, default=200,
                        help="calls on a model that never answers, per figure")
    args = parser.parse_args()
    n, r = args.number, args.repeats
    logging.getLogger("mqm.client").setLevel(logging.ERROR)  # the DB-down warnings

    def row(name: str, value: float, note: str = "", unit: str = "us") -> None:
        print(f"{name:<58} {value:8.3f} {unit}  {note}", flush=True)

    print(f"python {sys.version.split()[0]}, {n:,} calls per run, median of {r} runs")
    row("import monitor.client, fresh process", import_ms(), "median of 5", unit="ms")

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
        for label, url in (("SQLite file", f"sqlite:///{Path(tmp) / 'store.db'}"),
                           ("PostgreSQL down", DOWN_URL)):
            runs = []
            for _ in range(r):
                logger = InferenceLogger(MODEL, url, max_queue=log_n + 10)
                runs.append(timeit.Timer("log(row, 1, latency_ms=1.0)",
                                         globals={"log": logger.log, "row": ROW}).timeit(log_n))
                logger.close(timeout=0.5)
            us = statistics.median(runs) / log_n * 1e6 - bare
            logger = InferenceLogger(MODEL, url)
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

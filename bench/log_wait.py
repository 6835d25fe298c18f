"""How long one ``InferenceLogger.log()`` call can wait, while the writer thread works.

Run by hand, not by pytest::

    .venv/bin/python bench/log_wait.py [--seconds 10] [--rate 2000] [--repeats 3]

A serving loop on the main thread does a little Python work per request (about 50 us),
calls ``log()``, and sleeps to keep ``--rate`` requests per second, while the logger's
writer thread validates and stores the entries in a SQLite file. Every ``log()`` call is
timed on its own (``perf_counter_ns``); the figures are its percentiles and maximum in
microseconds, median over ``--repeats`` runs of ``--seconds`` each. Scenarios:

- ``plain``: ten small features per entry, as ``bench/client.py`` logs;
- ``big``: the same, and every 500th entry carries a 4 MB text feature, whose JSON
  encoding is one C call that holds the GIL (the row limits now refuse it before);
- ``gc-off``: ``plain`` with the cyclic garbage collector disabled, to tell its pauses
  from the writer's.
"""

from __future__ import annotations

import argparse
import gc
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from monitor.client import InferenceLogger
from monitor.store.db import create_engine, ensure_schema

ROW = {"age": 41, "income": 52_000.5, "city": "Oslo", "tenure": 7, "score": 0.61,
       "has_card": True, "loans": 2, "channel": "web", "region": "north", "segment": "b"}
BIG = "x" * 4_000_000


def work() -> int:
    total = 0
    for i in range(600):  # about 50 us of Python, standing in for a model call
        total += i * i
    return total


def run(url: str, seconds: float, rate: float, scenario: str) -> list[int]:
    logger = InferenceLogger("bench", url, max_queue=100_000)
    log = logger.log
    clock = time.perf_counter_ns
    times: list[int] = []
    interval = 1.0 / rate
    if scenario == "gc-off":
        gc.disable()
    try:
        start = time.perf_counter()
        n = 0
        while time.perf_counter() - start < seconds:
            work()
            features: Any = dict(ROW, note=BIG) if scenario == "big" and n % 500 == 0 else ROW
            t0 = clock()
            log(features, 1, latency_ms=1.0)
            times.append(clock() - t0)
            n += 1
            pause = start + n * interval - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
    finally:
        gc.enable()
        logger.flush(timeout=30)
        stats = logger.stats()
        logger.close(timeout=10)
    if stats["written"] + stats["invalid"] != len(times):
        print(f"  note: {stats}", file=sys.stderr)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=2000.0, help="requests per second")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scenarios", default="plain,big,gc-off")
    args = parser.parse_args()
    logging.getLogger("mqm.client").setLevel(logging.ERROR)
    print(f"python {sys.version.split()[0]}, switch interval {sys.getswitchinterval() * 1e3} ms, "
          f"{args.rate:,.0f} requests/s for {args.seconds} s, median of {args.repeats} runs")
    print(f"{'scenario':<8} {'calls':>7} {'p50 us':>7} {'p99 us':>7} {'p99.9 us':>9} "
          f"{'max us':>9}  max of each run")
    for scenario in args.scenarios.split(","):
        figures = []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                url = f"sqlite:///{Path(tmp) / 'store.db'}"
                engine = create_engine(url)
                ensure_schema(engine)  # the monitor's `mqm db upgrade`; the logger never does
                engine.dispose()
                times = sorted(run(url, args.seconds,
                                   args.rate, scenario))
            figures.append([len(times), times[len(times) // 2] / 1e3,
                            times[int(len(times) * 0.99)] / 1e3,
                            times[int(len(times) * 0.999)] / 1e3, times[-1] / 1e3])
        med = [statistics.median(f[i] for f in figures) for i in range(5)]
        maxes = ", ".join(f"{f[4]:,.0f}" for f in figures)
        print(f"{scenario:<8} {med[0]:>7,.0f} {med[1]:>7.1f} {med[2]:>7.1f} {med[3]:>9.1f} "
              f"{med[4]:>9,.0f}  [{maxes}]", flush=True)


if __name__ == "__main__":
    main()

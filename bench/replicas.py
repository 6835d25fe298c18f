"""Replicas of the scheduler sharing the models' checks, and handing them over.

Run by hand, not by pytest::

    .venv/bin/python bench/replicas.py [--models 40] [--rows 100000] [--replicas 1,2]

It builds a template PostgreSQL database ``mqm_bench_tpl_<random>`` holding ``--models``
models (m00, m01, ...) with one daily window of ``--rows`` log rows each (the sample
model's columns, 70% labelled; the generator is bench/read_window.py's), compacted into
log blocks, each model's watermark set just after that window (nothing due). The window is the last
one due now, so that it is young (its labels still awaited) as in steady operation. Then, for
each replica count R and repeat, a fresh copy of it (``CREATE DATABASE ... TEMPLATE``):

1. R replicas start, each a child process running ``MonitorScheduler`` on its own engine
   with ``--workers`` check threads (the production settings otherwise: lease 15 s,
   renewed every 5 s), and the bench waits until the leases are shared (each holds
   models / R).
2. Every watermark is moved back one window in one statement: each model has one window
   due. The clock starts. Each replica's check job ticks every second (schedule
   ``every: 1s``), so the replicas see the work within a second.
3. The clock stops when every model's watermark is past its window. The runs each
   replica did are counted (its check job's returned runs), and the stored runs are
   audited: exactly one check run per model.

With the largest R it then measures handovers, with the same settings: SIGSTOP one
replica (its leases lapse after the lease, 15 s; another replica takes its models over
at its next round after that), SIGCONT it (the models are shared again), and kill -9 it
(its session ends and its advisory lock is freed; the others take its models at their
next round). Each figure is the time from the signal until every model of the stopped
replica is held by another, read from ``model_leases``.

First it times what a check records of a young window's labels before reading it, so
that a recheck runs only once new labels arrived (``monitor.store.runs.label_mark``: with
log blocks their label high-water, without them the window's label count), and a
recheck's question whether any arrived (``labels_arrived``).

All replicas share this machine's CPUs, so R replicas here do not add CPU: on this 2-core
VM the wall time shows the sharing works (each replica does models / R runs, none twice),
not a speed-up; on separate machines each replica brings its own cores.

Last run, on the 2-vCPU development VM shared with other sessions' test suites (load
average 2.4 at the start, 4.3-5.2 during the runs), ``--models 40 --rows 100000
--replicas 1,2 --repeats 2`` (2 check threads per replica):

| replicas | wall time for 40 windows, median (min-max) | runs per replica | total | median check |
|---|---|---|---|---|
| 1 | 26.3 s (25.9-26.7) | 40 | 40 of 40, one per model | 1.07 s |
| 2 | 28.1 s (27.8-28.4) | 20 / 20 | 40 of 40, one per model | 2.08 s |

Two replicas on the same two cores run twice the threads, so each check takes twice as
long and the wall time stays the same (a little worse): the split is exact, the
speed-up needs the replicas on separate machines.

Handover with 2 replicas at the default lease (15 s, renewed every 5 s): SIGSTOP of a
replica holding 20 models, all 20 held by the other after 15.0 s (the bound is the lease
plus one round, 20 s); after SIGCONT the models were shared 20/20 again 5.1 s later;
kill -9 of a replica holding 20 models, all 20 held by the other after 5.0 s (one round:
its session's advisory lock was free). An earlier run: 15.1 s and 5.1 s.

What a check records of a young 100k-row window's labels (70,118 of them) before reading
it: with log blocks (the service's case) 1.1 ms (0.8-5.1), the blocks' label high-water;
without blocks 110 ms (101-114), the window's count through its logs (339 ms in an
earlier, busier run: a quarter of the check, which is why the high-water replaced it).
A recheck's question whether labels arrived: 1.2 ms with blocks, 104 ms without.
Building the template: 3.2 s to generate 100k rows, 45 s to copy them to 39 more models
inside PostgreSQL, 148 s to compact the 4M rows into log blocks.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
import read_window  # the data generator

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DAY = timedelta(days=1)
DELAY = timedelta(minutes=5)  # the schedule's default delay
# The window checked: the last one due now (a young window, still waiting for labels, as
# in steady operation). A run across 00:05 UTC would find the next one due as well.
START = datetime.fromtimestamp((datetime.now(UTC) - DELAY).timestamp() // 86400 * 86400,
                               UTC) - DAY


def models_of(n: int) -> list[str]:
    return [f"m{i:02d}" for i in range(n)]


def write_config(folder: Path, url: str, models: list[str]) -> Path:
    import yaml

    model = {"schema": str(ROOT / "schemas" / "loan_default.yaml"),
             "reference": str(ROOT / "sample_data" / "reference.parquet"),
             "window": "1d", "min_rows": 1000, "schedule": {"every": "1s"}}
    path = folder / "monitor.yaml"
    path.write_text(yaml.safe_dump({"database_url": url,
                                    "models": dict.fromkeys(models, model)}))
    return path


# --- the template database ---------------------------------------------------------


def build_template(url: str, models: list[str], rows: int) -> dict[str, float]:
    """mqm's tables at ``url``, ``rows`` logs of one day per model, compacted."""
    from monitor.store.compaction import compact
    from monitor.store.db import create_engine, ensure_schema
    from monitor.store.tables import scheduler_state

    read_window.SPAN = DAY  # the generator spreads the rows over one daily window
    read_window.START = START
    engine = create_engine(url)
    ensure_schema(engine)
    t0 = time.perf_counter()
    first = models[0]
    with engine.begin() as conn:
        raw = conn.connection.driver_connection
        for logs, labels in read_window.batches(rows, seed=7, sqlite=False):
            for table, columns, data in (("inference_logs", read_window.LOG_COLUMNS, logs),
                                         ("ground_truth", read_window.LABEL_COLUMNS, labels)):
                with raw.cursor() as cur, cur.copy(
                        f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in data:
                        copy.write_row((first, *row[1:]))
    generated = time.perf_counter() - t0
    log_cols = ", ".join(read_window.LOG_COLUMNS[1:])
    label_cols = ", ".join(read_window.LABEL_COLUMNS[1:])
    for m in models[1:]:  # the same rows for each model, copied inside PostgreSQL
        with engine.begin() as conn:
            conn.execute(sa.text(f"INSERT INTO inference_logs (model, {log_cols}) SELECT "
                                 f":m, {log_cols} FROM inference_logs WHERE model = :first"),
                         {"m": m, "first": first})
            conn.execute(sa.text(f"INSERT INTO ground_truth (model, {label_cols}) SELECT "
                                 f":m, {label_cols} FROM ground_truth WHERE model = :first"),
                         {"m": m, "first": first})
    copied = time.perf_counter() - t0 - generated
    with engine.connect() as conn:
        conn.execute(sa.text("ANALYZE"))
        conn.commit()
    t1 = time.perf_counter()
    for m in models:
        compact(engine, m)
    compacted = time.perf_counter() - t1
    with engine.begin() as conn:  # checked up to the window's end: nothing due yet
        conn.execute(sa.insert(scheduler_state), [
            {"model": m, "watermark": START + DAY, "updated_at": datetime.now(UTC)}
            for m in models])
        conn.execute(sa.text("CHECKPOINT"))
    engine.dispose()
    return {"generate_s": generated, "copy_s": copied, "compact_s": compacted}


# --- one replica, in a child process -------------------------------------------------


def replica(url: str, config_path: str, workers: int, ready: Any, stop: Any,
            results: Any) -> None:
    import logging

    from monitor.config import load_config
    from monitor.serve.scheduler import MonitorScheduler
    from monitor.store.db import create_engine

    logging.basicConfig(level=logging.WARNING)
    # A check job every second that finds its model busy says so every second.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    config = load_config(config_path)
    engine = create_engine(url)
    sched = MonitorScheduler(engine, config, max_workers=workers)
    runs: Counter[str] = Counter()
    tick = sched.tick

    def counting_tick(model: str) -> Any:
        done = tick(model)
        runs[model] += len(done)
        return done

    sched.tick = counting_tick  # type: ignore[method-assign]
    sched.start()
    ready.put((os.getpid(), sched.replica))
    stop.wait()
    sched.shutdown(wait=True)
    engine.dispose()
    results.put((sched.replica, dict(runs)))


def lease_holders(engine: sa.Engine) -> Counter[str | None]:
    from monitor.store.locks import lease_rows

    return Counter(None if r.lapsed else r.holder for r in lease_rows(engine).values())


def wait_until(predicate: Any, timeout: float, what: str) -> float:
    t0 = time.perf_counter()
    while not predicate():
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"not within {timeout} s: {what}")
        time.sleep(0.1)
    return time.perf_counter() - t0


class Replicas:
    """R replica processes on one database; stopped (and reaped) by ``close``."""

    def __init__(self, url: str, config: Path, count: int, workers: int) -> None:
        ctx = get_context("spawn")
        self.ready, self.results = ctx.Queue(), ctx.Queue()
        self.stops = [ctx.Event() for _ in range(count)]
        self.procs = [ctx.Process(target=replica, args=(url, str(config), workers,
                                                        self.ready, stop, self.results))
                      for stop in self.stops]
        for p in self.procs:
            p.start()
        ids = [self.ready.get(timeout=300) for _ in self.procs]
        self.replica_of = dict(ids)  # pid -> replica id

    def close(self) -> dict[str, dict[str, int]]:
        # Only the live ones: setting the event of a killed waiter blocks for good (its
        # condition waits for the waiter to wake).
        alive = [p for p in self.procs if p.is_alive()]
        for p, stop in zip(self.procs, self.stops, strict=True):
            if p in alive:
                stop.set()
        out = dict(self.results.get(timeout=600) for _ in alive)
        for p in self.procs:
            p.join(60)
            if p.is_alive():
                p.kill()
        return out


# --- measurements ---------------------------------------------------------------------


def throughput(url: str, config: Path, models: list[str], count: int,
               workers: int) -> dict[str, Any]:
    from monitor.store.db import create_engine
    from monitor.store.tables import check_runs, scheduler_state

    engine = create_engine(url)
    reps = Replicas(url, config, count, workers)
    try:
        share = -(-len(models) // count)
        settle = wait_until(lambda: sorted(lease_holders(engine).values())
                            == sorted([share] * (len(models) // share)
                                      + ([len(models) % share] if len(models) % share else [])),
                            120, "the leases shared")
        with engine.begin() as conn:
            conn.execute(sa.update(scheduler_state).values(watermark=START))
        wall = wait_until(lambda: _all_checked(engine), 3600, "every model checked")
        per_replica = reps.close()
    except BaseException:
        reps.close()
        raise
    with engine.connect() as conn:
        stored = Counter(conn.execute(sa.select(check_runs.c.model)
                                      .where(check_runs.c.kind == "check")).scalars())
        seconds = [(f - s).total_seconds() for s, f in conn.execute(
            sa.select(check_runs.c.started_at, check_runs.c.finished_at))]
    engine.dispose()
    runs = {r: sum(c.values()) for r, c in per_replica.items()}
    assert stored == Counter(dict.fromkeys(models, 1)), f"not exactly one run per model: {stored}"
    assert sum(runs.values()) == len(models), runs
    return {"wall_s": wall, "settle_s": settle, "runs": sorted(runs.values(), reverse=True),
            "total": sum(runs.values()), "stored": sum(stored.values()),
            "check_s_median": statistics.median(seconds)}


def _all_checked(engine: sa.Engine) -> bool:
    from monitor.store.tables import scheduler_state

    with engine.connect() as conn:
        marks = conn.execute(sa.select(scheduler_state.c.watermark)).scalars().all()
    return all(m is not None and m >= START + DAY for m in marks)


def handovers(url: str, config: Path, models: list[str], count: int,
              workers: int) -> dict[str, float]:
    """Seconds from SIGSTOP / kill -9 of one replica until its models are held by others."""
    from monitor.store.db import create_engine

    engine = create_engine(url)
    reps = Replicas(url, config, count, workers)
    out: dict[str, float] = {}
    try:
        share = -(-len(models) // count)

        def shared() -> bool:
            holders = lease_holders(engine)
            return (sum(holders.values()) == len(models) and None not in holders
                    and max(holders.values()) <= share)

        wait_until(shared, 120, "the leases shared")
        victim = reps.procs[-1]
        name = reps.replica_of[victim.pid]  # type: ignore[index]
        held = lease_holders(engine)[name]
        os.kill(victim.pid, signal.SIGSTOP)  # type: ignore[arg-type]
        try:
            out["sigstop_s"] = wait_until(
                lambda: name not in (h := lease_holders(engine)) and None not in h
                and sum(h.values()) == len(models), 120,
                "the stopped replica's models taken over")
        finally:
            os.kill(victim.pid, signal.SIGCONT)  # type: ignore[arg-type]
        out["sigstop_models"] = held
        out["reshared_s"] = wait_until(lambda: lease_holders(engine).get(name, 0) > 0, 120,
                                       "the resumed replica gets models again")
        wait_until(shared, 120, "the leases shared again")
        held = lease_holders(engine)[name]
        os.kill(victim.pid, signal.SIGKILL)  # type: ignore[arg-type]
        out["kill9_s"] = wait_until(
            lambda: name not in (h := lease_holders(engine)) and None not in h
            and sum(h.values()) == len(models), 120, "the killed replica's models taken over")
        out["kill9_models"] = held
    finally:
        reps.close()
        engine.dispose()
    return out


def label_mark_cost(url: str, model: str, repeats: int = 5) -> dict[str, dict[str, float]]:
    """Seconds of what a young window's check records of its labels before reading it
    (with log blocks: their label high-water; without: the window's label count), and
    of a recheck's question whether labels arrived since (none did)."""
    from monitor.store.db import create_engine
    from monitor.store.runs import LabelMark, _label_counts, label_mark, labels_arrived

    engine = create_engine(url)
    end = START + DAY
    ways: dict[str, Any] = {
        "check, blocks": lambda: label_mark(engine, model, START, end, own_table=True),
        "check, no blocks": lambda: _label_counts(engine, model, START, end, "window"),
    }
    mark = label_mark(engine, model, START, end, own_table=True)
    assert mark.scope == "blocks", mark
    counted = _label_counts(engine, model, START, end, "window")
    ways["recheck, blocks"] = lambda: labels_arrived(engine, model, START, end, mark)
    ways["recheck, no blocks"] = lambda: labels_arrived(
        engine, model, START, end, LabelMark("window", counted.count, counted.max_id))
    out = {}
    for name, way in ways.items():
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            way()
            times.append(time.perf_counter() - t0)
        out[name] = {"median_s": statistics.median(times), "min_s": min(times),
                     "max_s": max(times)}
    engine.dispose()
    out["labels"] = {"count": float(counted.count or 0)}
    return out


def main() -> int:
    import faulthandler

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1: where it waits
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, default=40)
    parser.add_argument("--rows", type=int, default=100_000, help="log rows per window")
    parser.add_argument("--replicas", default="1,2")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2, help="check threads per replica")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    args = parser.parse_args()
    counts = [int(c) for c in args.replicas.split(",")]
    models = models_of(args.models)
    server = sa.make_url(args.pg_url)
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    suffix = secrets.token_hex(4)
    template = f"mqm_bench_tpl_{suffix}"
    made = [template]
    print(f"load average at start: {os.getloadavg()}, CPUs: {os.cpu_count()}", flush=True)
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{template}"'))
        tpl_url = server.set(database=template).render_as_string(hide_password=False)
        built = build_template(tpl_url, models, args.rows)
        print(f"template: {args.models} models x {args.rows:,} rows: generated "
              f"{built['generate_s']:.1f} s, copied {built['copy_s']:.1f} s, compacted "
              f"{built['compact_s']:.1f} s", flush=True)
        cost = label_mark_cost(tpl_url, models[0])
        labels = cost.pop("labels")["count"]
        for name, c in cost.items():
            print(f"label mark, {name}, {args.rows:,}-row window ({labels:,.0f} labels): "
                  f"median {c['median_s'] * 1000:.1f} ms ({c['min_s'] * 1000:.1f}-"
                  f"{c['max_s'] * 1000:.1f})", flush=True)
        results: dict[int, list[dict[str, Any]]] = {}
        with tempfile.TemporaryDirectory() as folder:
            for count in counts:
                for rep in range(args.repeats):
                    name = f"mqm_bench_run_{suffix}_{count}_{rep}"
                    made.append(name)
                    with admin.connect() as conn:
                        conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
                    url = server.set(database=name).render_as_string(hide_password=False)
                    config = write_config(Path(folder), url, models)
                    res = throughput(url, config, models, count, args.workers)
                    results.setdefault(count, []).append(res)
                    print(f"{count} replica(s), repeat {rep + 1}: wall {res['wall_s']:.1f} s, "
                          f"runs per replica {res['runs']}, total {res['total']} (stored "
                          f"{res['stored']}), median check {res['check_s_median']:.2f} s, "
                          f"load {os.getloadavg()[0]:.1f}", flush=True)
                    with admin.connect() as conn:
                        conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
                    made.remove(name)
            fault_count = max(max(counts), 2)
            name = f"mqm_bench_faults_{suffix}"
            made.append(name)
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
            url = server.set(database=name).render_as_string(hide_password=False)
            faults = handovers(url, write_config(Path(folder), url, models), models,
                               fault_count, args.workers)
        print(f"handover with {fault_count} replicas (lease 15 s, renewed every 5 s): "
              f"SIGSTOP {faults['sigstop_s']:.1f} s for {faults['sigstop_models']:.0f} models "
              f"(shared again {faults['reshared_s']:.1f} s after SIGCONT), kill -9 "
              f"{faults['kill9_s']:.1f} s for {faults['kill9_models']:.0f} models")
        print("\n| replicas | wall time, median (min-max) | runs per replica | total |")
        print("|---|---|---|---|")
        for count, rs in results.items():
            walls = [r["wall_s"] for r in rs]
            print(f"| {count} | {statistics.median(walls):.1f} s ({min(walls):.1f}-"
                  f"{max(walls):.1f}) | {' / '.join(str(n) for n in rs[0]['runs'])} | "
                  f"{rs[0]['total']} of {args.models} |")
        print(f"\nload average at the end: {os.getloadavg()}")
    finally:
        with admin.connect() as conn:
            for name in made:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())

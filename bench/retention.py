"""Retention on SQLite and PostgreSQL: delete rate, longest batch transaction, and what a
concurrent ingest and API see meanwhile.

Run by hand, not by pytest::

    .venv/bin/python bench/retention.py --rows 200000 --repeats 3

Per backend and repeat, a fresh store gets ``--rows`` logs of the sample model spread
over 20 days (labels for two thirds of them) and their log blocks; then retention deletes
the first 10 days (``monitor.store.retention.delete_older``, batches of ``--batch``)
while two threads keep working on connections of their own:

- an *ingest*: 100 new log rows committed every 20 ms (``insert_logs``, the serving
  logger's path), each commit timed;
- an *API*: the fallback flag read and a page of runs (what ``GET /v1/models/...`` reads)
  every 10 ms, each timed.

It prints logs deleted per second over the whole pass (labels and blocks included in
the time), the longest and median batch transaction (how long any lock of a batch is
held), and the longest ingest commit and API read during the pass. Medians over the
repeats, with min-max. Note the machine's load (``uptime``) beside the figures.

``--partition-probe`` shows, on a scratch PostgreSQL database, what the partition DDL that
retention by partitions would need does while a read of the table is in flight (a
check reading a window): ``CREATE TABLE ... PARTITION OF`` (a new month) and ``DROP
TABLE`` of a partition wait for that read, and every read and insert of the table queues
behind them; ``DETACH PARTITION ... CONCURRENTLY`` does not block them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from monitor.store import compaction
from monitor.store.db import create_engine, ensure_schema
from monitor.store.logs import LogRecord, insert_labels, insert_logs
from monitor.store.retention import BATCH, delete_older
from monitor.store.tables import check_runs, fallback_state

MODEL = "loan_default"
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
T0 = datetime(2026, 10, 1, tzinfo=UTC)
DAYS = 20


@dataclass
class Figures:
    logs: int = 0
    labels: int = 0
    blocks: int = 0
    seconds: float = 0.0
    batches: int = 0
    longest_batch: float = 0.0
    median_batch: float = 0.0
    longest_by_table: dict[str, float] = field(default_factory=dict)
    ingest_commits: int = 0
    ingest_max: float = 0.0
    api_reads: int = 0
    api_max: float = 0.0
    # The same threads for a few seconds before the pass: what the machine gives anyway.
    base_ingest_max: float = 0.0
    base_api_max: float = 0.0
    errors: list[str] = field(default_factory=list)


def _records(first: int, n: int, start: datetime, span: timedelta) -> list[LogRecord]:
    step = span / max(n, 1)
    return [LogRecord(
        request_id=f"r-{i}", ts=start + (i - first) * step,
        features={"age": 30 + i % 40, "annual_income": 40000.0 + i % 1000,
                  "loan_amount": 10000.0, "credit_score": 700, "debt_to_income": 0.3,
                  "employment_years": 5.0, "open_accounts": 4, "home_ownership": "RENT",
                  "loan_purpose": "car", "has_cosigner": False, "application_channel": "web"},
        prediction=i % 2, probabilities={"0": 0.4, "1": 0.6}, latency_ms=20.0)
        for i in range(first, first + n)]


def _fill(engine: sa.Engine, rows: int) -> None:
    chunk = 50_000
    span = timedelta(days=DAYS)
    for first in range(0, rows, chunk):
        n = min(chunk, rows - first)
        start = T0 + span * first / rows
        records = _records(first, n, start, span * n / rows)
        with engine.begin() as conn:
            insert_logs(conn, MODEL, records)
            insert_labels(conn, MODEL, [(r.request_id, 1, r.ts + timedelta(hours=6))
                                        for k, r in enumerate(records) if k % 3])
    with engine.begin() as conn:
        conn.execute(sa.insert(fallback_state).values(
            model=MODEL, streak=[], created_at=T0, updated_at=T0))
    compaction.compact(engine, MODEL)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")


def _ingest(engine: sa.Engine, stop: threading.Event, out: Figures) -> None:
    n = 0
    while not stop.is_set():
        records = _records(10_000_000 + n * 100, 100, T0 + timedelta(days=DAYS),
                           timedelta(minutes=1))
        t0 = time.perf_counter()
        try:
            with engine.begin() as conn:
                insert_logs(conn, MODEL, records)
        except Exception as exc:
            out.errors.append(f"ingest: {exc}")
        out.ingest_max = max(out.ingest_max, time.perf_counter() - t0)
        out.ingest_commits += 1
        n += 1
        stop.wait(0.02)


def _api(engine: sa.Engine, stop: threading.Event, out: Figures) -> None:
    while not stop.is_set():
        t0 = time.perf_counter()
        try:
            with engine.connect() as conn:
                conn.execute(sa.select(fallback_state).where(fallback_state.c.model == MODEL)
                             ).all()
                conn.execute(sa.select(check_runs).where(check_runs.c.model == MODEL)
                             .order_by(check_runs.c.id.desc()).limit(50)).all()
        except Exception as exc:
            out.errors.append(f"api: {exc}")
        out.api_max = max(out.api_max, time.perf_counter() - t0)
        out.api_reads += 1
        stop.wait(0.01)


def one_run(url: str, rows: int, batch: int) -> Figures:
    engine = create_engine(url)
    ensure_schema(engine)
    _fill(engine, rows)
    out = Figures()
    side = [create_engine(url), create_engine(url)]
    stop = threading.Event()
    threads = [threading.Thread(target=_ingest, args=(side[0], stop, out)),
               threading.Thread(target=_api, args=(side[1], stop, out))]
    for t in threads:
        t.start()
    time.sleep(3.0)
    out.base_ingest_max, out.base_api_max = out.ingest_max, out.api_max
    out.ingest_max = out.api_max = 0.0  # only what happens during the pass
    out.ingest_commits = out.api_reads = 0
    try:
        result = delete_older(engine, MODEL, T0 + timedelta(days=DAYS // 2), batch=batch,
                              now=T0 + timedelta(days=DAYS + 1))
    finally:
        stop.set()
        for t in threads:
            t.join()
        for e in side:
            e.dispose()
        engine.dispose()
    out.logs, out.labels, out.blocks = result.logs, result.labels, result.blocks
    out.seconds, out.batches = result.seconds, result.batches
    out.longest_batch = result.longest_batch
    every = [x for times in result.batch_seconds.values() for x in times]
    out.median_batch = statistics.median(every)
    out.longest_by_table = {k: max(v) for k, v in result.batch_seconds.items()}
    return out


def _sqlite_url() -> tuple[str, Path]:
    folder = Path(tempfile.mkdtemp(prefix="mqm-retention-"))
    return f"sqlite:///{folder / 'store.db'}", folder


def _pg_url(server: str) -> tuple[str, str]:
    name = f"mqm_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return sa.make_url(server).set(database=name).render_as_string(hide_password=False), name


def _drop_pg(server: str, name: str) -> None:
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _show(label: str, runs: list[Figures]) -> None:
    def stat(values: list[float], fmt: str) -> str:
        return (f"{format(statistics.median(values), fmt)} "
                f"({format(min(values), fmt)}-{format(max(values), fmt)})")

    first = runs[0]
    print(f"{label}: {first.logs:,} logs, {first.labels:,} labels, {first.blocks} blocks "
          f"deleted per pass, {first.batches} batches")
    print(f"  logs deleted per second      {stat([r.logs / r.seconds for r in runs], ',.0f')}")
    print(f"  whole pass, s                {stat([r.seconds for r in runs], '.2f')}")
    print(f"  longest batch transaction, ms {stat([1000 * r.longest_batch for r in runs], '.1f')}")
    print(f"  median batch transaction, ms  {stat([1000 * r.median_batch for r in runs], '.1f')}")
    for table in first.longest_by_table:
        longest = [1000 * r.longest_by_table[table] for r in runs]
        print(f"    longest of {table + ',':15} ms {stat(longest, '.1f')}")
    print(f"  ingest commits during pass    {stat([float(r.ingest_commits) for r in runs], '.0f')}"
          f", longest, ms {stat([1000 * r.ingest_max for r in runs], '.1f')}"
          f" (3 s before: {stat([1000 * r.base_ingest_max for r in runs], '.1f')})")
    print(f"  API reads during pass         {stat([float(r.api_reads) for r in runs], '.0f')}"
          f", longest, ms {stat([1000 * r.api_max for r in runs], '.1f')}"
          f" (3 s before: {stat([1000 * r.base_api_max for r in runs], '.1f')})")
    errors = [e for r in runs for e in r.errors]
    print(f"  errors of the ingest and API: {len(errors)}" + (f" ({errors[0]})" if errors else ""))


def partition_probe(server: str) -> None:
    import psycopg

    url, name = _pg_url(server)
    dsn = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE p (id bigint, ts timestamp, v text) "
                         "PARTITION BY RANGE (ts)")
            for m in (1, 2, 3):
                conn.execute(f"CREATE TABLE p{m} PARTITION OF p FOR VALUES FROM "
                             f"('2026-0{m}-01') TO ('2026-0{m + 1}-01')")
            conn.execute("INSERT INTO p SELECT g, '2026-01-01'::timestamp + g * "
                         "interval '1 minute', 'x' FROM generate_series(1, 100000) g")
        for ddl in ("CREATE TABLE p4 PARTITION OF p FOR VALUES FROM ('2026-04-01') "
                    "TO ('2026-05-01')",
                    "DROP TABLE p1",
                    "ALTER TABLE p DETACH PARTITION p2 CONCURRENTLY"):
            _probe(dsn, ddl)
    finally:
        _drop_pg(server, name)


def _probe(dsn: str, ddl: str) -> None:
    import psycopg

    reader = psycopg.connect(dsn)
    reader.execute("SELECT count(*) FROM p")  # a read in flight: its transaction stays open
    done: dict[str, float] = {}
    start = time.perf_counter()

    def run() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(ddl)
        done["ddl"] = time.perf_counter() - start

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(0.5)
    seen = []
    with psycopg.connect(dsn, autocommit=True) as other:
        other.execute("SET statement_timeout = '1s'")
        for sql in ("SELECT count(*) FROM p WHERE ts >= '2026-03-01'",
                    "INSERT INTO p VALUES (0, '2026-03-05', 'y')"):
            t0 = time.perf_counter()
            try:
                other.execute(sql)
                seen.append(f"{sql.split()[0].lower()} ok in {time.perf_counter() - t0:.2f} s")
            except psycopg.errors.QueryCanceled:
                seen.append(f"{sql.split()[0].lower()} blocked (cancelled after 1 s)")
    time.sleep(1.0)
    reader.rollback()
    read_end = time.perf_counter() - start
    reader.close()
    thread.join()
    print(f"{ddl.split(' FOR ')[0]}: while it waits for a read in flight, other sessions' "
          f"{'; '.join(seen)}; it ended at {done['ddl']:.2f} s, the read at {read_end:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--pg-url", default=os.environ.get("MQM_TEST_POSTGRES_URL",
                                                          DEFAULT_PG_URL))
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--partition-probe", action="store_true",
                        help="Only show what partition DDL does to a busy table.")
    args = parser.parse_args()
    if args.partition_probe:
        partition_probe(args.pg_url)
        return
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}; "
          f"{args.rows:,} rows over {DAYS} days, retention deletes the first {DAYS // 2}, "
          f"batches of {args.batch:,}")
    if args.backend in ("sqlite", "both"):
        runs = []
        for _ in range(args.repeats):
            url, folder = _sqlite_url()
            runs.append(one_run(url, args.rows, args.batch))
            for f in folder.iterdir():
                f.unlink()
            folder.rmdir()
        _show("SQLite", runs)
    if args.backend in ("postgresql", "both"):
        runs = []
        for _ in range(args.repeats):
            url, name = _pg_url(args.pg_url)
            try:
                runs.append(one_run(url, args.rows, args.batch))
            finally:
                _drop_pg(args.pg_url, name)
        _show("PostgreSQL", runs)
    print(f"load after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} "
          f"{os.getloadavg()[2]:.2f}")


if __name__ == "__main__":
    main()

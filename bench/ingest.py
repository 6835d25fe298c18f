"""Ingestion throughput of ``monitor.ingest.ingest_logs`` on SQLite and PostgreSQL.

Run by hand, not by pytest::

    .venv/bin/python bench/ingest.py --rows 100000 --repeats 3

It writes N synthetic wide log rows of the sample model (one column per feature of
``schemas/loan_default.yaml``) to a Parquet, a CSV and a JSON-lines file, then loads each
file ``--files`` names into fresh databases and reloads it into the now-full one (which
must add nothing). Besides the wall time it reports the load's CPU time (user + system of
the whole child), which other jobs on a busy machine disturb far less.

``--probe`` also measures what a load does to other writers (issue 13, item 5: the
operator's ``mqm fallback set`` during a long SQLite load): a thread of the child
writes one row to a table of its own every 20 ms, on its own connection, while the
first load runs, and the longest of those writes is reported. A load that holds the
write lock for its whole length shows here as a wait as long as the load (or the
30 s busy timeout, then a failed write).
Beside each load, in the same run, a plain bulk load of the same rows goes into another
fresh database: PostgreSQL's own ``COPY`` of the rows as ready text, or one SQLite
``executemany`` of ready tuples in one transaction (the rows are built untimed with the
standard library). That is the database's speed, the floor a load is measured against.
``--row-path`` also times the row-by-row path (``ingest_logs(fast=False)``), the path
every file took before the Parquet fast path.
Every measurement runs in a fresh child process so that its peak RSS (``ru_maxrss``)
is its own: the mark never goes down within a process, and Linux carries it over
fork and exec, so this parent stays small (no pandas, no data) and the data is
generated in a child as well.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from monitor.schema import FeatureSpec, ModelSchema, load_schema

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = ROOT / "schemas" / "loan_default.yaml"
MODEL = "loan_default"
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
NULL_RATE = 0.02  # share of nulls in nullable features, so the null path is exercised
START = datetime(2026, 10, 1, tzinfo=UTC)
SPAN_DAYS = 14


# --- data -------------------------------------------------------------------------


def _feature_values(spec: FeatureSpec, n: int, rng: np.random.Generator) -> pd.Series:
    import numpy as np
    import pandas as pd

    lo = spec.min if spec.min is not None else 0.0
    hi = spec.max if spec.max is not None else lo + 100_000.0
    if spec.type == "int":
        values = pd.Series(rng.integers(int(lo), int(hi) + 1, n), dtype="Int64")
    elif spec.type == "float":
        values = pd.Series(np.round(rng.uniform(lo, hi, n), 2))
    elif spec.type == "bool":
        values = pd.Series(rng.random(n) < 0.2)
    elif spec.type == "category":
        allowed = [str(v) for v in spec.allowed or ["a", "b", "c"]]
        values = pd.Series(rng.choice(allowed, n), dtype="string")
    elif spec.type == "string":
        values = pd.Series(rng.choice([f"{spec.name}-{k}" for k in range(5)], n), dtype="string")
    else:  # datetime features travel as ISO text
        offsets = pd.to_timedelta(rng.integers(0, SPAN_DAYS * 86400, n), unit="s")
        values = pd.Series((pd.Timestamp(START) + offsets).strftime("%Y-%m-%dT%H:%M:%SZ"),
                           dtype="string")
    if spec.nullable:
        values = values.astype("object") if spec.type == "bool" else values
        values[rng.random(n) < NULL_RATE] = None
    return values


def make_logs(schema: ModelSchema, n: int, seed: int) -> pd.DataFrame:
    """N valid wide log rows: reserved columns, one column per feature, prediction."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    seconds = np.sort(rng.uniform(0, SPAN_DAYS * 86400, n))
    data: dict[str, Any] = {
        "request_id": pd.Series([f"bench-{i:08d}" for i in range(n)], dtype="string"),
        "timestamp": pd.Timestamp(START) + pd.to_timedelta(seconds.round(3), unit="s"),
        "model_version": pd.Series(["1.4.0"] * n, dtype="string"),
    }
    for spec in schema.features:
        data[spec.name] = _feature_values(spec, n, rng)
    pred = schema.prediction
    classes = pred.classes or [0, 1]
    data[pred.column] = rng.choice(np.asarray(classes), n)
    if pred.probability_columns:
        raw = rng.dirichlet(np.ones(len(pred.probability_columns)), n).round(6)
        for k, col in enumerate(pred.probability_columns.values()):
            data[col] = raw[:, k]
    data["latency_ms"] = rng.gamma(4.0, 6.0, n).round(3)
    data["error"] = np.zeros(n, dtype=bool)
    data["error_message"] = pd.Series([None] * n, dtype="string")
    return pd.DataFrame(data)


def write_files(schema_path: str, rows: int, seed: int, folder: str) -> dict[str, str]:
    """Write the rows as Parquet, CSV and JSON lines; runs in a child so the frame's memory
    goes with it."""
    frame = make_logs(load_schema(schema_path), rows, seed)
    files = {"parquet": Path(folder) / "logs.parquet", "csv": Path(folder) / "logs.csv",
             "jsonl": Path(folder) / "logs.jsonl"}
    frame.to_parquet(files["parquet"], index=False)
    frame.to_csv(files["csv"], index=False)
    # As the HTTP client writes times: epoch seconds (pandas would write milliseconds).
    epoch = frame.assign(timestamp=frame["timestamp"].astype("int64") / 1e9)
    epoch.to_json(files["jsonl"], orient="records", lines=True, double_precision=15)
    return {kind: str(path) for kind, path in files.items()}


def write_baseline(parquet: str, folder: str) -> str:
    """The same rows as the database stores them, one tab-separated line each (PostgreSQL's
    COPY text format, which SQLite's baseline reads back as tuples): what a plain COPY or
    executemany gets, built untimed with the standard library so that the baseline is
    the database's own speed."""
    import json

    import pyarrow.parquet as pq

    schema = load_schema(SCHEMA_PATH)
    pred = schema.prediction
    probas = pred.probability_columns
    reserved = {"request_id", "timestamp", "model_version", "latency_ms", "error",
                "error_message", "fallback_reason", pred.column, *probas.values()}
    received = datetime.now(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    out = Path(folder) / "baseline.tsv"

    def text(value: Any) -> str:
        return "\\N" if value is None else str(value)

    with out.open("w", encoding="utf-8") as sink:
        for batch in pq.ParquetFile(parquet).iter_batches(batch_size=50_000):
            for row in batch.to_pylist():
                feats = {k: (None if isinstance(v, float) and v != v else v)
                         for k, v in row.items() if k not in reserved}
                ts = row["timestamp"].astimezone(UTC).replace(tzinfo=None)
                sink.write("\t".join((
                    MODEL, text(row["model_version"]), row["request_id"],
                    ts.isoformat(" ", "microseconds"), json.dumps(feats),
                    json.dumps(row[pred.column]),
                    json.dumps({c: row[col] for c, col in probas.items()}),
                    text(row["latency_ms"]), "1" if row["error"] else "0",
                    text(row["error_message"]), received, "\\N")) + "\n")
    return str(out)


_COLUMNS = ("model, model_version, request_id, ts, features, prediction, probabilities, "
            "latency_ms, error, error_message, received_at, fallback_reason")


def plain_copy(url: str, tsv: str) -> float:
    """Seconds for the database's own bulk load of the rows into an empty inference_logs:
    COPY of the ready text on PostgreSQL, one executemany of ready tuples in one
    transaction on SQLite (the tuples are read from the file untimed)."""
    from monitor.store.db import create_engine, ensure_schema

    engine = create_engine(url)
    try:
        ensure_schema(engine)
        with engine.connect() as conn:
            raw = conn.connection.driver_connection
            if engine.dialect.name == "sqlite":
                with open(tsv, encoding="utf-8") as source:
                    rows = [tuple(None if v == "\\N" else v
                                  for v in line.rstrip("\n").split("\t")) for line in source]
                t0 = time.perf_counter()
                raw.executemany(f"INSERT INTO inference_logs ({_COLUMNS}) VALUES "
                                f"({', '.join('?' * 12)})", rows)
                raw.commit()
            else:
                t0 = time.perf_counter()
                with raw.cursor() as cur, cur.copy(
                        f"COPY inference_logs ({_COLUMNS}) FROM STDIN") as copy, open(
                        tsv, "rb") as source:
                    while chunk := source.read(1 << 20):
                        copy.write(chunk)
                raw.commit()
            return time.perf_counter() - t0
    finally:
        engine.dispose()


# --- one measurement, in a child process ------------------------------------------


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class WriteProbe:
    """A thread writing one row every 20 ms on a connection of its own; records the
    longest write, and how many failed (a lock held past the busy timeout)."""

    def __init__(self, url: str) -> None:
        from monitor.store.db import create_engine

        self.engine = create_engine(url)
        with self.engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE bench_probe (at FLOAT)"))
        self.longest = 0.0
        self.failed = 0
        self.writes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            t0 = time.perf_counter()
            try:
                with self.engine.begin() as conn:
                    conn.execute(sa.text("INSERT INTO bench_probe VALUES (:at)"), {"at": t0})
            except sa.exc.OperationalError:
                self.failed += 1
            self.writes += 1
            self.longest = max(self.longest, time.perf_counter() - t0)

    def __enter__(self) -> WriteProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.engine.dispose()


def measure(url: str, schema_path: str, path: str, rows: int,
            probe: bool = False, fast: bool = True, baseline: tuple[str, str] | None = None
            ) -> dict[str, float]:
    """Load ``path`` into the empty database at ``url``, then load it again; with
    ``baseline`` (another empty database, the rows as text) first time the plain bulk
    load of the same rows there, so that both figures come from one run."""
    from monitor.ingest import ingest_logs, read_rows
    from monitor.store.db import create_engine, ensure_schema

    schema = load_schema(schema_path)
    figures: dict[str, float] = {}
    if baseline is not None:  # its own child: the rows it holds must not count here
        figures["copy_seconds"] = in_child(plain_copy, *baseline)
    engine = create_engine(url)
    try:
        ensure_schema(engine)
        # Read one row untimed: the first Parquet read imports pyarrow and pandas (~1 s),
        # a one-off cost that would otherwise pass for slow rows. It is reported apart.
        w0 = time.perf_counter()
        next(read_rows(Path(path))[1], None)
        warm = time.perf_counter() - w0
        before = _peak_rss_mb()
        prober = WriteProbe(url) if probe else None
        c0, t0 = _cpu(), time.perf_counter()
        if prober is None:
            first = ingest_logs(engine, MODEL, schema, path, fast=fast)
        else:
            with prober:
                first = ingest_logs(engine, MODEL, schema, path, fast=fast)
            figures.update(probe_longest_ms=prober.longest * 1000, probe_failed=prober.failed,
                           probe_writes=prober.writes)
        c1, t1 = _cpu(), time.perf_counter()
        again = ingest_logs(engine, MODEL, schema, path, fast=fast)
        c2, t2 = _cpu(), time.perf_counter()
    finally:
        engine.dispose()
    # A fast wrong answer is no result: the load must be complete and the reload a no-op.
    if (first.rows, first.added, first.bad) != (rows, rows, 0):
        raise RuntimeError(f"first load: {first.as_dict()}")
    if (again.added, again.already_stored, again.bad) != (0, rows, 0):
        raise RuntimeError(f"reload added rows: {again.as_dict()}")
    return {"seconds": t1 - t0, "reload_seconds": t2 - t1, "cpu_seconds": c1 - c0,
            "reload_cpu_seconds": c2 - c1, "warmup_seconds": warm,
            "rss_before_mb": before, "peak_rss_mb": _peak_rss_mb(), **figures}


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


def in_child(func: Any, *args: Any) -> Any:
    # spawn, not fork: the child starts from a fresh interpreter, importing only this
    # module's light top level, so its baseline is what the measured code needs.
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(func, *args).result()


# --- databases --------------------------------------------------------------------


@contextmanager
def fresh_sqlite(folder: Path, tag: str) -> Iterator[str]:
    db = folder / f"{tag}-{secrets.token_hex(4)}.db"
    try:
        yield f"sqlite:///{db}"
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)


class PgServer:
    """Creates and drops ``mqm_bench_<random>`` databases on one server."""

    def __init__(self, url: str) -> None:
        self.url = sa.make_url(url)
        self.admin = sa.create_engine(self.url, isolation_level="AUTOCOMMIT",
                                      connect_args={"connect_timeout": 5})

    def version(self) -> str:
        with self.admin.connect() as conn:
            return str(conn.execute(sa.text("SHOW server_version")).scalar_one())

    @contextmanager
    def fresh(self) -> Iterator[str]:
        name = f"mqm_bench_{secrets.token_hex(6)}"
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        try:
            yield self.url.set(database=name).render_as_string(hide_password=False)
        finally:
            with self.admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# --- report -----------------------------------------------------------------------


@dataclass
class Cell:
    backend: str
    file: str
    rows: int
    path: str = "fast"
    runs: list[dict[str, float]] = field(default_factory=list)

    def values(self, key: str) -> list[float]:
        return [r[key] for r in self.runs]

    def rates(self) -> list[float]:
        return [self.rows / s for s in self.values("seconds")]


def _fmt(values: list[float], spec: str) -> str:
    return f"{statistics.median(values):{spec}} [" + ", ".join(
        f"{v:{spec}}" for v in values) + "]"


def print_cell(cell: Cell) -> None:
    print(f"{cell.backend} / {cell.file} / {cell.path} path, {cell.rows:,} rows, "
          f"{len(cell.runs)} fresh databases (median [all]):")
    print(f"  load s        {_fmt(cell.values('seconds'), '.2f')}")
    print(f"  load rows/s   {_fmt(cell.rates(), ',.0f')}")
    print(f"  load CPU s    {_fmt(cell.values('cpu_seconds'), '.2f')}")
    if "copy_seconds" in cell.runs[0]:
        copies = cell.values("copy_seconds")
        print(f"  plain bulk load s  {_fmt(copies, '.2f')}  (same run, another fresh database)")
        print(f"  plain rows/s  {_fmt([cell.rows / c for c in copies], ',.0f')}")
        shares = [c / s for c, s in zip(copies, cell.values("seconds"), strict=True)]
        print(f"  load / plain  {_fmt(shares, '.0%')}  (share of the plain load's speed)")
    print(f"  reload s      {_fmt(cell.values('reload_seconds'), '.2f')}  (0 rows added)")
    speedup = [s / r for s, r in zip(cell.values("seconds"), cell.values("reload_seconds"),
                                      strict=True)]
    print(f"  load / reload {_fmt(speedup, '.1f')}  (how many times faster a reload is)")
    print(f"  reload CPU s  {_fmt(cell.values('reload_cpu_seconds'), '.2f')}")
    if "probe_longest_ms" in cell.runs[0]:
        print(f"  probe: longest write during the load ms "
              f"{_fmt(cell.values('probe_longest_ms'), ',.0f')}, failed writes "
              f"{_fmt(cell.values('probe_failed'), '.0f')} of "
              f"{_fmt(cell.values('probe_writes'), '.0f')}")
    print(f"  warm-up s     {_fmt(cell.values('warmup_seconds'), '.2f')}  (first row, untimed)")
    print(f"  peak RSS MB   {_fmt(cell.values('peak_rss_mb'), '.0f')}"
          f"  (before load {_fmt(cell.values('rss_before_mb'), '.0f')})", flush=True)


def print_table(cells: list[Cell]) -> None:
    head = ("backend", "file", "path", "rows", "load s", "rows/s", "plain rows/s",
            "load CPU s", "reload s", "reload CPU s", "peak RSS MB")
    body = [
        (c.backend, c.file, c.path, f"{c.rows:,}",
         f"{statistics.median(c.values('seconds')):.2f}",
         f"{statistics.median(c.rates()):,.0f}",
         f"{statistics.median([c.rows / v for v in c.values('copy_seconds')]):,.0f}"
         if "copy_seconds" in c.runs[0] else "-",
         f"{statistics.median(c.values('cpu_seconds')):.2f}",
         f"{statistics.median(c.values('reload_seconds')):.2f}",
         f"{statistics.median(c.values('reload_cpu_seconds')):.2f}",
         f"{max(c.values('peak_rss_mb')):.0f}")
        for c in cells
    ]
    widths = [max(len(r[i]) for r in (head, *body)) for i in range(len(head))]
    for row in (head, tuple("-" * w for w in widths), *body):
        print("  ".join(v.ljust(w) if i < 3 else v.rjust(w)
                        for i, (v, w) in enumerate(zip(row, widths, strict=True))))
    print("medians over the fresh databases; peak RSS is the largest, per child process")


# --- main -------------------------------------------------------------------------


def _pg_server(url: str) -> PgServer | None:
    try:
        server = PgServer(url)
        print(f"PostgreSQL {server.version()} at {server.url.render_as_string()}")
        return server
    except (sa.exc.SQLAlchemyError, ModuleNotFoundError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        print(f"note: PostgreSQL at {sa.make_url(url).render_as_string()} is unreachable "
              f"({reason}); measuring SQLite only")
        return None


def _fresh(server: PgServer | None, backend: str, folder: Path, tag: str) -> Any:
    return server.fresh() if backend == "postgresql" and server else fresh_sqlite(folder, tag)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="log rows (default 100000)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="fresh databases per backend and file (default 3)")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL,
                        help=f"PostgreSQL server to create bench databases on "
                        f"(default {DEFAULT_PG_URL})")
    parser.add_argument("--seed", type=int, default=7, help="random seed of the data")
    parser.add_argument("--probe", action="store_true",
                        help="time another writer's writes during each first load")
    parser.add_argument("--only", choices=["sqlite", "postgresql"], default=None,
                        help="measure one backend only")
    parser.add_argument("--files", default="parquet,csv",
                        help="file kinds to load: parquet, csv, jsonl (default parquet,csv)")
    parser.add_argument("--row-path", action="store_true",
                        help="also time the row-by-row path (ingest_logs(fast=False)), the "
                        "path every file took before the fast one")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the plain bulk load of the same rows beside each load")
    args = parser.parse_args(argv)
    if args.rows < 1 or args.repeats < 1:
        parser.error("--rows and --repeats must be at least 1")

    schema = load_schema(SCHEMA_PATH)
    print(f"Python {platform.python_version()}, SQLAlchemy {sa.__version__}, "
          f"{platform.machine()}, {len(schema.features)} features")
    server = _pg_server(args.pg_url)
    cells: list[Cell] = []
    with tempfile.TemporaryDirectory(prefix="mqm-bench-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        written = in_child(write_files, str(SCHEMA_PATH), args.rows, args.seed, tmp)
        files = {kind: Path(path) for kind, path in written.items()
                 if kind in args.files.split(",")}
        tsv = None if args.no_baseline else in_child(write_baseline, written["parquet"], tmp)
        sizes = ", ".join(f"{k} {p.stat().st_size / 1e6:.1f} MB" for k, p in files.items())
        print(f"generated {args.rows:,} rows in {time.perf_counter() - t0:.1f} s ({sizes})\n")

        backends = ["sqlite", *(["postgresql"] if server else [])]
        if args.only:
            backends = [b for b in backends if b == args.only]
        for backend in backends:
            for kind, path in files.items():
                for fast in (True, False) if args.row_path else (True,):
                    cell = Cell(backend, kind, args.rows, "fast" if fast else "row")
                    for _ in range(args.repeats):
                        with _fresh(server, backend, folder, kind) as url, _fresh(
                                server, backend, folder, kind) as plain:
                            pair = None if tsv is None else (plain, tsv)
                            cell.runs.append(in_child(measure, url, str(SCHEMA_PATH),
                                                      str(path), args.rows, args.probe, fast,
                                                      pair))
                    print_cell(cell)
                    cells.append(cell)
    if server:
        server.admin.dispose()
    # Children inherit this mark, so it is the floor of every figure above.
    print(f"\nthis parent's peak RSS {_peak_rss_mb():.0f} MB (a floor for the children's)\n")
    print_table(cells)
    return 0


if __name__ == "__main__":
    sys.exit(main())

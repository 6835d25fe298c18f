"""Reading a window of inference logs: the fast reader against the paths it replaces.

Run by hand, not by pytest::

    .venv/bin/python bench/read_window.py

It builds a SQLite file and a PostgreSQL database ``mqm_bench_<random>`` (dropped at the
end) holding N log rows of the sample model (about 0.5% of them with "N/A" in a float
feature, 2% with a null) and labels for 70% of them, then reads the whole window
several ways. Each measurement runs in a fresh child process (spawn), so that its peak
RSS is its own; "RSS before" is the child's peak after imports and a warm-up read of an
empty window. "CPU s" is the child's CPU time: the machine's other load inflates wall
time. It also times the JSON parsers alone on stored feature texts, and with
``--big-copies N`` reads an N times larger SQLite table with ``iter_chunks`` once.
On each backend it then copies the rows into log blocks (``monitor.store.compaction``)
and reads the window again from them, whole and in chunks.
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
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import sqlalchemy as sa

MODEL = "loan_default"
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
START = datetime(2026, 10, 1, tzinfo=UTC)
SPAN = timedelta(days=10)
LABEL_SHARE = 0.7
BATCH = 100_000
PARSE_ROWS = 200_000  # feature texts for the parser comparison
LOG_COLUMNS = ("model", "model_version", "request_id", "ts", "features", "prediction",
               "probabilities", "latency_ms", "error", "error_message", "received_at")
LABEL_COLUMNS = ("model", "request_id", "label", "ts", "received_at")


# --- data, written in a child process ---------------------------------------------


def _times(seconds: Any) -> list[str]:
    import numpy as np

    base = np.datetime64(START.replace(tzinfo=None), "us")
    stamps = base + (seconds * 1e6).astype("timedelta64[us]")
    # The canonical text mqm writes on SQLite; PostgreSQL's COPY reads it as well.
    return [s.replace("T", " ") for s in np.datetime_as_string(stamps, unit="us")]


def batches(rows: int, seed: int, sqlite: bool) -> Iterator[tuple[list[tuple], list[tuple]]]:
    """(log rows, label rows) in batches, pre-serialised as the store holds them."""
    import numpy as np

    rng = np.random.default_rng(seed)
    homes, purposes = ["RENT", "MORTGAGE", "OWN"], ["debt_consolidation", "credit_card",
                                                    "home_improvement", "car", "medical", "other"]
    channels = ['"web"', '"app"', '"branch"', "null"]
    received = _times(np.array([SPAN.total_seconds()]))[0]
    step = SPAN.total_seconds() / rows
    for lo in range(0, rows, BATCH):
        n = min(BATCH, rows - lo)
        seconds = (np.arange(lo, lo + n) + rng.random(n)) * step
        ts = _times(seconds)
        age = rng.integers(18, 101, n).tolist()
        income = np.round(rng.uniform(0, 250_000, n), 2).tolist()
        na = (rng.random(n) < 0.005).tolist()
        amount = np.round(rng.uniform(500, 100_000, n), 2).tolist()
        score = rng.integers(300, 851, n).tolist()
        dti = np.round(rng.uniform(0, 1.5, n), 3).tolist()
        years = np.round(rng.uniform(0, 40, n), 1).tolist()
        null_years = (rng.random(n) < 0.02).tolist()
        accounts = rng.integers(0, 30, n).tolist()
        home = rng.integers(0, 3, n).tolist()
        purpose = rng.integers(0, 6, n).tolist()
        cosigner = (rng.random(n) < 0.2).tolist()
        channel = rng.integers(0, 4, n).tolist()
        p1 = np.round(rng.random(n), 6).tolist()
        latency = np.round(rng.gamma(4.0, 6.0, n), 3).tolist()
        labelled = (rng.random(n) < LABEL_SHARE).tolist()
        delay = rng.uniform(3600, 30 * 86400, n)
        label_ts = _times(seconds + delay)
        false = 0 if sqlite else False
        logs, labels = [], []
        for i in range(n):
            rid = f"bench-{lo + i:09d}"
            inc = '"N/A"' if na[i] else repr(income[i])
            feats = (
                f'{{"age":{age[i]},"annual_income":{inc},'
                f'"loan_amount":{amount[i]!r},"credit_score":{score[i]},'
                f'"debt_to_income":{dti[i]!r},'
                f'"employment_years":{"null" if null_years[i] else repr(years[i])},'
                f'"open_accounts":{accounts[i]},"home_ownership":"{homes[home[i]]}",'
                f'"loan_purpose":"{purposes[purpose[i]]}",'
                f'"has_cosigner":{"true" if cosigner[i] else "false"},'
                f'"application_channel":{channels[channel[i]]}}}'
            )
            pred = int(p1[i] >= 0.5)
            # Two model versions, a third of the rows on the newer one, as in a canary.
            version = "1.5.0" if (lo + i) % 3 == 0 else "1.4.0"
            logs.append((MODEL, version, rid, ts[i], feats, str(pred),
                         f'{{"0":{1 - p1[i]!r},"1":{p1[i]!r}}}', latency[i], false, None,
                         received))
            if labelled[i]:
                labels.append((MODEL, rid, str(pred if i % 5 else 1 - pred), label_ts[i],
                               received))
        yield logs, labels


def build_database(url: str, rows: int, seed: int) -> dict[str, float]:
    """Create mqm's tables at ``url`` and fill them; return counts and seconds."""
    from monitor.store.db import create_engine, ensure_schema

    engine = create_engine(url)
    ensure_schema(engine)
    sqlite = engine.dialect.name == "sqlite"
    t0 = time.perf_counter()
    n_logs = n_labels = 0
    with engine.begin() as conn:
        raw = conn.connection.driver_connection
        if sqlite:  # a throw-away file: no need to survive a power cut while it is written
            raw.execute("PRAGMA synchronous = OFF")
        for logs, labels in batches(rows, seed, sqlite):
            n_logs += len(logs)
            n_labels += len(labels)
            for table, columns, data in (("inference_logs", LOG_COLUMNS, logs),
                                         ("ground_truth", LABEL_COLUMNS, labels)):
                names = ", ".join(columns)
                if sqlite:
                    raw.executemany(f"INSERT INTO {table} ({names}) VALUES "
                                    f"({', '.join('?' * len(columns))})", data)
                else:
                    with raw.cursor() as cur, cur.copy(
                            f"COPY {table} ({names}) FROM STDIN") as copy:
                        for row in data:
                            copy.write_row(row)
    with engine.connect() as conn:
        conn.execute(sa.text("ANALYZE"))
        conn.commit()
    engine.dispose()
    return {"logs": n_logs, "labels": n_labels, "seconds": time.perf_counter() - t0}


def replicate(url: str, copies: int) -> dict[str, float]:
    """Append ``copies`` time-shifted copies of a SQLite table's rows, inside SQLite."""
    import sqlite3

    t0 = time.perf_counter()
    con = sqlite3.connect(url.removeprefix("sqlite:///"))
    con.execute("PRAGMA synchronous = OFF")
    (logs,), (labels,) = (con.execute(f"SELECT max(id) FROM {t}").fetchone()
                          for t in ("inference_logs", "ground_truth"))
    days = SPAN.days
    for k in range(1, copies + 1):
        # Request ids get a suffix; times move on by whole spans, keeping their fraction.
        shift = f"datetime(ts, '+{k * days} days') || substr(ts, 20)"
        con.execute(f"INSERT INTO inference_logs ({', '.join(LOG_COLUMNS)}) SELECT model, "
                    f"model_version, request_id || '-{k}', {shift}, features, prediction, "
                    "probabilities, latency_ms, error, error_message, received_at FROM "
                    f"inference_logs WHERE id <= {logs}")
        con.execute(f"INSERT INTO ground_truth ({', '.join(LABEL_COLUMNS)}) SELECT model, "
                    f"request_id || '-{k}', label, {shift}, received_at FROM ground_truth "
                    f"WHERE id <= {labels}")
        con.commit()
    con.close()
    return {"seconds": time.perf_counter() - t0}


# --- readers ----------------------------------------------------------------------


def old_read_window(engine: sa.Engine, start: datetime, end: datetime) -> Any:
    """The implementation read_window replaced: SQLAlchemy rows, JSON type, from_records."""
    import pandas as pd

    from monitor.store.tables import inference_logs as t

    query = (
        sa.select(t.c.request_id, t.c.ts, t.c.model_version, t.c.prediction, t.c.latency_ms,
                  t.c.error, t.c.error_message, t.c.features, t.c.probabilities)
        .where(t.c.model == MODEL, t.c.ts >= start, t.c.ts < end).order_by(t.c.ts, t.c.id)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    meta = pd.DataFrame.from_records([tuple(r[:7]) for r in rows], columns=[
        "request_id", "ts", "model_version", "prediction", "latency_ms", "error",
        "error_message"])
    meta["ts"] = pd.to_datetime(meta["ts"], utc=True)
    feats = pd.DataFrame.from_records([r[7] for r in rows])
    probs = pd.DataFrame.from_records([r[8] or {} for r in rows], index=meta.index)
    return meta, feats, probs, None


def read_sql_window(engine: sa.Engine, start: datetime, end: datetime) -> Any:
    """What a user would write: pandas.read_sql of the joined window, then json.loads."""
    import json

    import pandas as pd

    query = sa.text(
        "SELECT l.*, g.label, g.ts AS label_time FROM inference_logs l LEFT JOIN ground_truth "
        "g ON g.model = l.model AND g.request_id = l.request_id WHERE l.model = :m AND "
        "l.ts >= :s AND l.ts < :e ORDER BY l.ts, l.id")
    sqlite = engine.dialect.name == "sqlite"
    bound = [v.replace(tzinfo=None) for v in (start, end)]
    params = {"m": MODEL, "s": str(bound[0]) if sqlite else bound[0],
              "e": str(bound[1]) if sqlite else bound[1]}
    df = pd.read_sql(query, engine, params=params)
    df["ts"] = pd.to_datetime(df["ts"], utc=True)
    # psycopg already parses json columns; SQLite gives text.
    def parsed(col: str) -> list[Any]:
        return [json.loads(v) if isinstance(v, str) else v for v in df.pop(col)]
    feats = pd.DataFrame(parsed("features"))
    probs = pd.DataFrame([p or {} for p in parsed("probabilities")])
    return df, feats, probs, df["label"]


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(how: str, url: str, chunk_rows: int, spans: int = 1) -> dict[str, Any]:
    """One read of the whole window, in this (fresh) process."""
    import pandas as pd  # noqa: F401  (imported before the RSS baseline)

    from monitor.store import reading
    from monitor.store.db import create_engine
    from monitor.store.sources import BuiltinSource

    if how.endswith("(stdlib json)"):
        import json

        def loads_each(texts: Any, **_: Any) -> list[Any]:
            # Python's json at its fastest: one call per batch, as one array.
            if all(type(t) is str for t in texts):
                return json.loads("[" + ",".join(texts) + "]")
            return [t if t is None or isinstance(t, int | float) else json.loads(t)
                    for t in texts]
        reading.loads_each = loads_each  # the same reader with Python's json instead
    engine = create_engine(url)
    source = BuiltinSource(engine, MODEL)
    start, end = START, START + spans * SPAN + timedelta(days=1)
    source.read_window(START - timedelta(days=2), START - timedelta(days=1))  # warm-up
    before = _peak_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    na = labelled = rows = chunks = 0
    if how.startswith("iter_chunks"):
        for window in source.iter_chunks(start, end, chunk_rows):
            rows += window.rows
            chunks += 1
            labelled += int(window.labels.notna().sum())
            na += int((window.features["annual_income"] == "N/A").sum())
    else:
        if how == "old path":
            meta, feats, _, labels = old_read_window(engine, start, end)
        elif how == "pandas.read_sql":
            meta, feats, _, labels = read_sql_window(engine, start, end)
        else:
            window = source.read_window(start, end)
            meta, feats, labels = window.meta, window.features, window.labels
        rows = len(meta)
        labelled = -1 if labels is None else int(labels.notna().sum())
        na = int((feats["annual_income"] == "N/A").sum())
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    engine.dispose()
    return {"seconds": seconds, "cpu": cpu, "before": before, "peak": _peak_mb(), "rows": rows,
            "labelled": labelled, "na": na, "chunks": chunks}


def parse_only(url: str, parser: str, repeats: int) -> dict[str, Any]:
    """Seconds to parse stored feature texts, and to make a typed frame of them."""
    import io
    import json
    import sqlite3

    import orjson
    import pandas as pd  # noqa: F401  (imported before timing)
    import pyarrow as pa
    import pyarrow.json as pajson

    from monitor.store.frames import ColumnBuilder, gc_paused

    texts = [r[0] for r in sqlite3.connect(url.removeprefix("sqlite:///")).execute(
        f"SELECT features FROM inference_logs LIMIT {PARSE_ROWS}")]
    parse, total, note = [], [], ""
    for _ in range(repeats):
        with gc_paused():
            t0 = time.perf_counter()
            if parser == "pyarrow.json":
                data = "\n".join(texts).encode()
                try:
                    table = pajson.read_json(io.BytesIO(data))
                except pa.ArrowInvalid as exc:
                    note = f"fails on the N/A rows ({str(exc)[:55]}...); timed without them"
                    data = "\n".join(t for t in texts if '"N/A"' not in t).encode()
                    t0 = time.perf_counter()
                    table = pajson.read_json(io.BytesIO(data))
                t1 = time.perf_counter()
                table.to_pandas()
            else:
                loads = {"json.loads": json.loads, "orjson.loads": orjson.loads}[parser]
                batches = [list(map(loads, texts[lo:lo + 10_000]))
                           for lo in range(0, len(texts), 10_000)]
                t1 = time.perf_counter()
                builder = ColumnBuilder()
                for batch in batches:
                    builder.add(batch)
                builder.frame()
            parse.append(t1 - t0)
            total.append(time.perf_counter() - t0)
    return {"parse": statistics.median(parse), "total": statistics.median(total), "note": note}


def in_child(func: Any, *args: Any) -> Any:
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(func, *args).result()


# --- main -------------------------------------------------------------------------


def run_cells(url: str, backend: str, hows: list[str], repeats: int, chunk_rows: int,
              table: list[tuple[str, ...]], spans: int = 1) -> None:
    for how in hows:
        runs = [in_child(measure, how, url, chunk_rows, spans) for _ in range(repeats)]
        first = runs[0]
        if any((r["rows"], r["na"]) != (first["rows"], first["na"]) for r in runs):
            raise RuntimeError(f"{how}: runs disagree: {runs}")
        secs = [r["seconds"] for r in runs]
        label = "-" if first["labelled"] < 0 else f"{first['labelled']:,}"
        what = how + (f" ({chunk_rows:,}/chunk)" if how.startswith("iter_chunks") else "")
        table.append((backend, f"{first['rows']:,}", what, f"{statistics.median(secs):.2f}",
                      " ".join(f"{s:.1f}" for s in secs),
                      f"{statistics.median([r['cpu'] for r in runs]):.2f}",
                      f"{statistics.median([r['before'] for r in runs]):.0f}",
                      f"{statistics.median([r['peak'] for r in runs]):.0f}",
                      label, f"{first['na']:,}"))
        print(" | ".join(table[-1]), flush=True)


def compact(url: str) -> dict[str, Any]:
    from monitor.store.compaction import compact as compact_logs
    from monitor.store.db import create_engine

    engine = create_engine(url)
    result = compact_logs(engine, MODEL)
    engine.dispose()
    return {"rows": result.rows, "blocks": result.blocks, "seconds": result.seconds,
            "peak": _peak_mb()}


def compact_cells(url: str, backend: str, repeats: int, chunk_rows: int,
                  table: list[tuple[str, ...]]) -> None:
    """The window's rows copied into log blocks, then the same readers on the blocks."""
    done = in_child(compact, url)
    print(f"{backend}: compacted {done['rows']:,} rows into {done['blocks']} log blocks in "
          f"{done['seconds']:.1f} s (peak RSS {done['peak']:.0f} MB)", flush=True)
    run_cells(url, backend, ["read_window (log blocks)", "iter_chunks (log blocks)"],
              repeats, chunk_rows, table)


def print_table(table: list[tuple[str, ...]]) -> None:
    head = ("backend", "rows", "reader", "median s", "runs s", "CPU s", "RSS before MB",
            "peak RSS MB", "labelled", "N/A kept")
    print("\n| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for row in table:
        print("| " + " | ".join(row) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk-rows", type=int, default=200_000)
    parser.add_argument("--big-copies", type=int, default=0,
                        help="also read (rows x this) SQLite rows with iter_chunks, once; "
                        "10 took 3.5 min to build and 4 min to read here, so 0 (off)")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    print(f"Python {platform.python_version()}, SQLAlchemy {sa.__version__}, "
          f"{platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; "
          f"{args.rows:,} rows, {LABEL_SHARE:.0%} labelled; "
          f"median of {args.repeats} fresh processes", flush=True)
    readers = ["old path", "pandas.read_sql", "read_window", "iter_chunks"]
    table: list[tuple[str, ...]] = []
    admin = sa.create_engine(args.pg_url, isolation_level="AUTOCOMMIT")
    pg_name = f"mqm_bench_{secrets.token_hex(6)}"
    pg_url = sa.make_url(args.pg_url).set(database=pg_name).render_as_string(
        hide_password=False)
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mqm-bench-") as tmp:
        lite = f"sqlite:///{Path(tmp) / 'logs.db'}"
        built = in_child(build_database, lite, args.rows, args.seed)
        print(f"SQLite: wrote {built['logs']:,} logs + {built['labels']:,} labels in "
              f"{built['seconds']:.1f} s", flush=True)
        # The same reader with Python's json instead of orjson: what orjson buys.
        run_cells(lite, "SQLite", [*readers[:3], "read_window (stdlib json)", readers[3]],
                  args.repeats, args.chunk_rows, table)
        parsed = [(p, in_child(parse_only, lite, p, args.repeats))
                  for p in ("json.loads", "orjson.loads", "pyarrow.json")]
        compact_cells(lite, "SQLite", args.repeats, args.chunk_rows, table)
        if args.big_copies > 1:
            big = in_child(replicate, lite, args.big_copies - 1)
            print(f"SQLite: copied to {args.rows * args.big_copies:,} rows in "
                  f"{big['seconds']:.1f} s", flush=True)
            run_cells(lite, "SQLite", ["iter_chunks"], 1, args.chunk_rows, table,
                      args.big_copies)
        Path(lite.removeprefix("sqlite:///")).unlink()
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{pg_name}"'))
        try:
            built = in_child(build_database, pg_url, args.rows, args.seed)
            print(f"PostgreSQL: wrote {built['logs']:,} logs + {built['labels']:,} labels in "
                  f"{built['seconds']:.1f} s", flush=True)
            run_cells(pg_url, "PostgreSQL", readers, args.repeats, args.chunk_rows, table)
            compact_cells(pg_url, "PostgreSQL", args.repeats, args.chunk_rows, table)
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)'))
            admin.dispose()
    print_table(table)
    print(f"\n{PARSE_ROWS:,} stored feature texts, median s: parse | parse + typed frame")
    for name, res in parsed:
        print(f"  {name:14s} {res['parse']:5.2f} | {res['total']:5.2f}  {res['note']}")
    print(f"\nwhole run {time.perf_counter() - t_all:.0f} s, load {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

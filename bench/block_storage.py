"""How log blocks are best stored: the block codec (LZ4, zstd) and PostgreSQL's column
storage (``EXTENDED``: compressed again with pglz; ``EXTERNAL``: kept as given).

Run by hand, not by pytest::

    .venv/bin/python bench/block_storage.py [--rows 1000000] [--pg-url URL]

It builds the store of ``compare_trees.py`` (one window, compacted into log blocks) in a
temporary folder, takes its blocks, and for each codec prints the bytes and the median
time to encode and decode a block (3 runs each). Then, in a scratch table of one
``bytea`` column on the PostgreSQL server (dropped afterwards), it inserts the blocks
one per transaction under each storage and prints the time and the bytes stored.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check import in_child
from compare_trees import _build, _load
from ingest import DEFAULT_PG_URL

CODECS: list[tuple[str, int | None]] = [("lz4", None), ("zstd", 1), ("zstd", 3)]


def _encode(table: Any, codec: str, level: int | None) -> bytes:
    import pyarrow as pa

    compression = pa.Codec(codec, level) if level is not None else codec
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema,
                           options=pa.ipc.IpcWriteOptions(compression=compression)) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def _median_seconds(step: Any, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    args = parser.parse_args()
    import sqlite3

    import pyarrow as pa

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "store.db"
        in_child(_build, str(db), args.rows)
        with sqlite3.connect(db) as conn:
            blobs = [row[0] for row in conn.execute("SELECT data FROM log_blocks ORDER BY id")]
    tables = [pa.ipc.open_stream(pa.py_buffer(b)).read_all() for b in blobs]
    rows = sum(t.num_rows for t in tables)
    print(f"{len(tables)} blocks, {rows:,} rows; load average {_load()}")
    encoded: dict[str, list[bytes]] = {}
    for codec, level in CODECS:
        name = codec if level is None else f"{codec} {level}"
        encoded[name] = [_encode(t, codec, level) for t in tables]
        enc = _median_seconds(lambda c=codec, lv=level: _encode(tables[0], c, lv))
        first = encoded[name][0]
        dec = _median_seconds(lambda b=first: pa.ipc.open_stream(pa.py_buffer(b)).read_all())
        print(f"  {name:7s} {sum(map(len, encoded[name])) / 1e6:6.1f} MB in all; first block "
              f"({tables[0].num_rows:,} rows): encode {enc * 1000:.0f} ms, decode "
              f"{dec * 1000:.0f} ms")
    import psycopg

    url = args.pg_url.replace("postgresql+psycopg://", "postgresql://")
    try:
        conn = psycopg.connect(url, autocommit=True)
    except psycopg.OperationalError as exc:
        print(f"PostgreSQL at {url} unreachable ({exc}); storage not measured")
        return
    with conn:
        for storage in ("EXTENDED", "EXTERNAL"):
            for name in ("lz4", "zstd 1"):
                conn.execute("DROP TABLE IF EXISTS mqm_bench_block_storage")
                conn.execute("CREATE TABLE mqm_bench_block_storage (id serial, data bytea)")
                conn.execute("ALTER TABLE mqm_bench_block_storage ALTER COLUMN data "
                             f"SET STORAGE {storage}")
                t0 = time.perf_counter()
                for data in encoded[name]:
                    with conn.transaction():
                        conn.execute("INSERT INTO mqm_bench_block_storage (data) VALUES (%s)",
                                     (data,))
                seconds = time.perf_counter() - t0
                row = conn.execute("SELECT pg_total_relation_size('mqm_bench_block_storage')"
                                   ).fetchone()
                stored = row[0] if row else 0
                print(f"  {storage:8s} {name:7s} given {sum(map(len, encoded[name])) / 1e6:6.1f}"
                      f" MB, stored {stored / 1e6:6.1f} MB, inserted in {seconds:.2f} s")
        conn.execute("DROP TABLE IF EXISTS mqm_bench_block_storage")
    print(f"load average after: {_load()}")


if __name__ == "__main__":
    main()

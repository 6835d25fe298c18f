"""``mqm ingest`` of a 1M-row Parquet file, then the first ``mqm check`` of its window,
each as a whole process, with log blocks written at ingest and without (the compactor
writing them before the check instead, as before). Run by hand, not by pytest::

    .venv/bin/python bench/ingest_check.py --rows 1000000 --repeats 3

The rows are bench/ingest.py's (the sample model, 14 days, one window of 14 days). For
each backend (a fresh SQLite file; a fresh PostgreSQL database ``mqm_bench_<random>``,
dropped afterwards, if the server answers) and each repeat, the two sides run in turn,
alternating which goes first, each on a store of its own:

- ``blocks at ingest``: ``mqm ingest`` as it is (the model's ``compact_every`` is set);
- ``compaction``: the same command with ``ingest_logs(blocks=False)``, so the check's
  compaction copies the rows into blocks first (the behaviour before).

Each command is timed from its start to its exit (``os.wait4``: wall, CPU of the
process, peak RSS); the check is ``mqm check --at <window end> --no-save``. It prints
each pair, the medians (min-max) of every figure and the load average around each pair.
``--steps`` instead runs one load in-process on each backend and prints where its time
goes (staging, publish, blocks), timed by wrapping the store's functions.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import (
    DEFAULT_PG_URL,
    MODEL,
    SCHEMA_PATH,
    SPAN_DAYS,
    START,
    PgServer,
    fresh_sqlite,
    in_child,
)

ROOT = Path(__file__).resolve().parents[1]
AT = (START + timedelta(days=SPAN_DAYS)).isoformat()
SIDES = ("blocks at ingest", "compaction")

# The command as ``mqm`` runs it; the "compaction" side loads without blocks.
COMMAND = """
import sys
if sys.argv[1] == "compaction":
    import monitor.ingest
    real = monitor.ingest.ingest_logs
    monitor.ingest.ingest_logs = lambda *a, **k: real(*a, **{**k, "blocks": False})
import monitor.cli.main as cli
sys.argv[1:] = sys.argv[2:]
sys.argv[0] = "mqm"
# The program as installed (``run``: main, then the exit); a tree from before it, main.
cli.run() if hasattr(cli, "run") else cli.main(sys.argv[1:], prog_name="mqm")
"""


def write_parquet(rows: int, folder: str) -> str:
    """The rows of bench/ingest.py as Parquet (in a child: the frame goes with it)."""
    from ingest import make_logs

    from monitor.schema import load_schema

    path = Path(folder) / "logs.parquet"
    make_logs(load_schema(SCHEMA_PATH), rows, seed=7).to_parquet(path, index=False)
    return str(path)


def write_config(folder: Path, url: str, tag: str) -> Path:
    import yaml

    path = folder / f"monitor-{tag}.yaml"
    path.write_text(yaml.safe_dump({
        "database_url": url,
        "models": {MODEL: {
            "schema": str(SCHEMA_PATH),
            "reference": str(ROOT / "sample_data" / "reference.parquet"),
            "window": f"{SPAN_DAYS}d",
            "min_rows": 1000,
            "schedule": {"compact_every": "1m"},
        }},
    }))
    return path


def run(side: str, *args: str) -> dict[str, float]:
    """One command in a fresh process: wall and CPU seconds, peak RSS in MB."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", COMMAND, side, *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    out, err = proc.communicate()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{args[2]} failed ({side}):\n{out}\n{err}")
    return {"seconds": seconds, "cpu": usage.ru_utime + usage.ru_stime,
            "rss_mb": usage.ru_maxrss / 1024}


def blocks_of(url: str) -> int:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM log_blocks")).scalar_one())
    finally:
        engine.dispose()


def pair_side(side: str, url: str, folder: Path, parquet: str) -> dict[str, float]:
    config = str(write_config(folder, url, side.split()[0]))
    ingest = run(side, "--config", config, "ingest", "--model", MODEL, parquet)
    after_ingest = blocks_of(url)
    check = run(side, "--config", config, "check", "--model", MODEL, "--at", AT, "--no-save")
    return {"ingest": ingest["seconds"], "check": check["seconds"],
            "total": ingest["seconds"] + check["seconds"], "ingest_cpu": ingest["cpu"],
            "check_cpu": check["cpu"], "ingest_rss": ingest["rss_mb"],
            "check_rss": check["rss_mb"], "blocks_after_ingest": after_ingest}


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _fmt(values: list[float], spec: str) -> str:
    return (f"{statistics.median(values):{spec}} ({min(values):{spec}}-"
            f"{max(values):{spec}})")


def steps(url: str, parquet: str) -> dict[str, float]:
    """One load in-process with blocks, the time of each step (in a child)."""
    import resource

    import monitor.ingest
    import monitor.ingest_fast
    from monitor.schema import load_schema
    from monitor.store import arrow_blocks, compaction, db, staging

    spent: dict[str, float] = {}

    def timed(owner: Any, name: str, label: str) -> None:
        real = getattr(owner, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                spent[label] = spent.get(label, 0.0) + time.perf_counter() - t0

        setattr(owner, name, wrapper)

    timed(staging.StagedLoad, "add_many", "staging (SQLite executemany)")
    timed(staging.StagedLoad, "add_copy", "staging (PostgreSQL COPY)")
    timed(staging.StagedLoad, "publish_ids", "publish (INSERT ... SELECT)")
    timed(staging.DirectLoad, "add_copy", "direct load (PostgreSQL COPY into the table)")
    timed(staging.DirectLoad, "publish_ids", "direct load's commit")
    timed(monitor.ingest_fast, "stored_request_ids", "stored ids looked up")
    timed(arrow_blocks, "coded_rows", "rows coded for blocks (reading thread)")
    timed(arrow_blocks, "write_load_blocks", "blocks written")
    timed(compaction, "_write", "  of which block writes (encode, insert)")
    timed(compaction, "_model_ids", "  of which the load's ids checked")
    timed(compaction, "_with_labels", "  of which labels read")
    engine = db.create_engine(url)
    db.ensure_schema(engine)
    t0 = time.perf_counter()
    monitor.ingest.ingest_logs(engine, MODEL, load_schema(SCHEMA_PATH), parquet, blocks=True)
    spent["load in all"] = time.perf_counter() - t0
    spent["peak RSS MB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    first = [k for k in spent if not k.startswith(" ") and k != "blocks written"]
    return {k: spent[k] for k in [*first[:-2], "blocks written",
                                  *(k for k in spent if k.startswith(" ")), *first[-2:]]
            if k in spent}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--steps", action="store_true",
                        help="where one load's time goes, instead of the pairs")
    args = parser.parse_args()
    backends = args.backends.split(",")
    server = None
    if "postgresql" in backends:
        try:
            server = PgServer(args.pg_url)
            print(f"PostgreSQL {server.version()}")
        except Exception as exc:  # measure SQLite alone then
            print(f"PostgreSQL unreachable ({exc}); SQLite only")
            backends.remove("postgresql")
    with tempfile.TemporaryDirectory(prefix="mqm-bench-ingest-check-") as tmp:
        folder = Path(tmp)
        parquet = in_child(write_parquet, args.rows, tmp)
        print(f"{args.rows:,} rows, {Path(parquet).stat().st_size / 1e6:.0f} MB of Parquet; "
              f"load average {loadavg()}")
        if args.steps:
            for backend in backends:
                with (fresh_sqlite(folder, "steps") if backend == "sqlite"
                      else server.fresh()) as url:  # type: ignore[union-attr]
                    print(f"{backend}, load average {loadavg()}:")
                    for label, value in in_child(steps, url, parquet).items():
                        print(f"  {label:<42} {value:8.2f}")
            return 0
        results: dict[tuple[str, str], list[dict[str, float]]] = {}
        for backend in backends:
            for repeat in range(args.repeats):
                order = SIDES if repeat % 2 == 0 else SIDES[::-1]
                before = loadavg()
                line = []
                for side in order:
                    with (fresh_sqlite(folder, side.split()[0]) if backend == "sqlite"
                          else server.fresh()) as url:  # type: ignore[union-attr]
                        figures = pair_side(side, url, folder, parquet)
                    results.setdefault((backend, side), []).append(figures)
                    line.append(f"{side}: ingest {figures['ingest']:.2f} s + check "
                                f"{figures['check']:.2f} s = {figures['total']:.2f} s "
                                f"({figures['blocks_after_ingest']:.0f} blocks after ingest)")
                print(f"{backend} #{repeat + 1}  " + "; ".join(line)
                      + f"  [load {before} -> {loadavg()}]", flush=True)
        print(f"\nmedians (min-max) of {args.repeats} pairs, {args.rows:,} rows:")
        keys = (("ingest", "ingest s", ".2f"), ("check", "first check s", ".2f"),
                ("total", "ingest + check s", ".2f"), ("ingest_cpu", "ingest CPU s", ".2f"),
                ("check_cpu", "check CPU s", ".2f"), ("ingest_rss", "ingest peak RSS MB", ".0f"),
                ("check_rss", "check peak RSS MB", ".0f"))
        for backend in backends:
            print(f"{backend}:")
            for key, label, spec in keys:
                cells = [_fmt([r[key] for r in results[(backend, side)]], spec)
                         for side in SIDES]
                print(f"  {label:<20} " + "   ".join(
                    f"{side}: {cell}" for side, cell in zip(SIDES, cells, strict=True)))
        print(f"load average at the end {loadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

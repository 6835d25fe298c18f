"""Rows per second through the HTTP ingest path: ``POST /v1/models/{model}/logs``.

Run by hand, not by pytest::

    .venv/bin/python bench/http_ingest.py [--clients 4] [--batch 500] [--batches 20]
        [--repeats 3] [--pg-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres]

For each backend (a new SQLite file; a new PostgreSQL database ``mqm_bench_<random>``,
dropped afterwards, skipped with a note when the server does not answer) it starts
``mqm serve --no-scheduler`` on a free loopback port, as a user runs it (uvicorn, one
process). ``--clients`` client processes each post ``--batches`` batches of ``--batch``
rows of the sample model (JSON lines, gzip, one keep-alive connection per client, the
bodies built before the clock starts), all at once. A run's figure is every row stored
(the answers' ``added`` are summed and checked) over the wall time from the start signal
to the last answer. Each run posts new request ids, so every row is added. It prints the
median and all runs, and the server's CPU time per row (from ``/proc``), which does not
depend on what else runs on the machine; the rows/s do. ``--replicas N`` starts N
API-only processes on the same store (as several ``mqm serve --no-scheduler`` replicas
behind a load balancer) and spreads the clients over them: one process validates rows on
one core, as Python does.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODEL = "loan_default"
TOKEN = "bench-ingest-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rows_of(tag: str, client: int, batch: int, size: int) -> list[dict[str, Any]]:
    """One batch: the sample model's rows, with ids unique to the run, client and batch."""
    out = []
    for i in range(size):
        n = batch * size + i
        p1 = (n % 97) / 97
        out.append({
            "request_id": f"{tag}-{client}-{n}", "timestamp": 1_790_000_000 + n,
            "age": 20 + n % 60, "annual_income": 30_000.0 + n % 50_000,
            "loan_amount": 10_000.0 + n % 5_000, "credit_score": 500 + n % 300,
            "debt_to_income": (n % 100) / 100, "employment_years": float(n % 30),
            "open_accounts": n % 12, "home_ownership": ("RENT", "OWN", "MORTGAGE")[n % 3],
            "loan_purpose": ("car", "medical", "other")[n % 3], "has_cosigner": n % 5 == 0,
            "application_channel": ("web", "branch")[n % 2], "prediction": int(p1 >= 0.5),
            "proba_0": 1 - p1, "proba_1": p1, "latency_ms": 3.5, "model_version": "1.4.0",
        })
    return out


def as_client_row(row: dict[str, Any]) -> dict[str, Any]:
    """The row as ``mqm_client``'s ``InferenceLogger`` posts it: the features as one
    object, the probabilities as another, the time as epoch seconds with a fraction."""
    out: dict[str, Any] = {"request_id": row["request_id"],
                           "timestamp": row["timestamp"] + 0.123456,
                           "features": {k: v for k, v in row.items() if k not in _NOT_FEATURES},
                           "prediction": row["prediction"],
                           "probabilities": {"0": row["proba_0"], "1": row["proba_1"]},
                           "latency_ms": row["latency_ms"], "model_version": row["model_version"]}
    return out


_NOT_FEATURES = {"request_id", "timestamp", "prediction", "proba_0", "proba_1", "latency_ms",
                 "model_version"}


def client(port: int, bodies: list[bytes], start: Any, results: Any) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Encoding": "gzip",
               "Content-Type": "application/x-ndjson"}
    added = 0
    start.wait()
    for body in bodies:
        conn.request("POST", f"/v1/models/{MODEL}/logs", body=body, headers=headers)
        answer = conn.getresponse()
        data = json.loads(answer.read())
        if answer.status != 200 or data["refused"]:
            raise SystemExit(f"HTTP {answer.status}: {str(data)[:300]}")
        added += data["added"]
    conn.close()
    results.put((added, time.perf_counter()))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serve(folder: Path, db_url: str) -> tuple[subprocess.Popen[bytes], int]:
    config = folder / "monitor.yaml"
    config.write_text(json.dumps({  # JSON is YAML
        "database_url": db_url,
        "models": {MODEL: {"schema": str(ROOT / "schemas" / "loan_default.yaml"),
                           "reference": str(ROOT / "sample_data" / "reference.parquet")}},
    }))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MQM_")}
    env["MQM_INGEST_TOKEN"] = TOKEN
    proc = subprocess.Popen([sys.executable, "-m", "monitor", "--config", str(config), "serve",
                             "--no-scheduler", "--port", str(port)], cwd=folder, env=env,
                            stdout=subprocess.DEVNULL,
                            stderr=(folder / f"serve-{port}.log").open("wb"))
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return proc, port
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                log = (folder / f"serve-{port}.log").read_text()
                raise SystemExit(f"mqm serve did not start: {log}") from None
            time.sleep(0.1)


def one_run(ports: list[int], pids: list[int], args: argparse.Namespace
            ) -> tuple[float, float]:
    """(rows per second, server CPU microseconds per row) of one run."""
    tag = uuid.uuid4().hex[:8]
    shape = as_client_row if args.shape == "client" else (lambda row: row)
    dumps = json.JSONEncoder(separators=(",", ":")).encode if args.shape == "client" else (
        json.dumps)
    bodies = [[gzip.compress(("\n".join(dumps(shape(r)) for r in rows_of(tag, c, b, args.batch))
                              + "\n").encode(), compresslevel=1)
               for b in range(args.batches)] for c in range(args.clients)]
    ctx = mp.get_context("fork")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=client, args=(ports[c % len(ports)], bodies[c], start, results))
             for c in range(args.clients)]
    for proc in procs:
        proc.start()
    time.sleep(0.5)  # every client connected and waiting
    cpu_before = sum(map(cpu_seconds, pids))
    began = time.perf_counter()
    start.set()
    done = [results.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join()
        if proc.exitcode:
            raise SystemExit("a client failed")
    ended = max(t for _, t in done)
    rows = sum(a for a, _ in done)
    expected = args.clients * args.batches * args.batch
    if rows != expected:
        raise SystemExit(f"{rows:,} rows added, {expected:,} posted")
    return rows / (ended - began), (sum(map(cpu_seconds, pids)) - cpu_before) / rows * 1e6


def bench(name: str, db_url: str, args: argparse.Namespace, folder: Path) -> None:
    servers = [serve(folder, db_url) for _ in range(args.replicas)]
    ports, pids = [port for _, port in servers], [proc.pid for proc, _ in servers]
    try:
        one_run(ports, pids, argparse.Namespace(**{**vars(args), "batches": 2}))  # warm-up
        runs = [one_run(ports, pids, args) for _ in range(args.repeats)]
    finally:
        for proc, _ in servers:
            proc.terminate()
            proc.wait(30)
    rates = sorted(r for r, _ in runs)
    cpu = statistics.median(c for _, c in runs)
    name = f"{name}, {args.replicas} process{'es' if args.replicas > 1 else ''}"
    print(f"{name:<24} {statistics.median(rates):>10,.0f} rows/s  (runs: "
          f"{', '.join(f'{r:,.0f}' for r in rates)})  server CPU {cpu:.1f} us/row",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batch", type=int, default=500, help="rows per request")
    parser.add_argument("--batches", type=int, default=20, help="requests per client per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--only", choices=["sqlite", "postgresql"])
    parser.add_argument("--shape", choices=["flat", "client"], default="flat",
                        help="rows with the features as top-level keys (flat), or as the "
                        "Python client posts them (a features object, epoch-float times)")
    parser.add_argument("--replicas", type=int, default=1,
                        help="mqm serve --no-scheduler processes on the same store")
    args = parser.parse_args()
    print(f"{args.shape} rows; "
          f"{args.clients} clients x {args.batches} batches x {args.batch} rows per run, "
          f"{os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.2f} before")
    with tempfile.TemporaryDirectory() as tmp:
        if args.only != "postgresql":
            bench("SQLite", f"sqlite:///{Path(tmp) / 'bench.db'}", args, Path(tmp))
        if args.only != "sqlite":
            import sqlalchemy as sa

            server = sa.make_url(args.pg_url)
            name = f"mqm_bench_{uuid.uuid4().hex[:10]}"
            admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
            try:
                with admin.connect() as conn:
                    conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
            except sa.exc.OperationalError as exc:
                print(f"PostgreSQL  skipped: {exc.orig}")
                return
            try:
                bench("PostgreSQL",
                      server.set(database=name).render_as_string(hide_password=False), args,
                      Path(tmp))
            finally:
                with admin.connect() as conn:
                    conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                admin.dispose()
    print(f"load average {os.getloadavg()[0]:.2f} after")


if __name__ == "__main__":
    main()

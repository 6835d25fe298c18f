"""Requests/s and latency of the API's fallback flag endpoint under a bounded loopback load.

Starts uvicorn serving ``monitor.serve.api.create_app`` on 127.0.0.1 (a free port) in a child
process pinned to CPU 0 (``taskset -c 0``), and drives it with ``wrk`` pinned to CPU 1
(``apt-get install -y wrk``): a fixed number of keep-alive connections for a fixed time,
loopback only. For each endpoint it prints the median over ``--runs`` runs of requests/s
and of the p50 and p99 latency, with every run's figures.

Endpoints: ``GET /v1/models/loan_default/fallback`` as shipped (async handler, cached
document); two routes this script adds to show why it is built so: the same cache behind
a sync handler, and no cache (``flag_document`` read from the store on every request);
``GET /healthz`` for reference.

Run from the repository root: ``.venv/bin/python bench/api.py`` (about 1 minute).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODEL = "loan_default"
TARGETS = {
    "flag (async, shipped)": f"/v1/models/{MODEL}/fallback",
    "flag (sync handler)": f"/bench/sync/{MODEL}/fallback",
    "flag (no cache: store read per request)": f"/bench/uncached/{MODEL}/fallback",
    "healthz": "/healthz",
}


def serve(args: argparse.Namespace) -> None:
    """The child: the app on a SQLite store in ``args.dir``, under uvicorn."""
    import uvicorn
    import yaml
    from fastapi import Response
    from prometheus_client import CollectorRegistry

    from monitor.config import load_config
    from monitor.fallback.flag import flag_document
    from monitor.serve.api import create_app
    from monitor.store.db import create_engine, ensure_schema

    folder = Path(args.dir)
    path = folder / "monitor.yaml"
    path.write_text(yaml.safe_dump({
        "database_url": args.db_url or f"sqlite:///{folder / 'store.db'}",
        "models": {MODEL: {"schema": str(ROOT / "schemas" / f"{MODEL}.yaml"),
                           "reference": str(ROOT / "sample_data" / "reference.parquet"),
                           "window": "1d", "fallback": {"default_prediction": 0}}},
    }), encoding="utf-8")
    config = load_config(path)
    engine = create_engine(config.database_url)
    ensure_schema(engine)
    app = create_app(engine, config, registry=CollectorRegistry(), flag_ttl=args.flag_ttl)
    cache = app.state.flag_cache

    @app.get("/bench/sync/{model}/fallback", include_in_schema=False)
    def sync_flag(model: str) -> Response:
        body = cache.fresh(model) or cache.refresh(model)
        return Response(body, media_type="application/json")

    @app.get("/bench/uncached/{model}/fallback", include_in_schema=False)
    def uncached_flag(model: str) -> dict[str, Any]:
        return flag_document(engine, config, model)

    uvicorn.run(app, host="127.0.0.1", port=args.port, http=args.http, loop=args.loop,
                access_log=args.access_log, log_level="warning")


def _installed(module: str, otherwise: str) -> str:
    return module if importlib.util.find_spec(module) is not None else otherwise


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"the server did not answer {url} within {timeout:.0f} s") from None
            time.sleep(0.2)


_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not match:
        raise ValueError(f"cannot read wrk's latency {text!r}")
    return float(match.group(1)) * _UNIT[match.group(2)]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(url: str, *, connections: int, seconds: float, cpu: str,
            server_pid: int) -> dict[str, float]:
    """One bounded wrk run; requests/s, p50 and p99 in ms, errors, and the server's CPU
    time per request in microseconds (what it costs, whatever else shares the core)."""
    cpu_before = _cpu_seconds(server_pid)
    out = subprocess.run(
        ["taskset", "-c", cpu, "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s",
         "--timeout", "2s", "--latency", url],
        check=True, capture_output=True, text=True, timeout=seconds + 30,
    ).stdout
    cpu_used = _cpu_seconds(server_pid) - cpu_before
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    pcts = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50": _ms(pcts["50"]), "p99": _ms(pcts["99"]),
            "cpu_us": cpu_used / max(requests, 1) * 1e6,
            "errors": errors + (int(non2xx.group(1)) if non2xx else 0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--http", default=_installed("httptools", "h11"),
                        choices=["httptools", "h11"],
                        help="uvicorn's HTTP parser (default httptools if installed)")
    parser.add_argument("--loop", default=_installed("uvloop", "asyncio"),
                        choices=["uvloop", "asyncio"],
                        help="uvicorn's event loop (default uvloop if installed)")
    parser.add_argument("--access-log", action="store_true",
                        help="keep uvicorn's access log on (to stderr, discarded)")
    parser.add_argument("--db-url", default=None,
                        help="store URL; mqm's tables are created in it if missing "
                        "(default: a fresh SQLite file)")
    parser.add_argument("--flag-ttl", type=float, default=1.0,
                        help="create_app's flag_ttl: seconds a cached flag is served "
                        "(default 1, as shipped)")
    parser.add_argument("--connections", type=int, default=10,
                        help="keep-alive connections of the load (default 10)")
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="length of one run (default 5)")
    parser.add_argument("--runs", type=int, default=3, help="runs per endpoint (default 3)")
    args = parser.parse_args()
    if args.serve:
        serve(args)
        return
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        raise SystemExit("needs wrk and taskset: apt-get install -y wrk util-linux")
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("needs 2 CPUs: the server on CPU 0, the load on CPU 1")

    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="mqm-bench-api-") as folder:
        cmd = ["taskset", "-c", "0", sys.executable, __file__, "--serve", "--dir", folder,
               "--port", str(port), "--http", args.http, "--loop", args.loop,
               "--flag-ttl", str(args.flag_ttl)]
        if args.access_log:
            cmd.append("--access-log")
        if args.db_url:
            cmd += ["--db-url", args.db_url]
        server = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.DEVNULL
                                  if args.access_log else None)
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_ready(base + "/healthz")
            print(f"uvicorn --http {args.http} --loop {args.loop}, access log "
                  f"{'on' if args.access_log else 'off'}, server on CPU 0, wrk -t1 "
                  f"-c{args.connections} on CPU 1, {args.runs} x {args.seconds:g} s per "
                  "endpoint")
            rows = []
            for name, path in TARGETS.items():
                urllib.request.urlopen(base + path, timeout=5).read()  # warm the cache
                runs = [run_wrk(base + path, connections=args.connections,
                                seconds=args.seconds, cpu="1", server_pid=server.pid)
                        for _ in range(args.runs)]
                med = {k: statistics.median(r[k] for r in runs)
                       for k in ("rps", "p50", "p99", "cpu_us")}
                errors = sum(int(r["errors"]) for r in runs)
                rows.append((name, med, runs, errors))
                print(f"  {name}: {med['rps']:,.0f} req/s, p50 {med['p50']:.2f} ms, "
                      f"p99 {med['p99']:.2f} ms, server CPU {med['cpu_us']:.0f} us/req (runs: "
                      + "; ".join(f"{r['rps']:,.0f} {r['p50']:.2f}/{r['p99']:.2f}"
                                  for r in runs) + f"), errors {errors}", flush=True)
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
    print("\n| endpoint | req/s (median) | p50 ms | p99 ms | server CPU us/req | "
          "runs req/s | errors |")
    print("|---|---|---|---|---|---|---|")
    for name, med, runs, errors in rows:
        print(f"| {name} | {med['rps']:,.0f} | {med['p50']:.2f} | {med['p99']:.2f} | "
              f"{med['cpu_us']:.0f} | " + " ".join(f"{r['rps']:,.0f}" for r in runs)
              + f" | {errors} |")


if __name__ == "__main__":
    main()

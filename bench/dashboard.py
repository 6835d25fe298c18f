"""Time to render the dashboard's overview and a model page on a large store, via AppTest.

Builds (once; reused while its parameters match) a store of ``--models`` models (20) with
``--features`` features each (50) and ``--runs`` hourly check runs per model (2,000, about
83 days): typed ``CheckRun``s written directly with ``monitor.store.runs.insert_run``, and
taken into each model's fallback flag as a check run would be, so the store also holds
flags and their events. No logs: the pages read aggregates only.

Then renders, through ``streamlit.testing.v1.AppTest``, the overview and the model page
of one model over 90 days (``?model=m00&days=90``: every one of its 2,000 windows) and
prints the median of ``--repeat`` (5) renders of each, **cold** (the dashboard's read
cache cleared before each render: every figure read from the store) and **warm** (served
from the cache, as within its 15 s TTL), after one render that pays the process's one-off
set-up. Wall-clock seconds, and the CPU seconds of the cold renders (less sensitive to
other load on the machine).

Run from the repository root: ``.venv/bin/python bench/dashboard.py`` (the build takes a
few minutes on SQLite; ``--url postgresql+psycopg://...`` builds on PostgreSQL into an
empty database).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitor.results import (  # noqa: E402
    CheckRun,
    ColumnReport,
    DriftResult,
    EstimatedResult,
    FeatureDrift,
    PerformanceResult,
    SchemaResult,
    ServiceResult,
)

START = datetime(2026, 6, 1, tzinfo=UTC)
WINDOW = timedelta(hours=1)


def _schema(name: str, features: int) -> dict[str, Any]:
    feats = []
    for i in range(features):
        if i % 10 < 7:
            feats.append({"name": f"f{i:02d}", "type": "float", "nullable": True})
        else:
            feats.append({"name": f"f{i:02d}", "type": "category", "nullable": True,
                          "allowed": ["a", "b", "c", "d"]})
    return {"model": name, "task": "classification", "features": feats,
            "prediction": {"column": "prediction", "type": "int", "classes": [0, 1],
                           "probability_columns": {"0": "proba_0", "1": "proba_1"}},
            "target": {"column": "label", "type": "int"}}


def write_config(folder: Path, url: str, models: int, features: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    entries = {}
    for m in range(models):
        name = f"m{m:02d}"
        schema = folder / f"{name}.yaml"
        schema.write_text(yaml.safe_dump(_schema(name, features)), encoding="utf-8")
        entries[name] = {"schema": str(schema),
                         "reference": str(ROOT / "sample_data" / "reference.parquet"),
                         "window": "1h", "min_rows": 100}
    path = folder / "monitor.yaml"
    path.write_text(yaml.safe_dump({"database_url": url, "models": entries}), encoding="utf-8")
    return path


def make_run(model: str, m: int, i: int, features: int, rng: np.random.Generator) -> CheckRun:
    """Window ``i`` of model ``m``: quiet, then (for every third model) drifting from 80%
    of the way on, with accuracy decaying and schema violations rising."""
    end = START + WINDOW * (i + 1)
    rows = int(rng.integers(2_000, 4_000))
    drifting = m % 3 == 0 and i > 0.8 * 2000
    level = min(1.0, (i - 1600) / 100) if drifting else 0.0
    drift_feats = []
    for f in range(features):
        cat = f % 10 >= 7
        method, threshold = ("jensenshannon", 0.1) if cat else ("wasserstein", 0.1)
        base = float(rng.gamma(2.0, 0.012))
        score = base + (0.35 * level if f < features // 3 else 0.0)
        nr = 0.01 if f % 7 == 0 else 0.0
        nc = nr + (0.02 * level if f % 11 == 0 else 0.0)
        drift_feats.append(FeatureDrift(
            f"f{f:02d}", "cat" if cat else "num", method, score, threshold, score >= threshold,
            nr, nc, nc - nr, (0.05 * level) if cat else None))
    drift_feats.append(FeatureDrift("prediction", "cat", "jensenshannon",
                                    0.02 + 0.1 * level, 0.1, 0.02 + 0.1 * level >= 0.1,
                                    0.0, 0.0, 0.0, 0.0))
    drifted = sum(f.drifted for f in drift_feats)
    share = drifted / len(drift_feats)
    drift = DriftResult(features=tuple(drift_feats), share_drifted=share, drift_share=0.5,
                        dataset_drift=share >= 0.5, rows_reference=10_000, rows_current=rows,
                        status="critical" if share >= 0.5 else ("warn" if drifted else "ok"))
    violation = float(rng.uniform(0, 0.002)) + 0.04 * level
    columns = [
        ColumnReport(column=f"f{f:02d}", role="feature",
                     expected_type="category" if f % 10 >= 7 else "float", state="present",
                     null_rate=0.01 if f % 7 == 0 else 0.0,
                     unseen_category_rate=0.04 * level if f % 10 >= 7 else 0.0,
                     violation_rate=0.04 * level if f % 10 >= 7 else 0.0)
        for f in range(features)]
    columns.append(ColumnReport("prediction", "prediction", "int", "present"))
    schema_status = "critical" if violation >= 0.05 else ("warn" if violation >= 0.01 else "ok")
    schema = SchemaResult(rows=rows, status=schema_status, violation_rate=violation,
                          violating_rows=int(violation * rows), columns=tuple(columns),
                          missing_columns=(), unexpected_columns=())
    accuracy = 0.84 - 0.14 * level + float(rng.normal(0, 0.005))
    coverage = 0.9 if i < 1900 else max(0.0, 0.9 - (i - 1900) * 0.009)
    mature = coverage >= 0.8
    perf_status = "critical" if mature and 0.84 - accuracy > 0.05 else "ok"
    estimated = EstimatedResult(0.84 - 0.08 * level, 0.84, 0.08 * level, accuracy, rows,
                                "warn" if level > 0.6 else "ok", ())
    perf = PerformanceResult(
        task="classification", rows=rows, labelled_rows=int(rows * coverage),
        label_coverage=coverage, mature=mature,
        metrics={"accuracy": accuracy, "f1": 0.47, "roc_auc": 0.84 - 0.08 * level},
        reference_metrics={"accuracy": 0.84, "f1": 0.47, "roc_auc": 0.843},
        drops={"accuracy": 0.84 - accuracy, "f1": 0.0, "roc_auc": 0.003 + 0.08 * level},
        status=perf_status, reasons=(), estimated=estimated)
    service = ServiceResult(rows=rows, errors=int(rows * 0.002), error_rate=0.002,
                            latency_p50_ms=29.0 + 7 * level, latency_p95_ms=56.0 + 13 * level,
                            latency_p99_ms=187.0 + 37 * level, throughput_per_s=rows / 3600,
                            status="ok", reasons=(), fallback_rate=0.0, fallbacks={})
    ranks = {"ok": 0, "warn": 1, "critical": 3}
    status = max((schema.status, drift.status, perf.status, service.status), key=ranks.get)
    return CheckRun(model=model, start=end - WINDOW, end=end, rows=rows, status=status,
                    reasons=() if status == "ok" else (f"{status} at window {i}",),
                    config_hash="bench", reference_version="bench", schema=schema,
                    drift=drift, performance=perf, service=service)


def build(url: str, config_path: Path, models: int, features: int, runs: int) -> None:
    from monitor.config import load_config
    from monitor.fallback.flag import observe_run
    from monitor.policy import RunOutcome
    from monitor.store.db import create_engine, ensure_schema
    from monitor.store.runs import insert_run

    config = load_config(config_path)
    engine = create_engine(url)
    ensure_schema(engine)
    started = time.perf_counter()
    for m in range(models):
        name = f"m{m:02d}"
        rng = np.random.default_rng(m)
        with engine.begin() as conn:
            for i in range(runs):
                run = make_run(name, m, i, features, rng)
                finished = run.end + timedelta(minutes=5)
                run_id = insert_run(
                    conn, model=name, kind="check", window_start=run.start,
                    window_end=run.end, rows=run.rows, status=run.status,
                    summary=run.as_dict(), metrics=run.metrics(), config_hash=run.config_hash,
                    reference_version=run.reference_version, started_at=finished,
                    finished_at=finished)
                observe_run(conn, config, name,
                            RunOutcome(run_id, run.end, run.status, run.reasons), now=finished)
        print(f"  {name}: {runs} runs stored ({time.perf_counter() - started:.0f} s)",
              flush=True)
    if engine.dialect.name == "postgresql":
        # Planner statistics, as autovacuum would gather them after a bulk load: without
        # them PostgreSQL scans run_metrics whole for a few hundred runs' figures.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE")
    engine.dispose()


def render(app: Any, page: str | None, params: dict[str, str], *, cold: bool
           ) -> tuple[float, float]:
    """Seconds of one render, wall clock and CPU (this process, all its threads)."""
    import streamlit as st

    if cold:
        st.cache_data.clear()
    if page is not None:
        app.switch_page(page)
    app.query_params.clear()
    app.query_params.update(params)
    started, cpu = time.perf_counter(), time.process_time()
    app.run()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    if app.exception:
        raise SystemExit(f"the page failed: {app.exception[0].value}")
    return elapsed, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/mqm-bench-dashboard"))
    parser.add_argument("--url", default=None,
                        help="store URL (default: a SQLite file in --dir)")
    args = parser.parse_args()

    folder = args.dir
    url = args.url or f"sqlite:///{folder / 'store.db'}"
    stamp = folder / "built.json"
    want = {"url": url, "models": args.models, "features": args.features, "runs": args.runs}
    config = write_config(folder, url, args.models, args.features)
    if not stamp.exists() or json.loads(stamp.read_text()) != want:
        if args.url is None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{folder / 'store.db'}{suffix}").unlink(missing_ok=True)
        print(f"building {args.models} models x {args.features} features x {args.runs} runs "
              f"in {url} ...", flush=True)
        build(url, config, args.models, args.features, args.runs)
        stamp.write_text(json.dumps(want))

    os.environ["MQM_CONFIG"] = str(config)
    os.environ.pop("MQM_DATABASE_URL", None)
    from streamlit.testing.v1 import AppTest

    app_path = ROOT / "dashboards" / "app.py"
    results: dict[str, dict[str, list[tuple[float, float]]]] = {}
    cases = [("overview", "views/overview.py", {}),
             ("model page, 90 days", "views/model.py", {"model": "m00", "days": "90"})]
    for label, page, params in cases:
        app = AppTest.from_file(str(app_path), default_timeout=600)
        app.run()  # registers the pages; opens the engine (cached for the process)
        render(app, page, params, cold=True)  # Altair's and Streamlit's one-off set-up
        times: dict[str, list[tuple[float, float]]] = {"cold": [], "warm": []}
        for _ in range(args.repeat):
            times["cold"].append(render(app, page, params, cold=True))
        for _ in range(args.repeat):
            times["warm"].append(render(app, page, params, cold=False))
        results[label] = times
        if label.startswith("model"):
            windows = [m.value for m in app.metric if m.label == "Windows shown"]
            print(f"  (the model page shows {windows[0] if windows else '?'} windows)")

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nstore: {args.models} models x {args.features} features x {args.runs} hourly runs "
          f"({url.split(':')[0]}); load average {load:.1f} on {os.cpu_count()} CPUs")
    print(f"{'page':<22} {'cold median':>12} {'(cpu)':>8} {'warm median':>12}   cold runs (s)")
    worst = 0.0
    for label, times in results.items():
        cold = statistics.median(t for t, _ in times["cold"])
        cold_cpu = statistics.median(c for _, c in times["cold"])
        warm = statistics.median(t for t, _ in times["warm"])
        runs = ", ".join(f"{t:.2f}" for t, _ in times["cold"])
        print(f"{label:<22} {cold:>10.2f} s {cold_cpu:>6.2f} s {warm:>10.2f} s   {runs}")
        worst = max(worst, cold)
    print(f"\ntarget: under 2 s each; worst cold median {worst:.2f} s"
          + (" (met)" if worst < 2 else " (NOT met)"))
    if not math.isfinite(worst):
        raise SystemExit(1)


if __name__ == "__main__":
    main()

"""A whole ``mqm check`` over a large window against the path a user would write by hand.

Run by hand, not by pytest::

    .venv/bin/python bench/check.py [--rows 1000000] [--big-copies 10] [--repeats 3]

It builds a SQLite store with N log rows of the sample model in one window (and
labels for 70% of them; the data generator is bench/read_window.py's), then times,
each in a fresh child process with its own peak RSS:

- mqm, rows: ``monitor.run.check.run_check`` on the window (read, schema, drift,
  performance, estimated accuracy, service, persist), reference = sample_data,
  before any log block exists (the window is parsed from the rows' JSON);
- compaction: ``monitor.store.compaction.compact``, which ``mqm serve`` runs in the
  background as logs arrive (every minute by default);
- mqm, blocks: the same check once the logs are in log blocks (what the service
  reads);
- naive: ``pandas.read_sql`` of the window and its labels, JSON features expanded,
  then Evidently 0.7's DataDriftPreset and ClassificationPreset on it;
- big: the store grown to N x copies rows in one window, compacted, then checked
  (read in chunks, a log block at a time; drift and accuracy on a sample), to show
  that memory stays bounded.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
import warnings
from multiprocessing import get_context
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from read_window import MODEL, SPAN, START, build_database, replicate

ROOT = Path(__file__).resolve().parents[1]


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_config(folder: Path, db: Path, span_days: int) -> Path:
    import yaml

    path = folder / f"monitor-{span_days}.yaml"
    path.write_text(yaml.safe_dump({
        "database_url": f"sqlite:///{db}",
        "models": {MODEL: {
            "schema": str(ROOT / "schemas" / "loan_default.yaml"),
            "reference": str(ROOT / "sample_data" / "reference.parquet"),
            "window": f"{span_days}d",
            "min_rows": 1000,
        }},
    }))
    return path


def mqm_check(config_path: str, span_days: int) -> dict[str, Any]:
    from datetime import timedelta

    from monitor.config import load_config
    from monitor.run.check import run_check
    from monitor.store.db import create_engine

    before = _peak_mb()
    t0 = time.perf_counter()
    cfg = load_config(config_path)
    engine = create_engine(cfg.database_url)
    run = run_check(engine, cfg, MODEL, at=START + timedelta(days=span_days))
    assert run is not None
    return {"seconds": time.perf_counter() - t0, "peak_mb": _peak_mb(), "before_mb": before,
            "rows": run.rows, "status": run.status, "sampled": run.sampled,
            "sample_rows": run.sample_rows}


def compact(config_path: str) -> dict[str, Any]:
    from monitor.config import load_config
    from monitor.store.compaction import compact as compact_logs
    from monitor.store.db import create_engine

    before = _peak_mb()
    cfg = load_config(config_path)
    engine = create_engine(cfg.database_url)
    t0 = time.perf_counter()
    result = compact_logs(engine, MODEL)
    return {"seconds": time.perf_counter() - t0, "rows": result.rows, "blocks": result.blocks,
            "peak_mb": _peak_mb(), "before_mb": before}


def naive(db: str) -> dict[str, Any]:
    """What a user would write: read the window with pandas, then Evidently's presets."""
    import json

    import pandas as pd
    import sqlalchemy as sa

    before = _peak_mb()
    t0 = time.perf_counter()
    engine = sa.create_engine(f"sqlite:///{db}")
    end = START + SPAN
    logs = pd.read_sql(
        sa.text("SELECT request_id, ts, features, prediction, probabilities, latency_ms, error "
                "FROM inference_logs WHERE model = :m AND ts >= :s AND ts < :e"),
        engine, params={"m": MODEL, "s": START.strftime("%Y-%m-%d %H:%M:%S"),
                        "e": end.strftime("%Y-%m-%d %H:%M:%S")})
    labels = pd.read_sql(sa.text("SELECT request_id, label FROM ground_truth WHERE model = :m"),
                         engine, params={"m": MODEL})
    feats = pd.json_normalize(logs["features"].map(json.loads).tolist())
    probs = pd.json_normalize(logs["probabilities"].map(json.loads).tolist())
    cur = pd.concat([feats, probs.add_prefix("proba_")], axis=1)
    # SQLite's NUMERIC affinity turns the JSON text "1" into the integer 1.
    def value(v: Any) -> Any:
        return json.loads(v) if isinstance(v, str) else v

    cur["prediction"] = logs["prediction"].map(value).astype(str)
    cur["request_id"] = logs["request_id"]
    cur = cur.merge(labels.assign(target=labels["label"].map(value).astype(str))[
        ["request_id", "target"]], on="request_id", how="inner")
    cur["annual_income"] = pd.to_numeric(cur["annual_income"], errors="coerce")
    read_s = time.perf_counter() - t0
    ref = pd.read_parquet(ROOT / "sample_data" / "reference.parquet")
    ref = ref.assign(prediction=ref["prediction"].astype(str),
                     target=ref["defaulted"].astype(str))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from evidently import BinaryClassification, DataDefinition, Dataset, Report
        from evidently.presets import ClassificationPreset, DataDriftPreset

        num = ["age", "annual_income", "loan_amount", "credit_score", "debt_to_income",
               "employment_years", "open_accounts"]
        cat = ["home_ownership", "loan_purpose", "has_cosigner", "application_channel",
               "prediction"]
        cur["has_cosigner"] = cur["has_cosigner"].astype(str)
        ref["has_cosigner"] = ref["has_cosigner"].astype(str)
        definition = DataDefinition(
            numerical_columns=num, categorical_columns=cat,
            classification=[BinaryClassification(target="target", prediction_labels="prediction",
                                                  prediction_probas="proba_1", pos_label="1")])
        cols = [*num, *cat, "target", "proba_1"]
        snap = Report([DataDriftPreset(columns=num + cat), ClassificationPreset()]).run(
            Dataset.from_pandas(cur[cols], data_definition=definition),
            Dataset.from_pandas(ref[cols], data_definition=definition))
        snap.dict()
    return {"seconds": time.perf_counter() - t0, "read_s": read_s, "peak_mb": _peak_mb(),
            "before_mb": before, "rows": len(logs)}


def _blocks_mb(db: Path) -> float:
    import sqlite3

    con = sqlite3.connect(db)
    try:
        (size,) = con.execute("SELECT sum(length(data) + length(labels)) FROM log_blocks"
                              ).fetchone()
    finally:
        con.close()
    return (size or 0) / 2**20


def in_child(func: Any, *args: Any) -> Any:
    with get_context("spawn").Pool(1) as pool:
        return pool.apply(func, args)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--big-copies", type=int, default=10,
                        help="grow the store to rows x this in one window (0: skip)")
    parser.add_argument("--skip-naive", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mqm-bench-check-") as tmp:
        folder = Path(tmp)
        db = folder / "store.db"
        built = build_database(f"sqlite:///{db}", args.rows, seed=11)
        print(f"built {built['logs']:,} logs and {built['labels']:,} labels in "
              f"{built['seconds']:.1f} s")
        config = write_config(folder, db, SPAN.days)
        rows = in_child(mqm_check, str(config), SPAN.days)
        print(f"mqm check, rows    {rows['rows']:,} rows  {rows['seconds']:.2f} s  peak RSS "
              f"{rows['peak_mb']:.0f} MB  status {rows['status']}")
        packed = in_child(compact, str(config))
        print(f"compaction         {packed['rows']:,} rows into {packed['blocks']} blocks  "
              f"{packed['seconds']:.2f} s  peak RSS {packed['peak_mb']:.0f} MB  "
              f"blocks {_blocks_mb(db):.0f} MB, store {db.stat().st_size / 2**20:.0f} MB")
        runs = [in_child(mqm_check, str(config), SPAN.days) for _ in range(args.repeats)]
        secs = [r["seconds"] for r in runs]
        med = statistics.median(secs)
        print(f"mqm check, blocks  {runs[0]['rows']:,} rows  median {med:.2f} s "
              f"[{', '.join(f'{s:.2f}' for s in secs)}]  peak RSS "
              f"{max(r['peak_mb'] for r in runs):.0f} MB (after imports "
              f"{runs[0]['before_mb']:.0f})  status {runs[0]['status']}  "
              f"sampled {runs[0]['sampled']}")
        if not args.skip_naive:
            nv = in_child(naive, str(db))
            print(f"naive              {nv['rows']:,} rows  {nv['seconds']:.1f} s (read + parse "
                  f"{nv['read_s']:.1f} s)  peak RSS {nv['peak_mb']:.0f} MB")
            print(f"speed-up           {nv['seconds'] / med:.1f}x (blocks), "
                  f"{nv['seconds'] / rows['seconds']:.1f}x (rows)")
        if args.big_copies > 1:
            grown = replicate(f"sqlite:///{db}", args.big_copies - 1)
            days = SPAN.days * args.big_copies
            print(f"grew the store to {args.rows * args.big_copies:,} rows in "
                  f"{grown['seconds']:.0f} s")
            big_config = str(write_config(folder, db, days))
            packed = in_child(compact, big_config)
            print(f"compaction         {packed['rows']:,} more rows into {packed['blocks']} "
                  f"blocks  {packed['seconds']:.1f} s  peak RSS {packed['peak_mb']:.0f} MB")
            big = in_child(mqm_check, big_config, days)
            print(f"mqm check          {big['rows']:,} rows  {big['seconds']:.1f} s  peak RSS "
                  f"{big['peak_mb']:.0f} MB  sampled {big['sampled']} "
                  f"({big['sample_rows'] or 0:,} rows)  status {big['status']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

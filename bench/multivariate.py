"""Multivariate drift: the section's own time, and a whole check with and without it.

Run by hand, not by pytest::

    .venv/bin/python bench/multivariate.py [--rows 100000] [--repeats 3]

Data: 25 features (20 numerical, 5 categorical). The reference has ``--rows`` rows; so
has the window, in which two correlated features flip their correlation and a third
shifts a little (a drift the classifier must work for, so gradient boosting does not stop
early as it does on a clean window).

1. The section alone (``monitor.checks.multivariate.check_multivariate`` on frames),
   at the default sample (``multivariate.sample_rows`` 5,000 per side) and with the
   whole 100k rows per side as the sample (the issue's goal: under 10 s).
2. A whole ``run_check`` of the window from a SQLite store (read, schema, drift, service,
   persist; a features-only contract), with the section off and on at the default
   sample, after one untimed run that builds and stores the reference profile.

Prints the median (min-max) of ``--repeats`` runs of each.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL = "wide"
START = datetime(2026, 10, 1, tzinfo=UTC)
NUM, CAT = 20, 5


def frame(rows: int, *, shifted: bool, seed: int) -> Any:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    rho = -0.6 if shifted else 0.6
    pair = rng.multivariate_normal([0, 0], [[1, rho], [rho, 1]], size=rows)
    data: dict[str, Any] = {"f0": pair[:, 0], "f1": pair[:, 1]}
    for i in range(2, NUM):
        data[f"f{i}"] = rng.normal(0.05 if shifted and i == 2 else 0.0, 1.0, size=rows)
    for i in range(CAT):
        data[f"c{i}"] = rng.choice([f"v{k}" for k in range(6 + i)], size=rows)
    return pd.DataFrame(data)


def kinds() -> dict[str, Any]:
    return {**{f"f{i}": "num" for i in range(NUM)}, **{f"c{i}": "cat" for i in range(CAT)}}


def timed(fn: Any, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        out.append(time.perf_counter() - began)
    return out


def show(label: str, times: list[float]) -> None:
    print(f"  {label:<52} {statistics.median(times):7.2f} s "
          f"({min(times):.2f}-{max(times):.2f})", flush=True)


def section(rows: int, repeats: int) -> None:
    from monitor.checks.multivariate import MultivariateReference, check_multivariate
    from monitor.config import MultivariateConfig

    reference, window = frame(rows, shifted=False, seed=1), frame(rows, shifted=True, seed=2)
    print(f"section alone, {rows:,} reference rows and {rows:,} window rows, "
          f"{NUM + CAT} features:")
    for sample in (5000, rows):
        config = MultivariateConfig(enabled=True, sample_rows=sample)
        began = time.perf_counter()
        ref = MultivariateReference.build(reference, kinds(), sample_rows=sample, seed=1)
        build = time.perf_counter() - began
        check_multivariate(ref, window.iloc[:2000], config=config, seed=0)  # imports, warm
        times = timed(partial(check_multivariate, ref, window, config=config, seed=7),
                      repeats)
        last = check_multivariate(ref, window, config=config, seed=7)
        show(f"sample_rows {sample:,} per side", times)
        print(f"    (reference sample built once in {build:.2f} s; AUC {last.auc:.3f}, "
              f"top {', '.join(f.feature for f in last.top_features[:3])})")


def write_store(folder: Path, rows: int) -> tuple[Path, Path]:
    """A SQLite store with one day of ``rows`` logs of a features-only model, and the
    config (multivariate off) for it."""
    import yaml

    from monitor.config import load_config
    from monitor.ingest import ingest_logs
    from monitor.schema import load_schema
    from monitor.store.db import create_engine, ensure_schema

    contract = {"model": MODEL, "task": "features", "features": [
        *({"name": f"f{i}", "type": "float", "nullable": False} for i in range(NUM)),
        *({"name": f"c{i}", "type": "category", "nullable": False} for i in range(CAT))]}
    (folder / "wide.yaml").write_text(yaml.safe_dump(contract), encoding="utf-8")
    frame(rows, shifted=False, seed=1).to_parquet(folder / "reference.parquet")
    logs = frame(rows, shifted=True, seed=2)
    step = 86400 / rows
    logs.insert(0, "timestamp", [START + timedelta(seconds=i * step) for i in range(rows)])
    logs.insert(0, "request_id", [f"r{i}" for i in range(rows)])
    logs["latency_ms"] = 10.0
    logs.to_parquet(folder / "logs.parquet")
    db = folder / "store.db"
    config = folder / "monitor.yaml"
    config.write_text(yaml.safe_dump({"database_url": f"sqlite:///{db}", "models": {MODEL: {
        "schema": str(folder / "wide.yaml"), "reference": str(folder / "reference.parquet"),
        "window": "1d", "min_rows": 100}}}), encoding="utf-8")
    cfg = load_config(config)
    engine = create_engine(cfg.database_url)
    ensure_schema(engine)
    ingest_logs(engine, MODEL, load_schema(cfg.model(MODEL).schema_path),
                folder / "logs.parquet")
    engine.dispose()
    return db, config


def whole_check(rows: int, repeats: int) -> None:
    from monitor.config import load_config
    from monitor.run.check import run_check
    from monitor.store.db import create_engine

    with tempfile.TemporaryDirectory() as tmp:
        _, path = write_store(Path(tmp), rows)
        base = load_config(path)
        model = base.model(MODEL)
        print(f"whole run_check of one {rows:,}-row window ({NUM + CAT} features, SQLite):")
        for enabled in (False, True):
            on = model.model_copy(update={"multivariate": model.multivariate.model_copy(
                update={"enabled": enabled})})
            cfg = base.model_copy(update={"models": {MODEL: on}})
            engine = create_engine(cfg.database_url)
            at, now = START + timedelta(days=1), START + timedelta(days=2)
            run_check(engine, cfg, MODEL, at=at, now=now)  # builds the reference profile
            times = timed(partial(run_check, engine, cfg, MODEL, at=at, now=now), repeats)
            show(f"multivariate {'on (sample_rows 5,000)' if enabled else 'off'}", times)
            engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-whole", action="store_true",
                        help="time the section alone")
    args = parser.parse_args()
    section(args.rows, args.repeats)
    if not args.skip_whole:
        whole_check(args.rows, args.repeats)


if __name__ == "__main__":
    main()

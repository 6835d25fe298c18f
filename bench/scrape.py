"""How long a Prometheus scrape of ``mqm serve`` takes: the sample store with two weeks of
daily check runs, the collector read through ``generate_latest``. Run by hand::

    .venv/bin/python bench/scrape.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
MODEL = "loan_default"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    from prometheus_client import generate_latest

    from monitor.cli.demo import run_demo
    from monitor.config import load_config
    from monitor.serve.metrics import build_registry
    from monitor.store.db import create_engine, ensure_schema

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config_path = folder / "monitor.yaml"
        config_path.write_text(yaml.safe_dump({
            "database_url": f"sqlite:///{folder / 'mqm.db'}",
            "models": {MODEL: {"schema": str(ROOT / "schemas" / "loan_default.yaml"),
                               "reference": str(ROOT / "sample_data" / "reference.parquet"),
                               "window": "1d", "min_rows": 500}},
        }))
        shutil.copy(ROOT / "sample_data" / "reference.parquet", folder / "reference.parquet")
        config = load_config(config_path)
        engine = create_engine(config.database_url)
        ensure_schema(engine)
        runs = run_demo(config, engine, ROOT / "sample_data", echo=lambda _line: None)
        now = datetime(2026, 11, 27, tzinfo=UTC)
        registry = build_registry(engine, config, clock=lambda: now)
        generate_latest(registry)  # the first scrape parses the contract
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            body = generate_latest(registry)
            times.append(time.perf_counter() - started)
        print(f"scrape of {len(runs)} stored runs, {len(body)} bytes: median "
              f"{statistics.median(times) * 1000:.1f} ms (min {min(times) * 1000:.1f}, "
              f"max {max(times) * 1000:.1f}) over {args.repeats}")
        engine.dispose()


if __name__ == "__main__":
    main()

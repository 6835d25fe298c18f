"""The whole check of a window with segments against the same check without them.

Run by hand, not by pytest::

    .venv/bin/python bench/segments.py [--rows 1000000] [--repeats 5] [--store]

A synthetic classifier with 25 features (18 numeric, 7 categorical), a 100k-row
reference file and one window of N rows (70% labelled) held in memory by a
``LogSource`` that hands the frames over without copying, so that the figures are those
of the checks (``monitor.run.evaluate.evaluate_window``: schema, drift, accuracy,
estimate, service, and segments), not of a store's read: the read would add the same
seconds to both sides. Segments: 3 columns with 20, 20 and 10 values (50 segments),
``max_values: 20``. Both variants run in one process, alternately, after one warm-up
each (the reference profiles, and the segments' reference profiles, are built then and
cached, as in ``mqm serve``); the warm-up of the segmented check is printed apart.

``--store`` times the whole ``mqm check`` instead (``monitor.run.check.run_check``):
the window's rows are loaded into a SQLite store and compacted into log blocks first,
then each check reads them from the blocks, runs, and stores its run and figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monitor.config import ModelConfig
from monitor.run.evaluate import evaluate_window
from monitor.run.model import ResolvedModel
from monitor.schema import load_schema
from monitor.store.sources import LogWindow

START = datetime(2026, 10, 1, tzinfo=UTC)
END = START + timedelta(days=1)
N_NUM, N_CAT = 18, 7
SEGMENT_VALUES = {"c0": 20, "c1": 20, "c2": 10}
SEED = 20261205


def _frame(rows: int, rng: np.random.Generator, *, drift: bool) -> pd.DataFrame:
    cols: dict[str, Any] = {}
    for i in range(N_NUM):
        values = (rng.integers(0, 90, rows).astype(float) if i % 3 == 2
                  else rng.normal(50, 10, rows))
        if drift and i == 0:
            values = values + 2.0
        cols[f"n{i:02d}"] = values
    for j in range(N_CAT):
        size = SEGMENT_VALUES.get(f"c{j}", 6)
        vocab = np.array([f"v{k:02d}" for k in range(size)], dtype=object)
        p = np.linspace(2.0, 1.0, size)
        cols[f"c{j}"] = vocab[rng.choice(size, rows, p=p / p.sum())]
    frame = pd.DataFrame(cols)
    score = 1 / (1 + np.exp(-(frame["n00"] - 50) / 10))
    frame["proba_1"] = score.round(6)
    frame["proba_0"] = (1 - score).round(6)
    frame["prediction"] = (score >= 0.5).astype(int)
    frame["target"] = (rng.random(rows) < score).astype(int)
    return frame


def _write_model(folder: Path) -> tuple[Path, Path]:
    features = [{"name": f"n{i:02d}", "type": "float", "nullable": True} for i in range(N_NUM)]
    features += [{"name": f"c{j}", "type": "string", "nullable": True} for j in range(N_CAT)]
    schema = folder / "bench.yaml"
    schema.write_text(yaml.safe_dump({
        "model": "bench", "task": "classification", "features": features,
        "prediction": {"column": "prediction", "type": "int", "classes": [0, 1],
                       "probability_columns": {"0": "proba_0", "1": "proba_1"}},
        "target": {"column": "target", "type": "int"}}))
    reference = folder / "reference.parquet"
    _frame(100_000, np.random.default_rng(SEED), drift=False).to_parquet(reference)
    return schema, reference


class MemorySource:
    """A window held in memory: every read hands the same frames over."""

    def __init__(self, window: LogWindow) -> None:
        self.window = window

    def read_window(self, start: datetime, end: datetime) -> LogWindow:
        return self.window

    def count(self, start: datetime, end: datetime) -> int:
        return self.window.rows

    def iter_chunks(self, start: datetime, end: datetime, chunk_rows: int
                    ) -> Iterator[LogWindow]:
        yield self.window

    def time_range(self) -> tuple[datetime | None, datetime | None]:
        return START, END


def _window(rows: int) -> LogWindow:
    rng = np.random.default_rng(SEED + 1)
    frame = _frame(rows, rng, drift=True)
    feature_cols = [f"n{i:02d}" for i in range(N_NUM)] + [f"c{j}" for j in range(N_CAT)]
    labels = frame["target"].astype(object).where(rng.random(rows) < 0.7, None)
    meta = pd.DataFrame({
        "request_id": [f"r{i}" for i in range(rows)],
        "ts": pd.Timestamp(START) + pd.to_timedelta(np.arange(rows) * (86_400 / rows), "s"),
        "model_version": "1.0",
        "prediction": frame["prediction"].astype(object),
        "latency_ms": rng.gamma(2.0, 15.0, rows),
        "error": np.zeros(rows, dtype=bool),
        "error_message": None,
        "label_time": pd.NaT,
    })
    probs = pd.DataFrame({"0": frame["proba_0"], "1": frame["proba_1"]})
    return LogWindow(start=START, end=END, meta=meta, features=frame[feature_cols],
                     probabilities=probs, labels=labels)


def _model(schema: Path, reference: Path, source: MemorySource, segments: bool
           ) -> ResolvedModel:
    cfg = ModelConfig.model_validate({
        "schema": str(schema), "reference": str(reference), "window": "1d", "min_rows": 100,
        "segments": {"columns": list(SEGMENT_VALUES) if segments else [], "max_values": 20,
                     "min_rows": 200}})
    return ResolvedModel(name="bench", config=cfg, schema=load_schema(schema),
                         source=source)  # type: ignore[arg-type]


def _timed(model: ResolvedModel) -> tuple[float, Any]:
    t0 = time.perf_counter()
    run = evaluate_window(model, start=START, end=END, now=END + timedelta(days=30))
    return time.perf_counter() - t0, run


def _figures(secs: list[float]) -> str:
    return f"median {statistics.median(secs):.2f} s ({min(secs):.2f}-{max(secs):.2f})"


def _store(folder: Path, schema: Path, reference: Path, window: LogWindow) -> tuple[Any, Any]:
    """A SQLite store holding the window's logs and labels in log blocks, and a config of
    the model without and with segments."""
    from monitor.config import Config
    from monitor.ingest import ingest_labels, ingest_logs
    from monitor.store.compaction import compact
    from monitor.store.db import create_engine, ensure_schema

    url = f"sqlite:///{folder / 'store.db'}"
    engine = create_engine(url)
    ensure_schema(engine)
    logs = pd.concat([window.meta[["request_id", "model_version", "prediction",
                                   "latency_ms"]].assign(
        timestamp=window.meta["ts"], prediction=window.meta["prediction"].astype(int)),
        window.features, window.probabilities.add_prefix("proba_")], axis=1)
    logs.to_parquet(folder / "logs.parquet")
    labelled = window.labels.notna().to_numpy()
    pd.DataFrame({"request_id": window.meta["request_id"][labelled],
                  "target": window.labels[labelled].astype(int),
                  "timestamp": window.meta["ts"][labelled]}).to_parquet(folder / "labels.parquet")
    model_schema = load_schema(schema)
    t0 = time.perf_counter()
    ingest_logs(engine, "bench", model_schema, folder / "logs.parquet")
    ingest_labels(engine, "bench", model_schema, folder / "labels.parquet")
    compact(engine, "bench")
    print(f"store built (ingest and compaction) in {time.perf_counter() - t0:.1f} s")

    def config(segments: bool) -> Config:
        return Config.model_validate({"database_url": url, "models": {"bench": {
            "schema": str(schema), "reference": str(reference), "window": "1d",
            "min_rows": 100, "schedule": {"compact_every": None},
            "segments": {"columns": list(SEGMENT_VALUES) if segments else [],
                         "max_values": 20, "min_rows": 200}}}})

    return engine, (config(False), config(True))


def _timed_store(engine: Any, config: Any) -> tuple[float, Any]:
    from monitor.run.check import run_check

    t0 = time.perf_counter()
    run = run_check(engine, config, "bench", at=END, now=END + timedelta(days=30))
    return time.perf_counter() - t0, run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--store", action="store_true",
                        help="time run_check on a SQLite store (read, check, persist)")
    args = parser.parse_args()
    if args.store:
        return _main_store(args.rows, args.repeats)
    with tempfile.TemporaryDirectory(prefix="mqm-bench-segments-") as tmp:
        schema, reference = _write_model(Path(tmp))
        source = MemorySource(_window(args.rows))
        plain = _model(schema, reference, source, segments=False)
        split = _model(schema, reference, source, segments=True)
        _timed(plain)  # warm-up: the reference profile and estimator
        cold, run = _timed(split)
        seg = run.segments
        print(f"{args.rows:,} rows, {N_NUM + N_CAT} features, segments of "
              f"{', '.join(SEGMENT_VALUES)}: {len(seg.segments)} segments, status "
              f"{run.status}, segments {seg.status}")
        print(f"with segments, first run (segment profiles built): {cold:.2f} s")
        without, with_ = [], []
        for _ in range(args.repeats):
            without.append(_timed(plain)[0])
            with_.append(_timed(split)[0])
        ratio = statistics.median(with_) / statistics.median(without)
        print(f"check without segments  {_figures(without)}")
        print(f"check with segments     {_figures(with_)}")
        print(f"ratio of medians        {ratio:.2f}x")
    return 0


def _main_store(rows: int, repeats: int) -> int:
    with tempfile.TemporaryDirectory(prefix="mqm-bench-segments-") as tmp:
        folder = Path(tmp)
        schema, reference = _write_model(folder)
        engine, (plain, split) = _store(folder, schema, reference, _window(rows))
        _timed_store(engine, plain)  # warm-up: the reference profile and estimator
        cold, run = _timed_store(engine, split)
        print(f"{run.rows:,} rows, {N_NUM + N_CAT} features, {len(run.segments.segments)} "
              f"segments; mqm check with segments, first run: {cold:.2f} s")
        without, with_ = [], []
        for _ in range(repeats):
            without.append(_timed_store(engine, plain)[0])
            with_.append(_timed_store(engine, split)[0])
        ratio = statistics.median(with_) / statistics.median(without)
        print(f"mqm check without segments  {_figures(without)}")
        print(f"mqm check with segments     {_figures(with_)}")
        print(f"ratio of medians            {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

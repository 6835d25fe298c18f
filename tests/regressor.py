"""A regressor for the tests of its estimate without labels (DLE): a contract, a reference
set and logs of a model whose error grows with one input, and a store checked with it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
import yaml

from tests.conftest import write_csv

MODEL = "prices"
T0 = datetime(2026, 10, 1, tzinfo=UTC)
DAY = timedelta(days=1)
NOW = T0 + 3 * DAY


def rows(n: int, seed: int, *, shifted: bool) -> pd.DataFrame:
    """A regressor predicting f(x) of y = f(x) + noise whose spread grows with |x1|;
    ``shifted`` moves x1 away from 0 (covariate shift: the errors grow)."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(2.0, 1.0, n) if shifted else rng.normal(0.0, 1.5, n)
    x2 = rng.normal(0.0, 1.0, n)
    c = rng.choice(np.array(["a", "b", "c"]), n, p=[0.5, 0.3, 0.2])
    f = 2 * x1 - x2 + np.where(c == "b", 1.0, 0.0)
    y = f + rng.normal(0, 1, n) * (0.5 + np.abs(x1))
    return pd.DataFrame({"x1": x1, "x2": x2, "c": c, "prediction": f, "price": y})


def regressor(folder: Path, url: str, **model: object) -> Path:
    """The regressor's contract, a 5,000-row reference set and a monitor.yaml declaring it
    (``model`` overrides its settings); returns the config's path."""
    contract = {
        "model": MODEL, "task": "regression",
        "features": [{"name": "x1", "type": "float"}, {"name": "x2", "type": "float"},
                     {"name": "c", "type": "category", "allowed": ["a", "b", "c"]}],
        "prediction": {"column": "prediction", "type": "float"},
        "target": {"column": "price", "type": "float"},
    }
    (folder / "prices.yaml").write_text(yaml.safe_dump(contract), encoding="utf-8")
    rows(5_000, 0, shifted=False).to_parquet(folder / "reference.parquet")
    settings = {"schema": str(folder / "prices.yaml"),
                "reference": str(folder / "reference.parquet"), "window": "1d",
                "min_rows": 100, **model}
    path = folder / "monitor.yaml"
    path.write_text(yaml.safe_dump({"database_url": url, "models": {MODEL: settings}}),
                    encoding="utf-8")
    return path


def checked_regressor(engine: sa.Engine, folder: Path, *, errors_every: int | None = None,
                      **model: object) -> tuple[Any, Any, list[Any]]:
    """The regressor on ``engine``: day 1 like the reference and labelled, day 2 shifted
    without labels yet, both checked as of ``NOW``; with ``errors_every`` every such row
    of day 2 is an error without a prediction. Returns config, schema and runs."""
    from monitor.config import load_config
    from monitor.ingest import ingest_labels, ingest_logs
    from monitor.run.check import backfill
    from monitor.schema import load_schema

    config = load_config(regressor(folder, engine.url.render_as_string(hide_password=False),
                                   **model))
    schema = load_schema(config.model(MODEL).schema_path)
    logs = []
    for day, shifted in enumerate([False, True]):
        frame = rows(1_500, day + 1, shifted=shifted)
        for i, r in enumerate(frame.to_dict("records")):
            logs.append({"request_id": f"{day}-{i}",
                         "timestamp": (T0 + day * DAY + i * timedelta(seconds=50)).isoformat(),
                         "x1": r["x1"], "x2": r["x2"], "c": r["c"],
                         "prediction": r["prediction"], "latency_ms": 10.0,
                         "_label": r["price"]})
            if day == 1 and errors_every and i % errors_every == 0:
                logs[-1].update(prediction=None, error=True)
    ingest_logs(engine, MODEL, schema, write_csv(
        folder / "logs.csv", [{k: v for k, v in r.items() if k != "_label"} for r in logs]))
    ingest_labels(engine, MODEL, schema, write_csv(
        folder / "labels.csv", [{"request_id": r["request_id"], "price": r["_label"]}
                                for r in logs if r["request_id"].startswith("0-")]))
    runs = backfill(engine, config, MODEL, T0, T0 + 2 * DAY, now=NOW)
    return config, schema, runs

"""An Evidently HTML report for a stored run's window, on a bounded sample so it stays quick."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitor.config import Config
from monitor.errors import MonitorError
from monitor.run.model import resolve
from monitor.run.reference import drift_columns
from monitor.run.reference_file import read_reference
from monitor.schema import label_text
from monitor.store.db import Engine
from monitor.store.runs import get_run

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["write_report"]

_MIN_LABELLED = 100


def _sample(frame: pd.DataFrame, rows: int) -> pd.DataFrame:
    return frame.sample(n=rows, random_state=0) if len(frame) > rows else frame


def write_report(engine: Engine, config: Config, run_id: int, output: Path, *,
                 sample: int = 20_000) -> int:
    """Write the report; return the number of window rows it was computed on.

    With at least 100 labelled rows in the sample the report covers drift and
    classification quality on the labelled rows; otherwise drift on all sampled rows.
    """
    import numpy as np
    import pandas as pd

    row = get_run(engine, run_id)
    if row is None:
        raise MonitorError(f"no run with id {run_id}")
    model = resolve(engine, config, row.model)
    model_cfg, schema, source = model.config, model.schema, model.source
    total = source.count(row.window_start, row.window_end)
    if total == 0:
        raise MonitorError(f"run {run_id}: the window holds no logs any more")
    rng = np.random.default_rng(run_id)
    parts = []
    for window in source.iter_chunks(row.window_start, row.window_end, 200_000):
        part = window.features.copy()
        part["__prediction"] = window.meta["prediction"].to_numpy()
        part["__label"] = window.labels.to_numpy()
        for cls in window.probabilities.columns:
            part[f"__proba_{cls}"] = window.probabilities[cls].to_numpy()
        if total > sample:
            part = part[rng.random(len(part)) < sample / total]
        parts.append(part)
    current = pd.concat(parts, ignore_index=True)
    current = current[current["__prediction"].notna()]
    reference = _sample(read_reference(model_cfg.reference), sample)

    kinds = drift_columns(schema)
    pred = schema.prediction.column
    feature_kinds = {c: k for c, k in kinds.items() if c != pred}
    target = schema.target.column if schema.target else None

    def normalise(frame: pd.DataFrame, prediction: str, label: str | None,
                  probas: dict[str, str]) -> pd.DataFrame:
        out = pd.DataFrame(index=frame.index)
        for col, kind in feature_kinds.items():
            values = frame[col] if col in frame else pd.Series(np.nan, index=frame.index)
            out[col] = (pd.to_numeric(values, errors="coerce") if kind == "num"
                        else label_text(values))
        is_cls = schema.task == "classification"
        out["prediction"] = label_text(frame[prediction]) if is_cls else pd.to_numeric(
            frame[prediction], errors="coerce")
        if label is not None and label in frame:
            out["target"] = label_text(frame[label]) if is_cls else pd.to_numeric(
                frame[label], errors="coerce")
        for cls, col in probas.items():
            if col in frame:
                out[f"proba_{cls}"] = pd.to_numeric(frame[col], errors="coerce")
        return out

    proba_map = schema.prediction.probability_columns
    ref = normalise(reference, pred, target, proba_map)
    cur = normalise(current, "__prediction", "__label",
                    {cls: f"__proba_{cls}" for cls in proba_map})
    labelled = cur[cur["target"].notna()] if "target" in cur else cur.iloc[:0]
    with_quality = len(labelled) >= _MIN_LABELLED and "target" in ref
    if with_quality:
        cur = labelled
    _render(ref, cur, schema, feature_kinds, with_quality, output)
    return len(cur)


def _render(ref: pd.DataFrame, cur: pd.DataFrame, schema: Any, feature_kinds: Mapping[str, str],
            with_quality: bool, output: Path) -> None:
    with warnings.catch_warnings():
        # Evidently's import and its stat tests warn about their own internals.
        warnings.simplefilter("ignore")
        from evidently import (
            BinaryClassification,
            DataDefinition,
            Dataset,
            MulticlassClassification,
            Regression,
            Report,
        )
        from evidently.presets import (
            ClassificationPreset,
            DataDriftPreset,
            RegressionPreset,
        )

        numerical = [c for c, k in feature_kinds.items() if k == "num"]
        categorical = [c for c, k in feature_kinds.items() if k == "cat"]
        presets: list[Any] = [DataDriftPreset(columns=[*feature_kinds, "prediction"])]
        extra: dict[str, Any] = {}
        is_cls = schema.task == "classification"
        if is_cls:
            categorical.append("prediction")
        else:
            numerical.append("prediction")
        if with_quality:
            classes = [str(c) for c in (schema.prediction.classes or [])]
            probas = [f"proba_{c}" for c in classes if f"proba_{c}" in cur]
            if is_cls and len(classes) == 2:
                pos = classes[-1]
                extra["classification"] = [BinaryClassification(
                    target="target", prediction_labels="prediction",
                    prediction_probas=f"proba_{pos}" if f"proba_{pos}" in cur else None,
                    pos_label=pos)]
                presets.append(ClassificationPreset())
            elif is_cls:
                extra["classification"] = [MulticlassClassification(
                    target="target", prediction_labels="prediction",
                    prediction_probas=probas if len(probas) == len(classes) else None)]
                presets.append(ClassificationPreset())
            else:
                extra["regression"] = [Regression(target="target", prediction="prediction")]
                presets.append(RegressionPreset())
        definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical,
                                    **extra)
        keep = [*feature_kinds, "prediction"] + (
            ["target", *[c for c in cur.columns if c.startswith("proba_")]]
            if with_quality else [])
        snapshot = Report(presets).run(
            Dataset.from_pandas(cur[keep], data_definition=definition),
            Dataset.from_pandas(ref[keep], data_definition=definition),
        )
        output.parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_html(str(output))

"""The committed sample data is what its seeded generator makes, and tells the story documented."""

from __future__ import annotations

import importlib.util
import json

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from tests.conftest import ROOT

DATA = ROOT / "sample_data"


@pytest.fixture(scope="module")
def generated() -> dict[str, pd.DataFrame]:
    spec = importlib.util.spec_from_file_location("generate", DATA / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate()


@pytest.mark.parametrize("name", ["reference", "production_logs", "labels"])
def test_committed_files_match_the_generator(generated, name: str) -> None:
    assert_frame_equal(pd.read_parquet(DATA / f"{name}.parquet"), generated[name])


def test_reference_fits_the_contract(schema) -> None:
    from monitor.checks.schema_check import check_schema
    from monitor.config import SchemaCheckConfig

    ref = pd.read_parquet(DATA / "reference.parquet")
    result = check_schema(ref[schema.feature_names], ref["prediction"], schema,
                          config=SchemaCheckConfig())
    assert result.violation_rate == 0 and result.status == "ok"


def test_labels_arrive_days_late_and_accuracy_decays() -> None:
    logs = pd.read_parquet(DATA / "production_logs.parquet")
    labels = pd.read_parquet(DATA / "labels.parquet")
    joined = logs.merge(labels, on="request_id", suffixes=("", "_label"))
    delay = (joined["timestamp_label"] - joined["timestamp"]).dt.total_seconds() / 86400
    assert delay.min() >= 2 and delay.max() <= 7
    week1 = joined[joined.timestamp < "2026-10-08"]
    week2 = joined[joined.timestamp >= "2026-10-10"]
    acc1 = (week1.prediction == week1.defaulted).mean()
    acc2 = (week2.prediction == week2.defaulted).mean()
    assert acc1 > 0.8 and acc2 < acc1 - 0.08
    homes = logs["features"].map(lambda s: json.loads(s)["home_ownership"])
    assert not (homes[logs.timestamp < "2026-10-08"] == "OTHER").any()
    assert (homes[logs.timestamp >= "2026-10-10"] == "OTHER").mean() > 0.05


def test_version_1_5_0_serves_half_from_10_09_and_is_worse_on_the_drifted_segment() -> None:
    logs = pd.read_parquet(DATA / "production_logs.parquet")
    labels = pd.read_parquet(DATA / "labels.parquet")
    new = logs[logs.model_version == "1.5.0"]
    assert set(logs.model_version) == {"1.4.0", "1.5.0"}
    assert new.timestamp.min() >= pd.Timestamp("2026-10-09", tz="UTC")
    rollout = logs[logs.timestamp >= "2026-10-09"]
    assert 0.45 < (rollout.model_version == "1.5.0").mean() < 0.55
    joined = rollout.merge(labels, on="request_id", suffixes=("", "_label"))
    features = joined["features"].map(json.loads)
    dti = features.map(lambda r: r["debt_to_income"] if isinstance(r["debt_to_income"], float)
                       else 0.0)
    drifted = (dti > 0.35) | (features.map(lambda r: r["home_ownership"]) == "OTHER")
    correct = joined.prediction.astype(int) == joined.defaulted

    def accuracy(version: str, segment: pd.Series) -> float:
        return float(correct[(joined.model_version == version) & segment].mean())

    # Clearly worse where the drift bites, about the same elsewhere.
    assert accuracy("1.4.0", drifted) - accuracy("1.5.0", drifted) > 0.08
    assert abs(accuracy("1.4.0", ~drifted) - accuracy("1.5.0", ~drifted)) < 0.03

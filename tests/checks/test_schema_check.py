"""The schema check measures what it says, against counts made independently."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from monitor.checks.schema_check import check_schema
from monitor.config import SchemaCheckConfig
from tests.conftest import good_row

LOOSE = SchemaCheckConfig(warn_violation_rate=0.5, critical_violation_rate=0.9)


def frame(n: int) -> tuple[pd.DataFrame, pd.Series]:
    rows = [good_row(i) for i in range(n)]
    feats = pd.DataFrame(rows).drop(
        columns=["request_id", "timestamp", "prediction", "proba_0", "proba_1", "latency_ms"])
    return feats.astype(object), pd.Series([r["prediction"] for r in rows])


def test_each_kind_of_violation_is_counted(schema) -> None:
    feats, preds = frame(200)
    feats.loc[[1, 2, 3], "annual_income"] = "N/A"        # type mismatch
    feats.loc[[4, 5], "open_accounts"] = 3.5              # float in an int column
    feats.loc[[6, 7, 8, 9], "age"] = None                 # null where not allowed
    feats.loc[[10, 11, 12, 13, 14], "credit_score"] = 900  # out of range
    feats.loc[[15, 16, 17, 18, 19, 1], "home_ownership"] = "OTHER"  # unseen; row 1 twice
    feats.loc[[20, 21], "employment_years"] = None        # nullable: no violation
    preds[[22]] = 7                                        # not a known class
    res = check_schema(feats, preds, schema, config=LOOSE)
    assert res.column("annual_income").type_mismatch_rate == pytest.approx(3 / 200)
    assert res.column("open_accounts").type_mismatch_rate == pytest.approx(2 / 200)
    assert res.column("age").null_rate == pytest.approx(4 / 200)
    assert res.column("age").violation_rate == pytest.approx(4 / 200)
    assert res.column("credit_score").out_of_range_rate == pytest.approx(5 / 200)
    assert res.column("home_ownership").unseen_category_rate == pytest.approx(6 / 200)
    assert res.column("employment_years").null_rate == pytest.approx(2 / 200)
    assert res.column("employment_years").violation_rate == 0
    assert res.column("prediction").unseen_category_rate == pytest.approx(1 / 200)
    bad_rows = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 22}
    assert res.violating_rows == len(bad_rows)
    assert res.violation_rate == pytest.approx(len(bad_rows) / 200)
    assert "'N/A'" in res.column("annual_income").examples
    assert res.status == "ok"  # 10% is below the loose limits


@pytest.mark.parametrize(
    ("bad", "status"), [(0, "ok"), (2, "warn"), (10, "critical")],
)
def test_status_follows_the_limits(schema, bad: int, status: str) -> None:
    feats, preds = frame(100)
    feats.loc[list(range(bad)), "credit_score"] = 10
    cfg = SchemaCheckConfig(warn_violation_rate=0.02, critical_violation_rate=0.05)
    res = check_schema(feats, preds, schema, config=cfg)
    assert res.status == status
    if bad:
        assert any("credit_score: out of range" in r for r in res.reasons)


def test_missing_column_is_critical_and_unexpected_is_reported(schema) -> None:
    feats, preds = frame(50)
    res = check_schema(feats.drop(columns=["loan_purpose"]), preds, schema, config=LOOSE)
    assert res.status == "critical" and res.missing_columns == ("loan_purpose",)
    assert res.column("loan_purpose").state == "missing"
    feats["surprise"] = 1
    res = check_schema(feats, preds, schema, config=LOOSE)
    assert res.status == "warn" and res.unexpected_columns == ("surprise",)


def test_too_few_rows_is_insufficient_data_never_critical(schema) -> None:
    feats, preds = frame(5)
    res = check_schema(feats.drop(columns=["age"]), preds, schema, config=LOOSE, min_rows=10)
    assert res.status == "insufficient_data"
    empty = check_schema(feats.iloc[:0], preds.iloc[:0], schema, config=LOOSE, min_rows=1)
    assert empty.status == "insufficient_data" and empty.violation_rate == 0


def test_typed_frames_take_the_fast_path_with_the_same_answer(schema) -> None:
    feats, preds = frame(300)
    rng = np.random.default_rng(1)
    idx = rng.choice(300, 30, replace=False)
    feats.loc[idx[:10], "open_accounts"] = 2.5
    feats.loc[idx[10:], "credit_score"] = None
    slow = check_schema(feats, preds, schema, config=LOOSE)
    typed = feats.copy()
    typed["open_accounts"] = typed["open_accounts"].astype(float)
    typed["credit_score"] = typed["credit_score"].astype(float)
    fast = check_schema(typed, preds, schema, config=LOOSE)
    assert fast.column("open_accounts").type_mismatch_rate == pytest.approx(10 / 300)
    assert fast.column("credit_score").null_rate == pytest.approx(20 / 300)
    assert fast.violation_rate == pytest.approx(slow.violation_rate)


def test_chunked_measurement_equals_one_pass(schema) -> None:
    from monitor.checks.schema_check import SchemaAccumulator

    feats, preds = frame(300)
    feats.loc[[5, 150, 299], "annual_income"] = "N/A"
    feats.loc[[7, 200], "home_ownership"] = "OTHER"
    feats.loc[[8, 250], "age"] = None
    feats.loc[250:, "surprise"] = 1
    whole = check_schema(feats, preds, schema, config=LOOSE)
    acc = SchemaAccumulator(schema, LOOSE)
    # The middle chunk lacks a nullable feature entirely: absent means null there.
    chunks = [(0, 100), (100, 200), (200, 300)]
    for lo, hi in chunks:
        part = feats.iloc[lo:hi]
        if lo == 100:
            part = part.drop(columns=["employment_years"])
        acc.add(part.dropna(axis=1, how="all") if lo == 0 else part, preds.iloc[lo:hi])
    chunked = acc.result()
    expected = check_schema(
        feats.assign(employment_years=feats["employment_years"].where(
            ~feats.index.isin(range(100, 200)))), preds, schema, config=LOOSE)
    assert chunked.violating_rows == whole.violating_rows == expected.violating_rows
    assert chunked.columns == expected.columns
    assert chunked.column("surprise").null_rate == pytest.approx(250 / 300)


def test_a_feature_absent_from_every_chunk_is_missing(schema) -> None:
    from monitor.checks.schema_check import SchemaAccumulator

    feats, preds = frame(20)
    acc = SchemaAccumulator(schema, LOOSE)
    acc.add(feats.iloc[:10].drop(columns=["loan_purpose"]), preds.iloc[:10])
    acc.add(feats.iloc[10:].drop(columns=["loan_purpose"]), preds.iloc[10:])
    res = acc.result()
    assert res.missing_columns == ("loan_purpose",) and res.status == "critical"
    assert res.violating_rows == 20


def test_an_empty_window_misses_no_column(schema) -> None:
    """No rows is too few rows, not a schema break: alerts must not page on it."""
    res = check_schema(pd.DataFrame(), pd.Series([], dtype=object), schema, config=LOOSE,
                       min_rows=10)
    assert (res.status, res.rows, res.violation_rate) == ("insufficient_data", 0, 0.0)
    assert res.missing_columns == ()
    assert all(col.state != "missing" for col in res.columns)
    # One row that lacks a column does show it missing.
    feats, preds = frame(1)
    res = check_schema(feats.drop(columns=["age"]), preds, schema, config=LOOSE)
    assert res.missing_columns == ("age",)


def test_predictions_given_as_label_codes_give_the_same_figures(schema) -> None:
    """The read's label codes of the predictions (ints in a short range) decide which
    are unseen classes as the values do: the same counts, examples and verdict."""
    from monitor.checks.schema_check import SchemaAccumulator
    from monitor.schema import int_label_codes

    feats, preds = frame(400)
    rng = np.random.default_rng(6)
    values = rng.choice([0, 1, 1, 2, 7], 400).astype(object)  # 2 and 7: unseen classes
    values[rng.random(400) < 0.1] = None
    preds = pd.Series(values, dtype=object)
    has = preds.notna().to_numpy()
    codes = int_label_codes(np.array([v if v is not None else 0 for v in values],
                                     dtype=np.int64), has)
    assert codes is not None
    by_values, by_codes = SchemaAccumulator(schema, LOOSE), SchemaAccumulator(schema, LOOSE)
    by_values.add(feats, preds)
    by_codes.add(feats, preds, prediction_labels=codes)
    want, got = by_values.result(), by_codes.result()
    assert want.column("prediction").unseen_category_rate > 0.2
    assert got == want

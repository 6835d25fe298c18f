"""The load test's requests: valid rows pass the contract, each invalid kind breaks it.

The verdicts are the schema check's (``monitor.checks.schema_check``) on the generated rows,
and, for numbers no float holds, mqm's log writer's (``make_record``): independent of the
generator's own ``row_violations``.
"""

from __future__ import annotations

import json
import random
import statistics
from typing import Any

import pandas as pd
import pytest

from monitor.checks.schema_check import check_schema
from monitor.config import SchemaCheckConfig
from monitor.errors import MonitorError, RowProblem
from monitor.loadtest.generate import (
    INVALID_KINDS,
    RequestGenerator,
    reference_rows,
    row_violations,
)
from monitor.schema import ModelSchema, load_schema
from monitor.store.logs import make_record
from tests.conftest import ROOT

SCHEMA = load_schema(ROOT / "schemas" / "loan_default.yaml")
ROW_KINDS = [k for k in INVALID_KINDS if k != "malformed"]


@pytest.fixture(scope="module")
def reference() -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    frame = pd.read_parquet(ROOT / "sample_data" / "reference.parquet")
    rows, dropped = reference_rows(SCHEMA, frame)
    assert dropped == 0 and len(rows) == len(frame)
    return frame, rows


def violating_rows(rows: list[dict[str, Any]], schema: ModelSchema = SCHEMA) -> int:
    """Rows with at least one violation, as the schema check counts them (one frame)."""
    frame = pd.DataFrame(rows, columns=schema.feature_names)  # an absent key: NaN
    return check_schema(frame, None, schema, config=SchemaCheckConfig()).violating_rows


def stored(row: dict[str, Any]) -> bool:
    """Whether mqm's log writer accepts the row as a log entry's features."""
    try:
        make_record({"request_id": "r", "timestamp": "2026-10-01T00:00:00Z",
                     "prediction": 0, "features": row})
    except RowProblem:
        return False
    return True


def test_valid_rows_are_reference_rows_and_pass_the_contract(reference) -> None:  # type: ignore[no-untyped-def]
    _frame, ref = reference
    gen = RequestGenerator(SCHEMA, ref)
    rng = random.Random(1)
    rows = [gen.valid_row(rng) for _ in range(2000)]
    assert violating_rows(rows) == 0
    assert all(not row_violations(SCHEMA, r) and stored(r) for r in rows)
    # Whole reference rows: the joint distribution, nulls included, as the model saw it.
    keys = {json.dumps(r, sort_keys=True) for r in ref}
    assert all(json.dumps(r, sort_keys=True) in keys for r in rows)
    assert any(r["employment_years"] is None for r in rows)  # the reference's 2.8% nulls
    assert len({json.dumps(r, sort_keys=True) for r in rows}) > 1500  # drawn, not repeated


@pytest.mark.parametrize("kind", ROW_KINDS)
def test_each_invalid_kind_breaks_the_contract_in_its_column(reference, kind: str) -> None:  # type: ignore[no-untyped-def]
    _, ref = reference
    gen = RequestGenerator(SCHEMA, ref)
    rng = random.Random(2)
    broken = [gen.invalid_row(kind, rng) for _ in range(300)]
    rows = [row for row, _ in broken]
    assert all(row_violations(SCHEMA, r) for r in rows)
    if kind == "non_finite":
        # Infinity in annual_income (no max) fits the contract's range; the writer refuses
        # it, as it does an integer past a float's range.
        assert not any(stored(r) for r in rows)
        values = {repr(r[c]) for r, c in broken}
        assert values == {"inf", "-inf", repr(10**400), repr(-(10**400))}
        return
    assert violating_rows(rows) == len(rows)
    for row, column in broken:
        result = check_schema(pd.DataFrame([row], columns=SCHEMA.feature_names), None,
                              SCHEMA, config=SchemaCheckConfig())
        col = result.column(column)
        assert col.violation_rate == 1.0, (kind, column, row.get(column, None))
        assert sum(c.violation_rate for c in result.columns) == 1.0  # that column alone
        measure = {"wrong_type": col.type_mismatch_rate, "null": col.null_rate,
                   "missing": col.null_rate, "out_of_range": col.out_of_range_rate,
                   "unseen_category": col.unseen_category_rate}[kind]
        assert measure == 1.0
        if kind == "missing":
            assert column not in row
    columns = {c for _, c in broken}
    eligible = {"wrong_type": set(SCHEMA.feature_names),
                "out_of_range": {"age", "annual_income", "loan_amount", "credit_score",
                                 "debt_to_income", "employment_years", "open_accounts"},
                "unseen_category": {"home_ownership", "loan_purpose"}}
    nullable = {f.name for f in SCHEMA.features if f.nullable}
    assert columns == eligible.get(kind, set(SCHEMA.feature_names) - nullable)


def test_contract_only_rows_fit_ranges_and_categories() -> None:
    gen = RequestGenerator(SCHEMA, None)
    rng = random.Random(3)
    rows = [gen.valid_row(rng) for _ in range(2000)]
    assert violating_rows(rows) == 0
    assert {r["home_ownership"] for r in rows} == {"RENT", "MORTGAGE", "OWN"}
    ages = [r["age"] for r in rows]
    assert min(ages) >= 18 and max(ages) <= 100 and max(ages) - min(ages) > 70
    assert all(isinstance(a, int) for a in ages)
    # Nulls only where the contract allows them.
    assert any(r["employment_years"] is None for r in rows)
    assert all(r["age"] is not None for r in rows)


def test_requests_batches_shapes_and_the_invalid_share(reference) -> None:  # type: ignore[no-untyped-def]
    _, ref = reference
    gen = RequestGenerator(SCHEMA, ref, batch_size=(2, 5), shape="object", batch_key="rows",
                           invalid_share=0.3)
    rng = random.Random(4)
    requests = [gen.request(rng) for _ in range(3000)]
    sizes = set()
    for req in requests:
        if req.kind == "malformed":
            with pytest.raises(ValueError):
                json.loads(req.body)
            continue
        body = json.loads(req.body)
        assert list(body) == ["rows"] and len(body["rows"]) == req.rows
        sizes.add(req.rows)
        bad = sum(bool(row_violations(SCHEMA, r)) for r in body["rows"])
        assert bad == (req.kind != "valid")  # one row broken in an invalid request
    assert sizes == {2, 3, 4, 5}
    invalid = sum(r.kind != "valid" for r in requests)
    assert 0.26 < invalid / len(requests) < 0.34  # 0.3 +- 5 standard errors
    assert {r.kind for r in requests} == {"valid", *INVALID_KINDS}

    listed = RequestGenerator(SCHEMA, ref, batch_size=(3, 3), shape="list")
    assert len(json.loads(listed.request(rng).body)) == 3
    single = RequestGenerator(SCHEMA, ref)
    assert isinstance(json.loads(single.request(rng).body), dict)


def test_same_seed_same_requests(reference) -> None:  # type: ignore[no-untyped-def]
    _, ref = reference
    gen = RequestGenerator(SCHEMA, ref, invalid_share=0.5)

    def bodies(seed: int) -> list[bytes]:
        rng = random.Random(seed)
        return [gen.request(rng).body for _ in range(50)]

    assert bodies(5) == bodies(5) != bodies(6)


def test_text_length_sets_free_text_and_so_the_payload_size(reference) -> None:  # type: ignore[no-untyped-def]
    _, ref = reference
    gen = RequestGenerator(SCHEMA, ref, text_length=(500, 800))
    rng = random.Random(7)
    rows = [gen.valid_row(rng) for _ in range(300)]
    texts = [r["application_channel"] for r in rows if r["application_channel"] is not None]
    assert texts and all(500 <= len(t) <= 800 for t in texts)
    assert {r["home_ownership"] for r in rows} <= {"RENT", "MORTGAGE", "OWN"}  # categories kept
    assert violating_rows(rows) == 0
    plain = RequestGenerator(SCHEMA, ref)
    # A null application_channel (2% of the reference) stays null: compare medians.
    assert statistics.median(len(plain.request(rng).body) for _ in range(100)) < 400 < \
        statistics.median(len(gen.request(rng).body) for _ in range(100))


def test_options_that_cannot_apply_are_refused(reference) -> None:  # type: ignore[no-untyped-def]
    _, ref = reference
    with pytest.raises(MonitorError, match="needs a body that holds a list"):
        RequestGenerator(SCHEMA, ref, batch_size=(1, 4))
    with pytest.raises(MonitorError, match="unknown invalid kind 'typo'"):
        RequestGenerator(SCHEMA, ref, invalid_kinds=["typo"])
    with pytest.raises(MonitorError, match="between 0 and 1"):
        RequestGenerator(SCHEMA, ref, invalid_share=1.5)
    loose = SCHEMA.model_copy(update={"features": [
        f.model_copy(update={"nullable": True, "min": None, "max": None})
        for f in SCHEMA.features]})
    with pytest.raises(MonitorError, match="missing: every feature of loan_default is nullable"):
        RequestGenerator(loose, None, invalid_kinds=["missing"])
    with pytest.raises(MonitorError, match="out_of_range: no numeric feature"):
        RequestGenerator(loose, None, invalid_kinds=["out_of_range"])
    # By default only the kinds that apply are used.
    assert "null" not in RequestGenerator(loose, None, invalid_share=0.1).invalid_kinds


def test_reference_rows_that_break_the_contract_are_left_out(reference) -> None:  # type: ignore[no-untyped-def]
    frame, _ = reference
    bad = frame.head(10).copy()
    bad.loc[bad.index[:3], "credit_score"] = 999  # above max 850
    rows, dropped = reference_rows(SCHEMA, bad)
    assert (len(rows), dropped) == (7, 3)
    assert all(r["credit_score"] <= 850 for r in rows)
    # A feature the reference lacks is drawn from the contract, request by request.
    rows, _ = reference_rows(SCHEMA, frame.drop(columns=["loan_purpose"]))
    assert "loan_purpose" not in rows[0]
    drawn = [RequestGenerator(SCHEMA, rows).valid_row(random.Random(i)) for i in range(200)]
    assert {r["loan_purpose"] for r in drawn} == set(SCHEMA.feature("loan_purpose").allowed or [])
    assert violating_rows(drawn) == 0

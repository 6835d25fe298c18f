"""make_record on hostile values: a RowProblem naming the field, or a record the store takes
(issue 13, items 1 and 2). Values here are plain data, as files and callers send them."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.errors import RowProblem
from monitor.store.logs import LogRecord, insert_logs, make_record, record_time
from monitor.store.tables import inference_logs


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = {"k": [value]}
    return value


_text = st.text(alphabet=st.characters(exclude_categories=[]), max_size=20)
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10**5000),
                                                         max_value=10**5000),
    st.floats(), _text, st.datetimes(), st.datetimes(timezones=st.timezones()),
    st.builds(nested, st.integers(min_value=0, max_value=700)),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(_text, inner, max_size=3)),
    max_leaves=10,
)
_fields = st.fixed_dictionaries({
    "request_id": st.one_of(_text, st.integers(), st.floats(), st.none()),
    "timestamp": st.one_of(st.floats(), st.integers(min_value=-(10**30), max_value=10**30),
                           _text, st.datetimes(), st.datetimes(timezones=st.timezones()),
                           st.sampled_from(["0001-01-01T00:00:00+01:00",
                                            "9999-12-31T23:59:59-05:00",
                                            "2026-10-01T00:00:00Z"])),
    "features": st.one_of(st.dictionaries(_text, _values, max_size=4), _values),
    "prediction": _values,
    "probabilities": st.one_of(st.none(), st.dictionaries(_text, _values, max_size=3)),
    "latency_ms": st.one_of(st.none(), st.floats(), st.integers(min_value=-(10**500),
                                                               max_value=10**500), _text),
    "error": st.one_of(st.none(), st.booleans(), _text),
    "error_message": st.one_of(st.none(), _text),
    "model_version": st.one_of(st.none(), _text, st.integers()),
    "fallback_reason": st.one_of(st.none(), _text),
})


def test_hostile_fields_are_refused_or_stored(db_url: str) -> None:
    from monitor.store.db import create_engine, ensure_schema

    records: list[LogRecord] = []
    refused: list[str] = []

    @settings(max_examples=400 if db_url.startswith("sqlite") else 150, deadline=None,
              database=None, suppress_health_check=list(HealthCheck))
    @given(fields=_fields)
    def check(fields: dict[str, Any]) -> None:
        try:
            rec = make_record(fields)
        except RowProblem as exc:  # nothing else may escape
            # A feature may be named "" (a JSON key like any other): the problem still
            # names it, quoted.
            assert isinstance(exc.field, str) and repr(exc.field) in str(exc)
            assert len(str(exc)) < 400
            refused.append(exc.field)
            return
        records.append(rec)

    check()
    engine = create_engine(db_url)
    try:
        ensure_schema(engine)
        unique = list({r.request_id: r for r in records}.values())
        with engine.begin() as conn:
            added = insert_logs(conn, "m", unique)
        with engine.connect() as conn:
            stored = conn.execute(sa.select(sa.func.count()).select_from(inference_logs)).scalar()
    finally:
        engine.dispose()
    assert added == stored == len(unique)
    assert refused  # the strategies do reach the refusals


@pytest.mark.parametrize(("value", "problem"), [
    (1e20, "1e+20 is out of range as epoch seconds"),
    (10**400, "is out of range as epoch seconds"),
    (-1e20, "-1e+20 is out of range as epoch seconds"),
    (math.nan, "is missing"),
    ("0001-01-01T00:00:00+01:00", "is out of range once converted to UTC"),
    ("9999-12-31T23:59:59-05:00", "is out of range once converted to UTC"),
    (datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))),
     "is out of range once converted to UTC"),
    ("9999-12-31T23:59:59Z", "is outside the supported range 1900-2199"),
    ("1899-12-31T23:59:59Z", "is outside the supported range 1900-2199"),
    (datetime(2200, 1, 1, tzinfo=UTC), "is outside the supported range 1900-2199"),
    ("x" * 5000, "cannot read 'xxxxxxxx"),
], ids=["epoch-1e20", "epoch-10**400", "epoch--1e20", "nan", "year-0-in-utc",
        "year-10000-in-utc", "datetime-year-0-in-utc", "9999-12-31", "1899", "2200",
        "long-text"])
def test_times_out_of_range_are_one_clear_problem(value: Any, problem: str) -> None:
    with pytest.raises(RowProblem) as err:
        record_time("timestamp", value)
    assert err.value.field == "timestamp" and problem in str(err.value)
    assert len(str(err.value)) < 200  # a long value is quoted cut short


def test_the_range_ends_are_stored() -> None:
    assert record_time("ts", "1900-01-01T00:00:00Z") == datetime(1900, 1, 1, tzinfo=UTC)
    assert record_time("ts", "2199-12-31T23:59:59.999999Z").year == 2199

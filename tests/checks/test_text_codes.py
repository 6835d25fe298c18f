"""Checks judging text columns per distinct text (``TextCodes``, from log blocks) give what
they give on the decoded column, value by value: the schema check's counts, masks and
examples, and drift's current-window statistics."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from monitor.checks import drift
from monitor.checks.schema_check import _Counts, _measure
from monitor.store.blocks import _text_codes
from monitor.store.columnar import concat, decode, encode
from monitor.store.frames import _NAN
from monitor.text_codes import TextCodes

M = _NAN  # the row reader's filler for a missing key, matched by identity

# Columns of texts, floats and nulls (what gets codes), in row orders that move each
# value's first row around.
CASES: dict[str, list[Any]] = {
    "categories": ["RENT", "OWN", "RENT", "CASTLE", "OWN", "MORTGAGE", "CASTLE"],
    "categories+None+missing": [None, "RENT", M, "CASTLE", "RENT", None, "ᚠ", M],
    "numeric texts": ["12.5", "7", "x", "7", "1e3", "", "-3"],
    "floats+N/A": [1.5, "N/A", 250.0, -3.0, "N/A", 7.0, 1e9, "unknown", 2.0],
    "floats+texts+nulls": [None, 2.5, M, "N/A", float("nan"), 3.0, "7", -0.0, math.inf],
    "integral floats+texts": [1.0, 2.0, "x", 30.0, 2.5, None, "y", "x"],
    "only nulls and a text": [None, M, None, "a"],
    "texts only once": ["a", "b", "c", "d", "e"],
}

# (type, nullable, min, max, allowed) as a contract declares a column.
SPECS: list[tuple[str, bool, float | None, float | None, list[Any] | None]] = [
    ("category", False, None, None, ["RENT", "OWN", "MORTGAGE", 7, True]),
    ("category", True, None, None, ["x"]),
    ("string", True, None, None, None),
    ("string", False, None, None, None),
    ("float", False, 0.0, 100.0, None),
    ("float", True, None, 10.0, None),
    ("int", False, 0, 5, None),
    ("int", True, None, None, None),
    ("bool", False, None, None, None),
]


def coded_column(values: list[Any]) -> tuple[pd.Series, TextCodes]:
    """The decoded column and its codes, from two parts coded apart (as blocks are: equal
    texts repeat across their dictionaries), coded in reverse row order and put back in
    order (as the reader sorts rows): codes are not in the order of their first row."""
    backwards = values[::-1]
    half = len(values) // 2
    coded = concat([encode(backwards[:half], M), encode(backwards[half:], M)])
    coded = coded.take(np.arange(len(values))[::-1])
    texts = _text_codes(coded)
    assert texts is not None
    return pd.Series(decode(coded), dtype=object), texts


def measured(series: pd.Series, spec: tuple[Any, ...], texts: TextCodes | None
             ) -> tuple[_Counts, np.ndarray, np.ndarray]:
    ftype, nullable, low, high, allowed = spec
    counts, bits = _Counts(), []
    violating = _measure(series, counts, ftype=ftype, nullable=nullable, low=low, high=high,
                         allowed=allowed, bits=bits, texts=texts)
    return counts, violating, bits[0]


@pytest.mark.parametrize("values", list(CASES.values()), ids=list(CASES))
def test_text_codes_are_the_columns_texts(values: list[Any]) -> None:
    series, texts = coded_column(values)
    assert len(set(texts.words)) == len(texts.words)  # distinct, whatever the parts held
    is_text = np.array([isinstance(v, str) for v in values])
    assert (texts.codes >= 0).tolist() == is_text.tolist()
    assert texts.words[texts.codes[is_text]].tolist() == [v for v in values if isinstance(v, str)]
    assert texts.null().tolist() == series.isna().tolist()
    if texts.numbers is not None:
        floats = np.array([type(v) is float and v is not M for v in values])
        assert np.array_equal(texts.numbers[floats], np.array(values, dtype=object)[floats]
                              .astype(float), equal_nan=True)


def test_columns_with_other_values_get_no_codes() -> None:
    for values in ([1, "a"], [True, "a"], [[1], "a"], [1.5, 2.5], [None, M]):
        assert _text_codes(encode(values, M)) is None, values


@pytest.mark.parametrize("spec", SPECS, ids=[f"{s[0]}-{i}" for i, s in enumerate(SPECS)])
@pytest.mark.parametrize("values", list(CASES.values()), ids=list(CASES))
def test_schema_check_per_distinct_text_equals_value_by_value(
        values: list[Any], spec: tuple[Any, ...]) -> None:
    series, texts = coded_column(values)
    want = measured(series, spec, None)
    got = measured(series, spec, texts)
    assert got[0] == want[0]  # every count and the examples, in order
    assert got[1].tolist() == want[1].tolist()
    assert got[2].tolist() == want[2].tolist()


@pytest.mark.parametrize("values", list(CASES.values()), ids=list(CASES))
def test_drift_statistics_from_codes_equal_the_columns(values: list[Any]) -> None:
    series, texts = coded_column(values)
    numbers = drift._text_numbers(texts)
    if numbers is not None:  # no text reads as a number
        assert np.array_equal(numbers, drift._numbers(series), equal_nan=True)
        got, want = drift._num_cur(series, texts), drift._num_cur(series)
        assert np.array_equal(got.values, want.values) and got.null_rate == want.null_rate
    else:
        assert pd.to_numeric(pd.Series(texts.words), errors="coerce").notna().any()
    if texts.numbers is None:
        codes, labels = drift._encode_texts(texts)
        want_codes, want_labels = drift._encode(series)
        assert labels == want_labels
        assert codes.dtype == want_codes.dtype and codes.tolist() == want_codes.tolist()
        ref = drift._CatRef(("OWN", "RENT"), {"OWN": 0, "RENT": 1}, np.array([3, 4]),
                            np.array([0, 1, 1], dtype=np.uint8), 0.0)
        got_cur, want_cur = drift._cat_cur(series, ref, texts), drift._cat_cur(series, ref)
        assert got_cur.labels == want_cur.labels
        assert got_cur.codes.tolist() == want_cur.codes.tolist()
        assert got_cur.counts.tolist() == want_cur.counts.tolist()
        assert (got_cur.null_rate, got_cur.unseen_share) == (want_cur.null_rate,
                                                             want_cur.unseen_share)

"""``ClassRows``: predictions and labels coded once, against the text path they replace
(``label_text``, ``notna``, comparisons of the texts)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from monitor.checks.classes import ClassRows
from monitor.checks.estimated import _codes
from monitor.schema import label_text
from monitor.text_codes import TextCodes

# Values a log holds as predictions or labels: ints, their float and bool look-alikes
# (label_of reads 1.0 as "1" and True as "True"), texts, and both kinds of null.
VALUES = np.array([0, 1, 2, 1.0, 2.5, True, False, "1", "a", "b", None, math.nan],
                  dtype=object)


def _series(rng: np.random.Generator, n: int, values: np.ndarray = VALUES) -> pd.Series:
    return pd.Series(values[rng.integers(0, len(values), n)], dtype=object)


def _texts(rows: ClassRows, codes: np.ndarray) -> np.ndarray:
    out = np.full(len(codes), None, dtype=object)
    out[codes >= 0] = rows.texts[codes[codes >= 0]]
    return out


@pytest.mark.parametrize("seed", range(5))
def test_codes_name_label_texts_and_masks_equal_the_text_path(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pred, label = _series(rng, 5000), _series(rng, 5000)
    rows = ClassRows.of(pred, label)
    pred_text, label_text_ = label_text(pred).to_numpy(), label_text(label).to_numpy()
    assert list(_texts(rows, rows.pred)) == list(pred_text)
    assert list(_texts(rows, rows.label)) == list(label_text_)
    assert len(set(rows.texts)) == len(rows.texts)  # each text once
    has_pred, has_label = pred.notna().to_numpy(), label.notna().to_numpy()
    assert np.array_equal(rows.has_pred, has_pred)
    assert np.array_equal(rows.labelled, has_pred & has_label)
    assert np.array_equal(rows.right, (pred_text == label_text_) & has_pred & has_label)
    assert rows.present() == {t for t in [*pred_text, *label_text_] if t is not None}
    # Given label_text's texts, the same codes without converting them again.
    given = ClassRows.of(label_text(pred), label_text(label), texts=True)
    assert list(given.texts) == list(rows.texts)
    assert np.array_equal(given.pred, rows.pred) and np.array_equal(given.label, rows.label)


@pytest.mark.parametrize("classes", [("0", "1"), ("a", "b", "1", "True"), ("z",)])
def test_class_indices_equal_the_categorical_codes(classes: tuple[str, ...]) -> None:
    rng = np.random.default_rng(7)
    pred = _series(rng, 3000)
    rows = ClassRows.of(pred, _series(rng, 3000))
    assert np.array_equal(rows.codes_of(classes)[rows.pred], _codes(pred, classes))


def test_a_text_no_row_holds_matches_no_row_and_a_pick_keeps_the_texts() -> None:
    rng = np.random.default_rng(3)
    rows = ClassRows.of(_series(rng, 1000), _series(rng, 1000))
    absent = rows.code("never logged")
    assert absent >= 0 and not (rows.pred == absent).any() and not (rows.label == absent).any()
    keep = rng.random(1000) < 0.3
    picked = rows.take(keep)
    assert picked.texts is rows.texts
    assert np.array_equal(picked.pred, rows.pred[keep])
    assert np.array_equal(picked.right, rows.right[keep])


def test_many_classes_widen_the_codes() -> None:
    """Past 127 texts the codes no longer fit a byte: the type grows, and the code of a
    text no row holds still fits it."""
    names = np.array([f"c{i}" for i in range(300)], dtype=object)
    rng = np.random.default_rng(5)
    pred, label = _series(rng, 4000, names), _series(rng, 4000, names)
    rows = ClassRows.of(pred, label)
    assert rows.pred.dtype == np.int16 and rows.label.dtype == np.int16
    assert list(_texts(rows, rows.label)) == list(label)
    assert not (rows.label == rows.code("c300")).any()
    for size in (126, 127, 128):  # the edge of a byte: codes, -1 and the "none" code
        few = names[:size]
        coded = ClassRows.of(pd.Series(few), pd.Series(few[::-1].copy()))
        assert list(_texts(coded, coded.pred)) == list(few)
        assert coded.code("absent") not in set(coded.pred.tolist())


def test_lengths_must_match() -> None:
    with pytest.raises(ValueError, match="same length"):
        ClassRows.of(pd.Series(["a"]), pd.Series(["a", "b"]))


def _coded(values: pd.Series) -> TextCodes:
    """``values``' label_text texts as codes into their distinct texts (in an order of
    their own: the read's, not the rows')."""
    texts = label_text(values).to_numpy()
    words = np.array(sorted({t for t in texts if t is not None}, reverse=True), dtype=object)
    index = {t: i for i, t in enumerate(words)}
    return TextCodes(np.array([index.get(t, -1) if t is not None else -1 for t in texts],
                              dtype=np.int16), words)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("many", [False, True], ids=["few", "300-texts"])
def test_codes_from_the_read_give_the_rows_of_the_text_path(seed: int, many: bool) -> None:
    """``of_codes`` (the read's codes of both columns) names each row's prediction and
    label as ``of`` does, and so gives the same masks; only the texts' order differs."""
    rng = np.random.default_rng(seed)
    values = np.array([f"c{i}" for i in range(300)] + [None], dtype=object) if many else VALUES
    pred, label = _series(rng, 4000, values), _series(rng, 4000, values[::-1])
    want, got = ClassRows.of(pred, label), ClassRows.of_codes(_coded(pred), _coded(label))
    assert list(_texts(got, got.pred)) == list(_texts(want, want.pred))
    assert list(_texts(got, got.label)) == list(_texts(want, want.label))
    assert len(set(got.texts)) == len(got.texts) and set(got.texts) == set(want.texts)
    assert got.pred.dtype == want.pred.dtype and got.label.dtype == want.label.dtype
    for mask in ("has_pred", "labelled", "right"):
        assert np.array_equal(getattr(got, mask), getattr(want, mask)), mask
    assert got.present() == want.present()
    with pytest.raises(ValueError, match="same length"):
        ClassRows.of_codes(_coded(pred), _coded(label[:10]))

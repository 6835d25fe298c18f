"""A classifier's predictions and labels as codes into one list of class texts.

Performance, its estimate and versions all compare predictions with labels and classes,
and all skip the rows without one. On a million rows each pass over the texts costs
(``notna`` of an object column 0.02 s, a comparison of Python strings as much): the run
codes both columns once (``ClassRows.of``) and every check works on small ints.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from monitor.schema import label_text
from monitor.text_codes import TextCodes

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ClassRows"]


@dataclass(frozen=True, eq=False)
class ClassRows:
    """Per row, the codes of its prediction and label into ``texts`` (``label_text``'s
    texts, each once), -1 where the value is null."""

    texts: np.ndarray  # object: the distinct texts
    pred: np.ndarray  # signed ints, -1: no prediction
    label: np.ndarray  # the same type, -1: no label

    @classmethod
    def of(cls, predictions: pd.Series, labels: pd.Series, *, texts: bool = False
           ) -> ClassRows:
        """Both columns coded; ``texts``: they are ``label_text``'s already (its pass
        over texts with nulls among them is a ``notna`` and a copy: 0.03 s a million)."""
        import pandas as pd

        if len(predictions) != len(labels):
            raise ValueError("predictions and labels must have the same length")
        if not texts:
            predictions, labels = label_text(predictions), label_text(labels)
        pred, pred_texts = pd.factorize(predictions.to_numpy(), use_na_sentinel=True)
        label, label_texts = pd.factorize(labels.to_numpy(), use_na_sentinel=True)
        return cls.of_codes(TextCodes(pred, np.asarray(pred_texts, dtype=object)),
                            TextCodes(label, np.asarray(label_texts, dtype=object)))

    @classmethod
    def of_codes(cls, predictions: TextCodes, labels: TextCodes) -> ClassRows:
        """``of`` from both columns' ``label_text`` texts as codes (``of`` factorizes
        them; a read from log blocks has them): the prediction's texts first, the labels'
        new ones after them."""
        if len(predictions) != len(labels):
            raise ValueError("predictions and labels must have the same length")
        # The labels' few distinct texts onto the predictions' codes, new ones after them.
        merged = list(predictions.words)
        known = {t: i for i, t in enumerate(merged)}
        for text in labels.words:
            if text not in known:
                known[text] = len(merged)
                merged.append(text)
        # The smallest signed type that holds every code and -1: a classifier's few
        # classes take a byte a row, not factorize's eight.
        small = np.min_scalar_type(-(len(merged) + 1))  # ``code``'s "none" fits too
        shift = np.array([known[t] for t in labels.words] + [-1], dtype=small)
        # -1 (null) indexes the last entry.
        return cls(np.asarray(merged, dtype=object), predictions.codes.astype(small),
                   shift[labels.codes])

    def __len__(self) -> int:
        return len(self.pred)

    def code(self, text: str) -> int:
        """``text``'s code; one no row has when no row holds it (never -1)."""
        where = np.flatnonzero(self.texts == text)
        return int(where[0]) if len(where) else len(self.texts)

    def codes_of(self, classes: tuple[str, ...] | list[str]) -> np.ndarray:
        """Per text, its index in ``classes`` (-1 outside them), with a last entry -1 for
        a null: ``lookup[codes]`` maps rows to class indices."""
        index = {c: i for i, c in enumerate(classes)}
        return np.array([index.get(t, -1) for t in self.texts] + [-1],
                        dtype=np.min_scalar_type(-(len(classes) + 1)))

    @cached_property
    def has_pred(self) -> np.ndarray:
        out: np.ndarray = self.pred >= 0
        return out

    @cached_property
    def labelled(self) -> np.ndarray:
        """Rows with a prediction and a label."""
        out: np.ndarray = self.has_pred & (self.label >= 0)
        return out

    @cached_property
    def right(self) -> np.ndarray:
        """Labelled rows whose prediction is the label."""
        out: np.ndarray = (self.pred == self.label) & self.labelled
        return out

    def take(self, keep: np.ndarray) -> ClassRows:
        """The rows ``keep`` (a mask) picks, with the same texts."""
        return ClassRows(self.texts, self.pred[keep], self.label[keep])

    def present(self) -> set[str]:
        """The texts some row predicts or is labelled with."""
        used = np.union1d(self.pred, self.label)
        return {str(t) for t in self.texts[used[used >= 0]]}

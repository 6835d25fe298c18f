"""A text column as codes into its distinct texts, which log blocks store already.

A window read from log blocks knows, for each column whose values are texts or nulls
(a category, a free-text field), each row's index into the column's distinct texts. A
check then judges each distinct text once and looks the verdicts up per row, instead of
a pass of pandas over a million Python strings per question (null? which type? allowed?
which label?).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TextCodes"]


@dataclass(frozen=True, eq=False)
class TextCodes:
    """One column whose every row is a text, a float or null (None or NaN):
    ``words[codes[i]]`` is row i's text; where ``codes[i] == -1`` the row is
    ``numbers[i]``, a float, or null where that is NaN (every such row is null when
    ``numbers`` is None). ``words`` are distinct."""

    codes: np.ndarray  # a signed int type, one per row
    words: np.ndarray  # object array of distinct str
    numbers: np.ndarray | None = None  # float64, one per row; NaN at texts and nulls

    def null(self) -> np.ndarray:
        """Per row, whether it is null."""
        if self.numbers is None:
            return np.asarray(self.codes < 0)
        return np.asarray((self.codes < 0) & np.isnan(self.numbers))

    def __len__(self) -> int:
        return len(self.codes)

    def texts(self) -> np.ndarray:
        """Per row its text, None where it has none (an object array)."""
        table = np.empty(len(self.words) + 1, dtype=object)  # the last: code -1
        table[:-1] = self.words
        out: np.ndarray = table[self.codes]
        return out

    def take(self, keep: np.ndarray) -> TextCodes:
        """The rows ``keep`` (a mask) picks, with the same words."""
        return TextCodes(self.codes[keep], self.words,
                         None if self.numbers is None else self.numbers[keep])

    def first_seen(self) -> np.ndarray:
        """The codes that occur, in the order of their first row (``pd.factorize``'s
        order of uniques)."""
        import pandas as pd

        present = self.codes[self.codes >= 0]
        if len(self.words) <= 1:
            return np.unique(present)
        _, order = pd.factorize(present)
        return np.asarray(order, dtype=np.int64)

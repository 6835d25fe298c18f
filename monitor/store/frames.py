"""Columns built batch by batch from raw rows: JSON parsed with orjson, each column typed
as ``pd.DataFrame.from_records`` would type it, without holding a window's dicts."""


from __future__ import annotations

import functools
import gc
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import compress, repeat
from operator import is_, itemgetter
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import orjson

from monitor.errors import DatabaseError

if TYPE_CHECKING:
    import pandas as pd

    from monitor.text_codes import TextCodes

__all__ = [
    "FETCH_ROWS",
    "META_COLUMNS",
    "ColumnBuilder",
    "WindowBuilder",
    "WindowFrames",
    "gc_paused",
    "loads_each",
    "shared",
    "typed_column",
]

META_COLUMNS = (
    "request_id", "ts", "model_version", "prediction", "latency_ms", "error", "error_message",
    "label_time",
)
FETCH_ROWS = 10_000  # rows per fetchmany: large enough to amortise calls, small in memory
_NAN = float("nan")  # what from_records puts where a row lacks a key


class WindowFrames(NamedTuple):
    meta: pd.DataFrame
    features: pd.DataFrame
    probabilities: pd.DataFrame
    labels: pd.Series
    # Why the serving guard answered with its default (None: the model answered); only
    # mqm's own table records it.
    fallback_reasons: pd.Series | None = None
    # Features whose rows are all texts or nulls, as codes into their distinct texts;
    # only a read from log blocks has them (the blocks store them so).
    texts: Mapping[str, TextCodes] | None = None
    # Each row's label as ``label_text`` gives it, as codes into the distinct texts (-1:
    # none), when the read knows it from the labels' codes without looking at the values
    # (log blocks whose labels are ints in a short range or texts, and nulls): the checks
    # then need no pass over a million Python values. The same of the predictions.
    label_codes: TextCodes | None = None
    prediction_codes: TextCodes | None = None
    # Each row's model version as codes into the distinct versions (-1: none), when the
    # read has them (log blocks whose versions are all texts, or ints, or nulls).
    version_codes: TextCodes | None = None


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic GC paused: millions of new containers trigger collections that rescan
    the growing column lists each time (4x slower). Overlapping threads may end with one
    unpaused: slower, never wrong."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none."""
    import ctypes
    import ctypes.util

    try:
        trim: Callable[[int], int] = ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    return trim


def free_memory() -> None:
    """Hand the memory freed inside the C heap back to the system. glibc keeps what a
    big read frees (a window's decompressed blocks, its coded columns) for later
    allocations, so a check's peak RSS counted it as well as the frames built after it:
    a 1M-row check peaked at 515 MB, of which 60 MB were such free heap. Done after the
    read's large frees only (a trim is a few milliseconds; ``MALLOC_TRIM_THRESHOLD_=0``
    trims on every free and cost the check 0.4 s of page faults)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


# orjson reads an integer literal beyond 64 bits as a float (>= 2**64 in size) where
# Python's json keeps an exact int. Parsed values are checked for such floats (cheap:
# they are typed anyway) and a batch that has one is read again by Python's json.
_HUGE = 2.0**64
_FLOAT = frozenset({float})
_SUSPECT = frozenset({float, list, dict})
_SCALARS = frozenset({str, int, float, bool, type(None)})
_NUMBERS = frozenset({int, float})
_STORED = frozenset({str, int, float, type(None)})  # what a JSON column gives back


def _huge(value: Any) -> bool:
    kind = type(value)
    if kind is float:
        return bool(abs(value) >= _HUGE)
    if kind is list:
        return any(map(_huge, value))
    if kind is dict:
        return any(map(_huge, value.values()))
    return False


def _has_huge(values: Sequence[Any], kinds: frozenset[type], nan_free: bool = True) -> bool:
    """Whether orjson may have read an integer beyond 64 bits among ``values``."""
    if not kinds & _SUSPECT:
        return False
    if kinds == _FLOAT and nan_free:  # the usual case; orjson itself never gives NaN
        return bool(max(values) >= _HUGE or min(values) <= -_HUGE)
    if kinds <= _SCALARS:  # test the floats in C (NaN tests false)
        floats = compress(values, map(is_, map(type, values), repeat(float)))
        return any(map(_HUGE.__le__, map(abs, floats)))
    return any(map(_huge, values))


def _load_one(text: str | bytes | float | None) -> Any:
    if text is None or isinstance(text, int | float):
        return text
    try:
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:  # also read by Python's json: NaN, lone surrogates
            return json.loads(text)
        return json.loads(text) if _huge(value) else value
    except ValueError as exc:
        raise DatabaseError(f"a stored JSON value is not valid JSON ({exc})") from None


def _load_all(texts: Sequence[Any]) -> list[Any]:
    return list(map(_load_one, texts))


def loads_each(texts: Sequence[str | bytes | float | None], *, checked: bool = True
               ) -> list[Any]:
    """Each JSON text parsed as Python's json would (SQL NULL stays None), mostly by orjson.

    A number passes as it is: SQLite gives a JSON column NUMERIC affinity, so it
    stores the text of a bare JSON number as that number (SQLAlchemy reads it so too).
    ``checked=False`` leaves the huge-integer check to the caller (ColumnBuilder).
    """
    kinds = frozenset(map(type, texts))
    try:
        if kinds == {str}:
            values = list(map(orjson.loads, cast("Sequence[str]", texts)))
        elif kinds <= _NUMBERS:
            return list(texts)
        elif kinds <= _STORED:
            values = [orjson.loads(t) if type(t) is str else t for t in texts]
        else:
            return _load_all(texts)
    except orjson.JSONDecodeError:
        return _load_all(texts)
    if checked and _has_huge(values, frozenset(map(type, values))):
        return _load_all(texts)
    return values


Part = tuple[str, Sequence[Any], frozenset[type]]  # key, values of the batch, their types


class ColumnBuilder:
    """Rows of JSON objects turned into columns, one batch at a time.

    Columns are in order of first appearance, as from_records orders them. A batch
    whose rows all have the same keys (the usual case) is transposed in C; other
    batches row by row. Each column's value types are kept to type it at the end.
    """

    def __init__(self, key_orders: bool = False) -> None:
        self.columns: dict[str, list[Any]] = {}
        self.kinds: dict[str, set[type]] = {}
        self.seen: dict[str, dict[Any, Any]] = {}
        self.rows = 0
        # With key_orders: each row's keys in their order, as an index into ``orders``
        # (log blocks need it to order columns as this builder does for any cut).
        self.orders: dict[tuple[str, ...], int] | None = {} if key_orders else None
        self.order_of_row: list[int] = []

    def add(self, objects: list[Any], texts: Sequence[Any] | None = None) -> None:
        """Add rows (a row that is not an object has no keys). With ``texts``, parsed by
        ``loads_each(texts, checked=False)``, a batch with a huge integer is read again."""
        n = len(objects)
        if not n:
            return
        if self.orders is not None:
            orders = self.orders
            self.order_of_row.extend(
                orders.setdefault(keys, len(orders))
                for keys in (tuple(o) if type(o) is dict else () for o in objects))
        parts, nan_free = self._transpose(objects)
        if texts is not None and any(_has_huge(v, kinds, nan_free) for _, v, kinds in parts):
            parts, _ = self._transpose(_load_all(texts))
        for key, values, kinds in parts:
            col = self.columns.get(key)
            if col is None:
                col = self.columns[key] = [_NAN] * self.rows
                self.kinds[key] = {float} if self.rows else set()
            col.extend(shared(values, self.seen.setdefault(key, {}), kinds)
                       if kinds <= _TEXTS else values)
            self.kinds[key].update(kinds)
        self.rows += n
        for key, col in self.columns.items():
            if len(col) < self.rows:
                col.extend([_NAN] * (self.rows - len(col)))
                self.kinds[key].add(float)

    def _transpose(self, objects: list[Any]) -> tuple[list[Part], bool]:
        """Each key's values over the batch, and whether none is NaN for a missing key."""
        if set(map(type, objects)) != {dict}:
            objects = [o if isinstance(o, dict) else {} for o in objects]
        keys = tuple(objects[0])
        if set(map(len, objects)) == {len(keys)}:
            if not keys:
                return [], True
            try:  # same number of keys and all of the first row's: the same keys
                rows = list(map(itemgetter(*keys), objects))
            except KeyError:
                pass
            else:
                columns = zip(*rows, strict=True) if len(keys) > 1 else [rows]
                return [(k, v, frozenset(map(type, v)))
                        for k, v in zip(keys, columns, strict=True)], True
        batch: dict[str, list[Any]] = {}
        for i, obj in enumerate(objects):
            for key, value in obj.items():
                target = batch.get(key)
                if target is None:
                    target = batch[key] = [_NAN] * len(objects)
                target[i] = value
        return [(k, v, frozenset(map(type, v))) for k, v in batch.items()], False

    def frame(self) -> pd.DataFrame:
        """The frame, emptying the builder as it goes so that the lists are freed early."""
        import pandas as pd

        data = {}
        while self.columns:
            key = next(iter(self.columns))
            data[key] = typed_column(self.columns.pop(key), frozenset(self.kinds.pop(key)))
        # copy=False: the arrays are ours; consolidating them into blocks would copy all.
        return pd.DataFrame(data, index=pd.RangeIndex(self.rows), copy=False)


_TEXTS = frozenset({str, type(None)})
_MAX_SHARED = 10_000  # distinct texts per column worth sharing; past that, ids or free text


def shared(values: Sequence[Any], seen: dict[Any, Any],
           kinds: frozenset[type] | None = None) -> Iterable[Any]:
    """Equal texts as one object: a category repeated over 1M rows costs 8 MB, not 60.

    Only texts and None: as dict keys 1, 1.0 and True would merge.
    """
    if len(seen) > _MAX_SHARED or not (kinds or frozenset(map(type, values))) <= _TEXTS:
        return values
    return map(seen.setdefault, values, values)


_NUMPY = {frozenset({float}): "float64", frozenset({float, type(None)}): "float64",
          frozenset({int}): "int64", frozenset({bool}): "bool"}


def typed_column(values: list[Any], kinds: frozenset[type] | None = None) -> Any:
    """``values`` typed as from_records types them, skipping its scan where types tell:
    uniform numbers go to numpy, scalars with a text among them stay raw objects (unless
    pandas infers string dtypes); the rest gets pandas' own inference, as in from_records.
    """
    import numpy as np
    import pandas as pd

    if kinds is None:
        kinds = frozenset(map(type, values))
    kind = _NUMPY.get(kinds)
    if kind is not None:
        try:
            return np.array(values, dtype=kind)
        except OverflowError:  # beyond int64: pandas decides (uint64 or object)
            pass
    if str in kinds and kinds <= _SCALARS and not pd.get_option("future.infer_string"):
        return np.array(values, dtype=object)
    return values


def _times(values: list[Any]) -> pd.DatetimeIndex:
    """Aware UTC times; an index, which a frame takes as it is (a Series gets aligned).

    No cache: its duplicate search took a second on 1M mostly missing label times.
    """
    import pandas as pd

    if any(isinstance(v, str) for v in values):
        times = pd.to_datetime(values, utc=True, format="ISO8601", cache=False)
    else:
        times = pd.to_datetime(values, utc=True, cache=False)
    return pd.DatetimeIndex(times, dtype="datetime64[ns, UTC]")


class WindowBuilder:
    """A window's rows, added batch by batch, built into frames at the end."""

    def __init__(self, key_orders: bool = False) -> None:
        self.meta: dict[str, list[Any]] = {name: [] for name in META_COLUMNS}
        self.features = ColumnBuilder(key_orders)
        self.probabilities = ColumnBuilder(key_orders)
        self.labels: list[Any] = []
        self.ids: list[int] = []  # mqm's own table only: row ids and fallback reasons
        self.fallback: list[Any] = []
        self._seen: dict[str, dict[Any, Any]] = {"model_version": {}, "error_message": {},
                                                 "fallback": {}}

    @property
    def rows(self) -> int:
        return len(self.labels)

    def add(self, meta: dict[str, Sequence[Any]], features: list[Any],
            probabilities: list[Any], labels: list[Any], *,
            feature_texts: Sequence[Any] | None = None,
            probability_texts: Sequence[Any] | None = None) -> None:
        """One batch; ``meta`` maps META_COLUMNS to values; texts as in ColumnBuilder.add."""
        for name in META_COLUMNS:
            values = meta[name]
            seen = self._seen.get(name)
            self.meta[name].extend(values if seen is None else shared(values, seen))
        self.features.add(features, feature_texts)
        self.probabilities.add(probabilities, probability_texts)
        self.labels.extend(labels)

    def build(self) -> WindowFrames:
        import pandas as pd

        n = self.rows
        index = pd.RangeIndex(n)
        meta: dict[str, Any] = {}
        for name in META_COLUMNS:
            values = self.meta.pop(name)
            meta[name] = _times(values) if name in ("ts", "label_time") else typed_column(values)
        meta_frame = pd.DataFrame(meta, index=index, copy=False)
        features = self.features.frame()
        probabilities = self.probabilities.frame()
        labels = pd.Series(self.labels, index=index, dtype=object, name="label")
        reasons = (pd.Series(self.fallback, index=index, dtype=object, name="fallback_reason")
                   if len(self.fallback) == n else None)
        return WindowFrames(meta_frame, features, probabilities, labels, reasons)




"""Columns of JSON values in a typed, columnar form (Arrow) that decodes to exactly the
column the row reader builds from the same rows.

A column of Python values (as ``reading.ColumnBuilder`` and ``WindowBuilder`` hold them)
becomes a code per row and one typed array per kind of value:

====  =========================================  ======================================
code  value                                      stored in
====  =========================================  ======================================
0     no such key in the row (the row reader's   nothing (decodes to NaN, as from_records
      NaN filler)                                fills it)
1     None (JSON null)                           nothing
2     float                                      ``f`` float64
3     int within 64 bits                         ``i`` int64
4     bool                                       ``i`` int64 (0/1)
5     str                                        ``s`` dictionary-encoded text
6     anything else: lists, objects, integers    ``j`` its text for Python's json
      beyond 64 bits, text that is not UTF-8
====  =========================================  ======================================

Decoding concatenates these arrays over blocks and types the result. Where the codes
show what ``typed_column`` would make of the values (all floats, all ints, all bools,
all texts), the typed array is built from the parts directly; otherwise the Python
values are rebuilt and typed by ``typed_column`` itself, so both readers agree by
construction. bench/check.py measures what it saves.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import is_
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["MISSING", "Coded", "concat", "decode", "decode_objects", "encode", "from_arrow",
           "kinds_of", "to_arrow"]

MISSING, NONE, FLOAT, INT, BOOL, STR, OTHER = range(7)
_CODE: dict[type, int] = {type(None): NONE, float: FLOAT, int: INT, bool: BOOL, str: STR}
_NAN = float("nan")
_INT64 = np.iinfo(np.int64)
_SCALAR_CODES = frozenset({MISSING, NONE, FLOAT, INT, BOOL, STR})


@dataclass
class Coded:
    """One column over some rows: a code per row and the typed parts it points into.

    Parts are full length (one slot per row); a slot is meaningful only where the code
    says so. ``s`` holds indices into ``words`` (-1 elsewhere).
    """

    codes: np.ndarray  # int8
    f: np.ndarray | None = None  # float64
    i: np.ndarray | None = None  # int64
    s: np.ndarray | None = None  # int32 indices into words (-1: not a text)
    words: np.ndarray | None = None  # object array of str
    j: np.ndarray | None = None  # object array of str (json text) or None

    def __len__(self) -> int:
        return len(self.codes)

    def take(self, index: np.ndarray) -> Coded:
        """The rows at ``index`` (a boolean mask or positions)."""
        def pick(part: np.ndarray | None) -> np.ndarray | None:
            return None if part is None else part[index]

        return Coded(self.codes[index], pick(self.f), pick(self.i), pick(self.s), self.words,
                     pick(self.j))

    def present(self) -> bool:
        """Whether any row has the key (a column no row has is no column)."""
        return bool((self.codes != MISSING).any())


def encode(values: Sequence[Any], missing: Any = None) -> Coded:
    """``values`` coded; ``missing`` is the row reader's filler for an absent key (matched
    by identity, so a real NaN stays a float)."""
    n = len(values)
    codes = np.fromiter(map(_CODE.get, map(type, values), repeat(OTHER)), dtype=np.int8,
                        count=n)
    if missing is not None:
        absent = np.fromiter(map(is_, values, repeat(missing)), dtype=bool, count=n)
        codes[absent] = MISSING
    objects = np.fromiter(values, dtype=object, count=n)  # lists stay elements
    out = Coded(codes)
    where = codes == FLOAT
    if where.any():
        out.f = np.zeros(n)
        out.f[where] = objects[where].astype(np.float64)
    where = (codes == INT) | (codes == BOOL)
    if where.any():
        out.i = np.zeros(n, dtype=np.int64)
        ints = objects[where]
        try:
            out.i[where] = ints.astype(np.int64)
        except OverflowError:  # beyond 64 bits: kept as JSON text, read back exactly
            huge = np.fromiter((type(v) is int and not _INT64.min <= v <= _INT64.max
                                for v in ints), dtype=bool, count=len(ints))
            positions = np.flatnonzero(where)[huge]
            codes[positions] = OTHER
            where[positions] = False
            out.i[where] = objects[where].astype(np.int64)
    where = codes == STR
    if where.any():
        texts = objects[where]
        try:
            for text in texts:  # Arrow text must be UTF-8; lone surrogates are not
                text.encode()
        except UnicodeEncodeError:
            bad = np.fromiter((not _utf8(t) for t in texts), dtype=bool, count=len(texts))
            codes[np.flatnonzero(where)[bad]] = OTHER
            where = codes == STR
            texts = objects[where]
        import pandas as pd

        index, words = pd.factorize(texts)
        out.s = np.full(n, -1, dtype=np.int32)
        out.s[where] = index
        out.words = np.asarray(words, dtype=object)
    where = codes == OTHER
    if where.any():
        out.j = np.full(n, None, dtype=object)
        out.j[where] = [json.dumps(v) for v in objects[where]]
    return out


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def concat(parts: Sequence[Coded]) -> Coded:
    """Rows of ``parts`` one after another (texts re-indexed into one dictionary)."""
    if len(parts) == 1:
        return parts[0]
    n = sum(map(len, parts))
    codes = np.concatenate([p.codes for p in parts])

    def joined(name: str, dtype: Any, fill: Any) -> np.ndarray | None:
        arrays = [getattr(p, name) for p in parts]
        if all(a is None for a in arrays):
            return None
        return np.concatenate([np.full(len(p), fill, dtype=dtype) if a is None else a
                               for p, a in zip(parts, arrays, strict=True)])

    out = Coded(codes, joined("f", np.float64, 0.0), joined("i", np.int64, 0),
                None, None, joined("j", object, None))
    if any(p.words is not None for p in parts):
        # The parts' dictionaries one after another, indices shifted to match; equal
        # words may repeat, which decoding does not mind.
        s = np.full(n, -1, dtype=np.int32)
        words, at, shift = [], 0, 0
        for p in parts:
            if p.words is not None:
                ps = _need(p.s)
                here = ps >= 0
                s[at:at + len(p)][here] = ps[here] + shift
                words.append(p.words)
                shift += len(p.words)
            at += len(p)
        out.s = s
        out.words = np.concatenate(words)
    return out


def _need(part: np.ndarray | None) -> np.ndarray:
    """A part the codes say is there."""
    if part is None:
        raise ValueError("a coded column lacks a part its codes use")
    return part


def decode_objects(coded: Coded) -> np.ndarray:
    """The Python values, as an object array (absent keys as NaN)."""
    n = len(coded)
    codes = coded.codes
    out = np.empty(n, dtype=object)
    out[codes == MISSING] = _NAN
    out[codes == NONE] = None
    for code, part in ((FLOAT, coded.f), (INT, coded.i)):
        where = codes == code
        if where.any():
            out[where] = _need(part)[where].astype(object)
    where = codes == BOOL
    if where.any():
        out[where] = _need(coded.i)[where].astype(bool).astype(object)
    where = codes == STR
    if where.any():
        out[where] = _need(coded.words)[_need(coded.s)[where]]
    where = codes == OTHER
    if where.any():
        texts = _need(coded.j)[where]
        # fromiter: lists of equal length would otherwise become a 2-D array.
        out[where] = np.fromiter(map(json.loads, texts), dtype=object, count=len(texts))
    return out


def kinds_of(codes: np.ndarray) -> set[int]:
    """The codes a column's rows hold (any beyond ``OTHER`` as ``OTHER + 1``): a
    comparison per code, 0.4 ms a million rows for all of them (a bincount casts every
    code to an int64 first: 2.3 ms)."""
    found = {code for code in range(OTHER + 1) if (codes == code).any()}
    if (codes.view(np.uint8) > OTHER).any():
        found.add(OTHER + 1)
    return found


def decode(coded: Coded) -> Any:
    """The column ``typed_column`` builds from the same values."""
    import pandas as pd

    from monitor.store.frames import typed_column

    kinds = kinds_of(coded.codes)
    if kinds <= {MISSING, NONE, FLOAT} and kinds & {MISSING, FLOAT}:
        if kinds == {FLOAT}:  # a fresh array unless it is a block's own buffer
            f = _need(coded.f)
            return f if f.flags.writeable else f.copy()
        out = coded.f.copy() if coded.f is not None else np.zeros(len(coded))
        out[coded.codes != FLOAT] = np.nan  # {float} or {float, None}: float64, as numpy
        return out
    if kinds == {INT}:
        i = _need(coded.i)
        return i if i.flags.writeable else i.copy()
    if kinds == {BOOL}:
        return _need(coded.i).astype(bool)
    if kinds == {NONE}:  # what pandas makes of a list of None
        return np.full(len(coded), None, dtype=object)
    if pd.get_option("future.infer_string"):
        return typed_column(decode_objects(coded).tolist())
    if kinds == {STR}:
        return _need(coded.words)[_need(coded.s)]
    if STR in kinds and kinds <= _SCALAR_CODES:
        # Scalars with a text among them: ``typed_column`` keeps them as they are (an
        # object array of the same values), so its pass over a list of them is skipped.
        return decode_objects(coded)
    return typed_column(decode_objects(coded).tolist())


# --- Arrow form -------------------------------------------------------------------


def to_arrow(name: str, coded: Coded) -> tuple[list[str], list[pa.Array]]:
    """Named Arrow columns for one coded column (parts that are all unused are left out)."""
    import pyarrow as pa

    names, arrays = [f"{name}\x00c"], [pa.array(coded.codes, type=pa.int8())]
    if coded.f is not None:
        names.append(f"{name}\x00f")
        arrays.append(pa.array(coded.f, type=pa.float64()))
    if coded.i is not None:
        names.append(f"{name}\x00i")
        arrays.append(pa.array(coded.i, type=pa.int64()))
    if coded.words is not None:
        names.append(f"{name}\x00s")
        arrays.append(pa.DictionaryArray.from_arrays(
            pa.array(coded.s, type=pa.int32(), mask=_need(coded.s) < 0),
            pa.array(coded.words, type=pa.string())))
    if coded.j is not None:
        names.append(f"{name}\x00j")
        arrays.append(pa.array(coded.j, type=pa.string()))
    return names, arrays


def from_arrow(columns: dict[str, pa.Array]) -> dict[str, Coded]:
    """``to_arrow``'s columns (of one table) back, by column name."""
    parts: dict[str, dict[str, Any]] = {}
    for key, array in columns.items():
        name, part = key.rsplit("\x00", 1)
        parts.setdefault(name, {})[part] = array
    out = {}
    for name, p in parts.items():
        coded = Coded(p["c"].to_numpy(zero_copy_only=False).astype(np.int8, copy=False))
        if "f" in p:
            coded.f = p["f"].to_numpy(zero_copy_only=False)
        if "i" in p:
            coded.i = p["i"].to_numpy(zero_copy_only=False)
        if "s" in p:
            s = p["s"]
            coded.s = s.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(
                np.int32, copy=False)
            coded.words = np.asarray(s.dictionary.to_pylist(), dtype=object)
        if "j" in p:
            coded.j = np.asarray(p["j"].to_pylist(), dtype=object)
        out[name] = coded
    return out

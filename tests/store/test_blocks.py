"""Log blocks: the columnar codec, and windows read from blocks, equal to the row reader's.

The contract is exactness: for the same rows, ``block_reader.read_window`` builds the very
frames ``reading.read_builtin`` builds (dtypes, column order, the Python type of every
element of an object column, NaN against None), before and after compaction, with rows
or labels written since, after rows were deleted by hand, and with compactors racing.
"""

from __future__ import annotations

import json
import math
import random
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa
from pandas.testing import assert_frame_equal, assert_series_equal

from monitor.schema import label_text
from monitor.store import block_reader, compaction, sources
from monitor.store.columnar import (
    Coded,
    concat,
    decode,
    decode_objects,
    encode,
    from_arrow,
    to_arrow,
)
from monitor.store.frames import _NAN, WindowFrames, typed_column
from monitor.store.logs import LogRecord, insert_labels, insert_logs, make_record
from monitor.store.reading import read_builtin
from monitor.store.sources import BuiltinSource, LogWindow
from tests.conftest import good_row

T0 = datetime(2026, 10, 1, tzinfo=UTC)
DAY = timedelta(days=1)
MODEL = "loan_default"
OTHER = "other"
US = 123457  # microseconds some rows are shifted by: ties and bounds off whole seconds

# Values a client may send for one feature, as JSON gives them back (as in test_sources).
TRICKY: list[Any] = [
    0, 1, -7, 3.7, 1.0, 0.1 + 0.2, 1e-300, 2**53 + 1, 2**63 - 1, 2**63, 2**64 + 5, -(2**70),
    True, False, None, "N/A", "", "12.5", "Ünïcödé ✓", "日本語", "line\nbreak", [1, "a"],
    {"nested": [None, 2.5]},
]


# --- helpers --------------------------------------------------------------------------


def _key(value: Any) -> tuple[str, str]:
    # repr tells 1 from 1.0 from True, -0.0 from 0.0, None from NaN, and dict key order.
    return type(value).__name__, repr(value)


def exact(series: pd.Series) -> list[tuple[str, str]]:
    """Each element's Python type and repr: what assert_*_equal does not look at."""
    return [_key(v) for v in series.tolist()]


def assert_same_series(got: pd.Series, want: pd.Series, what: str) -> None:
    assert_series_equal(got, want, check_exact=True, check_index_type=True, obj=what)
    assert exact(got) == exact(want), what


def assert_same_frame(got: pd.DataFrame, want: pd.DataFrame, what: str) -> None:
    assert list(got.columns) == list(want.columns), what  # the row reader's column order
    assert_frame_equal(got, want, check_exact=True, check_index_type=True,
                       check_column_type=True, obj=what)
    for col in want.columns:
        assert exact(got[col]) == exact(want[col]), f"{what}[{col!r}]"


def assert_same_frames(got: WindowFrames, want: WindowFrames) -> None:
    """All five fields of the two readers' frames are exactly equal."""
    assert_same_frame(got.meta, want.meta, "meta")
    assert_same_frame(got.features, want.features, "features")
    assert_same_frame(got.probabilities, want.probabilities, "probabilities")
    assert_same_series(got.labels, want.labels, "labels")
    assert got.fallback_reasons is not None and want.fallback_reasons is not None
    assert_same_series(got.fallback_reasons, want.fallback_reasons, "fallback_reasons")


def no_rows(*args: Any, **kwargs: Any) -> Any:
    """Stands in for the row path where blocks must be read instead."""
    raise AssertionError("read the rows although blocks cover the window")


def frames_of(window: LogWindow) -> WindowFrames:
    """A source's window as the readers' frames."""
    return WindowFrames(window.meta, window.features, window.probabilities, window.labels,
                        window.fallback_reasons)


def rows_path(engine: sa.Engine, start: datetime, end: datetime) -> WindowFrames:
    frames, _ = read_builtin(engine, MODEL, start, end)
    return frames


def assert_codes_are_the_values(got: LogWindow, want: WindowFrames) -> None:
    """Where the read coded the labels, predictions or versions, the codes are the
    values: ``label_text``'s texts of the labels and predictions, the versions' texts."""
    for codes, values in ((got.label_codes, want.labels),
                          (got.prediction_codes, want.meta["prediction"])):
        if codes is not None:
            assert exact(pd.Series(codes.texts())) == exact(label_text(values))
            assert len(set(codes.words)) == len(codes.words)
    if got.version_codes is not None:
        assert got.version_codes.texts().tolist() == \
            [v if isinstance(v, str) else None for v in want.meta["model_version"]]


def assert_blocks_read_equal(engine: sa.Engine, windows: list[tuple[datetime, datetime]]
                             ) -> None:
    """Each window from blocks (which must be used) equals the row path's, also through
    BuiltinSource."""
    for start, end in windows:
        want = rows_path(engine, start, end)
        got = block_reader.read_window(engine, MODEL, start, end)
        assert got is not None, (start, end)  # a block meets every one of these windows
        assert_same_frames(got, want)
        assert_same_frames(frames_of(BuiltinSource(engine, MODEL).read_window(start, end)),
                           want)
        # A read for the checks leaves out the meta columns they do not read; the rest
        # is the same, blocks and uncovered rows alike.
        skip = ("request_id", "ts", "error_message", "label_time")
        lean = BuiltinSource(engine, MODEL).read_window(start, end, skip=skip)
        assert list(lean.meta.columns) == [c for c in want.meta.columns if c not in skip]
        assert_same_frames(frames_of(lean), WindowFrames(
            want.meta.drop(columns=list(skip)), want.features, want.probabilities,
            want.labels, want.fallback_reasons))
        assert_codes_are_the_values(lean, want)
        # Counted and read in one snapshot: the window when it has at most ``limit``
        # rows, else its count alone.
        source = BuiltinSource(engine, MODEL)
        rows = source.count(start, end)
        assert rows == len(want.meta)
        counted, within = source.read_window_within(start, end, rows, skip=skip)
        assert counted == rows and within is not None
        assert_same_frames(frames_of(within), frames_of(lean))
        if rows:
            assert source.read_window_within(start, end, rows - 1, skip=skip) == (rows, None)


def block_rows_of(engine: sa.Engine, model: str = MODEL) -> list[tuple[int, int, int, int]]:
    """(lo_id, hi_id, rows, labels_hw) of each block of ``model``, by lo_id."""
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(
            "SELECT lo_id, hi_id, rows, labels_hw FROM log_blocks WHERE model = :m "
            "ORDER BY lo_id"), {"m": model})]


def assert_disjoint(ranges: list[tuple[int, int, int, int]]) -> None:
    for (lo, hi, *_), (next_lo, *_) in pairwise(ranges):
        assert lo < hi <= next_lo, ranges


def log_ids(engine: sa.Engine, model: str = MODEL) -> list[int]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text(
            "SELECT id FROM inference_logs WHERE model = :m ORDER BY id"), {"m": model}).scalars())


def max_label_id(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT max(id) FROM ground_truth")).scalar_one())


# --- the codec ------------------------------------------------------------------------

M = _NAN  # the row reader's filler for a missing key, matched by identity

CODEC_CASES: dict[str, list[Any]] = {
    "floats+missing": [1.5, M, -2.0, M, 0.1 + 0.2],
    "missing only": [M, M],
    "float nan": [float("nan"), 1.0, float("nan")],
    "nan+None+missing": [float("nan"), None, M, 2.5],
    "signed zeros, inf": [-0.0, 0.0, math.inf, -math.inf, 1e-300],
    "ints": [1, 2, -3, 0],
    "int+missing": [1, M, 3],
    "int+float": [1, 2.5, -3],
    "int+float+None": [1, None, 2.5],
    "bools": [True, False, True],
    "bool+None": [True, None, False],
    "bool+missing": [M, True, False],
    "0/1/True": [0, 1, True],
    "0/1/True/1.0": [True, 1, 1.0, 0, False],
    "str+None": ["a", None, "b", "a"],
    "str+missing": [M, "a", "b", M, "a"],
    "str only, repeated": ["x", "y", "x", "", "x"],
    "str+NUL": ["a\x00b", "c"],
    "all None": [None, None, None],
    "None+missing": [None, M],
    "mixed scalars": [1, "x", 2.5, True, None, M, False, "x"],
    "beyond 64 bits": [2**64 + 5, 1, -(2**70)],
    "only beyond 64 bits": [2**70],
    "uint64 range": [2**63, 1],
    "uint64 top": [2**64 - 1, 2**63],
    "int64 bounds": [2**63 - 1, -(2**63), 0],
    "int64 bounds+float": [2**63 - 1, 0.5],
    "beyond 64 bits+str": [2**64, "x", None],
    "beyond 64 bits+bool": [True, 2**64 + 1, False],
    "lists/dicts": [[1, "a"], {"k": [1, None]}, None, M, {}, [], [2**70, -0.0]],
    "lists+scalars": [[1], 2, "x", {"a": {"b": "\ud800"}}],
    # Lists that numpy would take for rows of a 2-D array (one list, lists of one length).
    "one list": [[1, "a"], None],
    "lists of one length": [[1, 2], [3, 4], M],
    "empty list": [[], "x"],
    "nested lists": [[[1]], 2.5],
    "lone surrogate": ["\ud800"],
    "lone surrogate+text": ["ok", "\ud800", None, "ok", "\udfff x"],
    "tricky pool": [*TRICKY, M],
    "empty": [],
}


def as_frame(column: Any, n: int) -> pd.DataFrame:
    # How ColumnBuilder.frame turns a typed column into a frame column.
    return pd.DataFrame({"c": column}, index=pd.RangeIndex(n), copy=False)


def assert_decodes_as_rows(coded: Coded, values: list[Any], what: str) -> None:
    n = len(values)
    got = decode(coded)
    assert_same_frame(as_frame(got, n), as_frame(typed_column(list(values)), n), what)
    if isinstance(got, np.ndarray):  # a frame column its user may write to
        assert got.flags.writeable, what
    # decode_objects: the Python values themselves (a missing key as NaN).
    objects = decode_objects(coded)
    assert objects.dtype == object and len(objects) == n
    assert [_key(v) for v in objects] == [_key(math.nan if v is M else v) for v in values], what


def through_arrow(coded: Coded) -> Coded:
    """to_arrow -> a table -> an IPC stream (as blocks store it) -> from_arrow."""
    names, arrays = to_arrow("x", coded)
    table = pa.table(dict(zip(names, arrays, strict=True)))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    table = pa.ipc.open_stream(sink.getvalue()).read_all()
    return from_arrow({n: table.column(n).combine_chunks() for n in table.column_names})["x"]


@pytest.mark.parametrize("values", list(CODEC_CASES.values()), ids=list(CODEC_CASES))
def test_codec_decodes_to_the_row_readers_column(values: list[Any]) -> None:
    coded = encode(values, M)
    assert len(coded) == len(values)
    assert coded.present() == any(v is not M for v in values)
    assert_decodes_as_rows(coded, values, "encoded")
    assert_decodes_as_rows(through_arrow(coded), values, "through Arrow")
    # Split at every position, the halves coded apart (as blocks and rows are) and joined.
    for k in range(len(values) + 1):
        joined = concat([encode(values[:k], M), encode(values[k:], M)])
        assert_decodes_as_rows(joined, values, f"split at {k}")
        assert_decodes_as_rows(through_arrow(joined), values, f"split at {k}, Arrow")
    # One part per value: every text dictionary is re-indexed.
    if values:
        singles = concat([through_arrow(encode([v], M)) for v in values])
        assert_decodes_as_rows(singles, values, "one part per value")


def test_codec_take_and_a_real_nan_is_not_a_missing_key() -> None:
    values = [1.5, M, float("nan"), "x", None, 2**70]
    coded = encode(values, M)
    # Only the filler object itself is a missing key; another NaN is a float value.
    assert coded.codes.tolist()[:3] == [2, 0, 2]
    index = np.array([5, 0, 3])
    assert_decodes_as_rows(coded.take(index), [values[i] for i in index], "take")
    mask = np.array([False, True, False, False, True, False])
    assert_decodes_as_rows(through_arrow(coded).take(mask), [M, None], "take mask")
    assert not encode([M, M], M).present()


# --- the store ------------------------------------------------------------------------


def tricky_records(first: int, n: int, seed: int = 3) -> list[LogRecord]:
    """Rows r-{first}..: keys that come and go in varying order, values of every JSON type,
    "N/A" in a numeric feature, probabilities present or absent, fallback answers, and
    times out of id order (ties included) so that blocks overlap in time."""
    rng = random.Random(seed + first)
    keys = ["a", "b", "ç", "d", "e"]
    out = []
    for i in range(first, first + n):
        chosen = [k for k in keys if rng.random() < 0.85]
        if rng.random() < 0.3:
            rng.shuffle(chosen)
        feats: dict[str, Any] = {k: rng.choice(TRICKY) for k in chosen}
        if i % 4 == 0:
            feats["annual_income"] = 50000.5 + i
        elif i % 4 == 1:
            feats["annual_income"] = "N/A"
        if i == 7:
            feats["surprise"] = "unexpected key"
        if i % 11 == 5:
            feats = {"late": 2**64 + i, **feats}  # a new key first in its row
        out.append(record(i, feats))
    return out


def plain_records(first: int, n: int) -> list[LogRecord]:
    """Rows with the same keys in the same order (or none) and scalar values only: for
    the tests about something else than typing and column order."""
    return [replace(record(i, {"x": i, "y": "N/A" if i % 7 == 3 else 0.5 * i,
                               "s": "abc"[i % 3], "b": i % 2 == 0}),
                    probabilities=None if i % 6 == 0 else {"0": 0.25, "1": 0.75})
            for i in range(first, first + n)]


def record(i: int, features: dict[str, Any]) -> LogRecord:
    error = i % 4 == 3
    return LogRecord(
        request_id=f"r-{i}", ts=T0 + timedelta(minutes=(i * 7) % 20, microseconds=(i % 2) * US),
        features=features, prediction=None if error else [1, 0, "maybe", 2.5][i % 4],
        probabilities=None if i % 6 == 0 else (
            {"0": 0.25, "1": 0.75} if i % 5 else {"1": 1, "2": None}),
        latency_ms=None if i % 5 == 0 else 10.0 + i, error=error,
        error_message="boom" if error else None, model_version="1.0" if i % 2 else None,
        fallback_reason=["flag", None, None, "timeout", None][i % 5])


LABELS = [1, 0, "yes", {"k": [1]}, None, 2.5, True, 2**70]


def labels_for(ids: range | list[int], when: datetime = T0 + DAY
               ) -> list[tuple[str, Any, datetime]]:
    return [(f"r-{i}", LABELS[i % len(LABELS)], when + timedelta(minutes=i, microseconds=i))
            for i in ids]


def add_logs(engine: sa.Engine, records: list[LogRecord], *, other: bool = True) -> None:
    with engine.begin() as conn:
        insert_logs(conn, MODEL, records)
    if other:  # another model's rows between ours: ids are not contiguous per model
        with engine.begin() as conn:
            insert_logs(conn, OTHER, records[:3])


def add_labels(engine: sa.Engine, labels: list[tuple[str, Any, datetime]],
               model: str = MODEL) -> None:
    with engine.begin() as conn:
        insert_labels(conn, model, labels)


def execute(engine: sa.Engine, sql: str, **params: Any) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(sql), params)


N = 58  # rows first stored: 11 full blocks of 5 and one of 3
BLOCK = 5
EVERYTHING = (T0 - DAY, T0 + DAY)

WINDOWS = [
    EVERYTHING,
    (T0 + timedelta(minutes=3, microseconds=US), T0 + timedelta(minutes=11, microseconds=US)),
    (T0 + timedelta(minutes=7), T0 + timedelta(minutes=8)),  # one minute, rows of many blocks
    (T0 + timedelta(minutes=5, seconds=10), T0 + timedelta(minutes=5, seconds=20)),  # no row
    # Another zone: 02:04 at +02:00 is 00:04 UTC.
    (datetime(2026, 10, 1, 2, 4, tzinfo=timezone(timedelta(hours=2))), T0 + timedelta(hours=1)),
]


def make_store(engine: sa.Engine, records: Callable[[int, int], list[LogRecord]]
               ) -> sa.Engine:
    """N rows (and another model's between them), labels for every third row."""
    for first in range(0, N, 20):
        add_logs(engine, records(first, min(20, N - first)))
    add_labels(engine, labels_for(range(0, N, 3)))
    add_labels(engine, [("r-1", 99, T0)], model=OTHER)  # another model's: never joined
    return engine


@pytest.fixture
def store(engine: sa.Engine) -> sa.Engine:
    return make_store(engine, tricky_records)


@pytest.fixture
def plain(engine: sa.Engine) -> sa.Engine:
    return make_store(engine, plain_records)


def test_compacted_windows_equal_the_row_path(store: sa.Engine,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    engine = store
    # Before any compaction no block meets a window: the caller reads rows.
    assert block_reader.read_window(engine, MODEL, *EVERYTHING) is None
    source = BuiltinSource(engine, MODEL)
    n = source.count(*EVERYTHING)
    assert source.read_window_within(*EVERYTHING, n - 1) == (n, None)
    counted, within = source.read_window_within(*EVERYTHING, n)
    assert counted == n and within is not None
    assert_same_frames(frames_of(within), rows_path(engine, *EVERYTHING))
    result = compaction.compact(engine, MODEL, block_rows=BLOCK)
    assert (result.model, result.rows, result.blocks) == (MODEL, N, math.ceil(N / BLOCK))
    ranges = block_rows_of(engine)
    assert [r[2] for r in ranges] == [BLOCK] * (N // BLOCK) + [N % BLOCK]
    assert_disjoint(ranges)
    assert block_rows_of(engine, OTHER) == []  # only the model compacted has blocks
    assert all(r[3] == max_label_id(engine) for r in ranges)
    assert_blocks_read_equal(engine, WINDOWS)
    # Nothing new: a second compaction writes nothing.
    again = compaction.compact(engine, MODEL, block_rows=BLOCK)
    assert (again.rows, again.blocks, again.labels) == (0, 0, 0)
    assert block_rows_of(engine) == ranges
    # A window no block meets: None from blocks, the rows' (empty) frames from the source.
    empty = (T0 - 2 * DAY, T0 - DAY)
    assert block_reader.read_window(engine, MODEL, *empty) is None
    window = BuiltinSource(engine, MODEL).read_window(*empty)
    assert window.rows == 0
    assert_same_frames(frames_of(window), rows_path(engine, *empty))
    # The source reads blocks, not rows, wherever blocks meet the window.
    want = rows_path(engine, *EVERYTHING)
    monkeypatch.setattr(sources, "read_builtin", no_rows)
    assert_same_frames(frames_of(BuiltinSource(engine, MODEL).read_window(*EVERYTHING)), want)
    # A window too large to read whole is counted from the blocks' snapshot, not read.
    monkeypatch.setattr(block_reader, "decode_part", no_rows)
    assert source.read_window_within(*EVERYTHING, n - 1) == (n, None)


def test_a_read_drops_each_coded_column_once_decoded(store: sa.Engine,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The window's coded columns go as its frames are built (a million rows' coded
    arrays are 150 MB, most of them not kept by the frames), and the frames are still the
    row path's."""
    compaction.compact(store, MODEL, block_rows=BLOCK)
    parts: list[Any] = []
    real = block_reader.frames_of

    def keeping(part: Any, *args: Any) -> WindowFrames:
        parts.append(part)
        return real(part, *args)

    monkeypatch.setattr(block_reader, "frames_of", keeping)
    got = block_reader.read_window(store, MODEL, *EVERYTHING)
    assert got is not None and len(parts) == 1
    assert (parts[0].meta, parts[0].features, parts[0].probabilities) == ({}, {}, {})
    assert_same_frames(got, rows_path(store, *EVERYTHING))


def test_blocks_are_fetched_ahead_on_a_second_thread_and_its_failure_is_the_reads(
        plain: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each next block's bytes are fetched on a second thread while this one decodes the
    last; a fetch that fails fails the read, whichever block it was."""
    import threading

    engine = plain
    compaction.compact(engine, MODEL, block_rows=BLOCK)
    want = rows_path(engine, *EVERYTHING)
    fetched_on: list[str] = []
    fetch = block_reader._fetch_bytes

    def recording(*args: Any) -> Any:
        fetched_on.append(threading.current_thread().name)
        if len(fetched_on) == 7 and failing:
            raise RuntimeError("the seventh block is gone")
        return fetch(*args)

    monkeypatch.setattr(block_reader, "_fetch_bytes", recording)
    failing = False
    assert_same_frames(frames_of(block_reader.read_window(engine, MODEL, *EVERYTHING)), want)
    assert len(fetched_on) == math.ceil(N / BLOCK)
    assert threading.current_thread().name not in fetched_on
    fetched_on.clear()
    failing = True
    with pytest.raises(RuntimeError, match="seventh block"):
        block_reader.read_window(engine, MODEL, *EVERYTHING)
    assert len(fetched_on) == 7


def test_the_count_checks_a_read_on_the_second_thread_unless_the_window_may_be_too_large(
        plain: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The window's arrays are sized from its blocks' row counts, so the count that
    checks the read runs on the fetching thread while this one builds the frames; a
    window whose blocks may hold more rows than ``at_most`` is counted first, on this
    thread, once."""
    engine = plain
    compaction.compact(engine, MODEL, block_rows=BLOCK)
    counted_on: list[str] = []
    count = block_reader._count

    def recording(*args: Any) -> int:
        counted_on.append(threading.current_thread().name)
        return count(*args)

    monkeypatch.setattr(block_reader, "_count", recording)
    for start, end in WINDOWS:  # windows that cut blocks, and whole ones
        want = rows_path(engine, start, end)
        counted_on.clear()
        assert_same_frames(block_reader.read_window(engine, MODEL, start, end), want)
        assert len(counted_on) == 1 and counted_on[0] != threading.current_thread().name
        counted_on.clear()
        n = len(want.meta)
        got = block_reader.read_window(engine, MODEL, start, end, at_most=n)
        assert isinstance(got, WindowFrames)
        assert_same_frames(got, want)
        assert len(counted_on) == 1
        if n:
            counted_on.clear()
            assert block_reader.read_window(engine, MODEL, start, end,
                                            at_most=n - 1) == block_reader.TooMany(n)
            assert counted_on == [threading.current_thread().name]


def test_a_fillers_arrays_are_trimmed_in_place_to_the_rows_added() -> None:
    from monitor.store.blocks import _trim

    values = np.arange(1_000_000, dtype=np.float64)
    at = values.ctypes.data
    trimmed = _trim(values, 600_000)
    assert trimmed is values and trimmed.ctypes.data == at
    np.testing.assert_array_equal(trimmed, np.arange(600_000, dtype=np.float64))
    texts = np.array(["a", "b", None], dtype=object)
    kept = _trim(texts, 2)
    assert kept is not texts and kept.tolist() == ["a", "b"] and texts.tolist()[2] is None
    assert _trim(None, 3) is None and _trim(texts, 3) is texts


def test_rows_searched_by_id_are_the_rows_searched_by_time(store: sa.Engine) -> None:
    # The rows no block covers are searched by id on SQLite when their ranges are small:
    # another plan for the same query, so the same rows in the same order.
    from monitor.store.blocks import fetch_all
    from monitor.store.db import driver_connection
    from monitor.store.reading import _bound, _window_sql

    if store.dialect.name != "sqlite":
        pytest.skip("a SQLite query plan")
    gap_sets = [[(0, 2**62)], [(3, 9), (20, 40)], [(50, 2**62)], [(10, 11)], []]
    with store.connect() as conn:
        raw = driver_connection(conn)
        for start, end in WINDOWS:
            for gaps in gap_sets:
                params = [MODEL, _bound(start, True), _bound(end, True),
                          *(b for gap in gaps for b in gap)]
                by_time, by_id = (fetch_all(raw, _window_sql(
                    "sqlite", False, False, id_ranges=len(gaps), by_rowid=rowid), params)
                    for rowid in (False, True))
                assert by_id == by_time, (start, gaps)
                if gaps == [(0, 2**62)] and start == EVERYTHING[0]:
                    assert len(by_id) == N
        plan = fetch_all(raw, "EXPLAIN QUERY PLAN " + _window_sql(
            "sqlite", False, False, id_ranges=1, by_rowid=True), [MODEL, "a", "b", 1, 2])
        assert any("PRIMARY KEY" in str(row) for row in plan)


def test_the_blocks_list_is_read_from_its_index_alone(plain: sa.Engine) -> None:
    """Every block's marks come from ``ix_log_blocks_model_marks``: on SQLite a row's
    ``labels_hw`` lies past its blobs, whose overflow pages reading it would walk."""
    from monitor.store.blocks import BLOCKS_SQL, _blocks
    from monitor.store.db import driver_connection
    from monitor.store.reading import sql_marks

    engine = plain
    compaction.compact(engine, MODEL, block_rows=BLOCK)
    mark, _ = sql_marks(engine.dialect.name)
    with engine.connect() as conn:
        raw = driver_connection(conn)
        blocks = _blocks(raw, mark, MODEL)
        assert [(b.lo, b.hi, b.rows, b.labels_hw) for b in blocks] == block_rows_of(engine)
        assert len(blocks) == math.ceil(N / BLOCK)
        if engine.dialect.name == "sqlite":
            plan = raw.execute("EXPLAIN QUERY PLAN " + BLOCKS_SQL.format(mark=mark),
                               [MODEL]).fetchall()
            assert "COVERING INDEX ix_log_blocks_model_marks" in str(plan), plan


def test_plain_rows_compacted_equal_the_row_path(plain: sa.Engine) -> None:
    # The same as above on rows without lists or keys in varying order: the block reader
    # itself, apart from the typing and column-order cases the tricky rows add.
    compaction.compact(plain, MODEL, block_rows=BLOCK)
    assert len(block_rows_of(plain)) == math.ceil(N / BLOCK)
    assert_blocks_read_equal(plain, WINDOWS)


def test_a_window_given_in_naive_utc_reads_as_the_rows(plain: sa.Engine) -> None:
    # read_builtin takes a naive time as UTC; so must the source once blocks exist.
    compaction.compact(plain, MODEL, block_rows=BLOCK)
    start, end = datetime(2026, 10, 1, 0, 3), datetime(2026, 10, 1, 0, 9)
    want = rows_path(plain, start, end)
    assert len(want.meta) > 0
    assert_same_frames(frames_of(BuiltinSource(plain, MODEL).read_window(start, end)), want)


def test_column_order_follows_the_first_row_of_the_window(engine: sa.Engine) -> None:
    # Keys first seen together in one row come in that row's order, whatever order the
    # block saw them in before (the window starts after the rows that saw them apart).
    recs = [LogRecord(f"r-{i}", T0 + timedelta(minutes=i), feats, prediction=1,
                      probabilities=probs)
            for i, (feats, probs) in enumerate([
                ({"b": 1}, {"1": 0.5}), ({"a": 2}, {"0": 0.5}),
                ({"a": 3, "b": 4}, {"0": 0.2, "1": 0.8}), ({"b": 5, "a": 6}, None)])]
    add_logs(engine, recs, other=False)
    compaction.compact(engine, MODEL, block_rows=BLOCK)
    for start in (T0, T0 + timedelta(minutes=2), T0 + timedelta(minutes=3)):
        want = rows_path(engine, start, T0 + DAY)
        got = block_reader.read_window(engine, MODEL, start, T0 + DAY)
        assert got is not None
        assert list(got.features.columns) == list(want.features.columns), start
        assert list(got.probabilities.columns) == list(want.probabilities.columns), start
        assert_same_frames(got, want)


def test_list_values_are_read_from_blocks(engine: sa.Engine) -> None:
    # Features, predictions and labels holding lists (tags, embeddings, top-k classes):
    # a column whose lists all have one length must not turn into a 2-D array.
    recs = [LogRecord(f"r-{i}", T0 + timedelta(minutes=i), {"tags": [i, i + 1], "x": 1.5},
                      prediction=[0, 1]) for i in range(4)]
    add_logs(engine, recs, other=False)
    add_labels(engine, [("r-1", [1, 0], T0 + DAY)])
    compaction.compact(engine, MODEL, block_rows=BLOCK)
    assert_blocks_read_equal(engine, [EVERYTHING])
    add_labels(engine, [("r-2", [0, 1], T0 + DAY)])  # a late list label, then compacted
    assert_blocks_read_equal(engine, [EVERYTHING])
    assert compaction.compact(engine, MODEL, block_rows=BLOCK).labels == 1
    assert_blocks_read_equal(engine, [EVERYTHING])


def test_rows_written_after_compaction_are_read_and_grow_the_newest_block(
    store: sa.Engine,
) -> None:
    engine = store
    compaction.compact(engine, MODEL, block_rows=BLOCK)
    before = block_rows_of(engine)
    # One row after compaction (an uncovered tail), its label stored before the row.
    add_labels(engine, labels_for([N]))
    add_logs(engine, tricky_records(N, 1))
    assert_blocks_read_equal(engine, WINDOWS[:2])
    assert block_rows_of(engine) == before  # read without compacting
    # The newest block has room: it grows instead of a block being added.
    grown = compaction.compact(engine, MODEL, block_rows=BLOCK)
    assert (grown.rows, grown.blocks) == (1, 1)
    after = block_rows_of(engine)
    # (The label stored with the row moved every block's labels_hw: compare the ranges.)
    assert [r[:3] for r in after[:-1]] == [r[:3] for r in before[:-1]]
    assert len(after) == len(before)
    assert after[-1][0] == before[-1][0] and after[-1][2] == N % BLOCK + 1
    assert_blocks_read_equal(engine, WINDOWS[:2])
    # Four more: the newest block fills up to BLOCK rows, then one more block starts.
    add_logs(engine, tricky_records(N + 1, 4))
    assert_blocks_read_equal(engine, WINDOWS[:2])
    more = compaction.compact(engine, MODEL, block_rows=BLOCK)
    assert (more.rows, more.blocks) == (4, 2)
    last = block_rows_of(engine)
    assert [r[2] for r in last] == [BLOCK] * 12 + [3]
    assert_disjoint(last)
    assert_blocks_read_equal(engine, WINDOWS)


def test_each_next_block_is_encoded_on_a_second_thread_while_the_last_is_stored(
        plain: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """New blocks are encoded ahead, off this thread; a block that grows a stored one is
    encoded with it in its own transaction, here; a failure to encode one stops the
    compaction after the blocks before it, which are stored whole and read right."""
    engine = plain
    encoded_on: list[tuple[str, int]] = []
    encode_part = compaction.encode_part
    failing = False

    def recording(part: Any) -> Any:
        encoded_on.append((threading.current_thread().name, len(part)))
        if failing and len(encoded_on) == 4:
            raise RuntimeError("the fourth block cannot be encoded")
        return encode_part(part)

    monkeypatch.setattr(compaction, "encode_part", recording)
    failing = True
    with pytest.raises(RuntimeError, match="fourth block"):
        compaction.compact(engine, MODEL, block_rows=BLOCK)
    assert len(block_rows_of(engine)) == 3  # the three before it, whole
    assert_disjoint(block_rows_of(engine))
    failing = False
    encoded_on.clear()
    result = compaction.compact(engine, MODEL, block_rows=BLOCK)
    assert result.blocks == math.ceil(N / BLOCK) - 3
    assert encoded_on and all(name != threading.current_thread().name
                              for name, _ in encoded_on)
    assert_blocks_read_equal(engine, WINDOWS)
    # One row more: the newest block grows, encoded here with the stored rows.
    add_logs(engine, plain_records(N, 1), other=False)
    encoded_on.clear()
    assert compaction.compact(engine, MODEL, block_rows=BLOCK).rows == 1
    assert encoded_on == [(threading.current_thread().name, N % BLOCK + 1)]
    assert_blocks_read_equal(engine, WINDOWS)


def test_rows_are_searched_only_above_the_blocks_up_to_the_largest_id(
        engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A window whose rows blocks all cover searches no rows (a search by time filtered
    by id visited every row of the window on PostgreSQL without statistics); a row
    stored after the blocks is searched for and read."""
    from tests.conftest import call_counter

    add_logs(engine, plain_records(0, 30), other=False)
    add_labels(engine, labels_for(range(0, 30, 3)))
    compaction.compact(engine, MODEL, block_rows=BLOCK)
    searched = call_counter(monkeypatch, block_reader, "fetch_into")
    assert_blocks_read_equal(engine, [EVERYTHING])
    assert searched[0] == 0
    add_logs(engine, plain_records(30, 1), other=False)
    assert_blocks_read_equal(engine, [EVERYTHING])
    assert searched[0] > 0


@pytest.mark.parametrize("label_batch", [200_000, 3])
def test_labels_stored_after_compaction_are_read_then_compacted(
    store: sa.Engine, label_batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A small batch: a bulk load of labels is taken into blocks a batch at a time.
    monkeypatch.setattr(compaction, "LABEL_BATCH", label_batch)
    engine = store
    compaction.compact(engine, MODEL, block_rows=BLOCK)
    hw = max_label_id(engine)
    # Labels for rows of several blocks, and another model's labels for our request ids.
    add_labels(engine, labels_for(range(1, N, 3), when=T0 + 2 * DAY))
    add_labels(engine, [(f"r-{i}", "not ours", T0) for i in (2, 4)], model=OTHER)
    assert all(r[3] == hw for r in block_rows_of(engine))  # not yet in the blocks
    assert_blocks_read_equal(engine, WINDOWS)
    result = compaction.compact(engine, MODEL, block_rows=BLOCK)
    assert result.rows == 0 and result.labels > 0
    assert all(r[3] == max_label_id(engine) > hw for r in block_rows_of(engine))
    assert_blocks_read_equal(engine, WINDOWS)
    got = block_reader.read_window(engine, MODEL, *EVERYTHING)
    assert got is not None
    assert int(got.meta["label_time"].notna().sum()) == len(range(0, N, 3)) + len(
        range(1, N, 3))


def test_blocks_whose_label_marks_differ_read_as_the_rows(
    store: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compaction interrupted before its label refresh leaves old blocks at an older
    labels_hw than the blocks it wrote: labels after the oldest mark are still read."""
    engine = store
    compaction.compact(engine, MODEL, block_rows=BLOCK)
    old_hw = max_label_id(engine)
    add_labels(engine, labels_for(range(1, N, 3), when=T0 + 2 * DAY))  # rows of old blocks
    add_logs(engine, tricky_records(N + 2, 12))  # whole new blocks, in the same minutes

    def interrupted(*args: Any, **kwargs: Any) -> int:
        raise KeyboardInterrupt  # stopped after writing the blocks, before the refresh

    monkeypatch.setattr(compaction, "_refresh_labels", interrupted)
    with pytest.raises(KeyboardInterrupt):
        compaction.compact(engine, MODEL, block_rows=BLOCK)
    marks = {r[3] for r in block_rows_of(engine)}
    assert marks == {old_hw, max_label_id(engine)}  # two marks: old blocks, new blocks
    assert_blocks_read_equal(engine, WINDOWS)
    got = block_reader.read_window(engine, MODEL, *EVERYTHING)
    assert got is not None
    assert int(got.meta["label_time"].notna().sum()) == len(range(0, N, 3)) + len(
        range(1, N, 3))


def test_compaction_under_a_lost_lease_writes_nothing(store: sa.Engine) -> None:
    """A stalled leader that wakes up after another replica took the model over (a higher
    token) writes no block and no label into a block; the holder's compaction does."""
    from monitor.store.locks import Fence, LeaseLost
    from monitor.store.tables import model_leases

    engine = store
    with engine.begin() as conn:
        conn.execute(sa.insert(model_leases).values(
            model=MODEL, holder="b", token=2, expires_at=T0 + 10 * DAY))
    with pytest.raises(LeaseLost, match="the write is refused"):
        compaction.compact(engine, MODEL, block_rows=BLOCK, fence=Fence(MODEL, "a", 1, 15.0))
    assert block_rows_of(engine) == []
    live = Fence(MODEL, "b", 2, 15.0)
    assert compaction.compact(engine, MODEL, block_rows=BLOCK, fence=live).rows == N
    hw = max_label_id(engine)
    add_labels(engine, labels_for(range(1, N, 3), when=T0 + 2 * DAY))
    with pytest.raises(LeaseLost):  # the label refresh is fenced too
        compaction.compact(engine, MODEL, block_rows=BLOCK, fence=Fence(MODEL, "a", 1, 15.0))
    assert {r[3] for r in block_rows_of(engine)} == {hw}
    assert compaction.compact(engine, MODEL, block_rows=BLOCK, fence=live).labels > 0
    assert_blocks_read_equal(engine, WINDOWS)


def test_rows_deleted_by_hand_drop_their_blocks_until_compacted_again(
    plain: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    engine = plain
    compaction.compact(engine, MODEL, block_rows=BLOCK)
    before = block_rows_of(engine)
    ids = log_ids(engine)
    gone = [ids[7], ids[8], ids[31]]  # rows of the second and the seventh block
    execute(engine, "DELETE FROM inference_logs WHERE id IN (:a, :b, :c)",
            **dict(zip("abc", gone, strict=True)))
    holding = [r for r in before if any(r[0] < g <= r[1] for g in gone)]
    assert len(holding) == 2
    # A window holding only the third deleted row (it meets only some blocks): its
    # count tells, and the block holding that row goes.
    minute = T0 + timedelta(minutes=(31 * 7) % 20)  # r-31's minute
    with caplog.at_level("WARNING", logger="mqm.blocks"):
        assert block_reader.read_window(engine, MODEL, minute,
                                        minute + timedelta(minutes=1)) is None
    assert "disagree" in caplog.text
    assert block_rows_of(engine) == [r for r in before if r != holding[1]]
    # The whole range: the block holding the other two goes too; the others stay.
    assert block_reader.read_window(engine, MODEL, *EVERYTHING) is None
    assert block_rows_of(engine) == [r for r in before if r not in holding]
    # The other blocks are read again, the holes from the rows.
    assert block_reader.read_window(engine, MODEL, *EVERYTHING) is not None
    assert_blocks_read_equal(engine, WINDOWS)
    # Compacted again: the holes are blocks again.
    result = compaction.compact(engine, MODEL, block_rows=BLOCK)
    assert result.rows == 2 * BLOCK - len(gone)
    after = block_rows_of(engine)
    assert_disjoint(after)
    assert len(after) == len(before) and sum(r[2] for r in after) == N - len(gone)
    assert_blocks_read_equal(engine, WINDOWS)


def test_a_row_inserted_by_hand_among_covered_ids_drops_its_block(plain: sa.Engine) -> None:
    # Another model's row inside one of our blocks' id ranges becomes one of ours: the
    # block lacks it, so it is dropped, and compacted again with it.
    engine = plain
    compaction.compact(engine, MODEL, block_rows=BLOCK)
    before = block_rows_of(engine)
    inside = [(i, r) for i in log_ids(engine, OTHER) for r in before if r[0] < i <= r[1]]
    assert inside
    row_id, block = inside[0]
    execute(engine, "UPDATE inference_logs SET model = :m, request_id = 'by-hand' "
            "WHERE id = :i", m=MODEL, i=row_id)
    assert block_reader.read_window(engine, MODEL, *EVERYTHING) is None
    assert block_rows_of(engine) == [r for r in before if r != block]
    assert_blocks_read_equal(engine, WINDOWS)
    compaction.compact(engine, MODEL, block_rows=BLOCK)
    assert sum(r[2] for r in block_rows_of(engine)) == N + 1
    assert_disjoint(block_rows_of(engine))
    assert_blocks_read_equal(engine, WINDOWS)


def test_overlapping_blocks_are_never_read_twice(plain: sa.Engine) -> None:
    # Blocks that overlap (as compactors with different block sizes racing can leave
    # them) hold rows twice; the read counts more rows than stored and must not return
    # them.
    engine = plain
    compaction.compact(engine, MODEL, block_rows=BLOCK)
    execute(engine, "INSERT INTO log_blocks (model, lo_id, hi_id, rows, ts_min, ts_max, "
            "format, data, labels, labels_hw, created_at, updated_at) SELECT model, "
            "lo_id + 1, hi_id, rows, ts_min, ts_max, format, data, labels, labels_hw, "
            "created_at, updated_at FROM log_blocks WHERE model = :m AND lo_id = "
            "(SELECT max(lo_id) FROM log_blocks WHERE model = :m)", m=MODEL)
    for start, end in WINDOWS:
        assert_same_frames(frames_of(BuiltinSource(engine, MODEL).read_window(start, end)),
                           rows_path(engine, start, end))


def _reuse_the_newest_id(engine: sa.Engine) -> None:
    # SQLite gives a new row the largest id + 1: after the newest row is deleted by
    # hand, the next row takes its id, which a block covers, and the count is unchanged.
    execute(engine, "DELETE FROM inference_logs WHERE request_id = 'r-7'")
    add_logs(engine, [replace(record(7, {"x": "stored after the delete"}),
                              request_id="r-new")], other=False)


def _correct_a_label(engine: sa.Engine) -> None:
    # Stored labels are kept, never replaced; one corrected by hand (deleted, stored
    # again) may take its old id on SQLite.
    execute(engine, "DELETE FROM ground_truth WHERE model = :m AND request_id = 'r-1'",
            m=MODEL)
    add_labels(engine, [("r-1", "right", T0 + 2 * DAY)])


def _delete_a_label(engine: sa.Engine) -> None:
    execute(engine, "DELETE FROM ground_truth WHERE model = :m AND request_id = 'r-3'",
            m=MODEL)


@pytest.mark.parametrize("edit", [_reuse_the_newest_id, _correct_a_label, _delete_a_label])
def test_hand_edits_blocks_cannot_see_are_repaired_by_a_rebuild(
    engine: sa.Engine, edit: Any
) -> None:
    # Documented limit: blocks count rows, not labels, and cannot tell a reused id.
    # `mqm compact --rebuild` (drop the blocks, compact again) brings them back in step.
    add_logs(engine, plain_records(0, 8), other=False)
    add_labels(engine, [("r-1", "wrong", T0 + DAY), ("r-3", "x", T0 + DAY)])
    compaction.compact(engine, MODEL, block_rows=BLOCK)
    edit(engine)
    assert block_reader.delete_blocks(engine, MODEL) > 0
    compaction.compact(engine, MODEL, block_rows=BLOCK)
    assert_blocks_read_equal(engine, WINDOWS)


def test_racing_compactions_leave_disjoint_blocks(
    engine: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    # Three compactors at once, while rows and labels are written and windows read.
    errors: list[BaseException] = []

    def together(*works: Callable[[], Any]) -> None:
        barrier = threading.Barrier(len(works))

        def run(work: Callable[[], Any]) -> None:
            try:
                barrier.wait()
                work()
            except BaseException as exc:  # reported by the test's thread
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(w,)) for w in works]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)

    def compact() -> None:
        for _ in range(2):
            compaction.compact(engine, MODEL, block_rows=BLOCK)

    def read() -> None:
        for _ in range(3):
            BuiltinSource(engine, MODEL).read_window(*EVERYTHING)

    written = 0
    with caplog.at_level("WARNING", logger="mqm.blocks"):
        for _ in range(2):
            first = written

            def write(first: int = first) -> None:
                for at in range(first, first + 20, 4):
                    add_logs(engine, plain_records(at, 4))
                    add_labels(engine, labels_for(range(at, at + 4, 2)))

            together(compact, compact, compact, write, read)
            written += 20
            assert errors == []
            assert_disjoint(block_rows_of(engine))
            compaction.compact(engine, MODEL, block_rows=BLOCK)  # what came after the race
            ranges = block_rows_of(engine)
            assert_disjoint(ranges)
            assert sum(r[2] for r in ranges) == written
            assert all(r[3] == max_label_id(engine) for r in ranges)
            assert_blocks_read_equal(engine, WINDOWS)
    # Each read sees one snapshot: racing writers never look like rows deleted by hand.
    assert "disagree" not in caplog.text


# --- a whole check run -------------------------------------------------------------------


def sample_records(n: int) -> list[LogRecord]:
    """The sample model's rows (with a few bad values) over one day."""
    out = []
    for i in range(n):
        row = good_row(i)
        if i % 17 == 3:
            row["annual_income"] = "N/A"
        if i % 13 == 5:
            del row["employment_years"]
        if i % 29 == 7:
            row["home_ownership"] = "CASTLE"
        if i > 150:  # drift in the second part
            row["credit_score"] = 400 + i % 50
        meta = ("request_id", "timestamp", "prediction", "proba_0", "proba_1", "latency_ms")
        out.append(make_record({
            "request_id": row["request_id"], "timestamp": row["timestamp"],
            "features": {k: v for k, v in row.items() if k not in meta},
            "prediction": row["prediction"], "latency_ms": row["latency_ms"],
            "probabilities": {"0": row["proba_0"], "1": row["proba_1"]},
            "fallback_reason": "timeout" if i % 23 == 1 else None,
        }))
    return out


def test_check_runs_agree_before_and_after_compaction(  # type: ignore[no-untyped-def]
    engine: sa.Engine, make_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    from monitor.run.check import run_check

    records = sample_records(300)
    with engine.begin() as conn:
        insert_logs(conn, MODEL, records[:240])
        insert_labels(conn, MODEL, [(r.request_id, i % 2 if i % 5 else 1 - i % 2,
                                     T0 + timedelta(hours=2, minutes=i))
                                    for i, r in enumerate(records[:240]) if i % 3])
    _, config = make_config(engine.url.render_as_string(hide_password=False), min_rows=10)
    at, now = T0 + DAY, T0 + 3 * DAY  # a fixed now: label maturity does not move

    def run() -> tuple[str, int, str]:
        result = run_check(engine, config, MODEL, at=at, now=now, persist=False)
        assert result is not None
        # NaN figures compare equal as JSON text.
        return result.status, result.rows, json.dumps(result.as_dict()["checks"], sort_keys=True,
                                                      default=str)

    before = run()
    assert before[1] == 240 and {"drift", "performance", "schema"} <= set(json.loads(
        before[2]))
    compaction.compact(engine, MODEL, block_rows=37)
    with monkeypatch.context() as patch:
        patch.setattr(sources, "read_builtin", no_rows)  # the run reads the blocks
        assert run() == before
    # Rows and labels since the compaction (an uncovered tail, late labels).
    with engine.begin() as conn:
        insert_logs(conn, MODEL, records[240:])
        insert_labels(conn, MODEL, [(r.request_id, 1, T0 + timedelta(hours=5))
                                    for r in records[::3]])
    with monkeypatch.context() as patch:
        patch.setattr(sources, "read_builtin", no_rows)
        with_blocks = run()
    assert block_reader.delete_blocks(engine, MODEL) == math.ceil(240 / 37)
    assert block_reader.read_window(engine, MODEL, at - DAY, at) is None
    rows_only = run()
    assert with_blocks == rows_only and rows_only[1] == 300
    compaction.compact(engine, MODEL, block_rows=37)
    assert run() == rows_only


@pytest.mark.parametrize("chunk_rows", [1, 4, 1000])
def test_chunks_from_blocks_are_the_window(store: sa.Engine, chunk_rows: int) -> None:
    # Windows above drift.max_exact_rows are read in chunks: from blocks, a block at a
    # time (then the uncovered rows), each chunk in (ts, id) order.
    from tests.conftest import concat, raw

    engine = store
    compaction.compact(engine, MODEL, block_rows=BLOCK)
    add_logs(engine, tricky_records(N, 6), other=False)  # uncovered rows too
    source = BuiltinSource(engine, MODEL)
    for start, end in WINDOWS:
        chunks = list(source.iter_chunks(start, end, chunk_rows))
        assert all(0 < c.rows <= chunk_rows for c in chunks)
        whole = source.read_window(start, end)
        if not chunks:
            assert whole.rows == 0
            continue
        joined = concat(chunks)
        # Chunks follow the blocks: put the rows back in (ts, id) order to compare.
        ids = joined["meta"]["request_id"].map(lambda r: int(r[2:]))
        order = pd.DataFrame({"ts": joined["meta"]["ts"].map(pd.Timestamp), "id": ids}
                             ).sort_values(["ts", "id"]).index

        def back(frame: pd.DataFrame, order: pd.Index = order) -> pd.DataFrame:
            return frame.loc[order].reset_index(drop=True)

        assert_frame_equal(back(joined["meta"]), raw(whole.meta))
        features = back(joined["features"])
        assert_frame_equal(features[list(whole.features.columns)], raw(whole.features))
        probabilities = back(joined["probabilities"])
        assert_frame_equal(probabilities[list(whole.probabilities.columns)],
                           raw(whole.probabilities))
        assert_series_equal(joined["labels"].loc[order].reset_index(drop=True), whole.labels)


def test_chunks_fall_back_to_the_rows_when_blocks_disagree(plain: sa.Engine) -> None:
    engine = plain
    compaction.compact(engine, MODEL, block_rows=BLOCK)
    execute(engine, "DELETE FROM inference_logs WHERE request_id IN ('r-2', 'r-30')")
    start, end = EVERYTHING
    assert block_reader.window_chunks(engine, MODEL, start, end, 10) is None  # and drops them
    chunks = list(BuiltinSource(engine, MODEL).iter_chunks(start, end, 10))
    assert sum(c.rows for c in chunks) == N - 2
    compaction.compact(engine, MODEL, block_rows=BLOCK)
    again = block_reader.window_chunks(engine, MODEL, start, end, 10)
    assert again is not None
    assert sum(len(f.meta) for f in again) == N - 2


@pytest.mark.postgres
def test_postgresql_compaction_never_skips_a_row_committed_late(pg_url: str) -> None:
    # A transaction holding a lower id can commit after a later one; the compactor waits
    # for inserts in flight (a SHARE lock), and gives up after a second rather than
    # hold new inserts back longer.
    from monitor.store.db import create_engine, ensure_schema

    engine = create_engine(pg_url)
    ensure_schema(engine)
    try:
        add_logs(engine, plain_records(0, 4), other=False)
        slow = engine.connect()
        slow.begin()
        insert_logs(slow, MODEL, plain_records(4, 1))  # takes id 5, not committed yet
        add_logs(engine, plain_records(5, 2), other=False)  # ids 6, 7, committed
        with pytest.raises(sa.exc.OperationalError, match="lock timeout"):
            compaction.compact(engine, MODEL)
        assert block_reader.delete_blocks(engine, MODEL) == 0  # nothing was written
        slow.commit()
        slow.close()
        assert compaction.compact(engine, MODEL).rows == 7
        assert_blocks_read_equal(engine, [EVERYTHING])
    finally:
        engine.dispose()


def test_a_failing_compaction_does_not_stop_a_backfill(  # type: ignore[no-untyped-def]
    engine: sa.Engine, make_config, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Blocks only make reads faster: if compacting fails, the checks read the rows.
    from monitor.run.check import backfill

    with engine.begin() as conn:
        insert_logs(conn, MODEL, sample_records(120))
    _, config = make_config(engine.url.render_as_string(hide_password=False), min_rows=10)

    def broken(*_args: Any, **_kwargs: Any) -> None:
        raise TypeError("a value of a kind the codec does not know")

    monkeypatch.setattr(compaction, "compact", broken)
    with caplog.at_level("WARNING", logger="mqm.pipeline"):
        runs = backfill(engine, config, MODEL, T0, T0 + DAY, now=T0 + 3 * DAY)
    assert [r.rows for r in runs] == [120]
    assert "compacting the logs of loan_default failed: TypeError" in caplog.text
    assert block_rows_of(engine) == []


def test_a_block_column_of_one_chunk_is_that_chunk_and_several_are_joined() -> None:
    from monitor.store.blocks import _one_array

    one = pa.chunked_array([pa.array([1, 2, None])])
    got = _one_array(one)
    assert got.equals(one.chunk(0))
    assert got.buffers()[1].address == one.chunk(0).buffers()[1].address  # not a copy
    assert _one_array(pa.chunked_array([[1], [2, None]])).equals(pa.array([1, 2, None]))
    assert _one_array(pa.chunked_array([], type=pa.int64())).equals(pa.array([], pa.int64()))


@pytest.mark.parametrize("late", [[7, None, 0], [7, "yes"], [1.5]])
def test_int_labels_read_from_blocks_come_as_label_codes(
    engine: sa.Engine, late: list[Any]
) -> None:
    """Int or null labels in the blocks, and labels stored since: the read's codes are
    label_text's of its labels; a label of another type stored since leaves them out."""
    for first in range(0, N, 20):
        add_logs(engine, plain_records(first, min(20, N - first)))
    # Ints (a negative one among them) and a null.
    add_labels(engine, [(f"r-{i}", i // 3 % 3, T0) for i in range(0, N, 3)]
               + [("r-1", None, T0), ("r-4", -5, T0)])
    compaction.compact(engine, MODEL, block_rows=BLOCK)
    add_labels(engine, [(f"r-{2 + 3 * i}", v, T0 + DAY) for i, v in enumerate(late)])
    source = BuiltinSource(engine, MODEL)
    window = source.read_window(*EVERYTHING)
    assert exact(window.labels).count(("int", "1")) > 0  # labels_for's ints, in the blocks
    if all(v is None or type(v) is int for v in late):
        assert window.label_codes is not None
        assert exact(pd.Series(window.label_codes.texts())) == exact(label_text(window.labels))
    else:
        assert window.label_codes is None
    assert_blocks_read_equal(engine, WINDOWS)


@pytest.mark.parametrize("predictions", [
    [1, 0, None, 0, -3, 2**40],  # ints (a wide range: not coded) and a null
    [1, 0, None, 0, 1, 7],  # ints in a short range and a null
    ["yes", "no", None, "no", "maybe", "yes"],  # texts and a null
    [1, "1", None, 0, 1, 0],  # an int and a text: not coded
    [0.5, 1.5, None, 1.5, 0.5, 1.5],  # floats: not coded
    [True, False, None, True, True, False],  # bools: not coded
], ids=["wide-ints", "ints", "texts", "mixed", "floats", "bools"])
def test_predictions_and_versions_read_from_blocks_come_as_codes(
    engine: sa.Engine, predictions: list[Any]
) -> None:
    """A classifier's predictions (ints in a short range or texts, with nulls) and the
    versions (texts, with nulls) come coded from the blocks: label_text's texts of the
    predictions, the versions as logged; other predictions come uncoded."""
    records = [replace(record(i, {"x": i}), prediction=predictions[i % len(predictions)],
                       error=False, model_version=[None, "2.0", "1.0", "2.0"][i % 4])
               for i in range(N)]
    add_logs(engine, records[:30])
    compaction.compact(engine, MODEL, block_rows=BLOCK)
    add_logs(engine, records[30:])  # rows no block covers: read from the rows
    compaction.compact(engine, MODEL, block_rows=BLOCK)
    window = BuiltinSource(engine, MODEL).read_window(*EVERYTHING)
    kind = {type(v) for v in predictions if v is not None}
    coded = kind in ({int}, {str}) and (kind != {int} or max(map(abs, filter(None, predictions)))
                                        < 2**16)
    assert (window.prediction_codes is not None) == coded
    assert window.version_codes is not None and window.label_codes is not None
    assert_codes_are_the_values(window, frames_of(window))
    assert_blocks_read_equal(engine, WINDOWS)


@pytest.mark.parametrize("seed", range(4))
def test_rows_are_put_in_time_then_id_order_only_when_out_of_it(seed: int) -> None:
    """``_in_order``: None for rows in (ts, id) order (strictly rising times, or equal
    times in id order), else the positions that order them."""
    from monitor.store.blocks import _in_order

    rng = np.random.default_rng(seed)
    ts = np.sort(rng.integers(0, 50, 400)).astype(np.int64)  # many equal times
    ids = np.arange(400, dtype=np.int64)
    assert _in_order(ids, ts) is None
    assert _in_order(ids, np.arange(400, dtype=np.int64) * 3) is None
    swapped = ids.copy()
    tie = int(np.flatnonzero(ts[1:] == ts[:-1])[0])
    swapped[[tie, tie + 1]] = swapped[[tie + 1, tie]]  # equal times out of id order
    for got_ids, got_ts in ((swapped, ts), (ids, rng.permutation(ts))):
        order = _in_order(got_ids, got_ts)
        assert order is not None
        assert np.array_equal(order, np.lexsort((got_ids, got_ts)))


@pytest.mark.parametrize("seed", range(4))
def test_kinds_of_a_column_are_the_codes_its_rows_hold(seed: int) -> None:
    from monitor.store.columnar import OTHER, kinds_of

    rng = np.random.default_rng(seed)
    held = rng.choice(OTHER + 1, size=rng.integers(1, OTHER + 2), replace=False)
    codes = rng.choice(held, 5000).astype(np.int8)
    assert kinds_of(codes) == {int(c) for c in held}
    codes[17] = -3  # no code: counted as one beyond OTHER, as a bincount of bytes would
    assert kinds_of(codes) == {int(c) for c in codes if c >= 0} | {OTHER + 1}
    assert kinds_of(np.zeros(0, dtype=np.int8)) == set()

"""Log sources on both backends: the fast reader's frames, the label join, count, chunks."""

from __future__ import annotations

import gc
import json
import random
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from pandas.testing import assert_frame_equal, assert_series_equal

from monitor.errors import DatabaseError
from monitor.store.db import create_engine, ensure_schema
from monitor.store.frames import ColumnBuilder, WindowBuilder, loads_each
from monitor.store.logs import LogRecord, insert_labels, insert_logs
from monitor.store.sources import META_COLUMNS, BuiltinSource, LogWindow, SqlSource, make_source
from tests.conftest import concat, raw

T0 = datetime(2026, 10, 1, tzinfo=UTC)
MODEL = "loan_default"

# Values a client may send for one feature, as JSON gives them back.
TRICKY: list[Any] = [
    0, 1, -7, 3.7, 1.0, 0.1 + 0.2, 1e-300, 2**53 + 1, 2**63 - 1, 2**63, 2**64 + 5, -(2**70),
    True, False, None, "N/A", "", "12.5", "Ünïcödé ✓", "日本語", "line\nbreak", [1, "a"],
    {"nested": [None, 2.5]},
]


def record(i: int, ts: datetime, features: dict[str, Any], *, prediction: Any = 1,
           probabilities: dict[str, float] | None = None, error: bool = False) -> LogRecord:
    return LogRecord(request_id=f"r-{i}", ts=ts, features=features, prediction=prediction,
                     probabilities=probabilities, latency_ms=None if i % 5 == 0 else 10.0 + i,
                     error=error, error_message="boom" if error else None,
                     model_version="1.0" if i % 2 else None)


def random_rows(rng: random.Random, n: int, pool: list[Any]) -> list[dict[str, Any]]:
    """Rows whose keys come and go, in varying order, with values from ``pool``."""
    keys = ["a", "b", "ç", "d", "e"]
    rows = []
    for _ in range(n):
        chosen = [k for k in keys if rng.random() < 0.85]
        if rng.random() < 0.3:
            rng.shuffle(chosen)
        rows.append({k: rng.choice(pool) for k in chosen})
    return rows


def build(rows: list[dict[str, Any]], batch: int) -> pd.DataFrame:
    builder = ColumnBuilder()
    for i in range(0, len(rows), batch):
        builder.add(rows[i:i + batch])
    return builder.frame()


# --- the column builder against from_records -----------------------------------------


@pytest.mark.parametrize("pool", [
    [1, 2, 3], [1.5, 2.0, -0.25], [1, 2.5], [True, False], [True, 1], [1, None], [None],
    [1.5, None], [True, None], ["x", "y"], ["x", None], [1, "N/A"], [2.5, "N/A", None],
    [2**63, 1], [2**64 + 5, 1], [0, 2**63 - 1, -(2**63)], [True, "x", 1, 2.5, None],
    ["ü", "", "N/A"], TRICKY,
], ids=repr)
@pytest.mark.parametrize("batch", [1, 7, 1000])
def test_columns_are_typed_as_from_records_types_them(pool: list[Any], batch: int) -> None:
    rng = random.Random(len(pool) * 1000 + batch)
    for n in (1, 2, 40):
        rows = random_rows(rng, n, pool)
        assert_frame_equal(build(rows, batch), pd.DataFrame.from_records(rows),
                           check_index_type=True)


def test_uniform_rows_and_late_keys() -> None:
    rows = [{"x": i, "y": "s"} for i in range(10)] + [{"y": "t", "z": True}] + [
        {"x": 1.5, "y": "u"} for _ in range(5)] + [{}, {}]
    for batch in (1, 3, 10, 11, 100):
        assert_frame_equal(build(rows, batch), pd.DataFrame.from_records(rows))
    assert list(build(rows, 4).columns) == ["x", "y", "z"]  # first-appearance order
    empty = build([{}, {}], 10)
    assert empty.shape == (2, 0)


def test_raw_values_keep_their_python_types() -> None:
    rows = [{"f": 3.7}, {"f": "N/A"}, {"f": True}, {"f": 2}, {"g": 1}]
    frame = build(rows, 2)
    assert frame["f"].dtype == object
    assert [type(v) for v in frame["f"][:4]] == [float, str, bool, int]
    assert frame["f"][1] == "N/A" and frame["f"][2] is True
    assert pd.isna(frame["f"][4]) and frame["g"].dtype == "float64"


def test_json_values_parse_as_pythons_json_parses_them() -> None:
    rng = random.Random(5)
    docs: list[Any] = [*TRICKY, 2**64 - 1, 10**19, -(10**25), 0.000114903230128748, 1e22,
                       -0.0, 12345678901234567890123, {"id": "a12345678901234567890123"}]
    docs += [rng.random() * 10 ** rng.randint(-30, 30) for _ in range(500)]
    docs += [{"k": rng.choice(docs), "é": [rng.choice(docs)]} for _ in range(200)]
    texts = [json.dumps(d) for d in docs]
    for batch in (texts, texts[:23], [texts[11]], texts[-200:]):
        # repr tells 1 from 1.0 and -0.0 from 0.0, and shows every float digit.
        assert list(map(repr, loads_each(batch))) == [repr(json.loads(t)) for t in batch]
    # SQL NULL, and numbers that SQLite's NUMERIC affinity already turned into numbers.
    assert loads_each([None, "1", 2, 2.5, '"s"']) == [None, 1, 2, 2.5, "s"]
    assert loads_each([1, 2.5]) == [1, 2.5]
    assert type(loads_each(["18446744073709551621"])[0]) is int


def test_huge_integers_are_read_again_in_any_batch_shape() -> None:
    """orjson reads 2**64 and more as floats: such batches are parsed again, exactly."""
    rows = [{"a": 1.5, "b": "x"}, {"a": 2**70, "b": "y"}, {"b": "z"}, {"a": [2**65]},
            {"a": {"n": -(2**66)}}, {"a": 1e300}]
    for batch in (1, 2, 6):
        builder = ColumnBuilder()
        for i in range(0, len(rows), batch):
            texts = [json.dumps(r) for r in rows[i:i + batch]]
            builder.add(loads_each(texts, checked=False), texts)
        frame = builder.frame()
        expected = pd.DataFrame.from_records(rows)
        assert_frame_equal(frame, expected)
        assert frame["a"][1] == 2**70 and type(frame["a"][1]) is int
        assert frame["a"][3] == [2**65] and frame["a"][4] == {"n": -(2**66)}


def test_equal_texts_are_shared_but_numbers_never_merge() -> None:
    rows = [{"c": "RENT", "n": v} for v in (1, True, 1.0, "1")] * 50
    frame = build(rows, 16)
    assert len({id(v) for v in frame["c"]}) == 1  # one object for the repeated text
    assert [type(v) for v in frame["n"][:4]] == [int, bool, float, str]


def test_window_builder_meta_and_labels() -> None:
    builder = WindowBuilder()
    meta = {name: [None, None] for name in META_COLUMNS}
    meta.update(request_id=["a", "b"], ts=["2026-10-01 00:00:00.000000"] * 2,
                prediction=[1, 0], error=[False, True])
    builder.add(meta, [{"x": 1}, {"x": "y"}], [None, {"1": 0.5}], [None, 1])
    frames = builder.build()
    assert frames.meta["prediction"].dtype == "int64"
    assert str(frames.meta["ts"].dtype) == "datetime64[ns, UTC]"
    assert frames.meta["label_time"].isna().all()
    assert frames.labels.tolist() == [None, 1] and frames.labels.dtype == object
    assert frames.probabilities["1"].isna().tolist() == [True, False]


# --- the builtin source, on both backends --------------------------------------------


def tricky_records(n: int, seed: int = 3) -> list[LogRecord]:
    rng = random.Random(seed)
    feats = random_rows(rng, n, TRICKY)
    for i, f in enumerate(feats):
        if i % 4 == 0:
            f["annual_income"] = 50000.5 + i
        elif i % 4 == 1:
            f["annual_income"] = "N/A"
        if i == 7:
            f["surprise"] = "unexpected key"
    return [
        record(i, T0 + timedelta(minutes=i // 3), f,  # three rows share each time
               prediction=[1, 0, "maybe", None][i % 4] if i % 4 != 3 else None,
               probabilities=None if i % 6 == 0 else {"0": 0.25, "1": 0.75},
               error=i % 4 == 3)
        for i, f in enumerate(feats)
    ]


@pytest.fixture
def tricky(engine: sa.Engine) -> list[LogRecord]:
    recs = tricky_records(60)
    with engine.begin() as conn:
        insert_logs(conn, MODEL, recs)
        insert_logs(conn, "other", recs[:5])  # same request ids under another model
        insert_labels(conn, MODEL, [(f"r-{i}", [1, 0, "yes", {"k": [1]}][i % 4],
                                     T0 + timedelta(days=1, minutes=i)) for i in range(0, 60, 2)])
        insert_labels(conn, "other", [("r-1", 99, T0)])
    return recs


def test_builtin_window_matches_from_records(engine: sa.Engine, tricky: list[LogRecord]) -> None:
    window = BuiltinSource(engine, MODEL).read_window(T0, T0 + timedelta(days=1))
    assert isinstance(window, LogWindow) and window.rows == 60
    assert list(window.meta.columns) == list(META_COLUMNS)
    assert_frame_equal(window.features,
                       pd.DataFrame.from_records([r.features for r in tricky]))
    assert window.features["annual_income"][1] == "N/A"
    assert window.features["surprise"][7] == "unexpected key"
    assert_frame_equal(window.probabilities,
                       pd.DataFrame.from_records([r.probabilities or {} for r in tricky]))
    meta = window.meta
    assert meta["request_id"].tolist() == [r.request_id for r in tricky]
    assert meta["prediction"].tolist()[:3] == [1, 0, "maybe"]
    assert meta["prediction"].isna().tolist() == [r.prediction is None for r in tricky]
    assert meta["error"].dtype == bool and meta["error"].tolist() == [r.error for r in tricky]
    assert meta["latency_ms"].dtype == "float64"
    assert meta["latency_ms"].isna().tolist() == [r.latency_ms is None for r in tricky]
    assert meta["model_version"].tolist() == [r.model_version for r in tricky]
    assert meta["error_message"].tolist() == [r.error_message for r in tricky]


def test_labels_are_joined_by_model_and_request_id(
    engine: sa.Engine, tricky: list[LogRecord]
) -> None:
    window = BuiltinSource(engine, MODEL).read_window(T0, T0 + timedelta(days=1))
    expected = [[1, 0, "yes", {"k": [1]}][i % 4] if i % 2 == 0 else None for i in range(60)]
    assert window.labels.dtype == object and window.labels.name == "label"
    assert window.labels.tolist() == expected  # r-1's label is another model's: not joined
    times = window.meta["label_time"]
    assert times.isna().tolist() == [i % 2 == 1 for i in range(60)]
    assert times[4] == T0 + timedelta(days=1, minutes=4)


def test_times_are_timezone_aware_utc(engine: sa.Engine, tricky: list[LogRecord]) -> None:
    source = BuiltinSource(engine, MODEL)
    paris = timezone(timedelta(hours=2))
    # 02:10 at +02:00 is 00:10 UTC: rows from minute 10 on.
    window = source.read_window(datetime(2026, 10, 1, 2, 10, tzinfo=paris), T0 + timedelta(days=1))
    assert window.rows == 60 - 30
    for col in ("ts", "label_time"):
        assert str(window.meta[col].dtype) == "datetime64[ns, UTC]"
    assert window.meta["ts"][0] == T0 + timedelta(minutes=10)
    assert window.meta["ts"][0].tzinfo is not None
    low, high = source.time_range()
    assert low == T0 and high == T0 + timedelta(minutes=19) and low.tzinfo is not None


def test_count_is_the_rows_of_the_half_open_window(
    engine: sa.Engine, tricky: list[LogRecord]
) -> None:
    source = BuiltinSource(engine, MODEL)
    assert source.count(T0, T0 + timedelta(days=1)) == 60
    assert source.count(T0 + timedelta(minutes=1), T0 + timedelta(minutes=3)) == 6
    assert source.count(T0 - timedelta(days=1), T0) == 0
    assert BuiltinSource(engine, "other").count(T0, T0 + timedelta(days=1)) == 5


@pytest.mark.parametrize("chunk_rows", [1, 7, 20, 60, 1000])
def test_chunks_concatenated_are_the_window(
    engine: sa.Engine, tricky: list[LogRecord], chunk_rows: int
) -> None:
    source = BuiltinSource(engine, MODEL)
    start, end = T0, T0 + timedelta(days=1)
    whole = source.read_window(start, end)
    chunks = list(source.iter_chunks(start, end, chunk_rows))
    assert [c.rows for c in chunks] == [min(chunk_rows, 60 - k) for k in range(0, 60, chunk_rows)]
    assert all((c.start, c.end) == (start, end) for c in chunks)
    joined = concat(chunks)
    assert_frame_equal(joined["meta"], raw(whole.meta))
    assert_frame_equal(joined["features"], raw(whole.features))
    assert_frame_equal(joined["probabilities"], raw(whole.probabilities))
    assert_series_equal(joined["labels"], whole.labels)


def test_chunks_of_uniform_rows_keep_dtypes(engine: sa.Engine) -> None:
    recs = [record(i, T0 + timedelta(seconds=i // 10), {"x": i, "y": 0.5 * i, "z": "k"})
            for i in range(100)]
    with engine.begin() as conn:
        insert_logs(conn, MODEL, recs)
    source = BuiltinSource(engine, MODEL)
    whole = source.read_window(T0, T0 + timedelta(hours=1))
    chunks = list(source.iter_chunks(T0, T0 + timedelta(hours=1), 30))
    assert_frame_equal(pd.concat([c.features for c in chunks], ignore_index=True),
                       whole.features)
    assert whole.features.dtypes.astype(str).tolist() == ["int64", "float64", "object"]


def test_empty_window_and_bad_chunk_size(engine: sa.Engine, tricky: list[LogRecord]) -> None:
    source = BuiltinSource(engine, MODEL)
    empty = source.read_window(T0 - timedelta(days=2), T0)
    assert empty.rows == 0 and empty.features.shape == (0, 0) and len(empty.labels) == 0
    assert str(empty.meta["ts"].dtype) == "datetime64[ns, UTC]"
    assert list(source.iter_chunks(T0 - timedelta(days=2), T0, 10)) == []
    with pytest.raises(ValueError, match="chunk_rows"):
        next(source.iter_chunks(T0, T0 + timedelta(days=1), 0))


def test_big_integers_and_floats_read_back_exactly(engine: sa.Engine) -> None:
    # Beyond 64 bits orjson gives up and Python's json reads the row; "x" keeps the
    # column object, so the values are seen as parsed.
    values = [2**64 + 5, -(2**70), 0.1 + 0.2, 1e-300, 2**63 - 1, "x"]
    recs = [record(i, T0, {"v": v}) for i, v in enumerate(values)]
    with engine.begin() as conn:
        insert_logs(conn, MODEL, recs)
    got = BuiltinSource(engine, MODEL).read_window(T0, T0 + timedelta(days=1)).features["v"]
    assert [type(v) for v in got] == [int, int, float, float, int, str]
    assert got.tolist() == values


def test_reading_leaves_the_gc_as_it_was(engine: sa.Engine, tricky: list[LogRecord]) -> None:
    assert gc.isenabled()
    list(BuiltinSource(engine, MODEL).iter_chunks(T0, T0 + timedelta(days=1), 25))
    assert gc.isenabled()


def test_a_failure_mid_read_leaves_the_source_usable(
    engine: sa.Engine, tricky: list[LogRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    from monitor.store import reading

    calls = {"n": 0}
    real = reading.loads_each

    def failing(texts: Any, **kw: Any) -> list[Any]:
        calls["n"] += 1
        if calls["n"] > 6:  # in the second batch, with the next one being fetched
            raise RuntimeError("parse failed")
        return real(texts, **kw)

    monkeypatch.setattr(reading, "FETCH_ROWS", 7)
    monkeypatch.setattr(reading, "loads_each", failing)
    source = BuiltinSource(engine, MODEL)
    with pytest.raises(RuntimeError, match="parse failed"):
        source.read_window(T0, T0 + timedelta(days=1))
    monkeypatch.setattr(reading, "loads_each", real)
    assert source.read_window(T0, T0 + timedelta(days=1)).rows == 60
    assert gc.isenabled()


def test_driver_errors_are_database_errors(tmp_path: Path) -> None:
    eng = create_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(DatabaseError, match=r"cannot read inference logs .*no such table"):
        BuiltinSource(eng, MODEL).read_window(T0, T0 + timedelta(days=1))
    eng.dispose()


def test_corrupt_json_is_a_database_error(tmp_path: Path) -> None:
    eng = create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    ensure_schema(eng)
    with eng.begin() as conn:
        insert_logs(conn, MODEL, [record(1, T0, {"a": 1})])
        conn.execute(sa.text("UPDATE inference_logs SET features = '{bad'"))
    with pytest.raises(DatabaseError, match="not valid JSON"):
        BuiltinSource(eng, MODEL).read_window(T0, T0 + timedelta(days=1))
    eng.dispose()


# --- a user's table ------------------------------------------------------------------


def make_user_table(engine: sa.Engine, rows: int) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(
            "CREATE TABLE serving_log (rid INTEGER, created_at TIMESTAMP, feats TEXT, "
            "pred INTEGER, p0 FLOAT, p1 FLOAT)"))
        conn.execute(sa.text("INSERT INTO serving_log VALUES (:rid, :ts, :feats, 1, 0.3, 0.7)"),
                     [{"rid": i, "ts": (T0 + timedelta(minutes=i)).replace(tzinfo=None),
                       "feats": f'{{"age": {20 + i}, "home_ownership": "OWN"}}'}
                      for i in range(rows)])


def user_source_config(url: str | None = None) -> Any:
    from monitor.config import SourceConfig

    return SourceConfig.model_validate({
        "kind": "sql", "table": "serving_log", "url": url, "columns": {
            "request_id": "rid", "timestamp": "created_at", "prediction": "pred",
            "features_json": "feats", "probabilities": {0: "p0", 1: "p1"}}})


def test_sql_source_labels_count_and_chunks(engine: sa.Engine, schema) -> None:
    make_user_table(engine, 25)
    with engine.begin() as conn:
        insert_labels(conn, MODEL, [(str(i), i % 2, T0 + timedelta(hours=i))
                                    for i in range(0, 25, 3)])
        insert_labels(conn, "other", [("1", 5, T0)])
    source = make_source(engine, MODEL, user_source_config(), schema)
    assert isinstance(source, SqlSource)
    start, end = T0, T0 + timedelta(minutes=20)
    whole = source.read_window(start, end)
    assert whole.rows == source.count(start, end) == 20
    assert whole.labels.tolist() == [i % 2 if i % 3 == 0 else None for i in range(20)]
    assert whole.meta["label_time"][3] == T0 + timedelta(hours=3)
    assert str(whole.meta["label_time"].dtype) == "datetime64[ns, UTC]"
    assert str(whole.meta["ts"].dtype) == "datetime64[ns, UTC]"
    assert whole.meta["ts"][0] == T0
    assert whole.features["age"].tolist() == list(range(20, 40))
    assert whole.probabilities.to_dict("list") == {"0": [0.3] * 20, "1": [0.7] * 20}
    chunks = list(source.iter_chunks(start, end, 8))
    assert [c.rows for c in chunks] == [8, 8, 4]
    joined = concat(chunks)
    assert_frame_equal(joined["meta"], raw(whole.meta))
    assert_frame_equal(joined["features"], raw(whole.features))
    assert_series_equal(joined["labels"], whole.labels)
    assert list(source.iter_chunks(T0 - timedelta(days=1), T0, 8)) == []


def test_sql_source_reads_labels_from_the_store_engine(tmp_path: Path, schema) -> None:
    store = create_engine(f"sqlite:///{tmp_path / 'mqm.db'}")
    ensure_schema(store)
    user_url = f"sqlite:///{tmp_path / 'serving.db'}"
    user = create_engine(user_url)
    make_user_table(user, 5)
    with store.begin() as conn:
        insert_labels(conn, MODEL, [("2", "late", T0 + timedelta(days=3))])
    source = make_source(store, MODEL, user_source_config(user_url), schema)
    window = source.read_window(T0, T0 + timedelta(days=1))
    assert window.labels.tolist() == [None, None, "late", None, None]
    direct = SqlSource(user, user_source_config(), schema, store_engine=store)
    assert direct.read_window(T0, T0 + timedelta(days=1)).labels.tolist()[2] == "late"
    passed = make_source(user, MODEL, user_source_config(), schema, store_engine=store)
    assert passed.read_window(T0, T0 + timedelta(days=1)).labels.tolist()[2] == "late"
    # Without a store, labels are looked up in the user's database, which has none.
    with pytest.raises(DatabaseError, match=r"cannot read labels .*ground_truth"):
        SqlSource(user, user_source_config(), schema).read_window(T0, T0 + timedelta(days=1))
    user.dispose()
    store.dispose()


def test_a_features_only_model_reads_a_user_table_without_prediction(engine: sa.Engine,
                                                                     schema) -> None:
    """Issue 13, item 11: a features-only contract (task: features) needs no prediction
    column in a user's own table, and reads none even where the mapping names one."""
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE inputs_log (rid INTEGER, created_at TIMESTAMP, "
                             "age INTEGER, home_ownership TEXT)"))
        conn.execute(sa.text("INSERT INTO inputs_log VALUES (:rid, :ts, :age, 'OWN')"),
                     [{"rid": i, "ts": (T0 + timedelta(minutes=i)).replace(tzinfo=None),
                       "age": 20 + i} for i in range(6)])
    from monitor.config import SourceConfig
    from monitor.schema import ModelSchema

    inputs = ModelSchema(model="inputs", task="features",
                         features=[schema.feature("age"), schema.feature("home_ownership")])

    for columns in ({}, {"prediction": "pred", "probabilities": {0: "p0"}}):
        config = SourceConfig.model_validate({"kind": "sql", "table": "inputs_log", "columns": {
            "request_id": "rid", "timestamp": "created_at", **columns}})
        window = make_source(engine, "inputs", config, inputs).read_window(
            T0, T0 + timedelta(days=1))
        assert window.rows == 6 and window.meta["prediction"].isna().all()
        assert window.features["age"].tolist() == list(range(20, 26))
        assert window.probabilities.empty or window.probabilities.isna().all().all()

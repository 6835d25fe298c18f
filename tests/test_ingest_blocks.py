"""Log blocks written as a file loads (``monitor.store.arrow_blocks``): the rows coded from
the load's Arrow columns and handed to the compactor with the ids the publish gave them.

The reference is the compactor itself: for the same store, the blocks written at load
must be the blocks ``compact`` writes when it reads every row back from the table (same
id ranges and sizes, same label marks, and frames equal down to each element's Python
type), and a window read right after the load must equal the row reader's.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

import monitor.ingest
import monitor.ingest_fast
from monitor.ingest import ingest_logs
from monitor.schema import ModelSchema
from monitor.store import block_reader, compaction
from monitor.store.arrow_blocks import LoadedRows, coded_rows
from monitor.store.arrow_logs import ArrowLogs
from monitor.store.blocks import Part, decode_part
from monitor.store.blocks import frames_of as part_frames
from monitor.store.logs import LogRecord, insert_labels, insert_logs
from monitor.store.reading import read_builtin
from tests.store.test_blocks import LABELS, assert_same_frames
from tests.test_ingest_fast import START, base, varied, write
from tests.test_ingest_json_fast import T0, flat_row

MODEL = "loan_default"
EVERYTHING = (START - timedelta(days=1), START + timedelta(days=2))


# --- helpers --------------------------------------------------------------------------


def blocks(engine: sa.Engine) -> list[tuple[tuple[int, int, int, int], Part]]:
    """The model's blocks in id order: (lo_id, hi_id, rows, labels_hw) and their rows."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT lo_id, hi_id, rows, labels_hw, data, labels FROM log_blocks "
            "WHERE model = :m ORDER BY lo_id"), {"m": MODEL}).all()
    return [((r[0], r[1], r[2], r[3]), decode_part(r[4], r[5])) for r in rows]


def compacted_again(engine: sa.Engine, block_rows: int | None = None
                    ) -> list[tuple[tuple[int, int, int, int], Part]]:
    """The blocks the compactor writes for the same store, reading every row back."""
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM log_blocks WHERE model = :m"), {"m": MODEL})
    compaction.compact(engine, MODEL, block_rows=block_rows)
    return blocks(engine)


def assert_blocks_as_compacted(engine: sa.Engine, block_rows: int | None = None) -> None:
    """The model's blocks equal, block by block, those the compactor writes from the
    rows (which replace them)."""
    got = blocks(engine)
    assert got, "no block was written"
    want = compacted_again(engine, block_rows)
    assert [g[0] for g in got] == [w[0] for w in want]
    for (bounds, mine), (_, theirs) in zip(got, want, strict=True):
        assert list(mine.ids) == list(theirs.ids), bounds
        assert_same_frames(part_frames(mine), part_frames(theirs))


def assert_window_as_rows(engine: sa.Engine, start: datetime, end: datetime) -> None:
    """A window read from blocks (which must be used) equals the row reader's."""
    got = block_reader.read_window(engine, MODEL, start, end)
    assert got is not None
    want, _ = read_builtin(engine, MODEL, start, end)
    assert_same_frames(got, want)


def no_compaction(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the rows the compactor reads back from the table."""
    read: list[int] = []
    real = compaction._read_rows

    def counting(*args: Any, **kwargs: Any) -> Any:
        builder = real(*args, **kwargs)
        read.append(builder.rows)
        return builder

    monkeypatch.setattr(compaction, "_read_rows", counting)
    return read


def load(engine: sa.Engine, schema: ModelSchema, path: Path, **kwargs: Any) -> Any:
    return ingest_logs(engine, MODEL, schema, path, blocks=True, **kwargs)


def other_rows(first: int, n: int) -> list[LogRecord]:
    """Rows of the model another writer stores (as the HTTP API does), keys of their own."""
    return [LogRecord(request_id=f"o-{i}", ts=START + timedelta(minutes=i),
                      features={"age": 40, "zzz": "other", "annual_income": "N/A"},
                      prediction=1,
                      probabilities={"1": 0.5}, latency_ms=2.0, error=False,
                      error_message=None, model_version="9", fallback_reason="flag")
            for i in range(first, first + n)]


def store_others(engine: sa.Engine, records: list[LogRecord], model: str = MODEL) -> None:
    with engine.begin() as conn:
        insert_logs(conn, model, records)


def file_columns(**change: Any) -> dict[str, Any]:
    """``varied`` rows with values whose stored JSON reads back with another type, or
    beyond what a JSON number keeps in 64 bits."""
    cols = varied(40)
    cols.update(change)
    return cols


FILES: dict[str, dict[str, Any]] = {
    "varied types, nulls, missing probabilities": file_columns(),
    "an unsigned column beyond int64": file_columns(open_accounts=pa.array(
        [2**64 - 1 - i if i % 3 == 0 else i for i in range(40)], pa.uint64())),
    "float predictions": file_columns(prediction=[
        None if i % 9 == 0 else [0.5, 3.0, -0.0, 1e20, 0.1 + 0.2, 1e-7, 2.0**60, 123456.789][
            i % 8] for i in range(40)]),
    "bool and text predictions, no probabilities": {
        k: v for k, v in file_columns(prediction=[["yes", "no"][i % 2] for i in range(40)]
                                      ).items() if not k.startswith("proba")},
    "a feature of texts only, with an all-null class": file_columns(
        proba_1=pa.nulls(40, pa.float64()), credit_score=[f"c{i % 4}" for i in range(40)]),
}


# --- the blocks written at load ----------------------------------------------------------


@pytest.mark.parametrize("name", list(FILES))
def test_blocks_written_at_load_are_the_compactors(engine, schema, tmp_path, monkeypatch,
                                                   name) -> None:
    read = no_compaction(monkeypatch)
    report = load(engine, schema, write(tmp_path / "logs.parquet", FILES[name]))
    assert report.added == 40
    assert sum(read) == 0  # nothing read back: every row came from the load's columns
    assert_window_as_rows(engine, *EVERYTHING)
    assert_blocks_as_compacted(engine)


def test_json_lines_write_blocks_as_they_load(engine, schema, tmp_path, monkeypatch) -> None:
    read = no_compaction(monkeypatch)
    rows = [flat_row(i, annual_income=[0.1 + 0.2, 3.0, 1e300, -2.5e-8][i % 4],
                     has_cosigner=None if i % 6 == 0 else i % 2 == 0) for i in range(30)]
    path = tmp_path / "logs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert load(engine, schema, path).added == 30
    assert sum(read) == 0
    first = datetime.fromtimestamp(T0, UTC)
    assert_window_as_rows(engine, first, first + timedelta(seconds=20))
    assert_blocks_as_compacted(engine)


def test_json_lines_chunks_already_stored_add_no_rows_to_the_blocks(
        engine, schema, tmp_path, monkeypatch) -> None:
    """A JSON-lines file loaded again with new lines at its end: its first chunks are all
    stored (skipped unparsed), its last one has new rows, and the blocks get those only."""
    monkeypatch.setattr(monitor.ingest_fast, "FAST_JSON_BYTES", 2_000)  # several chunks
    read = no_compaction(monkeypatch)
    rows = [flat_row(i) for i in range(40)]
    path = tmp_path / "logs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows[:30]))
    assert load(engine, schema, path).added == 30
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    report = load(engine, schema, path)
    assert (report.added, report.already_stored) == (10, 30)
    assert sum(read) == 0
    assert sum(b[0][2] for b in blocks(engine)) == 40
    first = datetime.fromtimestamp(T0, UTC)
    assert_window_as_rows(engine, first, first + timedelta(seconds=60))
    assert_blocks_as_compacted(engine)


def test_rows_already_stored_are_left_to_the_blocks_they_are_in(engine, schema, tmp_path,
                                                                 monkeypatch) -> None:
    """A file whose first rows are stored (by a load with blocks, then by one without)
    adds blocks for its new rows only, growing the newest block as compaction does."""
    monkeypatch.setattr(monitor.ingest_fast, "FAST_BATCH", 7)
    monkeypatch.setattr(compaction, "BLOCK_ROWS", 9)
    load(engine, schema, write(tmp_path / "a.parquet", base(10)))
    ingest_logs(engine, MODEL, schema, write(tmp_path / "b.parquet", base(16)))  # no blocks
    report = load(engine, schema, write(tmp_path / "c.parquet", base(30)))
    assert (report.added, report.already_stored) == (14, 16)
    assert [b[0][:3] for b in blocks(engine)] == [(0, 9, 9), (9, 18, 9), (18, 27, 9),
                                                  (27, 30, 3)]
    assert_window_as_rows(engine, *EVERYTHING)
    assert_blocks_as_compacted(engine, block_rows=9)


def test_labels_stored_before_the_logs_are_in_the_blocks(engine, schema, tmp_path) -> None:
    with engine.begin() as conn:
        insert_labels(conn, MODEL, [(f"r-{i}", LABELS[i % len(LABELS)],
                                     START + timedelta(hours=1, microseconds=i))
                                    for i in range(0, 30, 4)])
        insert_labels(conn, "other", [("r-1", 1, START)])  # another model's: never joined
        last = conn.execute(sa.text("SELECT max(id) FROM ground_truth")).scalar()
    load(engine, schema, write(tmp_path / "logs.parquet", base(30)))
    assert [b[0][3] for b in blocks(engine)] == [last]  # the label mark: all stored so far
    assert_window_as_rows(engine, *EVERYTHING)
    assert_blocks_as_compacted(engine)


def test_another_writers_rows_between_loads(engine, schema, tmp_path, monkeypatch) -> None:
    """Rows of the model stored by another writer between two loads (not in a block yet)
    are read from the table, the load's from memory, into the same blocks."""
    monkeypatch.setattr(compaction, "BLOCK_ROWS", 8)
    load(engine, schema, write(tmp_path / "a.parquet", base(12)))
    store_others(engine, other_rows(0, 5))
    store_others(engine, other_rows(100, 2), model="other")
    read = no_compaction(monkeypatch)
    # NaN is null (None) in a column that holds texts too: not a float NaN.
    second = {**base(10, first=12), "annual_income": [float("nan"), 1.5] * 5}
    load(engine, schema, write(tmp_path / "b.parquet", second))
    assert sum(read) == 5  # the other writer's rows only
    assert_window_as_rows(engine, *EVERYTHING)
    assert_blocks_as_compacted(engine, block_rows=8)


def _stored_ids(engine: sa.Engine, request_ids: list[str]) -> list[int]:
    with engine.connect() as conn:
        found = dict(conn.execute(sa.text(
            "SELECT request_id, id FROM inference_logs WHERE model = :m"), {"m": MODEL}).all())
    return [found[r] for r in request_ids]


def _loaded(engine: sa.Engine, schema: ModelSchema, columns: list[dict[str, Any]]
            ) -> list[Part]:
    """The rows of ``columns`` (files stored already) as a load hands them to ``compact``."""
    sqlite = engine.dialect.name == "sqlite"
    loaded = LoadedRows(sqlite)
    request_ids: list[str] = []
    for cols in columns:
        logs = ArrowLogs(pa.table(cols).to_batches()[0],
                         monitor.ingest_fast._layout(schema, None))
        loaded.add(coded_rows(logs, sqlite=sqlite))
        request_ids += logs.ids.to_pylist()
    parts = loaded.parts(_stored_ids(engine, request_ids))
    assert parts is not None
    if sqlite:  # the predictions are ints here: nothing to read back
        assert "prediction" in parts[0].meta
    return parts


@pytest.mark.parametrize("runs", [compaction.MAX_RUNS, 0])
def test_another_writers_rows_among_the_loads_ids(engine, schema, tmp_path, monkeypatch,
                                                  runs) -> None:
    """On PostgreSQL another writer's ids can fall among a load's. Its rows are read
    from the table between the load's rows, a row of the load deleted since goes in no
    block, and with more runs of others than ``MAX_RUNS`` the load is read back whole."""
    monkeypatch.setattr(compaction, "MAX_RUNS", runs)
    parts = [base(6), base(4, first=6), base(7, first=10)]
    ingest_logs(engine, MODEL, schema, write(tmp_path / "a.parquet", parts[0]))
    store_others(engine, other_rows(0, 3))
    ingest_logs(engine, MODEL, schema, write(tmp_path / "b.parquet", parts[1]))
    store_others(engine, other_rows(3, 1))
    store_others(engine, other_rows(100, 2), model="other")
    ingest_logs(engine, MODEL, schema, write(tmp_path / "c.parquet", parts[2]))
    known = _loaded(engine, schema, parts)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM inference_logs WHERE request_id = 'r-7'"))
    read = no_compaction(monkeypatch)
    result = compaction.compact(engine, MODEL, block_rows=5, known=known)
    assert result.rows == 16 + 4
    assert sum(read) == (4 if runs else 20)
    assert_window_as_rows(engine, *EVERYTHING)
    assert_blocks_as_compacted(engine, block_rows=5)


def test_rows_another_writer_stored_first_leave_the_blocks_to_compaction(
        engine, schema, tmp_path, monkeypatch) -> None:
    """Rows the publish skipped (stored by another writer after the load looked) leave
    the load unable to tell which of its rows got which id: it writes no block."""
    ingest_logs(engine, MODEL, schema, write(tmp_path / "a.parquet", base(5)))
    monkeypatch.setattr(monitor.ingest_fast, "stored_request_ids", lambda *args: [])
    report = load(engine, schema, write(tmp_path / "b.parquet", base(12)))
    assert (report.added, report.already_stored) == (7, 5)
    assert blocks(engine) == []
    compaction.compact(engine, MODEL)
    assert_window_as_rows(engine, *EVERYTHING)


def test_no_blocks_unless_asked(engine, schema, tmp_path) -> None:
    ingest_logs(engine, MODEL, schema, write(tmp_path / "a.parquet", base(5)))
    assert blocks(engine) == []


# --- a failure writing blocks -------------------------------------------------------------


def _fail_second_block(engine: sa.Engine) -> None:
    """The database refuses any block after the first (as a full disk would)."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            # Not RAISE(): SQLite reports it as a constraint, which the compactor takes
            # for another compactor's block.
            conn.execute(sa.text(
                "CREATE TRIGGER no_second_block BEFORE INSERT ON log_blocks "
                "WHEN (SELECT count(*) FROM log_blocks) >= 1 "
                "BEGIN SELECT json('disk full'); END"))
        else:
            conn.execute(sa.text(
                "CREATE FUNCTION no_second_block() RETURNS trigger AS $$ BEGIN "
                "IF (SELECT count(*) FROM log_blocks) >= 1 THEN "
                "RAISE EXCEPTION 'disk full'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql"))
            conn.execute(sa.text(
                "CREATE TRIGGER no_second_block BEFORE INSERT ON log_blocks "
                "FOR EACH ROW EXECUTE FUNCTION no_second_block()"))


def _drop_failure(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TRIGGER no_second_block" + (
            "" if engine.dialect.name == "sqlite" else " ON log_blocks")))


def test_a_load_too_large_to_hold_leaves_its_blocks_to_compaction(
        engine, schema, tmp_path, monkeypatch, caplog) -> None:
    """A load holds its rows in block form until it is published; past MAX_LOADED_ROWS it
    lets them go (its memory would grow with the file) and compaction writes the blocks,
    the same ones."""
    import monitor.store.arrow_blocks as arrow_blocks

    monkeypatch.setattr(arrow_blocks, "MAX_LOADED_ROWS", 15)
    monkeypatch.setattr(monitor.ingest_fast, "FAST_BATCH", 7)
    read = no_compaction(monkeypatch)
    with caplog.at_level(logging.INFO, logger="mqm.ingest"):
        report = load(engine, schema, write(tmp_path / "logs.parquet", base(20)))
    assert report.added == 20
    assert "more than 15 rows: their log blocks are left to compaction" in caplog.text
    assert blocks(engine) == [] and sum(read) == 0
    assert block_reader.read_window(engine, MODEL, *EVERYTHING) is None  # rows only
    compaction.compact(engine, MODEL)
    assert sum(read) == 20  # the compactor read them back
    assert_window_as_rows(engine, *EVERYTHING)
    # A load within the bound still writes its own blocks.
    read.clear()
    report = load(engine, schema, write(tmp_path / "more.parquet", base(10, first=20)))
    assert report.added == 10 and sum(read) == 0
    assert_blocks_as_compacted(engine)


def test_a_failing_block_write_keeps_the_load_and_no_partial_block(
        engine, schema, tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.setattr(compaction, "BLOCK_ROWS", 8)
    _fail_second_block(engine)
    with caplog.at_level(logging.WARNING, logger="mqm.ingest"):
        report = load(engine, schema, write(tmp_path / "logs.parquet", base(20)))
    assert report.added == 20
    assert "log blocks were not written" in caplog.text
    assert ("malformed JSON" if engine.dialect.name == "sqlite" else "disk full") in caplog.text
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM inference_logs")).scalar() == 20
    got = blocks(engine)
    assert [b[0][:3] for b in got] == [(0, 8, 8)]  # the first block, whole; no other
    assert_window_as_rows(engine, *EVERYTHING)
    first = got[0][1]
    _drop_failure(engine)
    compaction.compact(engine, MODEL)  # catches up
    assert [b[0][:3] for b in blocks(engine)] == [(0, 8, 8), (8, 16, 8), (16, 20, 4)]
    assert_window_as_rows(engine, *EVERYTHING)
    want = compacted_again(engine)
    assert_same_frames(part_frames(first), part_frames(want[0][1]))


def test_an_error_writing_blocks_fails_nothing(engine, schema, tmp_path, monkeypatch,
                                                caplog) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(compaction, "_with_labels", broken)
    with caplog.at_level(logging.WARNING, logger="mqm.ingest"):
        report = load(engine, schema, write(tmp_path / "logs.parquet", base(9)))
    assert report.added == 9 and "RuntimeError" in caplog.text and "a bug" in caplog.text
    assert blocks(engine) == []


def test_an_error_coding_the_rows_fails_nothing(engine, schema, tmp_path, monkeypatch,
                                                caplog) -> None:
    from monitor.store import arrow_blocks

    calls: list[int] = []

    def broken(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise TypeError("a type no one foresaw")
        return real(*args, **kwargs)

    real = arrow_blocks.coded_rows
    monkeypatch.setattr(arrow_blocks, "coded_rows", broken)
    monkeypatch.setattr(monitor.ingest_fast, "FAST_BATCH", 4)
    with caplog.at_level(logging.WARNING, logger="mqm.ingest"):
        report = load(engine, schema, write(tmp_path / "logs.parquet", base(13)))
    assert report.added == 13
    assert "without their log blocks" in caplog.text and "no one foresaw" in caplog.text
    assert len(calls) == 2  # no more coding after the failure
    assert blocks(engine) == []
    compaction.compact(engine, MODEL)
    assert_window_as_rows(engine, *EVERYTHING)


# --- the command --------------------------------------------------------------------------


@pytest.mark.parametrize("compact_every", ["1m", None])
def test_mqm_ingest_writes_blocks_for_a_compacted_model(make_config, tmp_path,
                                                        compact_every) -> None:
    from monitor.cli.main import main
    from monitor.store.db import create_engine

    config, cfg = make_config(schedule={"compact_every": compact_every})
    path = write(tmp_path / "logs.parquet", base(15))
    result = CliRunner().invoke(main, ["--config", str(config), "ingest", "--model", MODEL,
                                       str(path)])
    assert result.exit_code == 0, result.output
    engine = create_engine(cfg.database_url)
    try:
        written = blocks(engine)
        assert [b[0][:3] for b in written] == ([(0, 15, 15)] if compact_every else [])
    finally:
        engine.dispose()


def test_a_parquet_file_with_several_row_groups(engine, schema, tmp_path,
                                                monkeypatch) -> None:
    monkeypatch.setattr(monitor.ingest_fast, "FAST_BATCH", 4)
    path = tmp_path / "logs.parquet"
    pq.write_table(pa.table(base(23)), path, row_group_size=5)
    load(engine, schema, path)
    assert_window_as_rows(engine, *EVERYTHING)
    assert_window_as_rows(engine, START + timedelta(minutes=10), START + timedelta(minutes=40))
    assert_blocks_as_compacted(engine)


def test_times_are_the_rows_times(engine, schema, tmp_path) -> None:
    cols = base(6)
    cols["timestamp"] = pa.array([datetime(2026, 10, 1, 3, 0, 0, i * 1001, tzinfo=UTC)
                                  for i in range(6)], pa.timestamp("us", tz="UTC"))
    load(engine, schema, write(tmp_path / "logs.parquet", cols))
    assert_window_as_rows(engine, *EVERYTHING)
    assert_window_as_rows(engine, datetime(2026, 10, 1, 3, 0, 0, 2002, tzinfo=UTC),
                          datetime(2026, 10, 1, 3, 0, 0, 4004, tzinfo=UTC))

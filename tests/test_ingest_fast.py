"""The Parquet fast path (``monitor.store.arrow_logs``): whole columns checked and encoded
in Arrow. It must store exactly what the row path stores, hand every file it cannot
vouch for to the row path (same report, same rows), skip stored rows on a reload, and
keep a load all or nothing without locking the store."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

import monitor.ingest
import monitor.ingest_fast
from monitor.errors import IngestError
from monitor.ingest import ingest_logs
from monitor.store.logs import LogLoad
from monitor.store.reading import read_builtin
from monitor.store.tables import inference_logs
from tests.conftest import call_counter

START = datetime(2026, 10, 1, tzinfo=UTC)
_COLUMNS = ("model_version", "request_id", "ts", "features", "prediction", "probabilities",
            "latency_ms", "error", "error_message", "fallback_reason")


def base(n: int, first: int = 0) -> dict[str, Any]:
    """n plain, valid wide rows of the sample model."""
    return {
        "request_id": [f"r-{first + i}" for i in range(n)],
        "timestamp": pa.array([START.replace(minute=i % 60, second=i % 7) for i in range(n)],
                              pa.timestamp("ns", tz="UTC")),
        "age": pa.array([30 + i % 40 if i % 5 else None for i in range(n)], pa.int64()),
        "annual_income": [40000.5 + 100 * i for i in range(n)],
        "home_ownership": ["RENT", "OWN", "MORTGAGE"] * (n // 3) + ["RENT"] * (n % 3),
        "has_cosigner": pa.array([None if i % 4 == 0 else i % 2 == 0 for i in range(n)]),
        "prediction": [i % 2 for i in range(n)],
        "proba_0": [0.25 for _ in range(n)],
        "proba_1": [0.75 for _ in range(n)],
        "latency_ms": [20.5 for _ in range(n)],
    }


def write(path: Path, columns: dict[str, Any]) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


def varied(n: int = 40) -> dict[str, Any]:
    """Every plain type the fast path takes, with the values that have a rule."""
    cols = base(n)
    texts = ['say "hi"', "back\\slash", "tab\tnew\nline", "naïve 日本 🎉", "", "ctl\x01",
             "plain", None]
    cols.update({
        "request_id": pa.array(range(1000, 1000 + n), pa.int64()),  # integer ids
        "timestamp": pa.array([START.replace(tzinfo=None, hour=i % 24, microsecond=i * 1000)
                               for i in range(n)], pa.timestamp("ms")),
        "annual_income": [float("nan") if i % 6 == 0 else 3.0 if i % 6 == 1 else -0.0
                          if i % 6 == 2 else 1e20 if i % 6 == 3 else 1e-7 if i % 6 == 4
                          else 0.1 for i in range(n)],
        "debt_to_income": pa.array([0.1 * i for i in range(n)], pa.float32()),
        "open_accounts": pa.array(range(n), pa.uint64()),
        "loan_purpose": pa.array([texts[i % len(texts)] for i in range(n)]),
        "home_ownership": pa.array(["RENT", "OWN"] * (n // 2)).dictionary_encode(),
        "all_null": pa.nulls(n),
        "prediction": [None if i % 9 == 0 else i % 3 for i in range(n)],
        "error": [i % 9 == 0 for i in range(n)],
        "error_message": [None if i % 9 else "boom\tat\\line\n2" for i in range(n)],
        "proba_0": [None if i % 4 == 0 else float("nan") if i % 4 == 1 else 0.5
                    for i in range(n)],
        "proba_1": [None if i % 4 == 0 else 1 for i in range(n)],
        "latency_ms": pa.array([i if i % 3 else None for i in range(n)], pa.int64()),
        "model_version": [None if i % 2 else "2.0" for i in range(n)],
    })
    return cols


def stored(engine: sa.Engine, model: str) -> list[tuple[Any, ...]]:
    """A model's rows in id order, JSON parsed and written again by one encoder (3.0 and 3
    stay apart; key order kept), times as aware datetimes."""
    t = inference_logs
    with engine.connect() as conn:
        rows = conn.execute(sa.select(*(t.c[c] for c in _COLUMNS)).where(t.c.model == model)
                            .order_by(t.c.id)).all()

    def canonical(value: Any) -> Any:
        return json.dumps(value)

    return [tuple(canonical(v) if name in ("features", "prediction", "probabilities")
                  else v for name, v in zip(_COLUMNS, row, strict=True)) for row in rows]


def row_path_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A counter of rows read by the row path."""
    return call_counter(monkeypatch, monitor.ingest, "_log_record")


def staged_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of rows of each batch a load stages (or copies), in order."""
    sizes: list[int] = []
    add = LogLoad.add_arrow

    def counting(self: LogLoad, rows: Any, **kwargs: Any) -> int:
        sizes.append(len(rows))
        return add(self, rows, **kwargs)

    monkeypatch.setattr(LogLoad, "add_arrow", counting)
    return sizes


def test_the_fast_path_stores_what_the_row_path_stores(engine, schema, tmp_path,
                                                       monkeypatch) -> None:
    path = write(tmp_path / "varied.parquet", varied())
    calls = row_path_calls(monkeypatch)
    fast = ingest_logs(engine, "fast", schema, path, default_version="1.0")
    assert calls[0] == 0  # the fast path took the whole file
    slow = ingest_logs(engine, "slow", schema, path, default_version="1.0", fast=False)
    assert calls[0] == 40
    assert fast.as_dict() == slow.as_dict()
    assert fast.added == 40
    got, want = stored(engine, "fast"), stored(engine, "slow")
    assert got == want
    # The values that have a rule, as the row path keeps them:
    features = [json.loads(row[3]) for row in got]
    assert [f["annual_income"] for f in features[:6]] == [None, 3.0, -0.0, 1e20, 1e-7, 0.1]
    assert type(features[1]["annual_income"]) is float
    assert features[3]["loan_purpose"] == "naïve 日本 🎉"
    assert [row[1] for row in got[:2]] == ["1000", "1001"]
    assert [row[0] for row in got[:2]] == ["2.0", "1.0"]  # the default version fills in
    assert json.loads(got[0][5]) is None and json.loads(got[2][5]) == {"0": 0.5, "1": 1}
    # A check reads the same window from either.
    end = datetime(2026, 10, 2, tzinfo=UTC)
    a, _ = read_builtin(engine, "fast", START, end)
    b, _ = read_builtin(engine, "slow", START, end)
    for x, y in zip(a, b, strict=True):
        if hasattr(x, "equals"):
            assert x.equals(y), (x, y)


HOSTILE: dict[str, Any] = {
    "infinity in a feature": {"annual_income": [float("inf")] + [1.0] * 5},
    "no prediction on a row that is no error": {"prediction": [None, 1, 0, 1, 0, 1]},
    "NaN prediction": {"prediction": [float("nan"), 1.0, 0.0, 1.0, 0.0, 1.0]},
    "a time before 1900": {"timestamp": pa.array(
        [datetime(1850, 1, 1)] + [datetime(2026, 10, 1)] * 5, pa.timestamp("us"))},
    "a time as text": {"timestamp": ["2026-10-01T00:00:00Z"] * 5 + ["yesterday"]},
    "epoch seconds": {"timestamp": [1.8e9] * 5 + [1e20]},
    "an id with a space at its end": {"request_id": ["a ", "b", "c", "d", "e", "f"]},
    "a blank id": {"request_id": ["  ", "b", "c", "d", "e", "f"]},
    "a repeated id": {"request_id": ["a", "b", "a", "d", "e", "f"]},
    "an overlong id": {"request_id": ["x" * 201, "b", "c", "d", "e", "f"]},
    "a NUL in an id": {"request_id": ["a\x00", "b", "c", "d", "e", "f"]},
    "a null id": {"request_id": [None, "b", "c", "d", "e", "f"]},
    "a negative latency": {"latency_ms": [-1.0, 1.0, 1.0, 1.0, 1.0, 1.0]},
    "a list feature": {"tags": [[1, 2], [3], [], None, [4], [5]]},
    "a timestamp feature": {"seen": pa.array([datetime(2026, 1, 1)] * 6, pa.timestamp("s"))},
    "a text probability": {"proba_1": ["high", "0.5", "0.5", "0.5", "0.5", "0.5"]},
    "an overlong version": {"model_version": ["v" * 101] + ["1"] * 5},
    "a NUL in a message": {"error_message": ["a\x00b"] + [None] * 5},
    "a fallback reason": {"fallback_reason": ["flag", None, None, None, None, None]},
    "features as an object column": {"features": [{"a": 1}] * 6},
    "too much text": {"note": ["x" * 1_000_001] + ["y"] * 5},
}


@pytest.mark.parametrize("on_error", ["skip", "fail"])
def test_files_the_fast_path_cannot_vouch_for_are_read_row_by_row(engine, schema, tmp_path,
                                                                  on_error) -> None:
    """Each hostile file: the same report (or error) and the same rows as the row path."""
    for k, (case, change) in enumerate(HOSTILE.items()):
        cols = base(6)
        cols.update(change)
        path = write(tmp_path / f"case{k}.parquet", cols)
        outcome = []
        for fast in (True, False):
            try:
                report: Any = ingest_logs(engine, f"{fast}-{k}", schema, path,
                                          on_error=on_error, fast=fast).as_dict()
            except monitor.ingest.IngestError as exc:
                report = str(exc)
            outcome.append((report, stored(engine, f"{fast}-{k}")))
        assert outcome[0] == outcome[1], case
        if on_error == "skip" and case != "features as an object column":
            assert outcome[0][0]["bad_rows"] + outcome[0][0]["added"] == 6, case


def test_a_reload_stages_nothing_and_a_partial_overlap_adds_only_new_rows(
        engine, schema, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(monitor.ingest_fast, "FAST_BATCH", 7)  # several batches
    path = write(tmp_path / "first.parquet", base(30))
    assert ingest_logs(engine, "m", schema, path).added == 30
    before = stored(engine, "m")
    staged = staged_sizes(monkeypatch)
    again = ingest_logs(engine, "m", schema, path)
    assert (again.rows, again.added, again.already_stored, again.bad) == (30, 0, 30, 0)
    assert sum(staged) == 0
    assert stored(engine, "m") == before
    # Rows 20-49: 10 stored already (with other values here, which must not replace them).
    overlap = base(30, first=20)
    overlap["latency_ms"] = [99.0] * 30
    staged.clear()
    report = ingest_logs(engine, "m", schema, write(tmp_path / "overlap.parquet", overlap))
    assert (report.rows, report.added, report.already_stored) == (30, 20, 10)
    assert sum(staged) == 20
    rows = stored(engine, "m")
    assert rows[:30] == before
    assert [r[1] for r in rows[30:]] == [f"r-{i}" for i in range(30, 50)]
    assert {r[6] for r in rows[30:]} == {99.0}
    # Ids far apart among many stored (the range scan gives up): probed one by one.
    sparse = base(3)
    sparse["request_id"] = ["r-0", "new-1", "r-9"]
    staged.clear()
    report = ingest_logs(engine, "m", schema, write(tmp_path / "sparse.parquet", sparse))
    assert (report.added, report.already_stored, sum(staged)) == (1, 2, 1)
    assert [r[1] for r in stored(engine, "m")[50:]] == ["new-1"]


def test_a_load_starts_with_short_pieces_and_reuses_the_look_up(
        engine, schema, tmp_path, monkeypatch) -> None:
    """The first rows go in short pieces, each a little longer than the last, up to the
    file's batches (the database starts writing sooner); pieces within the rows the
    id-only pass looked up take its stored ids, the others look theirs up, and the rows
    stored are the row path's."""
    monkeypatch.setattr(monitor.ingest_fast, "FAST_BATCH", 10)
    monkeypatch.setattr(monitor.ingest_fast, "FIRST_PIECE", 3)
    staged = staged_sizes(monkeypatch)
    path = write(tmp_path / "logs.parquet", base(45))
    fast = ingest_logs(engine, "fast", schema, path)
    # 3, then at least one more each time, pieces across the file's batches of 10 (7-12,
    # 18-25) joined; from 10 rows on, the file's batches (the rest of 30-40, then 40-45).
    assert staged == [3, 4, 5, 6, 7, 8, 7, 5]
    slow = ingest_logs(engine, "slow", schema, path, fast=False)
    assert fast.as_dict() == slow.as_dict() and fast.added == 45
    assert stored(engine, "fast") == stored(engine, "slow")

    # Rows 2 and 6 stored already: the id-only pass looks up the first batch (rows 0-9),
    # the pieces 0-3 and 3-7 take its answer, the 6 others look theirs up.
    cols = base(45)
    cols["request_id"] = [rid if i in (2, 6) else f"n-{i}" for i, rid in
                          enumerate(cols["request_id"])]
    looked = call_counter(monkeypatch, monitor.ingest_fast, "stored_request_ids")
    report = ingest_logs(engine, "fast", schema, write(tmp_path / "some.parquet", cols))
    assert (report.added, report.already_stored, looked[0]) == (43, 2, 7)
    ids = [r[1] for r in stored(engine, "fast")[45:]]
    assert ids == [f"n-{i}" for i in range(45) if i not in (2, 6)]


def test_an_id_repeated_across_batches_is_reported_by_the_row_path(engine, schema, tmp_path,
                                                                   monkeypatch) -> None:
    monkeypatch.setattr(monitor.ingest_fast, "FAST_BATCH", 4)
    cols = base(10)
    cols["request_id"][8] = "r-1"
    report = ingest_logs(engine, "m", schema, write(tmp_path / "rep.parquet", cols),
                         on_error="skip")
    assert report.problems == ["row 9: field 'request_id': 'r-1' repeats row 2"]
    assert report.added == 9


def test_a_fast_load_stopped_midway_leaves_nothing(engine, schema, tmp_path,
                                                   monkeypatch) -> None:
    monkeypatch.setattr(monitor.ingest_fast, "FAST_BATCH", 5)
    path = write(tmp_path / "logs.parquet", base(20))
    add = LogLoad.add_arrow
    calls = [0]

    def interrupted(self: LogLoad, rows: Any, **kwargs: Any) -> int:
        calls[0] += 1
        if calls[0] == 3:  # two batches staged
            raise KeyboardInterrupt
        return add(self, rows, **kwargs)

    monkeypatch.setattr(LogLoad, "add_arrow", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ingest_logs(engine, "m", schema, path)
    assert stored(engine, "m") == []
    monkeypatch.undo()
    assert ingest_logs(engine, "m", schema, path).added == 20


def test_nothing_is_visible_nor_locked_until_the_fast_load_publishes(engine, schema, tmp_path,
                                                                   monkeypatch) -> None:
    """Between batches another writer writes at once (SQLite: no busy wait at all; on
    PostgreSQL with no lock wait either) and sees none of the load."""
    monkeypatch.setattr(monitor.ingest_fast, "FAST_BATCH", 5)
    path = write(tmp_path / "logs.parquet", base(20))
    add = LogLoad.add_arrow
    seen: list[int] = []

    def between(self: LogLoad, rows: Any, **kwargs: Any) -> int:
        out = add(self, rows, **kwargs)
        with engine.connect() as conn, conn.begin():
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("PRAGMA busy_timeout=0")
            else:
                conn.exec_driver_sql("SET LOCAL lock_timeout = '100ms'")
            conn.execute(sa.insert(inference_logs).values(
                model="other", request_id=f"o-{len(seen)}", ts=START, features={},
                prediction=1, received_at=START))
            seen.append(len(stored(engine, "m")))
        return out

    monkeypatch.setattr(LogLoad, "add_arrow", between)
    assert ingest_logs(engine, "m", schema, path).added == 20
    assert seen == [0, 0, 0, 0]
    assert len(stored(engine, "other")) == 4


def test_rows_another_writer_stored_after_the_check_are_still_skipped(
        engine, schema, tmp_path, monkeypatch) -> None:
    """The check for stored ids runs before staging; a writer may store some of them
    before the load publishes. The publish skips them all the same (on PostgreSQL its
    plain INSERT fails on the key and it inserts again skipping them)."""
    path = write(tmp_path / "logs.parquet", base(12))
    first = ingest_logs(engine, "m", schema, write(tmp_path / "half.parquet", base(5)))
    assert first.added == 5
    before = stored(engine, "m")
    monkeypatch.setattr(monitor.ingest_fast, "stored_request_ids", lambda *args: [])
    report = ingest_logs(engine, "m", schema, path)
    assert (report.rows, report.added, report.already_stored) == (12, 7, 5)
    rows = stored(engine, "m")
    assert rows[:5] == before and len(rows) == 12


# --- PostgreSQL: a load copied straight into the table -------------------------------


def _pg_only(engine: sa.Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("a direct load is PostgreSQL's")


def test_a_direct_load_knows_its_ids_when_another_writer_draws_between(
        engine, schema, tmp_path, monkeypatch) -> None:
    """The ids a batch's COPY draws are contiguous unless another writer draws from the
    sequence at the same time; then they are found by the transaction that wrote them.
    Either way the ids given are exactly the load's rows', in the order copied."""
    _pg_only(engine)
    from monitor.store.staging import DirectLoad

    monkeypatch.setattr(monitor.ingest_fast, "FAST_BATCH", 5)
    real = DirectLoad._copy
    calls = [0]

    def interleaved(self: DirectLoad, cur: Any, data: Any) -> None:
        calls[0] += 1
        if calls[0] == 2:  # another writer commits a row of the model just before
            with engine.begin() as conn:
                conn.execute(sa.insert(inference_logs).values(
                    model="m", request_id="other", ts=START, features={}, prediction=1,
                    received_at=START))
        real(self, cur, data)

    published: list[Any] = []
    publish = DirectLoad.publish_ids

    def keep(self: DirectLoad, *args: Any, **kwargs: Any) -> Any:
        ids = publish(self, *args, **kwargs)
        published.append(list(ids))
        return ids

    monkeypatch.setattr(DirectLoad, "_copy", interleaved)
    monkeypatch.setattr(DirectLoad, "publish_ids", keep)
    path = write(tmp_path / "logs.parquet", base(15))
    report = ingest_logs(engine, "m", schema, path, blocks=True)
    assert (report.rows, report.added) == (15, 15)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(inference_logs.c.id, inference_logs.c.request_id)
                            .where(inference_logs.c.model == "m")
                            .order_by(inference_logs.c.id)).all()
    load = [row.id for row in rows if row.request_id != "other"]
    assert published == [load]
    assert [row.request_id for row in rows if row.request_id != "other"] == [
        f"r-{i}" for i in range(15)]
    other = next(row.id for row in rows if row.request_id == "other")
    assert load[4] < other < load[5]  # between the first batch and the second


def test_a_direct_load_is_invisible_until_it_commits_and_gone_if_it_fails(
        engine, schema, tmp_path, monkeypatch) -> None:
    """A batch the fast path refuses half-way (after rows were copied) rolls the copied
    rows back: the row path then loads the file, and each row is stored once."""
    _pg_only(engine)
    monkeypatch.setattr(monitor.ingest_fast, "FAST_BATCH", 5)
    cols = base(15)
    cols["annual_income"] = [*cols["annual_income"][:12], float("inf"), 1.0, 2.0]
    path = write(tmp_path / "logs.parquet", cols)
    report = ingest_logs(engine, "m", schema, path, on_error="skip")
    assert (report.rows, report.added) == (15, 14)
    assert [r[1] for r in stored(engine, "m")] == [f"r-{i}" for i in range(15) if i != 12]


# --- a Parquet file loaded again --------------------------------------------------------


def test_a_stored_parquet_file_is_reloaded_from_its_ids_alone(engine, schema, tmp_path,
                                                              monkeypatch) -> None:
    """Every request id stored: the file's other columns are neither decoded nor checked,
    and the report is the row path's."""
    monkeypatch.setattr(monitor.ingest_fast, "FAST_BATCH", 7)
    path = write(tmp_path / "logs.parquet", base(30))
    for model in ("fast", "slow"):
        assert ingest_logs(engine, model, schema, path).added == 30
    built = call_counter(monkeypatch, monitor.ingest_fast, "ArrowLogs")
    fast = ingest_logs(engine, "fast", schema, path).as_dict()
    assert built[0] == 0
    slow = ingest_logs(engine, "slow", schema, path, fast=False).as_dict()
    assert fast == slow and (fast["added"], fast["already_stored"]) == (0, 30)

    # One new row at the end: the file is read whole again, and only that row added; each
    # batch's ids are looked up once (5 batches of at most 7), not again by the load.
    grown = write(tmp_path / "grown.parquet", base(31))
    looked = call_counter(monkeypatch, monitor.ingest_fast, "stored_request_ids")
    report = ingest_logs(engine, "fast", schema, grown)
    assert built[0] > 0 and (report.added, report.already_stored) == (1, 30)
    assert looked[0] == 5
    assert stored(engine, "fast") == stored(engine, "slow") + stored(engine, "fast")[-1:]


def test_a_bad_row_whose_id_is_stored_counts_as_stored(engine, schema, tmp_path) -> None:
    """As for JSON lines: a stored id's row is not read again, so a row edited into a bad
    one after it was stored counts as stored (the row path reports it; either way it
    stores nothing)."""
    ingest_logs(engine, "m", schema, write(tmp_path / "logs.parquet", base(6)))
    cols = base(6)
    cols["latency_ms"] = [*cols["latency_ms"][:5], -1.0]
    edited = write(tmp_path / "edited.parquet", cols)
    report = ingest_logs(engine, "m", schema, edited)
    assert (report.rows, report.added, report.already_stored, report.problems) == (6, 0, 6, [])
    with pytest.raises(IngestError, match="latency_ms"):
        ingest_logs(engine, "m", schema, edited, fast=False)

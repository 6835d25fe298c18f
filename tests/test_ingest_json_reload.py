"""A JSON-lines file loaded again: a chunk whose request ids, read without parsing its lines
(``monitor.store.json_logs.line_ids``), are all stored is neither parsed nor checked. The
report and the stored rows must stay the row path's: a reload adds nothing, new rows among
stored ones are stored as a first load stores them, and a bad line is reported as before
(the one exception, decided: a line whose request id is stored already counts as stored
without being read past its id)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

import monitor.ingest
import monitor.ingest_fast
from monitor.errors import IngestError
from monitor.ingest import ingest_logs
from monitor.store.json_logs import line_ids
from tests.conftest import call_counter
from tests.test_ingest_fast import row_path_calls, stored
from tests.test_ingest_hostile import HOSTILE_JSON
from tests.test_ingest_json_fast import (
    _random_body,
    client_row,
    flat_row,
    hostile,
    lines,
    ordinary,
)

CHUNK = 2000  # bytes of lines per chunk: about 6 flat rows


def parse_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A counter of the chunks Arrow parsed and checked."""
    return call_counter(monkeypatch, monitor.ingest_fast, "_json_logs")


def load(engine: Any, schema: Any, model: str, path: Path, fast: bool,
         on_error: str = "fail") -> tuple[Any, Any]:
    """The report (or the error's message) and the model's stored rows."""
    try:
        report: Any = ingest_logs(engine, model, schema, path, fast=fast,
                                  on_error=on_error).as_dict()  # type: ignore[arg-type]
    except IngestError as exc:
        report = str(exc)
    return report, stored(engine, model)


def write(path: Path, body: bytes) -> Path:
    path.write_bytes(body)
    return path


def test_a_stored_file_is_reloaded_without_parsing_a_line(engine, schema, tmp_path,
                                                           monkeypatch) -> None:
    monkeypatch.setattr(monitor.ingest_fast, "FAST_JSON_BYTES", CHUNK)
    path = write(tmp_path / "logs.jsonl", lines([flat_row(i) for i in range(40)]))
    for model in ("fast", "slow"):
        assert ingest_logs(engine, model, schema, path).added == 40
    parsed, read = parse_calls(monkeypatch), row_path_calls(monkeypatch)
    fast = load(engine, schema, "fast", path, True)
    assert parsed[0] == 0 and read[0] == 0  # every chunk was skipped on its ids
    assert fast == load(engine, schema, "slow", path, False)
    assert fast[0]["already_stored"] == 40 and fast[0]["added"] == 0


def test_ordinary_files_reloaded_give_the_row_paths_answer(engine, schema, tmp_path,
                                                           monkeypatch) -> None:
    parsed = parse_calls(monkeypatch)
    skipped = 0
    for k, (case, body) in enumerate(ordinary().items()):
        path = write(tmp_path / f"{k}.jsonl", body)
        for model in (f"fast-{k}", f"slow-{k}"):
            ingest_logs(engine, model, schema, path)
        parsed[0] = 0
        fast = load(engine, schema, f"fast-{k}", path, True)
        skipped += parsed[0] == 0
        assert fast == load(engine, schema, f"slow-{k}", path, False), case
        assert fast[0]["added"] == 0, case
    assert skipped == len(ordinary()) - 2  # ids as numbers, or not first: parsed


def test_new_rows_among_stored_ones_are_stored_as_a_first_load_stores_them(
        engine, schema, tmp_path, monkeypatch) -> None:
    """Chunks wholly stored, chunks with some rows stored, chunks of new rows: the stored
    rows equal the row path's, new rows in file order, stored rows not replaced."""
    monkeypatch.setattr(monitor.ingest_fast, "FAST_JSON_BYTES", CHUNK)
    rows = [flat_row(i) for i in range(60)]
    before = write(tmp_path / "before.jsonl", lines(rows[:20] + rows[23:26] + rows[40:41]))
    after = write(tmp_path / "after.jsonl",
                  lines([flat_row(i, latency_ms=99.0) for i in range(20)] + rows[20:]))
    for model in ("fast", "slow"):
        ingest_logs(engine, model, schema, before)
    parsed, read = parse_calls(monkeypatch), row_path_calls(monkeypatch)
    fast = load(engine, schema, "fast", after, True)
    assert read[0] == 0 and 0 < parsed[0] < 10  # the first chunks were skipped
    assert fast == load(engine, schema, "slow", after, False)
    assert fast[0]["added"] == 36 and fast[0]["already_stored"] == 24
    # A first load of the new rows alone stores the same values (ids aside).
    first = load(engine, schema, "first", write(tmp_path / "new.jsonl", lines(
        [r for i, r in enumerate(rows) if 20 <= i < 60 and not 23 <= i < 26 and i != 40])),
        True)
    assert [r[1:] for r in fast[1][24:]] == [r[1:] for r in first[1]]


@pytest.mark.parametrize("on_error", ["skip", "fail"])
def test_a_bad_line_in_a_file_otherwise_stored_is_reported_as_today(
        engine, schema, tmp_path, on_error) -> None:
    """A file loaded under ``skip`` (its good rows stored, its bad lines not), loaded
    again: the same report as the row path's, and nothing stored beside."""
    bodies = {**hostile(), **{f"hostile line {k}": lines([client_row(i) for i in range(8)])
                              + (text + "\n").encode() + lines([client_row(9)])
                              for k, (text, _) in enumerate(HOSTILE_JSON)}}
    for k, (case, body) in enumerate(bodies.items()):
        path = write(tmp_path / f"{k}.jsonl", body)
        for model in (f"fast-{k}", f"slow-{k}"):
            ingest_logs(engine, model, schema, path, on_error="skip", fast=False)
        fast = load(engine, schema, f"fast-{k}", path, True, on_error)
        assert fast == load(engine, schema, f"slow-{k}", path, False, on_error), case


def test_a_line_cut_short_is_reported_though_its_id_is_stored(engine, schema,
                                                              tmp_path) -> None:
    rows = [flat_row(i) for i in range(5)]
    path = write(tmp_path / "logs.jsonl", lines(rows))
    ingest_logs(engine, "m", schema, path)
    cut = write(tmp_path / "cut.jsonl", lines(rows[:4]) + json.dumps(rows[4])[:60].encode())
    with pytest.raises(IngestError, match="line 5: invalid JSON"):
        ingest_logs(engine, "m", schema, cut)


def test_a_repeated_request_id_key_counts_its_last_value(engine, schema, tmp_path) -> None:
    """``json.loads`` keeps the last of two ``request_id`` keys: a line whose first id is
    stored and whose last is not is a new row, as on the row path."""
    rows = [flat_row(i) for i in range(4)]
    path = write(tmp_path / "logs.jsonl", lines(rows))
    for model in ("fast", "slow"):
        ingest_logs(engine, model, schema, path)
    for k, key in enumerate(['"request_id"', '"request\\u005fid"']):
        again = (json.dumps(rows[3])[:-1] + f', {key}: "f-new-{k}"}}\n').encode()
        path = write(tmp_path / "twice.jsonl", lines(rows[:3]) + again)
        fast = load(engine, schema, "fast", path, True)
        assert fast == load(engine, schema, "slow", path, False), key
        assert fast[0]["added"] == 1 and fast[1][-1][1] == f"f-new-{k}", key


def test_a_lone_carriage_return_ends_a_line_as_on_the_row_path(engine, schema,
                                                               tmp_path) -> None:
    rows = [flat_row(i) for i in range(4)]
    path = write(tmp_path / "logs.jsonl", lines(rows))
    for model in ("fast", "slow"):
        ingest_logs(engine, model, schema, path)
    body = lines(rows[:3]) + json.dumps(rows[3]).encode() + b'\r{"timestamp": 1}\n'
    path = write(tmp_path / "cr.jsonl", body)
    fast = load(engine, schema, "fast", path, True, "skip")
    assert fast == load(engine, schema, "slow", path, False, "skip")
    assert fast[0]["problems"] == ["line 5: field 'request_id': is missing"]


def test_a_bad_line_whose_id_is_stored_counts_as_stored(engine, schema, tmp_path,
                                                        monkeypatch) -> None:
    """The decided exception: a line is not read past a stored id, so a line edited into a
    bad one after its row was stored counts as stored (the row path reports it; either
    way it stores nothing)."""
    rows = [flat_row(i) for i in range(6)]
    ingest_logs(engine, "m", schema, write(tmp_path / "logs.jsonl", lines(rows)))
    edited = write(tmp_path / "edited.jsonl", lines([*rows[:5], flat_row(5, latency_ms=-1)]))
    report = ingest_logs(engine, "m", schema, edited)
    assert (report.rows, report.added, report.already_stored, report.problems) == (6, 0, 6, [])
    with pytest.raises(IngestError, match="line 6: field 'latency_ms'"):
        ingest_logs(engine, "m", schema, edited, fast=False)


def test_line_ids_reads_only_lines_it_can_vouch_for() -> None:
    good = '{"request_id": "a-1", "timestamp": 1, "prediction": 1}'
    assert line_ids((good + "\n").encode()).to_pylist() == ["a-1"]  # type: ignore[union-attr]
    crlf = ("\r\n" + good + "\r\n \n" + good.replace("a-1", "a-2") + "}")[:-1]
    assert line_ids(crlf.encode()).to_pylist() == ["a-1", "a-2"]  # type: ignore[union-attr]
    assert line_ids(b"").to_pylist() == []  # type: ignore[union-attr]
    for text in [
        '{"timestamp": 1, "request_id": "a-1", "prediction": 1}',  # not first
        '{"request_id": 12, "timestamp": 1}',  # a number
        '{"request_id": "a\\u002d1", "timestamp": 1}',  # an escape in the id
        '{"request_id": " a-1", "timestamp": 1}',  # a space the row path strips
        '{"request_id": "a-1", "features": {"request_id": 2}}',  # the key twice
        '{"request_id": "a-1", "request\\u005fid": "a-2"}',  # the key twice, escaped
        '{"request_id": "a-1", "timestamp": 1',  # cut short
        '{"request_id": "a-1", "timestamp": 1} ',  # a space after the object
        '{"request_id": "a-1", "timestamp": 1}\r{"request_id": "a-2", "timestamp": 1}',
        '{"request_id": "a-1", "note": "\xff"}',  # not UTF-8 (below)
        '[1]',
    ]:
        body = text.encode("latin-1" if "\xff" in text else "utf-8")
        assert line_ids(body + b"\n" + (good + "\n").encode()) is None, text


def test_random_files_partly_stored_get_the_row_paths_answer(engine, schema, tmp_path,
                                                             monkeypatch) -> None:
    """Random files (odd values, mixed kinds, repeated ids) of which a random share of
    lines was stored before, loaded again in small chunks: the row path's report and rows."""
    monkeypatch.setattr(monitor.ingest_fast, "FAST_JSON_BYTES", 600)
    all_stored = monitor.ingest_fast._all_stored
    skipped = [0]

    def counting(*args: Any) -> bool:
        answer = all_stored(*args)
        skipped[0] += answer
        return answer

    monkeypatch.setattr(monitor.ingest_fast, "_all_stored", counting)
    rng = random.Random(20261206)
    for k in range(40):
        body = _random_body(rng, rng.randint(4, 30))
        kept = [text for text in body.splitlines(keepends=True) if rng.random() < 0.7]
        before = write(tmp_path / f"before-{k}.jsonl", b"".join(kept))
        path = write(tmp_path / f"{k}.jsonl", body)
        for model in (f"fast-{k}", f"slow-{k}"):
            ingest_logs(engine, model, schema, before, on_error="skip", fast=False)
        fast = load(engine, schema, f"fast-{k}", path, True, "skip")
        assert fast == load(engine, schema, f"slow-{k}", path, False, "skip"), body
    assert skipped[0] >= 20  # the comparison covers chunks skipped on their ids

"""Hostile and odd input files: every bad row is one reported row naming its line and field,
never a traceback; empty files, a byte-order mark, labels that match no log (issue 13,
items 2, 3, 4 and 18)."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from monitor.cli.main import main
from monitor.errors import IngestError
from monitor.ingest import ingest_labels, ingest_logs
from monitor.store.tables import ground_truth, inference_logs
from tests.conftest import good_row, write_csv


def stored_ids(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(conn.execute(sa.select(inference_logs.c.request_id)).scalars())


def line(i: int, **fields: Any) -> str:
    return json.dumps(good_row(i, **fields))


def raw_line(i: int, field: str, raw_value: str) -> str:
    """A JSON line whose ``field`` holds ``raw_value`` as written (not a Python value)."""
    row = good_row(i)
    row.pop(field, None)
    return json.dumps(row)[:-1] + f', "{field}": {raw_value}}}'


# (line text, the problem reported for it) for JSON lines; None: a good line.
HOSTILE_JSON = [
    (line(0), None),
    (line(1, timestamp="0001-01-01T00:00:00+01:00"),
     "field 'timestamp': '0001-01-01T00:00:00+01:00' is out of range once converted to UTC"),
    (line(2, timestamp="9999-12-31T23:59:59-05:00"),
     "field 'timestamp': '9999-12-31T23:59:59-05:00' is out of range once converted to UTC"),
    (line(3, timestamp=1e20), "field 'timestamp': 1e+20 is out of range as epoch seconds"),
    # A time that exists but that no window can hold (9999-12-31 has no next day).
    (line(4, timestamp="9999-12-31T23:59:59Z"),
     "field 'timestamp': 9999-12-31T23:59:59+00:00 is outside the supported range 1900-2199"),
    (raw_line(5, "latency_ms", "1" + "0" * 400),
     "field 'latency_ms': is an integer of about 400 digits, beyond the range of a float "
     "(1.8e308)"),
    (raw_line(6, "age", "9" * 5000),
     "field 'age': is an integer of 5,000 digits, beyond the range of a float (1.8e308)"),
    (raw_line(7, "age", "[" * 100_000 + "]" * 100_000),
     "field 'age': is nested more than 32 levels deep"),
    (raw_line(8, "age", "[" * 600 + "]" * 600),  # deep, yet within what json reads
     "field 'age': is nested more than 32 levels deep"),
    ("[1, 2]", "a JSON object was expected, not an array"),
    ("3", "a JSON object was expected, not a number"),
    ('"text"', "a JSON object was expected, not a string"),
    ('{"request_id": "r-12", "timestamp"',
     "invalid JSON (Expecting ':' delimiter at character 36)"),
    (raw_line(13, "home_ownership", '"\\ud800"'),
     "field 'home_ownership': holds a lone surrogate (U+D800), which is not valid Unicode"),
    (raw_line(14, "annual_income", "1e400"),  # json reads it as inf
     "field 'annual_income': value is inf; only finite numbers can be stored"),
    (line(15, request_id="r-15\x00"),
     "field 'request_id': contains a NUL character, which databases cannot store"),
    (line(16), None),
]


def test_hostile_json_lines_are_one_bad_row_each(engine, schema, tmp_path) -> None:
    path = tmp_path / "hostile.jsonl"
    path.write_text("".join(text + "\n" for text, _ in HOSTILE_JSON), encoding="utf-8")
    expected = [f"line {n}: {problem}"
                for n, (_, problem) in enumerate(HOSTILE_JSON, start=1) if problem]

    with pytest.raises(IngestError) as err:
        ingest_logs(engine, "loan_default", schema, path)
    assert str(err.value).startswith(f"{path}: {len(expected)} bad log row(s), nothing was "
                                     f"written: {expected[0]}; ")
    assert err.value.problems == expected
    assert stored_ids(engine) == []

    report = ingest_logs(engine, "loan_default", schema, path, on_error="skip")
    assert report.problems == expected
    assert (report.rows, report.added, report.bad) == (len(HOSTILE_JSON), 2, len(expected))
    assert stored_ids(engine) == ["r-0", "r-16"]


def test_hostile_csv_rows_are_one_bad_row_each(engine, schema, tmp_path) -> None:
    columns = ["request_id", "timestamp", "prediction", "home_ownership", "latency_ms"]
    good = ["r-{}", "2026-10-01T00:00:00Z", "1", "RENT", "12.5"]

    def row(i: int, **cells: str) -> bytes:
        values = [cells.get(c, v.format(i)) for c, v in zip(columns, good, strict=True)]
        return (",".join(values) + "\r\n").encode()

    # Enough good rows before the bad byte that it lies past the first read buffer.
    body = b"".join(row(i) for i in range(2000))
    assert len(body) > 65_536
    content = (",".join(columns).encode() + b"\r\n" + body
               + row(2000, home_ownership="Zurich").replace(b"Zurich", b"Z\xfcrich")
               + row(2001, home_ownership="x" * 140_000)
               + row(2002)[:-2] + b",extra\r\n"
               + row(2003, latency_ms="1" + "0" * 400)
               + row(2004, timestamp="0001-01-01T00:00:00+01:00")
               + b'r-2005,2026-10-01T00:00:00Z,1,"multi\r\nline",1\r\n'
               + row(2006))
    path = tmp_path / "hostile.csv"
    path.write_bytes(content)
    report = ingest_logs(engine, "loan_default", schema, path, on_error="skip")
    assert report.problems == [
        "line 2002: field 'home_ownership': is not valid UTF-8 (byte 0xfc at character 2)",
        "line 2003: field 'home_ownership': is longer than 131,072 characters, the CSV "
        "reader's limit",
        "line 2004: 6 cells, the header has 5 (1 after 'latency_ms')",
        "line 2005: field 'latency_ms': value is inf; only finite numbers can be stored",
        "line 2006: field 'timestamp': '0001-01-01T00:00:00+01:00' is out of range once "
        "converted to UTC",
    ]
    assert report.added == 2002  # r-0 .. r-1999, the two-line r-2005 and r-2006
    assert "r-2005" in stored_ids(engine) and "r-2006" in stored_ids(engine)


def test_bad_utf8_after_the_first_read_in_json_lines(engine, schema, tmp_path) -> None:
    body = "".join(line(i) + "\n" for i in range(1000)).encode()
    assert len(body) > 65_536
    bad = line(1000, home_ownership="RENT").encode().replace(b'"RENT"', b'"R\xffNT"')
    path = tmp_path / "logs.jsonl"
    path.write_bytes(body + bad + b"\n" + line(1001).encode() + b"\n")
    report = ingest_logs(engine, "loan_default", schema, path, on_error="skip")
    assert report.problems == [
        "line 1001: field 'home_ownership': is not valid UTF-8 (byte 0xff at character 2)"]
    assert report.added == 1001


def test_hostile_parquet_rows_are_one_bad_row_each(engine, schema, tmp_path) -> None:
    # Epoch seconds as a float column; then a real time column holding a year Python's
    # datetime cannot hold (so the whole batch cannot be converted at once).
    epoch = pa.table({"request_id": ["r-0", "r-1", "r-2"],
                      "timestamp": [1.7e9, 1e20, 1.7e9 + 60], "prediction": [1, 0, 1]})
    pq.write_table(epoch, tmp_path / "epoch.parquet")
    report = ingest_logs(engine, "loan_default", schema, tmp_path / "epoch.parquet",
                         on_error="skip")
    assert report.problems == ["row 2: field 'timestamp': 1e+20 is out of range as epoch seconds"]
    assert report.added == 2

    far = pa.table({
        "request_id": ["r-3", "r-4", "r-5"],
        "timestamp": pa.array([1_700_000_000, 253_402_300_800, 2**50], pa.timestamp("s")),
        "prediction": [1, 0, 1],
    })
    pq.write_table(far, tmp_path / "far.parquet")
    report = ingest_logs(engine, "loan_default", schema, tmp_path / "far.parquet",
                         on_error="skip")
    assert [p.split(" (")[0] for p in report.problems] == [
        "row 2: field 'timestamp': cannot be read", "row 3: field 'timestamp': cannot be read"]
    assert report.added == 1
    assert stored_ids(engine) == ["r-0", "r-2", "r-3"]


def test_hostile_label_times_are_one_bad_row_each(engine, schema, tmp_path) -> None:
    path = tmp_path / "labels.jsonl"
    rows = [{"request_id": "r-0", "defaulted": 1, "timestamp": 1e20},
            {"request_id": "r-1", "defaulted": 0, "timestamp": "0001-01-01T00:00:00+01:00"},
            {"request_id": "r-2", "defaulted": 1, "timestamp": "2026-10-02T00:00:00Z"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(IngestError, match=r"line 1: field 'timestamp': 1e\+20 is out of range"):
        ingest_labels(engine, "loan_default", schema, path)
    report = ingest_labels(engine, "loan_default", schema, path, on_error="skip")
    assert report.problems == [
        "line 1: field 'timestamp': 1e+20 is out of range as epoch seconds",
        "line 2: field 'timestamp': '0001-01-01T00:00:00+01:00' is out of range once "
        "converted to UTC",
    ]
    assert report.added == 1


@pytest.mark.parametrize("on_error", ["fail", "skip"])
def test_a_truncated_gzip_file_is_one_error_and_writes_nothing(
        engine, schema, tmp_path, on_error) -> None:
    data = gzip.compress("".join(line(i) + "\n" for i in range(5000)).encode())
    path = tmp_path / "logs.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(IngestError) as err:
        ingest_logs(engine, "loan_default", schema, path, on_error=on_error)  # type: ignore[arg-type]
    message = str(err.value)
    assert message.startswith(f"{path}: cannot read past line ")
    assert "the file is truncated" in message and message.endswith("nothing was written")
    assert stored_ids(engine) == []


def test_a_byte_order_mark_is_not_part_of_the_first_column(engine, schema, tmp_path) -> None:
    csv_path = write_csv(tmp_path / "plain.csv", [good_row(0), good_row(1)])
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + csv_path.read_bytes())
    assert ingest_logs(engine, "loan_default", schema, bom).added == 2
    jsonl = tmp_path / "bom.jsonl"
    jsonl.write_bytes(b"\xef\xbb\xbf" + (line(2) + "\n").encode())
    assert ingest_logs(engine, "loan_default", schema, jsonl).added == 1
    labels = tmp_path / "labels.csv"
    labels.write_bytes(b"\xef\xbb\xbfrequest_id,defaulted\r\nr-0,1\r\n")
    assert ingest_labels(engine, "loan_default", schema, labels).added == 1


EMPTY = {
    "empty.csv": b"",
    "header-only.csv": b"request_id,timestamp,prediction\r\n",
    "empty.jsonl": b"",
    "blank-lines.jsonl": b"\n  \n\n",
}


@pytest.mark.parametrize("name", sorted(EMPTY))
def test_a_file_without_rows_is_an_error_or_a_warning(engine, schema, tmp_path, name) -> None:
    path = tmp_path / name
    path.write_bytes(EMPTY[name])
    with pytest.raises(IngestError, match=r"no log rows \(the file is empty or holds only a "
                       r"header\); nothing was written"):
        ingest_logs(engine, "loan_default", schema, path)
    report = ingest_logs(engine, "loan_default", schema, path, on_error="skip")
    assert (report.rows, report.added) == (0, 0)
    assert report.warnings == [f"{path}: no log rows (the file is empty or holds only a header)"]
    if name != "header-only.csv":  # that header lacks the label column: another error
        with pytest.raises(IngestError, match="no label rows"):
            ingest_labels(engine, "loan_default", schema, path)


def test_an_empty_parquet_file_is_an_error(engine, schema, tmp_path) -> None:
    table = pa.table({"request_id": pa.array([], pa.string()),
                      "timestamp": pa.array([], pa.timestamp("us")),
                      "prediction": pa.array([], pa.int64())})
    pq.write_table(table, tmp_path / "empty.parquet")
    with pytest.raises(IngestError, match="no log rows"):
        ingest_logs(engine, "loan_default", schema, tmp_path / "empty.parquet")


def test_labels_that_match_no_log_are_counted(engine, schema, tmp_path) -> None:
    ingest_logs(engine, "loan_default", schema,
                write_csv(tmp_path / "logs.csv", [good_row(i) for i in range(3)]))
    path = tmp_path / "labels.csv"
    path.write_text("request_id,defaulted\nr-0,1\nr-1,0\nnope-1,1\nnope-2,0\n",
                    encoding="utf-8")
    report = ingest_labels(engine, "loan_default", schema, path)
    assert (report.added, report.unmatched) == (4, 2)
    assert report.warnings == ["2 of 4 labels match no logged request of model "
                               "'loan_default'; they are stored, and join if those logs are "
                               "loaded later"]
    assert report.as_dict()["unmatched"] == 2
    # Loaded again: nothing added, and the same two still match nothing.
    again = ingest_labels(engine, "loan_default", schema, path)
    assert (again.added, again.already_stored, again.unmatched) == (0, 4, 2)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(ground_truth)).scalar() == 4


def test_the_cli_prints_warnings_and_clear_errors(make_config, tmp_path) -> None:
    path, _ = make_config()
    runner = CliRunner()

    def run(*args: str):  # type: ignore[no-untyped-def]
        return runner.invoke(main, ["--config", str(path), *args], catch_exceptions=False)

    logs = write_csv(tmp_path / "logs.csv", [good_row(0)])
    assert run("ingest", "-m", "loan_default", str(logs)).exit_code == 0
    labels = tmp_path / "labels.csv"
    labels.write_text("request_id,defaulted\nr-0,1\nnope,0\n", encoding="utf-8")
    result = run("labels", "-m", "loan_default", str(labels))
    assert result.exit_code == 0
    assert "2 label rows read, 2 added, 0 already stored, 0 bad, 1 match no log" in result.stdout
    assert result.stderr == ("warning: 1 of 2 labels match no logged request of model "
                             "'loan_default'; they are stored, and join if those logs are "
                             "loaded later\n")
    as_json = run("labels", "-m", "loan_default", str(labels), "--json")
    assert json.loads(as_json.stdout)["unmatched"] == 1

    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    failed = run("ingest", "-m", "loan_default", str(empty))
    assert failed.exit_code == 1
    assert failed.stderr.startswith("error: ") and failed.stderr.count("\n") == 1
    skipped = run("ingest", "-m", "loan_default", str(empty), "--on-error", "skip")
    assert skipped.exit_code == 0 and skipped.stderr.startswith("warning: ")

    truncated = tmp_path / "logs.jsonl.gz"
    truncated.write_bytes(gzip.compress((line(0) + "\n").encode() * 3000)[:2000])
    result = run("ingest", "-m", "loan_default", str(truncated))
    assert result.exit_code == 1 and "Aborted" not in result.output
    assert result.stderr.startswith(f"error: {truncated}: cannot read past line ")

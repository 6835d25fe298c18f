"""Loading log and label files: the same contract on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from monitor.errors import IngestError
from monitor.ingest import ingest_labels, ingest_logs
from monitor.store.tables import ground_truth, inference_logs
from tests.conftest import good_row, write_csv


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def stored(engine: sa.Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(inference_logs)).mappings().all()
    return {r["request_id"]: dict(r) for r in rows}


def test_csv_loads_typed_values_and_keeps_mismatches(engine, schema, tmp_path) -> None:
    rows = [good_row(i) for i in range(5)]
    rows[1]["annual_income"] = "N/A"
    rows[2]["open_accounts"] = "3.7"
    rows[3]["employment_years"] = None
    path = write_csv(tmp_path / "logs.csv", rows)
    report = ingest_logs(engine, "loan_default", schema, path, default_version="1.4.0")
    assert (report.rows, report.added, report.bad) == (5, 5, 0)
    got = stored(engine)
    assert got["r-0"]["features"]["age"] == 30 and isinstance(got["r-0"]["features"]["age"], int)
    assert got["r-0"]["features"]["has_cosigner"] is False
    assert got["r-1"]["features"]["annual_income"] == "N/A"
    assert got["r-2"]["features"]["open_accounts"] == 3.7
    assert got["r-3"]["features"]["employment_years"] is None
    assert got["r-1"]["prediction"] == 1
    assert got["r-1"]["probabilities"] == {"0": 0.4, "1": 0.6}
    assert got["r-0"]["model_version"] == "1.4.0"
    assert got["r-0"]["ts"] == pd.Timestamp("2026-10-01T00:00:00Z").to_pydatetime()


def test_reingesting_the_same_file_adds_nothing(engine, schema, tmp_path) -> None:
    path = write_csv(tmp_path / "logs.csv", [good_row(i) for i in range(20)])
    first = ingest_logs(engine, "loan_default", schema, path)
    again = ingest_logs(engine, "loan_default", schema, path)
    assert first.added == 20
    assert (again.added, again.already_stored) == (0, 20)
    assert len(stored(engine)) == 20


def test_jsonl_keeps_json_types(engine, schema, tmp_path) -> None:
    rows = [good_row(i) for i in range(3)]
    rows[0]["has_cosigner"] = "yes"
    rows[1]["credit_score"] = 700.0
    nested = {"request_id": "n-1", "timestamp": "2026-10-01T05:00:00+02:00",
              "features": {"age": 40, "extra_field": "x"}, "prediction": 0, "error": False}
    path = write_jsonl(tmp_path / "logs.jsonl", [*rows, nested])
    report = ingest_logs(engine, "loan_default", schema, path)
    assert report.added == 4
    got = stored(engine)
    assert got["r-0"]["features"]["has_cosigner"] == "yes"
    assert got["n-1"]["features"] == {"age": 40, "extra_field": "x"}
    assert got["n-1"]["ts"] == pd.Timestamp("2026-10-01T03:00:00Z").to_pydatetime()


def test_sample_parquet_with_features_as_json(engine, schema) -> None:
    path = Path(__file__).resolve().parents[1] / "sample_data" / "production_logs.parquet"
    frame = pd.read_parquet(path)
    report = ingest_logs(engine, "loan_default", schema, path)
    assert report.added == len(frame) and report.bad == 0
    with engine.connect() as conn:
        errors = conn.execute(sa.select(sa.func.count()).where(inference_logs.c.error)).scalar()
    assert errors == int(frame["error"].sum())


def test_fail_mode_writes_nothing_and_names_line_and_field(engine, schema, tmp_path) -> None:
    ingest_logs(engine, "loan_default", schema,
                write_csv(tmp_path / "before.csv", [good_row(i) for i in range(3)]))
    # More rows than one insert batch, so earlier batches must be rolled back too.
    rows = [good_row(i) for i in range(100, 6100)]
    rows[-1]["timestamp"] = "not a time"
    path = write_csv(tmp_path / "logs.csv", rows)
    with pytest.raises(IngestError) as err:
        ingest_logs(engine, "loan_default", schema, path)
    assert "line 6001: field 'timestamp': cannot read 'not a time'" in str(err.value)
    assert "nothing was written" in str(err.value)
    assert sorted(stored(engine)) == ["r-0", "r-1", "r-2"]


def test_skip_mode_loads_good_rows_and_reports_bad(engine, schema, tmp_path) -> None:
    rows = [good_row(i) for i in range(6)]
    rows[1]["request_id"] = None
    rows[2]["annual_income"] = float("inf")
    rows[3]["prediction"] = None
    rows[4]["request_id"] = "r-0"
    path = write_jsonl(tmp_path / "logs.jsonl", rows)
    report = ingest_logs(engine, "loan_default", schema, path, on_error="skip")
    assert (report.added, report.bad) == (2, 4)
    assert report.problems == [
        "line 2: field 'request_id': is missing",
        "line 3: field 'annual_income': value is inf; only finite numbers can be stored",
        "line 4: field 'prediction': is missing (only error and fallback rows may lack a "
        "prediction)",
        "line 5: field 'request_id': 'r-0' repeats line 1",
    ]
    assert sorted(stored(engine)) == ["r-0", "r-5"]


def test_nan_is_stored_as_null(engine, schema, tmp_path) -> None:
    frame = pd.DataFrame([good_row(0, employment_years=float("nan"))])
    frame.to_parquet(tmp_path / "logs.parquet")
    ingest_logs(engine, "loan_default", schema, tmp_path / "logs.parquet")
    assert stored(engine)["r-0"]["features"]["employment_years"] is None


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("a.csv", "request_id,prediction\nr1,1\n", r"missing required column 'timestamp'"),
        ("b.csv", "request_id,timestamp,prediction\nr1,2026-10-01,1,extra\n",
         r"line 2: 4 cells, the header has 3"),
        ("c.jsonl", '{"request_id": "r1"}\n{not json\n', r"line 2: invalid JSON"),
        ("d.txt", "x", r"unknown file type"),
        ("e.parquet", "this is not parquet", r"cannot read as parquet"),
    ],
)
def test_malformed_files_get_one_clear_error(engine, schema, tmp_path, name, content,
                                             match) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(IngestError, match=match) as err:
        ingest_logs(engine, "loan_default", schema, path)
    assert str(path) in str(err.value)
    assert stored(engine) == {}


def test_labels_load_once_and_report_bad_rows(engine, schema, tmp_path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("request_id,defaulted,timestamp\nr-1,1,2026-10-05T00:00:00Z\n"
                    "r-2,0,\nr-3,,2026-10-05T00:00:00Z\n", encoding="utf-8")
    with pytest.raises(IngestError, match="line 4: field 'defaulted': is missing"):
        ingest_labels(engine, "loan_default", schema, path)
    report = ingest_labels(engine, "loan_default", schema, path, on_error="skip")
    assert (report.added, report.bad) == (2, 1)
    again = ingest_labels(engine, "loan_default", schema, path, on_error="skip")
    assert again.added == 0 and again.already_stored == 2
    with engine.connect() as conn:
        query = sa.select(ground_truth.c.request_id, ground_truth.c.label)
        labels = {rid: label for rid, label in conn.execute(query)}
    assert labels == {"r-1": 1, "r-2": 0}


def test_overlong_request_id_is_a_bad_row(engine, schema, tmp_path) -> None:
    rows = [good_row(0), good_row(1, request_id="x" * 201)]
    path = write_jsonl(tmp_path / "logs.jsonl", rows)
    report = ingest_logs(engine, "loan_default", schema, path, on_error="skip")
    assert report.added == 1
    assert report.problems == ["line 2: field 'request_id': is longer than 200 characters"]


def test_nul_character_is_a_bad_row_not_a_database_error(engine, schema, tmp_path) -> None:
    rows = [good_row(0), good_row(1, request_id="a\x00b"), good_row(2, error_message="x\x00")]
    path = write_jsonl(tmp_path / "logs.jsonl", rows)
    report = ingest_logs(engine, "loan_default", schema, path, on_error="skip")
    assert report.added == 1
    assert [p.split(":")[1].strip() for p in report.problems] == [
        "field 'request_id'", "field 'error_message'"]


def test_driver_errors_keep_sqlalchemys_exception_family(engine) -> None:
    from monitor.store.logs import _LOG_COLUMNS, _bulk_insert_ignoring_duplicates

    bad = [("m", None, "r1", "2026-10-01 00:00:00.000000", "{}", None, None,
            "not a number", False, None, "2026-10-01 00:00:00.000000")]
    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite stores any value in any column")
    with pytest.raises(sa.exc.DataError), engine.begin() as conn:
        _bulk_insert_ignoring_duplicates(conn, inference_logs, _LOG_COLUMNS, bad)

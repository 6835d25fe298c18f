"""A long load keeps the store writable and stays all or nothing (issue 13, item 5).

Rows are staged on the load's own connection and published at the end in one short
transaction; see ``monitor.store.staging``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

import monitor.ingest
import monitor.ingest_fast
import monitor.store.db
from monitor.cli.main import main
from monitor.errors import IngestError
from monitor.ingest import ingest_labels, ingest_logs
from monitor.store.db import create_engine, ensure_schema
from monitor.store.tables import fallback_state, inference_logs
from tests.conftest import good_row

ROWS = 25_000  # more than two staging batches (10,000 rows each)


@pytest.fixture(autouse=True)
def row_path_for_json_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests act while the row path reads a given row (``at_row``): JSON-lines files
    take it here, not the Arrow fast path (whose staging ``test_ingest_fast`` tests)."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise monitor.ingest.NotFast("tests of the row path")

    monkeypatch.setattr(monitor.ingest_fast, "_checked_json_chunks", refuse)


def write_logs(path: Path, n: int = ROWS) -> Path:
    path.write_text("".join(json.dumps(good_row(i)) + "\n" for i in range(n)), encoding="utf-8")
    return path


def count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(inference_logs)).scalar())


def at_row(monkeypatch: pytest.MonkeyPatch, n: int, action: Callable[[], None]) -> None:
    """Run ``action`` while the load reads row ``n`` (two batches are staged by then)."""
    parse = monitor.ingest._log_record
    seen = [0]

    def spying(*args: Any, **kwargs: Any) -> Any:
        seen[0] += 1
        if seen[0] == n:
            action()
        return parse(*args, **kwargs)

    monkeypatch.setattr(monitor.ingest, "_log_record", spying)


def no_busy_wait(monkeypatch: pytest.MonkeyPatch, milliseconds: int = 0) -> None:
    """SQLite connections made from now on fail at once on a lock instead of waiting 30 s."""
    setup = monitor.store.db._on_sqlite_connect

    def connect(dbapi_conn: Any, record: Any) -> None:
        setup(dbapi_conn, record)
        dbapi_conn.execute(f"PRAGMA busy_timeout={milliseconds}")

    monkeypatch.setattr(monitor.store.db, "_on_sqlite_connect", connect)


def test_the_override_lever_works_while_a_file_loads(make_config, schema, tmp_path,
                                                     monkeypatch) -> None:
    """`mqm fallback set` during a load: before, it met "database is locked" (the load held
    SQLite's write lock from its first batch to its end); now nothing is locked but the
    final publish."""
    no_busy_wait(monkeypatch)
    config_path, config = make_config()
    engine = create_engine(config.database_url)
    ensure_schema(engine)
    results: list[Any] = []

    def lever() -> None:
        runner = CliRunner()
        results.append(runner.invoke(main, ["--config", str(config_path), "fallback", "set",
                                            "-m", "loan_default", "--on", "--reason", "test",
                                            "--json"], catch_exceptions=False))
        results.append(count(engine))  # nothing of the load is visible yet

    at_row(monkeypatch, ROWS - 1000, lever)
    report = ingest_logs(engine, "loan_default", schema, write_logs(tmp_path / "logs.jsonl"))
    assert report.added == ROWS
    lever_result, visible = results
    assert lever_result.exit_code == 0, lever_result.output
    assert json.loads(lever_result.stdout)["active"] is True
    assert visible == 0
    with engine.connect() as conn:
        assert conn.execute(sa.select(fallback_state.c.forced)).scalar() is True
    engine.dispose()


@pytest.mark.postgres
def test_a_load_takes_no_lock_on_the_log_table_until_it_publishes(pg_url, schema, tmp_path,
                                                                  monkeypatch) -> None:
    """Compaction takes a SHARE lock on inference_logs; a load used to block it (and so the
    checks) for its whole length."""
    engine = create_engine(pg_url)
    ensure_schema(engine)
    locked: list[bool] = []

    def compactor() -> None:
        with engine.connect() as conn, conn.begin():
            conn.exec_driver_sql("SET LOCAL lock_timeout = '100ms'")
            try:
                conn.exec_driver_sql("LOCK TABLE inference_logs, ground_truth IN SHARE MODE")
                locked.append(True)
            except sa.exc.OperationalError:
                locked.append(False)

    at_row(monkeypatch, ROWS - 1000, compactor)
    assert ingest_logs(engine, "loan_default", schema,
                       write_logs(tmp_path / "logs.jsonl")).added == ROWS
    assert locked == [True]
    engine.dispose()


def test_a_load_stopped_midway_leaves_nothing(engine, schema, tmp_path, monkeypatch) -> None:
    path = write_logs(tmp_path / "logs.jsonl")

    def interrupt() -> None:
        raise KeyboardInterrupt

    at_row(monkeypatch, ROWS - 1000, interrupt)
    with pytest.raises(KeyboardInterrupt):
        ingest_logs(engine, "loan_default", schema, path)
    assert count(engine) == 0
    monkeypatch.undo()
    # The staged rows went with the load: loading again stores every row once.
    assert ingest_logs(engine, "loan_default", schema, path).added == ROWS
    assert count(engine) == ROWS


def test_a_locked_database_is_one_clear_error(tmp_path, schema, make_config,
                                              monkeypatch) -> None:
    no_busy_wait(monkeypatch, milliseconds=50)
    config_path, config = make_config()
    engine = create_engine(config.database_url)
    ensure_schema(engine)
    path = write_logs(tmp_path / "logs.jsonl", 100)
    labels = tmp_path / "labels.csv"
    labels.write_text("request_id,defaulted\nr-1,1\n", encoding="utf-8")
    holder = sqlite3.connect(engine.url.database or "", timeout=0)
    holder.execute("BEGIN IMMEDIATE")  # another writer, holding the write lock throughout
    try:
        with pytest.raises(IngestError) as err:
            ingest_logs(engine, "loan_default", schema, path)
        assert str(err.value).startswith(f"{path}: the database at sqlite:///")
        assert "is locked: another process kept writing longer than" in str(err.value)
        assert str(err.value).endswith("nothing was written, load the file again")
        with pytest.raises(IngestError, match="is locked"):
            ingest_labels(engine, "loan_default", schema, labels)

        runner = CliRunner()
        for command, file in (("ingest", path), ("labels", labels)):
            result = runner.invoke(main, ["--config", str(config_path), command, "-m",
                                          "loan_default", str(file)], catch_exceptions=False)
            assert result.exit_code == 1
            assert result.stderr.startswith(f"error: {file}: the database at ")
            assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    finally:
        holder.rollback()
        holder.close()
    assert ingest_logs(engine, "loan_default", schema, path).added == 100
    engine.dispose()


def test_rows_are_stored_in_file_order(engine, schema, tmp_path) -> None:
    order = [5, 3, 9, 1, 7, 0, 8, 2, 6, 4]
    path = tmp_path / "logs.jsonl"
    path.write_text("".join(json.dumps(good_row(i)) + "\n" for i in order), encoding="utf-8")
    ingest_logs(engine, "loan_default", schema, path)
    with engine.connect() as conn:
        ids = conn.execute(sa.select(inference_logs.c.request_id)
                           .order_by(inference_logs.c.id)).scalars().all()
    assert ids == [f"r-{i}" for i in order]


def test_a_reload_with_new_rows_adds_only_those(engine, schema, tmp_path) -> None:
    first = write_logs(tmp_path / "first.jsonl", 12_000)
    assert ingest_logs(engine, "loan_default", schema, first).added == 12_000
    both = write_logs(tmp_path / "both.jsonl", 15_000)
    report = ingest_logs(engine, "loan_default", schema, both)
    assert (report.added, report.already_stored) == (3_000, 12_000)
    assert count(engine) == 15_000

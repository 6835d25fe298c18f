"""Store contract on both backends: migrations, windows, runs, a user's own log table."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from monitor.errors import DatabaseError
from monitor.run.check import run_schema_check
from monitor.store.db import (
    create_engine,
    current_revision,
    ensure_schema,
    head_revision,
    upgrade,
)
from monitor.store.logs import insert_logs
from monitor.store.runs import latest_runs, run_metrics_of
from monitor.store.sources import BuiltinSource, make_source
from monitor.store.tables import metadata
from tests.conftest import log

T0 = datetime(2026, 10, 1, tzinfo=UTC)


def test_migrations_match_the_table_declarations(engine: sa.Engine) -> None:
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_ensure_schema_refuses_foreign_tables(db_url: str) -> None:
    eng = create_engine(db_url)
    with eng.begin() as conn:
        conn.execute(sa.text("CREATE TABLE inference_logs (x INTEGER)"))
    with pytest.raises(DatabaseError, match="has mqm tables but no migration revision"):
        ensure_schema(eng)
    eng.dispose()


def test_unreachable_database_is_one_clear_error() -> None:
    eng = create_engine("postgresql+psycopg://postgres@127.0.0.1:1/nothing")
    with pytest.raises(DatabaseError, match=r"cannot reach the database at .*127\.0\.0\.1:1"):
        ensure_schema(eng)


def test_windows_are_half_open_and_times_round_trip(engine: sa.Engine) -> None:
    recs = [log(i, T0 + timedelta(hours=i)) for i in range(48)]
    with engine.begin() as conn:
        insert_logs(conn, "loan_default", recs)
        insert_logs(conn, "other_model", [log(999, T0)])
    source = BuiltinSource(engine, "loan_default")
    assert source.time_range() == (T0, T0 + timedelta(hours=47))
    window = source.read_window(T0 + timedelta(hours=24), T0 + timedelta(hours=48))
    assert window.rows == 24
    assert window.meta["ts"].min() == T0 + timedelta(hours=24)
    assert set(window.features.columns) >= {"age", "home_ownership"}
    assert window.meta["latency_ms"].eq(12.5).all()


def test_schema_run_is_persisted_with_its_metrics(engine: sa.Engine, make_config) -> None:
    _, cfg = make_config(str(engine.url.render_as_string(hide_password=False)))
    recs = [log(i, T0 + timedelta(minutes=i)) for i in range(100)]
    recs += [log(100 + i, T0 + timedelta(minutes=200 + i), home_ownership="OTHER")
             for i in range(10)]
    with engine.begin() as conn:
        insert_logs(conn, "loan_default", recs)
    run = run_schema_check(engine, cfg, "loan_default")
    assert run is not None and run.run_id is not None
    assert (run.start, run.end) == (T0, T0 + timedelta(days=1))
    assert run.result.rows == 110
    assert run.result.status == "critical"
    stored = latest_runs(engine, "loan_default")
    assert [r.id for r in stored] == [run.run_id]
    assert stored[0].summary["violation_rate"] == pytest.approx(10 / 110)
    assert stored[0].reference_version and len(stored[0].config_hash) == 64
    metrics = {(m.metric, m.feature): m.value for m in run_metrics_of(engine, run.run_id)}
    assert metrics[("unseen_category_rate", "home_ownership")] == pytest.approx(10 / 110)
    assert metrics[("violation_rate", "")] == pytest.approx(10 / 110)


def test_user_table_through_a_column_mapping(engine: sa.Engine, make_config) -> None:
    """A user's own wide log table, with other column names, is read like ours."""
    url = engine.url.render_as_string(hide_password=False)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "CREATE TABLE serving_log (rid VARCHAR(40), created_at TIMESTAMP, age INTEGER, "
            "annual_income FLOAT, loan_amount FLOAT, credit_score INTEGER, "
            "debt_to_income FLOAT, employment_years FLOAT, open_accounts INTEGER, "
            "home_ownership VARCHAR(20), purpose VARCHAR(40), has_cosigner BOOLEAN, "
            "application_channel VARCHAR(20), pred INTEGER, p1 FLOAT, p0 FLOAT)"))
        for i in range(30):
            conn.execute(sa.text(
                "INSERT INTO serving_log VALUES (:rid, :ts, 40, 50000, 9000, :cs, 0.2, NULL, 3,"
                " :home, 'car', false, 'web', 1, 0.7, 0.3)"),
                {"rid": f"u{i}", "ts": (T0 + timedelta(hours=i)).replace(tzinfo=None),
                 "cs": 100 if i < 3 else 700, "home": "OTHER" if i == 29 else "OWN"})
    source_cfg = {"kind": "sql", "table": "serving_log", "columns": {
        "request_id": "rid", "timestamp": "created_at", "prediction": "pred",
        "features": {"loan_purpose": "purpose"}, "probabilities": {0: "p0", 1: "p1"}}}
    _, cfg = make_config(url, source=source_cfg)
    run = run_schema_check(engine, cfg, "loan_default", at=T0 + timedelta(days=1))
    assert run is not None
    assert run.result.rows == 24
    assert run.result.missing_columns == ()
    assert run.result.column("credit_score").out_of_range_rate == pytest.approx(3 / 24)
    assert run.result.column("employment_years").null_rate == 1.0
    assert run.result.column("has_cosigner").type_mismatch_rate == 0  # SQLite keeps 0/1
    latest = run_schema_check(engine, cfg, "loan_default", persist=False)
    assert latest is not None and latest.result.rows == 6
    assert latest.result.column("home_ownership").unseen_category_rate == pytest.approx(1 / 6)
    window = make_source(engine, "loan_default", cfg.model("loan_default").source,
                         cfg_schema(cfg)).read_window(T0, T0 + timedelta(days=2))
    assert window.probabilities.to_dict("list") == {"0": [0.3] * 30, "1": [0.7] * 30}

    # The same table through a query instead: filtered by time around the user's SELECT.
    query_cfg = {**source_cfg, "table": None,
                 "query": "SELECT * FROM serving_log WHERE home_ownership = 'OWN'"}
    _, cfg = make_config(url, source=query_cfg)
    run = run_schema_check(engine, cfg, "loan_default", at=T0 + timedelta(days=2),
                           persist=False)
    assert run is not None and run.result.rows == 5  # hours 24..28; 29 is not OWN
    assert run.result.column("home_ownership").unseen_category_rate == 0
    assert run.result.column("has_cosigner").type_mismatch_rate == 0


def cfg_schema(cfg):  # type: ignore[no-untyped-def]
    from monitor.schema import load_schema

    return load_schema(cfg.model("loan_default").schema_path)


def test_a_database_from_a_newer_mqm_is_refused(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'ffff99'"))
    with pytest.raises(DatabaseError, match="revision ffff99, which this mqm does not know"):
        ensure_schema(engine)


def test_upgrade_from_0001_keeps_the_data(db_url: str) -> None:
    """A store made by the previous release: refused until upgraded, then upgraded in place."""
    eng = create_engine(db_url)
    assert upgrade(eng, "0001") == (None, "0001")
    stamp = T0.replace(tzinfo=None)
    with eng.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO inference_logs (model, request_id, ts, features, prediction, error, "
            "received_at) VALUES ('m', 'r-1', :ts, '{\"age\": 30}', '1', false, :ts)"),
            {"ts": stamp})
        conn.execute(sa.text(
            "INSERT INTO check_runs (model, kind, window_start, window_end, rows, status, "
            "summary, config_hash, started_at, finished_at) VALUES ('m', 'check', :ts, :ts, 1, "
            "'ok', '{}', 'h', :ts, :ts)"), {"ts": stamp})
    with pytest.raises(DatabaseError, match=f"is at revision 0001, this mqm expects "
                                            f"{head_revision()}: run `mqm db upgrade`"):
        ensure_schema(eng)
    assert upgrade(eng) == ("0001", head_revision())
    ensure_schema(eng)
    with eng.connect() as conn:
        row = conn.execute(sa.text("SELECT request_id, ts, fallback_reason FROM inference_logs"
                                   )).one()
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert (row.request_id, row.fallback_reason) == ("r-1", None)
    assert [r.status for r in latest_runs(eng, "m")] == ["ok"]
    assert BuiltinSource(eng, "m").time_range() == (T0, T0)
    assert diff == []
    eng.dispose()


def test_postgresql_stores_log_blocks_as_written(pg_url: str) -> None:
    """A block's bytes are LZ4-compressed already: PostgreSQL keeps them as they are
    (``EXTERNAL``) instead of compressing them again, which saved nothing and cost more
    than writing them; the upgrade sets it on a store of the revision before."""
    eng = create_engine(pg_url)

    def storage() -> dict[str, str]:
        with eng.connect() as conn:
            return dict(conn.execute(sa.text(
                "SELECT attname, attstorage FROM pg_attribute WHERE attrelid = "
                "'log_blocks'::regclass AND attname IN ('data', 'labels')")).all())

    upgrade(eng, "0008")
    assert storage() == {"data": "x", "labels": "x"}  # the default: compressed, out of line
    upgrade(eng)
    assert storage() == {"data": "e", "labels": "e"}  # out of line, as written
    eng.dispose()


def test_the_head_read_from_the_migration_files_is_alembics(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    from monitor.store import db

    assert db._head_from_files() == head_revision()
    # A new revision in the template's form (single quotes) becomes the head; two heads,
    # or a file it cannot read, give None, and ensure_schema asks alembic instead.
    versions = tmp_path / "versions"
    shutil.copytree(db._MIGRATIONS / "versions", versions)
    head = head_revision()
    (versions / "0099_next.py").write_text(f"revision = '0099'\ndown_revision = '{head}'\n")
    monkeypatch.setattr(db, "_MIGRATIONS", tmp_path)
    db._head_from_files.cache_clear()
    try:
        assert db._head_from_files() == "0099"
        (versions / "0098_other.py").write_text(f'revision = "0098"\ndown_revision = "{head}"\n')
        db._head_from_files.cache_clear()
        assert db._head_from_files() is None
    finally:
        db._head_from_files.cache_clear()


def test_an_outdated_database_is_still_refused_after_the_quick_look(db_url: str) -> None:
    eng = create_engine(db_url)
    upgrade(eng, "0001")
    from monitor.store.db import _revision_by_sql

    assert _revision_by_sql(eng) == "0001"
    with pytest.raises(DatabaseError, match="run `mqm db upgrade`"):
        ensure_schema(eng)
    upgrade(eng)
    assert _revision_by_sql(eng) == head_revision()
    ensure_schema(eng)
    eng.dispose()

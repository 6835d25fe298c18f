"""Retention on both backends: exactly the logs, labels and log blocks before the horizon
go, in batches that leave the store free between them; windows awaiting labels or not
yet checked keep theirs; kept windows check the same; runs, figures and flag events stay.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from monitor.errors import ConfigError
from monitor.run.check import run_check
from monitor.run.retention import (
    PROFILE_GRACE,
    apply_retention,
    current_profile_keys,
    retention_horizon,
    retention_plan,
)
from monitor.store import compaction
from monitor.store.blocks import _blocks, _uncovered
from monitor.store.db import driver_connection
from monitor.store.logs import insert_labels, insert_logs, log_load
from monitor.store.profiles import save_profile
from monitor.store.reading import sql_marks
from monitor.store.retention import delete_older, retention_rows
from monitor.store.tables import (
    check_runs,
    fallback_events,
    ground_truth,
    inference_logs,
    log_blocks,
    reference_profiles,
    run_metrics,
)
from monitor.store.watermarks import start_watermark
from tests.conftest import log

MODEL = "loan_default"
OTHER = "other"
T0 = datetime(2026, 10, 1, tzinfo=UTC)
DAY = timedelta(days=1)
DAYS = 8
PER_DAY = 24
# now - retention (4 days) falls inside day 4: the horizon is its start.
NOW = T0 + DAYS * DAY + timedelta(hours=5)
HORIZON = T0 + 4 * DAY


def _fill(engine: sa.Engine) -> None:
    """Eight days of hourly logs of the model and of another one, with labels a day
    late for most; plus labels whose logs never came, old and new, and an old label
    (its time before the horizon) of a kept log."""
    records = [log(d * PER_DAY + h, T0 + d * DAY + timedelta(hours=h, minutes=d))
               for d in range(DAYS) for h in range(PER_DAY)]
    with engine.begin() as conn:
        # Loaded out of time order (a late file of old logs), so ids and times disagree.
        insert_logs(conn, MODEL, records[PER_DAY * 5:])
        insert_logs(conn, OTHER, records)
    with engine.begin() as conn:
        insert_logs(conn, MODEL, records[:PER_DAY * 5])
    labels = [(r.request_id, i % 2, r.ts + DAY) for i, r in enumerate(records) if i % 3]
    labels += [("orphan-old", 1, T0 + DAY), ("orphan-new", 0, NOW - DAY)]
    # A label known before its inference (clock skew): old, but its log is kept.
    labels.append((records[PER_DAY * 6].request_id, 1, T0))
    with engine.begin() as conn:
        insert_labels(conn, MODEL, labels)
        insert_labels(conn, OTHER, labels)


def _rows(engine: sa.Engine, table: sa.Table, model: str) -> dict[int, tuple[Any, ...]]:
    with engine.connect() as conn:
        return {r.id: tuple(r) for r in conn.execute(
            sa.select(table).where(table.c.model == model))}


def _count(engine: sa.Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


@pytest.fixture
def filled(engine: sa.Engine) -> sa.Engine:
    _fill(engine)
    # Small blocks, so that blocks lie before, across and after the horizon.
    compaction.compact(engine, MODEL, block_rows=20)
    return engine


@pytest.fixture
def config(make_config, db_url: str):  # type: ignore[no-untyped-def]
    _, cfg = make_config(database_url=db_url, retention="4d",
                         performance={"max_label_delay": "2d"})
    return cfg


def test_exactly_the_rows_before_the_horizon_go(filled: sa.Engine, config: Any) -> None:
    engine = filled
    logs = _rows(engine, inference_logs, MODEL)
    labels = _rows(engine, ground_truth, MODEL)
    others = (_rows(engine, inference_logs, OTHER), _rows(engine, ground_truth, OTHER))
    with engine.connect() as conn:
        blocks_before = conn.execute(sa.select(log_blocks.c.id, log_blocks.c.ts_min,
                                               log_blocks.c.ts_max)
                                     .where(log_blocks.c.model == MODEL)).all()
    assert any(b.ts_max < HORIZON for b in blocks_before)
    assert any(b.ts_min < HORIZON <= b.ts_max for b in blocks_before)

    plan = retention_plan(engine, config, MODEL, now=NOW)
    assert plan.horizon == HORIZON and not plan.held_by_watermark
    result = apply_retention(engine, config, MODEL, now=NOW, batch=7)
    assert result is not None and result.complete and result.horizon == HORIZON

    # Logs: every one before the horizon, no other.
    kept_logs = {i: r for i, r in logs.items() if r[4] >= HORIZON}
    assert _rows(engine, inference_logs, MODEL) == kept_logs
    assert result.logs == len(logs) - len(kept_logs) == 4 * PER_DAY
    # Labels: those before the horizon whose request id no kept log carries.
    kept_ids = {r[3] for r in kept_logs.values()}
    kept_labels = {i: r for i, r in labels.items() if r[4] >= HORIZON or r[2] in kept_ids}
    assert _rows(engine, ground_truth, MODEL) == kept_labels
    assert result.labels == len(labels) - len(kept_labels)
    assert any(r[4] < HORIZON for r in kept_labels.values())  # the skewed label stayed
    assert "orphan-old" not in {r[2] for r in kept_labels.values()}
    assert "orphan-new" in {r[2] for r in kept_labels.values()}
    # Blocks: every one holding a row before the horizon.
    with engine.connect() as conn:
        blocks_after = conn.execute(sa.select(log_blocks.c.id).where(
            log_blocks.c.model == MODEL)).scalars().all()
    assert set(blocks_after) == {b.id for b in blocks_before if b.ts_min >= HORIZON}
    assert result.blocks == len(blocks_before) - len(blocks_after)
    # The dry run agreed; another model's rows are untouched.
    assert plan.pending is not None
    assert (plan.pending.logs, plan.pending.labels, plan.pending.blocks) == (
        result.logs, result.labels, result.blocks)
    assert (_rows(engine, inference_logs, OTHER), _rows(engine, ground_truth, OTHER)) == others
    # Recorded for the metrics.
    with engine.connect() as conn:
        row = retention_rows(conn, [MODEL])[MODEL]
    assert (row.horizon, row.last_run_at, row.logs_deleted, row.labels_deleted,
            row.blocks_deleted) == (HORIZON, NOW, result.logs, result.labels, result.blocks)

    # The compactor builds the kept rows of the cut blocks again, with no gap left to scan,
    # and no block holds a row before the horizon.
    compaction.compact(engine, MODEL, block_rows=20)
    with engine.connect() as conn:
        raw = driver_connection(conn)
        blocks = _blocks(raw, sql_marks(engine.dialect.name)[0], MODEL)
        top = conn.execute(sa.select(sa.func.max(inference_logs.c.id))).scalar_one()
        first = conn.execute(sa.select(sa.func.min(log_blocks.c.ts_min)).where(
            log_blocks.c.model == MODEL)).scalar_one()
    assert _uncovered(blocks, top) == []
    assert sum(b.rows for b in blocks) == len(kept_logs)
    assert first >= HORIZON

    # A second pass finds nothing more.
    again = apply_retention(engine, config, MODEL, now=NOW, batch=7)
    assert again is not None and (again.logs, again.labels, again.blocks) == (0, 0, 0)


def test_checks_of_the_kept_windows_are_the_same_after_retention(
        filled: sa.Engine, config: Any) -> None:
    engine = filled
    ends = [T0 + d * DAY for d in range(5, DAYS + 1)]

    def documents() -> list[dict[str, Any]]:
        out = []
        for end in ends:
            run = run_check(engine, config, MODEL, at=end, now=NOW, persist=False)
            assert run is not None and run.rows == PER_DAY
            out.append(run.as_dict())
        return out

    before = documents()
    apply_retention(engine, config, MODEL, now=NOW, batch=5)
    assert documents() == before  # read from what blocks are left, and the rows
    compaction.compact(engine, MODEL, block_rows=20)
    assert documents() == before  # and from the rebuilt blocks
    # The windows before the horizon are empty now.
    gone = run_check(engine, config, MODEL, at=HORIZON, now=NOW, persist=False)
    assert gone is not None and gone.rows == 0


def test_runs_figures_and_flag_events_are_kept(filled: sa.Engine, config: Any) -> None:
    engine = filled
    for d in range(1, DAYS + 1):
        run_check(engine, config, MODEL, at=T0 + d * DAY, now=NOW)
    with engine.begin() as conn:
        conn.execute(sa.insert(fallback_events).values(
            model=MODEL, at=T0 + DAY, old_active=False, new_active=True, kind="manual",
            details={}))
    counts = [_count(engine, t) for t in (check_runs, run_metrics, fallback_events)]
    assert counts[0] == DAYS
    result = apply_retention(engine, config, MODEL, now=NOW)
    assert result is not None and result.logs
    assert [_count(engine, t) for t in (check_runs, run_metrics, fallback_events)] == counts


def test_windows_awaiting_labels_or_a_check_keep_their_rows(
        filled: sa.Engine, make_config, db_url: str) -> None:  # type: ignore[no-untyped-def]
    engine = filled
    # The shortest retention allowed: max_label_delay + window.
    with pytest.raises(ConfigError, match=r"retention \(2 days\) must be at least "
                       r"performance.max_label_delay \+ window \(3 days\)"):
        make_config(database_url=db_url, retention="2d", performance={"max_label_delay": "2d"})
    _, cfg = make_config(database_url=db_url, retention="3d",
                         performance={"max_label_delay": "2d"})
    model_cfg = cfg.model(MODEL)
    # Whatever the time, no window that a recheck still looks at (ending within
    # max_label_delay + window of now) is before the horizon.
    for minutes in range(0, 3 * 24 * 60, 97):
        now = NOW + timedelta(minutes=minutes)
        horizon = retention_horizon(model_cfg, now, None)
        assert horizon is not None
        assert horizon <= now - model_cfg.performance.max_label_delay - model_cfg.window

    # A window whose labels are still awaited: checked now, immature; retention at the
    # shortest allowed keeps every row and label of it.
    end = T0 + 6 * DAY
    now = end + timedelta(days=1, hours=23)  # a day short of max_label_delay
    run = run_check(engine, cfg, MODEL, at=end, now=now, persist=False)
    assert run is not None and run.rows == PER_DAY
    assert run.performance is not None and not run.performance.mature
    logs = _rows(engine, inference_logs, MODEL)
    window_logs = {i for i, r in logs.items() if end - DAY <= r[4] < end}
    result = apply_retention(engine, cfg, MODEL, now=now)
    assert result is not None and result.logs > 0
    assert window_logs <= set(_rows(engine, inference_logs, MODEL))
    assert run_check(engine, cfg, MODEL, at=end, now=now, persist=False) == run


def test_windows_the_scheduler_has_not_checked_keep_their_rows(
        filled: sa.Engine, config: Any) -> None:
    engine = filled
    start_watermark(engine, MODEL, T0 + 3 * DAY, NOW)
    later = NOW + 30 * DAY
    plan = retention_plan(engine, config, MODEL, now=later)
    assert plan.horizon == T0 + 3 * DAY and plan.held_by_watermark
    apply_retention(engine, config, MODEL, now=later)
    with engine.connect() as conn:
        oldest = conn.execute(sa.select(sa.func.min(inference_logs.c.ts)).where(
            inference_logs.c.model == MODEL)).scalar_one()
    assert oldest >= T0 + 3 * DAY and oldest < T0 + 4 * DAY


def test_retention_off_deletes_nothing(filled: sa.Engine, make_config, db_url: str
                                       ) -> None:  # type: ignore[no-untyped-def]
    _, cfg = make_config(database_url=db_url, retention=None)
    before = _count(filled, inference_logs), _count(filled, ground_truth)
    assert apply_retention(filled, cfg, MODEL, now=NOW + 3650 * DAY) is None
    assert retention_plan(filled, cfg, MODEL, now=NOW).horizon is None
    assert (_count(filled, inference_logs), _count(filled, ground_truth)) == before


def _profile_keys(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.select(reference_profiles.c.key)).scalars())


def test_profiles_of_references_no_longer_configured_go(filled: sa.Engine, config: Any,
                                                        tmp_path: Any) -> None:
    """A replaced reference leaves its profile (146 MB per million rows) behind: a complete
    pass deletes it once older than the grace period; the profile of the configured
    reference stays however old, as does a recent one (another replica's, mid-deploy)."""
    engine = filled
    keys = current_profile_keys(config)
    assert keys is not None and len(keys) == 1
    (current,) = keys
    old, recent = NOW - PROFILE_GRACE - DAY, NOW - PROFILE_GRACE + timedelta(hours=1)
    for key, when in ((current, old), ("a" * 64, old), ("b" * 64, recent)):
        save_profile(engine, key, reference_version="v", data=b"x", now=when)

    result = apply_retention(engine, config, MODEL, now=NOW, batch=7)
    assert result is not None and result.profiles == 1
    assert _profile_keys(engine) == {current, "b" * 64}

    # With a model whose reference is missing, its key is unknown: nothing goes.
    model_cfg = config.models[MODEL].model_copy(
        update={"reference": tmp_path / "missing.parquet"})
    moved = config.model_copy(update={"models": {**config.models, MODEL: model_cfg}})
    assert current_profile_keys(moved) is None
    later = apply_retention(engine, moved, MODEL, now=NOW + 3 * PROFILE_GRACE, batch=7)
    assert later is not None and later.profiles == 0
    assert _profile_keys(engine) == {current, "b" * 64}


def test_an_ingest_and_a_write_commit_while_retention_is_midway(filled: sa.Engine) -> None:
    """Each batch is its own transaction: between two of them, a load of logs (its
    publish) and a label write commit, while the pass still has rows to delete."""
    engine = filled
    from monitor.store.tables import fallback_state

    calls = 0
    outcome: dict[str, Any] = {}

    def writer() -> None:
        try:
            with log_load(engine, MODEL) as load:
                load.add([log(10_000 + i, NOW + timedelta(minutes=i)) for i in range(50)])
                outcome["published"] = load.publish()
            with engine.begin() as conn:
                outcome["labels"] = insert_labels(conn, MODEL, [("new-label", 1, NOW)])
                conn.execute(sa.insert(fallback_state).values(
                    model="api-write", streak=[], created_at=NOW, updated_at=NOW))
        except Exception as exc:  # reported below, with the pass's state
            outcome["error"] = exc

    def keep_going() -> bool:
        nonlocal calls
        calls += 1
        if calls == 3:  # two batches done, more to come
            thread = threading.Thread(target=writer)
            thread.start()
            thread.join()
            with engine.connect() as conn:  # committed: visible to another connection
                outcome["seen"] = conn.execute(sa.select(sa.func.count()).where(
                    inference_logs.c.model == MODEL, inference_logs.c.ts >= NOW)
                ).scalar_one()
        return True

    result = delete_older(engine, MODEL, HORIZON, batch=5, keep_going=keep_going, now=NOW)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["published"] == 50 and outcome["seen"] == 50 and outcome["labels"] == 1
    assert result.complete and result.logs == 4 * PER_DAY
    assert result.batches > 3  # the writes landed in the middle of the pass


def test_a_pass_stopped_midway_goes_on_next_time(filled: sa.Engine) -> None:
    engine = filled
    calls = 0

    def two_batches() -> bool:
        nonlocal calls
        calls += 1
        return calls <= 2

    first = delete_older(engine, MODEL, HORIZON, batch=10, keep_going=two_batches, now=NOW)
    assert not first.complete and first.logs == 20
    with engine.connect() as conn:
        assert retention_rows(conn, [MODEL])[MODEL].horizon is None  # not reached yet
    second = delete_older(engine, MODEL, HORIZON, batch=10, now=NOW)
    assert second.complete and first.logs + second.logs == 4 * PER_DAY
    with engine.connect() as conn:
        row = retention_rows(conn, [MODEL])[MODEL]
    assert row.horizon == HORIZON and row.logs_deleted == 4 * PER_DAY


def test_upgrade_from_0006_keeps_a_populated_store_and_retention_works(db_url: str) -> None:
    """A store at the revision before retention, filled (logs, labels, blocks), upgraded in
    place: every row is kept, the new index and table are there, and retention deletes
    exactly what it would on a new store."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from monitor.store.db import create_engine, ensure_schema, head_revision, upgrade
    from monitor.store.tables import metadata

    engine = create_engine(db_url)
    try:
        assert upgrade(engine, "0006") == (None, "0006")
        _fill(engine)
        compaction.compact(engine, MODEL, block_rows=20)
        logs, labels = _rows(engine, inference_logs, MODEL), _rows(engine, ground_truth, MODEL)
        with engine.connect() as conn:
            blocks = conn.execute(sa.select(log_blocks.c.id, log_blocks.c.ts_min)).all()
        assert upgrade(engine) == ("0006", head_revision())
        ensure_schema(engine)
        assert (_rows(engine, inference_logs, MODEL), _rows(engine, ground_truth, MODEL)) == (
            logs, labels)
        with engine.connect() as conn:
            assert conn.execute(sa.select(log_blocks.c.id, log_blocks.c.ts_min)).all() == blocks
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
            indexes = {ix["name"] for ix in sa.inspect(conn).get_indexes("ground_truth")}
        assert "ix_ground_truth_model_ts" in indexes
        result = delete_older(engine, MODEL, HORIZON, batch=11, now=NOW)
        assert result.logs == sum(1 for r in logs.values() if r[4] < HORIZON) == 4 * PER_DAY
        assert set(_rows(engine, inference_logs, MODEL)) == {
            i for i, r in logs.items() if r[4] >= HORIZON}
    finally:
        engine.dispose()

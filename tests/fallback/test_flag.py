"""The fallback flag in the store, on both backends: runs, overrides, expiry, events, file."""

from __future__ import annotations

import json
import os
import shutil
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from monitor.errors import MonitorError, UnknownModelError
from monitor.fallback.flag import (
    apply_run,
    clear_override,
    flag_document,
    list_events,
    set_override,
    write_flag_file,
)
from monitor.policy import RunOutcome
from monitor.results import ServiceResult
from monitor.run.check import run_check
from monitor.store.logs import insert_logs, make_record
from monitor.store.tables import fallback_state
from tests.conftest import good_row

M = "loan_default"
T0 = datetime(2026, 10, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def outcome(i: int, status: str, *reasons: str) -> RunOutcome:
    return RunOutcome(run_id=i, window_end=T0 + i * DAY, status=status, reasons=reasons)


def at(i: int, minutes: int = 5) -> datetime:
    """Wall time of run ``i``: a few minutes after its window closed."""
    return T0 + i * DAY + timedelta(minutes=minutes)


@pytest.fixture
def cfg(engine: sa.Engine, make_config, tmp_path: Path):  # type: ignore[no-untyped-def]
    _, config = make_config(engine.url.render_as_string(hide_password=False),
                            fallback={"default_prediction": {"label": 0, "score": 0.1}})
    return config.model_copy(update={"fallback_dir": tmp_path / "flags"})


def test_runs_trip_and_recover_the_flag_with_evidence(engine: sa.Engine, cfg) -> None:
    assert apply_run(engine, cfg, M, outcome(1, "ok"), now=at(1)) == []
    assert apply_run(engine, cfg, M, outcome(2, "critical", "drift: credit_score: "
                                             "wasserstein 0.31 vs threshold 0.1"),
                     now=at(2)) == []
    assert flag_document(engine, cfg, M, at(2))["active"] is False  # 1 of 2
    [trip] = apply_run(engine, cfg, M, outcome(3, "critical", "performance: accuracy 0.71 "
                                               "vs reference 0.86"), now=at(3))
    assert (trip.kind, trip.old_active, trip.new_active, trip.actor) == ("auto", False, True,
                                                                         None)
    assert [r["run_id"] for r in trip.details["runs"]] == [2, 3]
    assert trip.details["runs"][0]["reasons"] == [
        "drift: credit_score: wasserstein 0.31 vs threshold 0.1"]
    assert trip.details["rules"] == {"bad_statuses": ["critical"], "trip_after": 2,
                                     "recover_after": 3}
    assert "accuracy 0.71 vs reference 0.86" in (trip.reason or "")
    doc = flag_document(engine, cfg, M, at(3))
    assert doc == {
        "model": M, "active": True, "source": "auto", "reason": trip.reason,
        "since": "2026-10-04T00:05:00Z", "expires_at": None, "stale": False,
        "last_success_at": "2026-10-04T00:05:00Z",
        "default_prediction": {"label": 0, "score": 0.1},
        "updated_at": "2026-10-04T00:05:00Z",
    }
    for i in (4, 5):
        assert apply_run(engine, cfg, M, outcome(i, "ok"), now=at(i)) == []
    [back] = apply_run(engine, cfg, M, outcome(6, "ok"), now=at(6))
    assert (back.old_active, back.new_active) == (True, False)
    assert [r["run_id"] for r in back.details["runs"]] == [4, 5, 6]
    doc = flag_document(engine, cfg, M, at(6))
    assert (doc["active"], doc["since"]) == (False, "2026-10-07T00:05:00Z")
    assert [e.id for e in list_events(engine, M)] == [back.id, trip.id]  # newest first


def test_neutral_runs_and_old_windows_change_nothing(engine: sa.Engine, cfg) -> None:
    apply_run(engine, cfg, M, outcome(2, "critical"), now=at(2))
    before = flag_document(engine, cfg, M, at(2))
    apply_run(engine, cfg, M, outcome(3, "error", "drift: could not run"), now=at(3))
    apply_run(engine, cfg, M, outcome(4, "insufficient_data"), now=at(4))
    apply_run(engine, cfg, M, outcome(1, "error"), now=at(5))  # an older window, ignored
    assert flag_document(engine, cfg, M, at(5)) == before  # not even updated_at
    assert list_events(engine, M) == []
    with engine.connect() as conn:
        row = conn.execute(sa.select(fallback_state)).one()
    assert (row.bad_streak, row.last_run_id) == (1, 2)
    [trip] = apply_run(engine, cfg, M, outcome(6, "critical"), now=at(6))
    assert [r["run_id"] for r in trip.details["runs"]] == [2, 6]


def test_stale_after_three_windows_without_success_flag_unchanged(engine: sa.Engine,
                                                                   cfg) -> None:
    # A model never run is not stale at once: the time counts from its first record.
    assert flag_document(engine, cfg, M, at(0))["stale"] is False
    assert flag_document(engine, cfg, M, at(0) + 3 * DAY + timedelta(seconds=1))["stale"]
    for i in (1, 2):
        apply_run(engine, cfg, M, outcome(i, "critical"), now=at(i))
    apply_run(engine, cfg, M, outcome(3, "error"), now=at(3))
    doc = flag_document(engine, cfg, M, at(2) + 3 * DAY)
    assert (doc["stale"], doc["active"]) == (False, True)
    doc = flag_document(engine, cfg, M, at(2) + 3 * DAY + timedelta(seconds=1))
    assert (doc["stale"], doc["active"]) == (True, True)  # reported, flag unchanged
    assert doc["last_success_at"] == "2026-10-03T00:05:00Z"
    short = cfg.model_copy(update={"models": {M: cfg.model(M).model_copy(update={
        "fallback": cfg.model(M).fallback.model_copy(update={"stale_after": timedelta(hours=1)})
    })}})
    assert flag_document(engine, short, M, at(2) + timedelta(minutes=61))["stale"]


def test_an_override_beats_the_automatic_state_until_it_expires(engine: sa.Engine,
                                                                cfg) -> None:
    for i in (1, 2):
        apply_run(engine, cfg, M, outcome(i, "critical"), now=at(i))
    until = at(2, minutes=125)
    doc = set_override(engine, cfg, M, active=False, by="alice", reason="false alarm",
                       until=until, now=at(2, minutes=5))
    assert (doc["active"], doc["source"], doc["expires_at"]) == (False, "manual",
                                                                 "2026-10-03T02:05:00Z")
    assert doc["reason"] == "forced off by alice: false alarm"
    assert doc["since"] == "2026-10-03T00:05:00Z"
    [manual, _] = list_events(engine, M)
    assert (manual.kind, manual.actor, manual.old_active, manual.new_active) == (
        "manual", "alice", True, False)
    assert manual.details == {"action": "set", "forced": False, "until": "2026-10-03T02:05:00Z"}

    # The automatic state goes on under the override, hidden from serving.
    apply_run(engine, cfg, M, outcome(3, "ok"), now=at(2, minutes=60))
    assert flag_document(engine, cfg, M, until - timedelta(seconds=1))["active"] is False

    doc = flag_document(engine, cfg, M, until + timedelta(hours=1))  # observed late
    assert (doc["active"], doc["source"], doc["expires_at"]) == (True, "auto", None)
    assert doc["since"] == "2026-10-03T02:05:00Z"  # back on when it expired
    expiry = list_events(engine, M)[0]
    assert (expiry.kind, expiry.at, expiry.old_active, expiry.new_active) == (
        "expiry", until, False, True)
    assert expiry.details["observed_at"] == "2026-10-03T03:05:00Z"
    flag_document(engine, cfg, M, until + timedelta(hours=2))
    assert len(list_events(engine, M)) == 3  # observed once


def test_expiry_is_observed_by_the_next_run_too(engine: sa.Engine, cfg) -> None:
    set_override(engine, cfg, M, active=True, by="bob", until=at(1, minutes=30), now=at(1))
    [expiry] = apply_run(engine, cfg, M, outcome(2, "critical"), now=at(2))
    assert (expiry.kind, expiry.old_active, expiry.new_active) == ("expiry", True, False)
    doc = flag_document(engine, cfg, M, at(2))
    assert (doc["active"], doc["source"], doc["since"]) == (False, "auto",
                                                            "2026-10-02T00:30:00Z")


def test_clear_and_force_on(engine: sa.Engine, cfg) -> None:
    doc = set_override(engine, cfg, M, active=True, by="bob", reason="incident 42", now=at(1))
    assert (doc["active"], doc["source"], doc["expires_at"]) == (True, "manual", None)
    assert doc["reason"] == "forced on by bob: incident 42"
    assert flag_document(engine, cfg, M, at(400))["active"] is True  # no expiry
    doc = clear_override(engine, cfg, M, by="carol", reason="fixed", now=at(401))
    assert (doc["active"], doc["source"], doc["since"]) == (False, "auto",
                                                            "2027-11-06T00:05:00Z")
    [clear, _] = list_events(engine, M)
    assert (clear.kind, clear.actor, clear.reason, clear.old_active, clear.new_active) == (
        "manual", "carol", "fixed", True, False)
    assert clear.details["set_by"] == "bob" and clear.details["action"] == "clear"
    assert clear_override(engine, cfg, M, by="carol", now=at(402)) == doc  # nothing to clear
    assert len(list_events(engine, M)) == 2


def test_bad_input_is_refused(engine: sa.Engine, cfg) -> None:
    with pytest.raises(MonitorError, match=r"expire at 2026-10-01T00:00:00Z, which is not "
                                           r"after now \(2026-10-02T00:05:00Z\)"):
        set_override(engine, cfg, M, active=True, by="bob", until=T0, now=at(1))
    with pytest.raises(MonitorError, match="must be named"):
        set_override(engine, cfg, M, active=True, by="  ", now=at(1))
    with pytest.raises(UnknownModelError, match="unknown model 'nope'"):
        flag_document(engine, cfg, "nope", at(1))
    with pytest.raises(UnknownModelError):
        set_override(engine, cfg, "nope", active=True, by="bob", now=at(1))
    assert list_events(engine, M) == []


def test_flag_file_is_replaced_atomically_and_matches_the_document(engine: sa.Engine,
                                                                   cfg) -> None:
    path = cfg.fallback_dir / f"{M}.json"
    doc = flag_document(engine, cfg, M, at(1))  # the first read creates it
    assert json.loads(path.read_text(encoding="utf-8")) == doc
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # readable by a sidecar's user
    first = path.stat()
    flag_document(engine, cfg, M, at(1))
    again = path.stat()
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)  # unchanged

    with path.open(encoding="utf-8") as old:
        apply_run(engine, cfg, M, outcome(1, "critical"), now=at(1))
        [trip] = apply_run(engine, cfg, M, outcome(2, "critical"), now=at(2))
        # Replaced, not rewritten in place: a reader holding the old file reads it whole.
        assert json.loads(old.read()) == doc
    on_disk = json.loads(path.read_text(encoding="utf-8"))
    assert on_disk["active"] is True and on_disk["reason"] == trip.reason
    assert on_disk == flag_document(engine, cfg, M, at(2))
    set_override(engine, cfg, M, active=False, by="alice", now=at(3))
    assert json.loads(path.read_text(encoding="utf-8"))["source"] == "manual"
    assert sorted(os.listdir(cfg.fallback_dir)) == [f"{M}.json"]  # no temporary files


def test_a_reader_never_sees_a_partial_flag_file(tmp_path: Path) -> None:
    doc = {"model": "m", "active": False, "reason": "", "default_prediction": None}
    write_flag_file(tmp_path, doc)
    stop, seen, bad = threading.Event(), [], []

    def read() -> None:
        while not stop.is_set():
            try:
                seen.append(json.loads((tmp_path / "m.json").read_text(encoding="utf-8")))
            except ValueError as exc:
                bad.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(1, 120):  # sizes differ, so an in-place write would show torn reads
            assert write_flag_file(tmp_path, {**doc, "active": i % 2 == 1,
                                              "reason": "x" * (i * 37 % 5000)})
    finally:
        stop.set()
        reader.join()
    assert bad == [] and len(seen) > 0
    assert not write_flag_file(tmp_path, {**doc, "active": True, "reason": "x" * (119 * 37 % 5000)})


@pytest.fixture
def sample(sample_store: Path, tmp_path: Path, make_config):  # type: ignore[no-untyped-def]
    """A private copy of the sample store (SQLite), and a config writing flag files."""
    from monitor.store.db import create_engine

    path = tmp_path / "store.db"
    shutil.copyfile(sample_store, path)
    eng = create_engine(f"sqlite:///{path}")
    _, config = make_config(f"sqlite:///{path}", min_rows=500)
    yield eng, config.model_copy(update={"fallback_dir": tmp_path / "flags"})
    eng.dispose()


def test_check_runs_on_the_sample_trip_the_flag_and_rechecks_count_once(sample) -> None:
    engine, cfg = sample
    later = datetime(2026, 11, 27, tzinfo=UTC)
    ok = run_check(engine, cfg, M, at=datetime(2026, 10, 5, tzinfo=UTC), now=later)
    first = run_check(engine, cfg, M, at=datetime(2026, 10, 12, tzinfo=UTC), now=later)
    assert ok is not None and first is not None
    assert (ok.status, first.status) == ("ok", "critical")
    assert flag_document(engine, cfg, M, later)["active"] is False
    # The same window again (a recheck): not a second bad run.
    again = run_check(engine, cfg, M, at=datetime(2026, 10, 12, tzinfo=UTC), now=later,
                      recomputes=first.run_id)
    assert again is not None and again.status == "critical"
    assert flag_document(engine, cfg, M, later)["active"] is False
    assert list_events(engine, M) == []

    second = run_check(engine, cfg, M, at=datetime(2026, 10, 13, tzinfo=UTC), now=later)
    assert second is not None and second.status == "critical"
    [trip] = list_events(engine, M)
    # The streak cites each window's latest verdict: the recheck's run for 10-12.
    assert [r["run_id"] for r in trip.details["runs"]] == [again.run_id, second.run_id]
    reasons = trip.details["runs"][1]["reasons"]
    assert reasons == list(second.reasons)
    assert any("wasserstein" in r and "vs threshold" in r for r in reasons)
    on_disk = json.loads((cfg.fallback_dir / f"{M}.json").read_text(encoding="utf-8"))
    assert on_disk["active"] is True and on_disk["since"] == "2026-11-27T00:00:00Z"
    assert second.service.fallback_rate == 0.0  # the sample has no fallbacks


def test_the_service_check_counts_fallback_answers(engine: sa.Engine, make_config) -> None:
    reasons = [None] * 14 + ["flag"] * 4 + ["timeout"] * 2
    records = []
    for i, reason in enumerate(reasons):
        row = good_row(i)
        records.append(make_record({
            "request_id": row["request_id"], "timestamp": row["timestamp"],
            "features": {k: v for k, v in row.items() if k not in (
                "request_id", "timestamp", "prediction", "proba_0", "proba_1", "latency_ms")},
            "prediction": None if reason == "flag" else row["prediction"],
            "fallback_reason": reason,
        }))
    with engine.begin() as conn:
        insert_logs(conn, M, records)
        insert_logs(conn, "other", records)  # another model's rows are not counted
    _, cfg = make_config(engine.url.render_as_string(hide_password=False))
    run = run_check(engine, cfg, M, at=T0 + DAY, now=T0 + 2 * DAY, persist=False)
    assert run is not None
    service = run.service
    assert isinstance(service, ServiceResult)
    assert service.fallback_rate == pytest.approx(6 / 20)
    assert service.fallbacks == {"flag": 4, "timeout": 2}
    metrics = {(m.metric, m.feature): m.value for m in run.metrics() if m.check == "service"}
    assert metrics[("fallback_rate", "")] == pytest.approx(0.3)
    assert metrics[("fallback_rows", "flag")] == 4.0


def _stored(engine: sa.Engine, i: int, status: str, *reasons: str) -> RunOutcome:
    """A check run of window ``i`` stored as the pipeline stores it, then taken in."""
    from monitor.store.runs import insert_run

    with engine.begin() as conn:
        run_id = insert_run(
            conn, model=M, kind="check", window_start=T0 + (i - 1) * DAY,
            window_end=T0 + i * DAY, rows=100, status=status,
            summary={"reasons": list(reasons)}, metrics=[], config_hash="x" * 64,
            reference_version=None, started_at=at(i), finished_at=at(i))
    return RunOutcome(run_id=run_id, window_end=T0 + i * DAY, status=status, reasons=reasons)


def test_rechecks_of_older_windows_replay_the_latest_verdicts(engine: sa.Engine, cfg) -> None:
    """Accuracy is judged once labels mature, days later: rechecks that turn past
    windows critical must trip the flag as those verdicts would have in order."""
    for i in range(1, 6):
        assert apply_run(engine, cfg, M, _stored(engine, i, "ok"), now=at(i)) == []
    late = at(8)
    # Window 3's labels matured: critical. One bad window: nothing yet.
    assert apply_run(engine, cfg, M, _stored(engine, 3, "critical", "performance: "
                                             "accuracy 0.70 vs reference 0.84"), now=late) == []
    assert flag_document(engine, cfg, M, late)["active"] is False
    # Window 5 (not adjacent) too: windows 3 and 5 are not consecutive.
    assert apply_run(engine, cfg, M, _stored(engine, 5, "critical"), now=late) == []
    # Window 4 completes the streak 3-4-5.
    [trip] = apply_run(engine, cfg, M, _stored(engine, 4, "critical", "performance: "
                                               "accuracy 0.69 vs reference 0.84"), now=late)
    assert (trip.old_active, trip.new_active) == (False, True)
    assert (trip.reason or "").startswith(
        "run 8 checked the window ending 2026-10-05T00:00:00Z again (critical; run 4 had "
        "found it ok); taking every window's latest verdict in window order: 2 consecutive "
        "bad runs (critical; trip_after 2): run 6 (window ending 2026-10-04T00:00:00Z), "
        "run 8 (window ending 2026-10-05T00:00:00Z); latest: performance: accuracy 0.69 vs "
        "reference 0.84")
    assert [r["window_end"][:10] for r in trip.details["runs"]] == ["2026-10-04", "2026-10-05"]
    assert trip.details["runs"][0]["reasons"] == ["performance: accuracy 0.70 vs reference 0.84"]
    assert flag_document(engine, cfg, M, late)["active"] is True
    # A new window goes on from the replayed state: ok, ok, ok recovers (recover_after 3).
    for i in (6, 7):
        assert apply_run(engine, cfg, M, _stored(engine, i, "ok"), now=at(i + 3)) == []
    [back] = apply_run(engine, cfg, M, _stored(engine, 8, "ok"), now=at(11))
    assert (back.old_active, back.new_active) == (True, False)
    # A recheck that only repeats a verdict changes nothing.
    assert apply_run(engine, cfg, M, _stored(engine, 7, "ok"), now=at(12)) == []
    assert flag_document(engine, cfg, M, at(12))["active"] is False


# --- reasons a user recognises (issue 13, item 17) ---------------------------------------


def test_check_then_backfill_says_what_happened(engine: sa.Engine, cfg) -> None:
    """The README's order: `mqm check` (the newest window), then `mqm backfill` of the
    ones before it. The trip is no "recheck", and its runs are five windows apart."""
    newest = _stored(engine, 15, "critical", "schema: violation rate 8.06% >= critical 5.00%")
    assert apply_run(engine, cfg, M, newest, now=at(15)) == []
    for i in range(1, 10):
        assert apply_run(engine, cfg, M, _stored(engine, i, "ok"), now=at(15, 1 + i)) == []
    [trip] = apply_run(engine, cfg, M, _stored(engine, 10, "critical", "schema: violation rate "
                                               "6.91% >= critical 5.00%"), now=at(15, 20))
    assert trip.reason == (
        "run 11 is the first check of the window ending 2026-10-11T00:00:00Z (critical), "
        "earlier than the newest window taken in (ending 2026-10-16T00:00:00Z), as `mqm "
        "backfill` and `mqm check --at` do; taking every window's latest verdict in window "
        "order: 2 consecutive bad runs (critical; trip_after 2): run 11 (window ending "
        "2026-10-11T00:00:00Z), run 1 (window ending 2026-10-16T00:00:00Z; the 4 windows "
        "between have no verdict: not checked, too few rows or an error); latest: schema: "
        "violation rate 8.06% >= critical 5.00%")
    assert "recheck" not in trip.reason
    assert flag_document(engine, cfg, M, at(15, 20))["reason"] == trip.reason


def test_forward_runs_name_their_windows_and_the_gaps(engine: sa.Engine, cfg) -> None:
    assert apply_run(engine, cfg, M, outcome(1, "critical", "drift: age"), now=at(1)) == []
    [trip] = apply_run(engine, cfg, M, outcome(5, "critical", "drift: income"), now=at(5))
    assert trip.reason == (
        "2 consecutive bad runs (critical; trip_after 2): run 1 (window ending "
        "2026-10-02T00:00:00Z), run 5 (window ending 2026-10-06T00:00:00Z; the 3 windows "
        "between have no verdict: not checked, too few rows or an error); latest: drift: "
        "income")
    for i in (6, 7):
        assert apply_run(engine, cfg, M, outcome(i, "ok"), now=at(i)) == []
    [back] = apply_run(engine, cfg, M, outcome(8, "ok"), now=at(8))
    assert back.reason == (
        "3 consecutive ok runs (ok; recover_after 3): run 6 (window ending "
        "2026-10-07T00:00:00Z), run 7 (window ending 2026-10-08T00:00:00Z), run 8 (window "
        "ending 2026-10-09T00:00:00Z)")


def test_a_window_judged_again_that_ends_the_streak_says_so(engine: sa.Engine, cfg) -> None:
    for i in (1, 2):
        apply_run(engine, cfg, M, _stored(engine, i, "critical"), now=at(i))
    assert flag_document(engine, cfg, M, at(2))["active"] is True
    [back] = apply_run(engine, cfg, M, _stored(engine, 2, "ok"), now=at(3))
    assert (back.old_active, back.new_active) == (True, False)
    assert back.reason == (
        "run 3 checked the window ending 2026-10-03T00:00:00Z again (ok; run 2 had found it "
        "critical); taking every window's latest verdict in window order: no 2 consecutive "
        "bad runs (trip_after 2) are left")

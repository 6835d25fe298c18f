"""Per-model leases: replicas share the models, a dead replica's models are handed over at
the next round, a lapsed lease is taken over, and /readyz counts only the models this
replica answers for."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
import yaml

from monitor.config import Config, load_config
from monitor.serve.health import readiness
from monitor.serve.leader import ModelLeases
from monitor.serve.scheduler import MonitorScheduler
from monitor.store.db import create_engine, ensure_schema
from monitor.store.locks import lease_rows
from monitor.store.logs import insert_logs
from monitor.store.tables import check_runs, model_leases
from tests.conftest import ROOT, log
from tests.serve.conftest import (
    DAY,
    DELAY,
    T0,
    StoredLease,
    check_run,
    save_check_run,
    stored_lease,
    wait_for,
)

MODELS = [f"m{i}" for i in range(4)]


def write_config(tmp_path: Path, url: str, models: list[str], **serve: Any) -> Config:
    path = tmp_path / "monitor.yaml"
    model = {"schema": str(ROOT / "schemas" / "loan_default.yaml"),
             "reference": str(ROOT / "sample_data" / "reference.parquet"),
             "window": "1d", "min_rows": 10}
    path.write_text(yaml.safe_dump({"database_url": url, "models": dict.fromkeys(models, model),
                                    "serve": serve}), encoding="utf-8")
    return load_config(path)


@pytest.fixture
def schedulers() -> Iterator[Callable[..., MonitorScheduler]]:
    """Factory of schedulers, each on an engine of its own; shut down after the test."""
    made: list[MonitorScheduler] = []
    engines: list[sa.Engine] = []

    def make(url: str, config: Config, **kwargs: Any) -> MonitorScheduler:
        engines.append(create_engine(url))
        made.append(MonitorScheduler(engines[-1], config, **kwargs))
        return made[-1]

    yield make
    for sched in made:
        sched.shutdown(wait=True)
    for engine in engines:
        engine.dispose()


def led(*scheds: MonitorScheduler) -> list[int]:
    return [sum(s.leads(m) for m in MODELS) for s in scheds]


def holders(url: str) -> Counter[str | None]:
    """How many models each holder has a live lease of, as stored."""
    engine = create_engine(url)
    try:
        return Counter(None if r.lapsed else r.holder for r in lease_rows(engine).values())
    finally:
        engine.dispose()


def stored_leases(engine: sa.Engine) -> dict[str, StoredLease]:
    return {m: stored_lease(engine, m) for m in MODELS}


def terminate(url: str, pid: int) -> None:
    eng = sa.create_engine(url)
    try:
        with eng.connect() as conn:
            assert conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
    finally:
        eng.dispose()


@pytest.mark.postgres
def test_replicas_share_the_models_and_a_dead_ones_are_handed_over_at_once(
    pg_url: str, tmp_path: Path, schedulers
) -> None:
    config = write_config(tmp_path, pg_url, MODELS)
    setup = create_engine(pg_url)
    ensure_schema(setup)
    with setup.begin() as conn:  # a day of logs per model: each catches up one window
        for m in MODELS:
            insert_logs(conn, m, [log(i, T0 + timedelta(hours=i)) for i in range(12)])
    clock = lambda: T0 + DAY + DELAY  # noqa: E731
    try:
        # A long lease: a takeover by expiry and one at the next round are far apart.
        a = schedulers(pg_url, config, retry_interval=0.2, lease=30.0, clock=clock)
        b = schedulers(pg_url, config, retry_interval=0.2, lease=30.0, clock=clock)
        a.start()
        assert led(a) == [4]  # alone: every model
        b.start()
        # b counts two replicas: a gives up two models (after any run in flight), b
        # takes them; every model has exactly one holder throughout.
        wait_for(lambda: led(a, b) == [2, 2], 20, "the models shared 2/2")
        assert sorted(holders(pg_url).values()) == [2, 2]
        assert a.status()["share"] == b.status()["share"] == 2

        # b's session dies (process killed, host gone): a frees b's leases at its next
        # round and takes the models over, without waiting for the leases to expire.
        b_pid = b._leadership.backend_pid()  # type: ignore[attr-defined]
        assert b_pid is not None
        # b's leases as stored before its session dies: they expire this late or later.
        of_b = {m: row for m, row in stored_leases(setup).items() if row.holder == b.replica}
        assert len(of_b) == 2
        terminate(pg_url, b_pid)
        # a holds every model (in the store: b rejoins and takes two back a round later).
        now: dict[str, StoredLease] = {}

        def a_holds_all() -> bool:
            now.update(stored_leases(setup))
            return all(row.holder == a.replica for row in now.values())

        wait_for(a_holds_all, 60, "a holds every model")
        for m, old in of_b.items():  # b's, freed and taken by a under the next token
            assert now[m].token == old.token + 1, (m, now[m], old)
            # Freed at a's next round, not by expiry: acquired while b's lease still ran,
            # by the database's clock.
            assert now[m].acquired_at is not None and now[m].acquired_at < old.expires_at, \
                (m, now[m], old)
        # b notices at its next round, waits two rounds, then the models are shared again.
        wait_for(lambda: led(a, b) == [2, 2], 20, "shared again")
        b.shutdown()  # a clean stop releases at once
        wait_for(lambda: led(a) == [4], 30, "a runs every model again")

        # Each model's window was checked once, whoever ran it.
        wait_for(lambda: all(a.status()["models"][m]["watermark"] == "2026-10-02T00:00:00Z"
                             for m in MODELS), 60, "every model caught up")
        with setup.connect() as conn:
            ends = Counter((m, e) for m, e in conn.execute(
                sa.select(check_runs.c.model, check_runs.c.window_end)))
        assert ends == Counter({(m, T0 + DAY): 1 for m in MODELS})
    finally:
        setup.dispose()


@pytest.mark.postgres
def test_a_lease_not_renewed_lapses_and_is_taken_over(pg_url: str) -> None:
    """A holder that stops renewing (stalled) keeps its session, its advisory lock and its
    replica row; its lease lapses after its lifetime and another replica takes it, with a
    new token. The old holder finds it lost at its next round."""
    engine = create_engine(pg_url)
    ensure_schema(engine)
    a, b = ModelLeases(pg_url, ttl=2.0), ModelLeases(pg_url, ttl=2.0)
    try:
        first = a.elect(["m0"])
        assert list(first.leases) == ["m0"] and first.leases["m0"].valid()
        assert b.elect(["m0"]).leases == {}  # held, and b is at its share
        stalled = stored_lease(engine, "m0")  # a renews it no more: it expires then
        assert stalled.holder == a.replica
        # a stops renewing; b keeps asking.
        wait_for(lambda: "m0" in b.elect(["m0"]).leases, 60, "b takes m0")
        taken = stored_lease(engine, "m0")
        assert taken.holder == b.replica and taken.token == first.leases["m0"].token + 1  # type: ignore[operator]
        # Taken once the lease had lapsed, never before, by the database's clock.
        assert taken.acquired_at is not None and taken.acquired_at >= stalled.expires_at, \
            (taken, stalled)
        assert not first.leases["m0"].valid()  # a's own view expired with it
        resumed = a.elect(["m0"])  # a resumes: its renewal finds nothing
        assert resumed.leases == {} and resumed.replicas == 2
        a.release_all()
        b.release_all()
        with engine.connect() as conn:  # a clean stop leaves the lease free
            assert conn.execute(sa.select(model_leases.c.holder)).scalar() is None
    finally:
        a.release_all()
        b.release_all()
        engine.dispose()


class FakeScheduler:
    def __init__(self, replica: str) -> None:
        self.replica = replica

    def status(self) -> dict[str, Any]:
        return {"running": True, "leader": True, "replica": self.replica,
                "models": {"m0": {"leads": True}, "m1": {"leads": False}}}


def test_readiness_counts_only_the_models_this_replica_answers_for(
    tmp_path: Path
) -> None:
    """m0 is run here, m1 by another replica whose lease is live: m1 being stale is that
    replica's problem, reported but not counted. Once m1's lease lapses (no replica runs
    it) it counts again."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    config = write_config(tmp_path, url, ["m0", "m1"], ready_max_age="1h")
    engine = create_engine(url)
    ensure_schema(engine)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(sa.insert(model_leases), [
            {"model": "m0", "holder": "here", "token": 1, "expires_at": now + DAY},
            {"model": "m1", "holder": "there", "token": 4, "expires_at": now + DAY}])

    def ready() -> Any:
        return anyio.run(lambda: readiness(engine, config, FakeScheduler("here"),
                                           started_at=now - DAY, timeout=10))

    save_check_run(engine, check_run("m0", end=T0 + DAY), finished=now)
    body = ready()
    fresh = body.checks.freshness
    assert body.status == "ready", fresh
    assert fresh.models["m0"].ok is True and fresh.models["m0"].counted is True
    assert fresh.models["m0"].lease is not None and fresh.models["m0"].lease.here is True
    assert fresh.models["m1"].ok is False and fresh.models["m1"].counted is False
    assert fresh.models["m1"].lease is not None and fresh.models["m1"].lease.here is False
    assert "run by replica there" in fresh.models["m1"].detail
    assert "stale on another replica: m1" in fresh.detail
    assert body.checks.scheduler.detail == \
        "running, leader: checks run in this process for m0 (1 of 2 models)"
    with engine.begin() as conn:  # m1's lease lapses: nobody runs it now
        conn.execute(sa.update(model_leases).where(model_leases.c.model == "m1")
                     .values(expires_at=now - timedelta(seconds=1)))
    lapsed = ready()
    assert lapsed.status == "not_ready"
    assert lapsed.checks.freshness.models["m1"].counted is True
    assert "lease lapsed" in lapsed.checks.freshness.models["m1"].detail
    engine.dispose()


def test_a_lease_renewed_less_than_three_times_per_lifetime_is_refused(tmp_path: Path) -> None:
    from monitor.errors import ConfigError

    url = f"sqlite:///{tmp_path / 'store.db'}"
    config = write_config(tmp_path, url, ["m0"], lease="6s", lease_renew="2s")
    assert (config.serve.lease, config.serve.lease_renew) == (timedelta(seconds=6),
                                                              timedelta(seconds=2))
    with pytest.raises(ConfigError, match=r"lease_renew \(3 s\) must be at most a third of "
                                          r"lease \(6 s\)"):
        write_config(tmp_path, url, ["m0"], lease="6s", lease_renew="3s")
    # The scheduler takes both from the config unless told otherwise.
    sched = MonitorScheduler(create_engine(url), config)
    assert (sched._lease_seconds, sched._retry_interval) == (6.0, 2.0)

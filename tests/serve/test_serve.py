"""``mqm serve`` as a real process: SIGTERM drains, a second one abandons without a partial
write, API-only replicas, a SIGKILLed leader replaced by a follower, and a SIGSTOPped one
replaced once its lease lapses, whose checks and rechecks are refused when it resumes
(PostgreSQL). Each fault test ends with an audit of the stored history."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from monitor.serve.scheduler import MonitorScheduler, next_window_end, read_watermark
from monitor.store.db import create_engine, ensure_schema
from monitor.store.locks import LeaseRow, lease_rows
from monitor.store.logs import insert_labels
from monitor.store.tables import check_runs, fallback_state, run_metrics, scheduler_state
from tests.conftest import ROOT
from tests.serve.conftest import (
    DAY,
    DELAY,
    MODEL,
    load_days,
    lock_holders,
    stored_lease,
    wait_for,
)

# Runs `mqm` with checks slowed down from outside the product: it wraps the functions
# run_check calls, and notes in a file when each starts, so that a test can signal the
# process while a check (or its transaction) is in flight.
WRAPPER = '''
import os, sys, time
from pathlib import Path

import threading

import monitor.run.check, monitor.run.evaluate, monitor.fallback.flag

marker = Path(os.environ["MQM_TEST_MARKER"])
slow_evaluate = float(os.environ.get("MQM_TEST_SLOW_EVALUATE", "0"))
slow_observe = float(os.environ.get("MQM_TEST_SLOW_OBSERVE", "0"))
slow_recheck = float(os.environ.get("MQM_TEST_SLOW_RECHECK", "0"))
real_evaluate = monitor.run.evaluate.evaluate_window
real_observe = monitor.fallback.flag.observe_run
real_recompute = monitor.run.check.recompute_immature
rechecking = threading.local()

def note(line):
    with marker.open("a") as f:
        f.write(line + "\\n")

def evaluate_window(*args, **kwargs):
    if getattr(rechecking, "on", False):
        note("recheck-evaluate " + kwargs["end"].isoformat())
        time.sleep(slow_recheck)
        return real_evaluate(*args, **kwargs)
    note("evaluate " + kwargs["end"].isoformat())
    time.sleep(slow_evaluate)
    return real_evaluate(*args, **kwargs)

def recompute_immature(*args, **kwargs):  # the scheduler imports it once serve starts
    rechecking.on = True
    try:
        return real_recompute(*args, **kwargs)
    finally:
        rechecking.on = False
        note("recheck-done")

def observe_run(*args, **kwargs):  # inside the run's transaction, after the watermark moved
    note("observe")
    time.sleep(slow_observe)
    return real_observe(*args, **kwargs)

monitor.run.evaluate.evaluate_window = evaluate_window
monitor.fallback.flag.observe_run = observe_run
monitor.run.check.recompute_immature = recompute_immature
from monitor.cli.main import main
main()
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Service:
    """One `mqm serve` process on a free loopback port."""

    def __init__(self, tmp_path: Path, config: Path, *args: str, **env: str) -> None:
        self.port = free_port()
        self.marker = tmp_path / f"marker-{self.port}.txt"
        self.log_path = tmp_path / f"serve-{self.port}.log"
        wrapper = tmp_path / "mqm_wrapper.py"
        wrapper.write_text(WRAPPER, encoding="utf-8")
        environ = {k: v for k, v in os.environ.items() if k != "MQM_DATABASE_URL"}
        environ.update(MQM_TEST_MARKER=str(self.marker), **env)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(wrapper), "--config", str(config), "serve",
                 "--port", str(self.port), *args],
                stdout=log, stderr=subprocess.STDOUT, env=environ, cwd=tmp_path,
            )

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def wait_healthy(self, timeout: float = 30) -> None:
        def up() -> bool:
            assert self.proc.poll() is None, f"mqm serve exited:\n{self.log()}"
            try:
                return self.get("/healthz")[0] == 200
            except OSError:
                return False

        wait_for(up, timeout, "/healthz answers")

    def started(self, what: str) -> int:
        """How many times the wrapped function ``what`` has started."""
        if not self.marker.exists():
            return 0
        return sum(line.startswith(what) for line in self.marker.read_text().splitlines())

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"mqm serve did not exit within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def services() -> Iterator[list[Service]]:
    """Processes started by a test; any still running at the end is killed."""
    started: list[Service] = []
    yield started
    for service in started:
        if service.proc.poll() is None:
            service.proc.kill()
            service.proc.wait(10)


@pytest.fixture(scope="session")
def small_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,000 rows of the sample reference: the first check of a process is 1 s faster."""
    import pandas as pd

    path = tmp_path_factory.mktemp("reference") / "reference.parquet"
    reference = pd.read_parquet(ROOT / "sample_data" / "reference.parquet")
    reference.sample(1000, random_state=0).to_parquet(path)
    return path


@pytest.fixture
def write_config(small_reference: Path):  # type: ignore[no-untyped-def]
    def write(tmp_path: Path, url: str, *, serve: dict[str, Any] | None = None,
              **model: Any) -> Path:
        path = tmp_path / "monitor.yaml"
        path.write_text(yaml.safe_dump({
            "database_url": url,
            "models": {MODEL: {"schema": str(ROOT / "schemas" / "loan_default.yaml"),
                               "reference": str(small_reference),
                               "window": "1d", "min_rows": 10, **model}},
            "serve": serve or {},
        }), encoding="utf-8")
        return path

    return write


@pytest.fixture
def prepared_store() -> Iterator[Any]:
    """Factory: a store with a backlog of ``days`` windows of logs, the last one due now;
    and the start of the first (recent days: no catch-up from long ago)."""
    engines: list[sa.Engine] = []

    def prepare(url: str, days: int) -> tuple[sa.Engine, datetime]:
        last_due = next_window_end(datetime.now(UTC) - DELAY - DAY, DAY)
        start = last_due - days * DAY
        engines.append(create_engine(url))
        ensure_schema(engines[-1])
        load_days(engines[-1], days, start=start)
        return engines[-1], start

    yield prepare
    for engine in engines:
        engine.dispose()


@pytest.fixture
def schedulers() -> Iterator[Any]:
    """Factory of in-process schedulers, each on an engine of its own; shut down after."""
    made: list[MonitorScheduler] = []
    engines: list[sa.Engine] = []

    def make(url: str, *args: Any, **kwargs: Any) -> MonitorScheduler:
        engines.append(create_engine(url))
        made.append(MonitorScheduler(engines[-1], *args, **kwargs))
        return made[-1]

    yield make
    for sched in made:
        sched.shutdown(wait=True)
    for engine in engines:
        engine.dispose()


def stored_runs(engine: sa.Engine) -> dict[datetime, int]:
    """Window end -> number of figures, for each stored check run (asserting one per window)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(check_runs.c.window_end, sa.func.count(run_metrics.c.id))
            .outerjoin(run_metrics, run_metrics.c.run_id == check_runs.c.id)
            .where(check_runs.c.model == MODEL).group_by(check_runs.c.id)).all()
    ends = Counter(end for end, _ in rows)
    assert all(n == 1 for n in ends.values()), f"a window was checked twice: {ends}"
    return {end: figures for end, figures in rows}


def caught_up(engine: sa.Engine, start: datetime, days: int) -> bool:
    watermark = read_watermark(engine, MODEL)
    return watermark is not None and watermark >= start + days * DAY


def assert_each_window_once(engine: sa.Engine, start: datetime, days: int) -> None:
    """Every window from ``start`` to the watermark has exactly one run, and no other."""
    watermark = read_watermark(engine, MODEL)
    assert watermark is not None and watermark >= start + days * DAY
    expected = [start + (d + 1) * DAY for d in range((watermark - start) // DAY)]
    assert sorted(stored_runs(engine)) == expected


def audit(engine: sa.Engine) -> None:
    """The history a fault must not damage: every window has exactly one check run that
    recomputes nothing (its scheduled run), and no run is recomputed more than once (the
    recheck chain never forks)."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(check_runs.c.id, check_runs.c.window_end,
                                      check_runs.c.summary)
                            .where(check_runs.c.model == MODEL, check_runs.c.kind == "check")
                            ).all()
    scheduled = Counter(end for _, end, doc in rows if doc.get("recomputes") is None)
    assert all(n == 1 for n in scheduled.values()), f"a window checked twice: {scheduled}"
    recomputes = Counter(doc["recomputes"] for _, _, doc in rows
                         if doc.get("recomputes") is not None)
    assert all(n == 1 for n in recomputes.values()), f"a run recomputed twice: {recomputes}"
    ids = {run_id for run_id, _, _ in rows}
    assert set(recomputes) <= ids, "a recheck of a run that does not exist"


def lease_of(engine: sa.Engine) -> LeaseRow:
    return lease_rows(engine)[MODEL]


def history(engine: sa.Engine) -> tuple[Any, ...]:
    """Everything a replica writes for the model: runs, the watermark's row, the flag."""
    with engine.connect() as conn:
        runs = conn.execute(sa.select(sa.func.count(), sa.func.max(check_runs.c.id))).one()
        state = conn.execute(sa.select(scheduler_state)).all()
        flag = conn.execute(sa.select(fallback_state.c.updated_at)).all()
    return tuple(runs), state, flag


def test_sigterm_lets_the_running_check_finish_and_exits_0(
    tmp_path: Path, services: list[Service], write_config, prepared_store
) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    engine, start = prepared_store(url, 5)
    service = Service(tmp_path, write_config(tmp_path, url), MQM_TEST_SLOW_EVALUATE="1")
    services.append(service)
    service.wait_healthy()
    wait_for(lambda: service.started("evaluate") == 2, 30, "the second check starts")
    service.proc.send_signal(signal.SIGTERM)
    # While the check in flight finishes, the API still answers, and is not ready.
    time.sleep(0.2)
    code, ready = service.get("/readyz")
    assert code == 503 and ready["checks"]["scheduler"]["running"] is False
    assert service.proc.wait(30) == 0, service.log()
    # The run in flight was finished and stored whole; no new one was started.
    runs = stored_runs(engine)
    assert sorted(runs) == [start + DAY, start + 2 * DAY] and service.started("evaluate") == 2
    assert all(figures > 10 for figures in runs.values())
    assert read_watermark(engine, MODEL) == start + 2 * DAY
    audit(engine)


def test_a_second_sigterm_abandons_the_run_in_flight_without_a_partial_write(
    db_url: str, tmp_path: Path, services: list[Service], write_config, prepared_store
) -> None:
    engine, start = prepared_store(db_url, 3)
    config = write_config(tmp_path, db_url)
    service = Service(tmp_path, config, MQM_TEST_SLOW_OBSERVE="60")
    services.append(service)
    # The first run's row, its figures and the watermark move are written, not committed.
    wait_for(lambda: service.started("observe") == 1, 30, "a run's transaction is open")
    service.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert service.stop(signal.SIGTERM, timeout=10) == 128 + signal.SIGTERM
    assert stored_runs(engine) == {}
    assert read_watermark(engine, MODEL) == start  # where it started: nothing moved
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(run_metrics)).scalar() == 0

    # Restarted, the service checks every window exactly once, the abandoned one included.
    again = Service(tmp_path, config)
    services.append(again)
    wait_for(lambda: caught_up(engine, start, 3), 30, "catch-up")
    assert again.stop() == 0, again.log()
    assert_each_window_once(engine, start, 3)
    audit(engine)


def test_no_scheduler_serves_the_api_only(
    tmp_path: Path, services: list[Service], write_config, prepared_store
) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    engine, _ = prepared_store(url, 2)
    service = Service(tmp_path, write_config(tmp_path, url), "--no-scheduler")
    services.append(service)
    service.wait_healthy()
    code, ready = service.get("/readyz")
    assert ready["checks"]["scheduler"]["running"] is None  # no scheduler in this process
    code, flag = service.get(f"/v1/models/{MODEL}/fallback")
    assert code == 200 and flag["model"] == MODEL
    time.sleep(0.5)
    assert service.stop() == 0, service.log()
    assert stored_runs(engine) == {} and service.started("evaluate") == 0
    assert read_watermark(engine, MODEL) is None


def test_serve_errors_are_one_line(tmp_path: Path, write_config) -> None:
    from click.testing import CliRunner

    from monitor.cli.main import main

    url = f"sqlite:///{tmp_path / 'store.db'}"
    config = write_config(tmp_path, url)
    text = config.read_text()
    config.write_text(text.replace("window: 1d", "window: 1d\n    schedule: {cron: '0 25 * * *'}"))
    result = CliRunner().invoke(main, ["--config", str(config), "serve", "--port", "1"])
    assert result.exit_code == 1
    assert result.output.startswith("error: model 'loan_default': schedule.cron '0 25 * * *'")
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.postgres
def test_a_killed_leader_is_replaced_and_no_window_is_lost_or_doubled(
    pg_url: str, tmp_path: Path, services: list[Service], schedulers, write_config,
    prepared_store,
) -> None:
    engine, start = prepared_store(pg_url, 6)
    config_path = write_config(tmp_path, pg_url)
    leader = Service(tmp_path, config_path, MQM_TEST_SLOW_EVALUATE="0.5")
    services.append(leader)
    leader.wait_healthy()
    wait_for(lambda: leader.get("/readyz")[1]["checks"]["scheduler"]["leader"] is True, 10,
             "the service leads")
    assert len(lock_holders(pg_url)) == 1

    from monitor.config import load_config

    follower = schedulers(pg_url, load_config(config_path), retry_interval=0.2)
    follower.start()
    assert follower.leader is False
    # SIGKILL in the middle of the backlog, while a check is in flight.
    wait_for(lambda: leader.started("evaluate") == 3, 30, "the third check starts")
    held = stored_lease(engine)  # renewed until the kill: it expires this late or later
    assert held.holder not in (None, follower.replica)
    assert leader.stop(signal.SIGKILL) == -signal.SIGKILL
    wait_for(lambda: follower.leader, 60, "the follower takes over")
    taken = stored_lease(engine)
    assert taken.holder == follower.replica and taken.token > held.token
    # Freed as soon as the dead leader's session was gone, not by expiry: acquired while
    # its lease (15 s by default) still ran, by the database's clock.
    assert taken.acquired_at is not None and taken.acquired_at < held.expires_at, \
        (taken, held)
    wait_for(lambda: caught_up(engine, start, 6), 30, "catch-up")
    follower.shutdown()
    assert_each_window_once(engine, start, 6)
    audit(engine)


def test_compose_runs_the_service_against_its_postgres() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    services = compose["services"]
    serve = services["serve"]
    assert serve["command"][0] == "serve" and "--no-scheduler" not in serve["command"]
    url = serve["environment"]["MQM_DATABASE_URL"]
    assert url == services["monitor"]["environment"]["MQM_DATABASE_URL"]
    assert "@postgres:5432/" in url
    # After the migration, never beside it; and time to finish a check on SIGTERM.
    assert serve["depends_on"]["monitor"]["condition"] == "service_completed_successfully"
    assert services["monitor"]["command"] == ["db", "upgrade"]
    assert serve.get("stop_signal", "SIGTERM") == "SIGTERM"
    assert serve["stop_grace_period"] == "2m"
    assert any(str(p).startswith("127.0.0.1:") for p in serve["ports"])


LEASE, RENEW = 4.0, 1.0  # serve.lease and serve.lease_renew of the stall tests


@pytest.mark.postgres
@pytest.mark.parametrize("where", ["evaluate", "transaction"])
def test_a_stalled_leader_is_replaced_once_its_lease_lapses_and_writes_nothing_after(
    pg_url: str, tmp_path: Path, services: list[Service], write_config, prepared_store,
    where: str,
) -> None:
    """SIGSTOP the leader in the middle of a backlog, while it reads a window
    (``evaluate``) or inside a run's transaction, after the watermark moved, holding its
    row lock (``transaction``). Its session stays alive. The follower takes the model over
    once the lease lapses and catches up, ready all along; the resumed leader writes
    nothing more and steps down."""
    engine, start = prepared_store(pg_url, 8)
    config = write_config(tmp_path, pg_url, serve={"lease": f"{LEASE:g}s",
                                                   "lease_renew": f"{RENEW:g}s"})
    step, slow = (("evaluate", {"MQM_TEST_SLOW_EVALUATE": "0.5"}) if where == "evaluate"
                  else ("observe", {"MQM_TEST_SLOW_OBSERVE": "0.5"}))
    leader = Service(tmp_path, config, **slow)
    services.append(leader)
    leader.wait_healthy()
    wait_for(lambda: leader.get("/readyz")[1]["checks"]["scheduler"]["leader"] is True, 20,
             "the first service leads")
    follower = Service(tmp_path, config)
    services.append(follower)
    follower.wait_healthy()
    wait_for(lambda: follower.get("/readyz")[1]["checks"]["scheduler"]["running"] is True,
             20, "the follower's scheduler runs")
    held = lease_of(engine)
    assert not held.lapsed

    # Stop it right after the step began (the marker is written first, then it sleeps).
    wait_for(lambda: leader.started(step) >= 2, 60, f"the leader's second {step}")
    count = leader.started(step)
    wait_for(lambda: leader.started(step) > count, 30, f"another {step} starts")
    leader.proc.send_signal(signal.SIGSTOP)
    try:
        # The stalled leader's lease as last seen before the takeover: it cannot be
        # renewed any more, so that is the expiry the follower had to wait for.
        last = [stored_lease(engine)]

        def taken_over() -> bool:
            row = stored_lease(engine)
            if row.holder == held.holder:
                last[0] = row
            return row.holder not in (None, held.holder)

        wait_for(taken_over, LEASE + RENEW + 60, "the follower takes over")
        taken, stalled = stored_lease(engine), last[0]
        assert stalled.holder == held.holder and taken.token > stalled.token >= held.token
        # Its session lives on (SIGSTOP): taken over by expiry only, never before it, by
        # the database's clock. (How long that takes: bench/replicas.py, "handover".)
        assert taken.acquired_at is not None and taken.acquired_at >= stalled.expires_at, \
            (taken, stalled)
        wait_for(lambda: caught_up(engine, start, 8), 90, "the follower catches up")
        code, ready = follower.get("/readyz")  # the stalled leader is not its problem
        assert code == 200, ready
        assert ready["checks"]["freshness"]["models"][MODEL]["lease"]["here"] is True
        before = history(engine)
    finally:
        leader.proc.send_signal(signal.SIGCONT)
    # Resumed, the old leader finds its lease gone: its run in flight is refused (by the
    # token, the watermark's compare-and-set, or the server ending its idle transaction)
    # and it writes nothing at all, not even an error.
    wait_for(lambda: "lost its lease" in leader.log(), 30, "the old leader steps down")
    time.sleep(3 * RENEW)
    assert history(engine) == before
    code, ready = leader.get("/readyz")
    assert ready["checks"]["scheduler"]["leader"] is False, ready
    assert follower.stop() == 0, follower.log()
    assert leader.stop() == 0, leader.log()
    assert_each_window_once(engine, start, 8)
    audit(engine)


@pytest.mark.postgres
def test_a_stalled_leaders_recheck_is_refused_after_a_takeover(
    pg_url: str, tmp_path: Path, services: list[Service], write_config, prepared_store,
) -> None:
    """The race of issue 19: the leader stalls during a recheck, the follower takes over
    and rechecks the same window, the leader resumes. Its run recomputes a run that was
    recomputed already: refused, so no run is recomputed twice."""
    engine, start = prepared_store(pg_url, 3)
    config = write_config(tmp_path, pg_url, serve={"lease": f"{LEASE:g}s",
                                                   "lease_renew": f"{RENEW:g}s"},
                          schedule={"recheck_every": "1s"})
    leader = Service(tmp_path, config, MQM_TEST_SLOW_RECHECK="8")
    services.append(leader)
    leader.wait_healthy()
    wait_for(lambda: caught_up(engine, start, 3), 60, "the leader catches up")
    follower = Service(tmp_path, config)
    services.append(follower)
    follower.wait_healthy()
    time.sleep(3)  # rechecks come every second: none runs, no label arrived
    assert leader.started("recheck-evaluate") == 0
    with engine.connect() as conn:
        [first] = conn.execute(sa.select(check_runs.c.id)
                               .where(check_runs.c.window_end == start + DAY)).scalars()

    # A few labels of the first window: still immature, but worth a recheck.
    with engine.begin() as conn:
        insert_labels(conn, MODEL, [(f"r-{i}", 0, datetime.now(UTC)) for i in range(3)])
    wait_for(lambda: leader.started("recheck-evaluate") == 1, 30, "the leader rechecks")
    leader.proc.send_signal(signal.SIGSTOP)
    try:
        wait_for(lambda: first in recomputed(engine), LEASE + RENEW + 60,
                 "the follower rechecks the window")
        done = leader.started("recheck-done")
    finally:
        leader.proc.send_signal(signal.SIGCONT)
    wait_for(lambda: leader.started("recheck-done") > done, 30, "the leader's recheck ends")
    assert recomputed(engine)[first] == 1
    assert leader.started("recheck-evaluate") == 1  # it did not try again
    log = leader.log()
    assert "recomputed by another writer" in log or "lease" in log, log
    assert follower.stop() == 0, follower.log()
    assert leader.stop() == 0, leader.log()
    assert_each_window_once_or_rechecked(engine, start, 3)
    audit(engine)


def recomputed(engine: sa.Engine) -> Counter[int]:
    with engine.connect() as conn:
        docs = conn.execute(sa.select(check_runs.c.summary)).scalars()
        return Counter(d["recomputes"] for d in docs if d.get("recomputes") is not None)


def assert_each_window_once_or_rechecked(engine: sa.Engine, start: datetime, days: int) -> None:
    with engine.connect() as conn:
        ends = Counter(conn.execute(sa.select(check_runs.c.window_end)).scalars())
    assert sorted(ends) == [start + (d + 1) * DAY for d in range(days)]

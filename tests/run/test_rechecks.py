"""Rechecks: a window waiting for labels is run again only when labels of it arrived (or it
became mature by age), and a recheck is stored under the same guards as a check: the run
it recomputes must still be the latest of its window and recomputed by no one else, and
the lease it runs under must still be held."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from monitor.run.check import recompute_immature, run_check
from monitor.store.compaction import compact
from monitor.store.locks import Fence, LeaseLost
from monitor.store.logs import insert_labels
from monitor.store.tables import check_runs, model_leases, run_rechecks
from monitor.store.watermarks import RunSuperseded, read_watermark, start_watermark
from tests.serve.conftest import DAY, MODEL, T0, load_days

END1, END2 = T0 + DAY, T0 + 2 * DAY
NOW = T0 + 3 * DAY  # both windows young: their labels are still awaited
HOUR = timedelta(hours=1)


def url_of(engine: sa.Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def add_labels(engine: sa.Engine, request_ids: list[str], at: datetime) -> None:
    with engine.begin() as conn:
        insert_labels(conn, MODEL, [(rid, 0, at) for rid in request_ids])


def recomputed(engine: sa.Engine) -> Counter[int]:
    """How many stored runs recompute each run (from the runs' own documents)."""
    with engine.connect() as conn:
        summaries = conn.execute(sa.select(check_runs.c.summary)
                                 .where(check_runs.c.kind == "check")).scalars()
        return Counter(s["recomputes"] for s in summaries if s.get("recomputes") is not None)


def run_count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(check_runs)).scalar_one())


@pytest.mark.parametrize("blocks", [True, False], ids=["blocks", "rows"])
def test_a_window_is_rechecked_only_when_its_labels_changed_or_it_became_mature(
    engine: sa.Engine, make_config, blocks: bool
) -> None:
    """With log blocks a run records their label high-water (every label up to it was
    read); without, the count of its window's labels. Either way, a recheck reruns a
    window only for new labels of it, or once it is old enough to be mature."""
    _, cfg = make_config(url_of(engine), schedule={"compact_every": "1m" if blocks else None})
    load_days(engine, 2)  # 12 logs a day, request ids r-0.. and r-1000..
    if blocks:
        compact(engine, MODEL)
    first = run_check(engine, cfg, MODEL, at=END1, now=NOW)
    second = run_check(engine, cfg, MODEL, at=END2, now=NOW)
    assert first is not None and second is not None
    assert not first.performance.mature and not second.performance.mature  # type: ignore[union-attr]

    # No label arrived: nothing is run again, however often the recheck comes.
    assert recompute_immature(engine, cfg, MODEL, now=NOW + HOUR) == []
    assert recompute_immature(engine, cfg, MODEL, now=NOW + 2 * HOUR) == []
    # A label of another model's request, or of no logged request: still nothing.
    add_labels(engine, ["r-999999"], NOW)
    assert recompute_immature(engine, cfg, MODEL, now=NOW + 3 * HOUR) == []

    # A label of the second window: that window alone, once.
    add_labels(engine, ["r-1000"], NOW + 3 * HOUR)
    [redo] = recompute_immature(engine, cfg, MODEL, now=NOW + 4 * HOUR)
    assert (redo.end, redo.recomputes) == (END2, second.run_id)
    assert recompute_immature(engine, cfg, MODEL, now=NOW + 5 * HOUR) == []
    # More labels of it: again, recomputing the recheck's run (a chain, not a fork).
    add_labels(engine, ["r-1001", "r-1002"], NOW + 5 * HOUR)
    [again] = recompute_immature(engine, cfg, MODEL, now=NOW + 6 * HOUR)
    assert (again.end, again.recomputes) == (END2, redo.run_id)

    # The first window reaches the maximum label delay (7 days) without a label: run once
    # more, now mature by age, and never again.
    aged = END1 + timedelta(days=7)
    [matured] = recompute_immature(engine, cfg, MODEL, now=aged)
    assert (matured.end, matured.recomputes) == (END1, first.run_id)
    assert matured.performance.mature  # type: ignore[union-attr]
    assert recompute_immature(engine, cfg, MODEL, now=aged + HOUR) == []
    assert recomputed(engine) == Counter({first.run_id: 1, second.run_id: 1,
                                          redo.run_id: 1})
    with engine.connect() as conn:
        scopes = set(conn.execute(sa.select(run_rechecks.c.label_scope)).scalars())
    assert scopes == ({"blocks", None} if blocks else {"window", None})  # None: mature by age


def test_a_run_is_recomputed_at_most_once_and_only_while_it_is_the_latest(
    engine: sa.Engine, make_config
) -> None:
    _, cfg = make_config(url_of(engine))
    load_days(engine, 1)
    first = run_check(engine, cfg, MODEL, at=END1, now=NOW)
    assert first is not None and first.run_id is not None
    redo = run_check(engine, cfg, MODEL, at=END1, now=NOW, recomputes=first.run_id)
    assert redo is not None
    before = run_count(engine)
    with pytest.raises(RunSuperseded, match="recomputed by another writer"):
        run_check(engine, cfg, MODEL, at=END1, now=NOW, recomputes=first.run_id)
    # A manual check of the window makes it the latest: a recheck of the older run is
    # refused, and nothing of either refused run is stored.
    manual = run_check(engine, cfg, MODEL, at=END1, now=NOW)
    assert manual is not None
    with pytest.raises(RunSuperseded, match="no longer the latest"):
        run_check(engine, cfg, MODEL, at=END1, now=NOW, recomputes=redo.run_id)
    assert run_count(engine) == before + 1
    assert recomputed(engine) == Counter({first.run_id: 1})


def test_two_rechecks_racing_for_one_run_store_one(engine: sa.Engine, make_config) -> None:
    """Two writers recompute the same run at the same time (a replica that stalled during
    a recheck and one that took over): one run is stored, the other refused."""
    _, cfg = make_config(url_of(engine))
    load_days(engine, 1)
    first = run_check(engine, cfg, MODEL, at=END1, now=NOW)
    assert first is not None
    barrier = threading.Barrier(2)
    outcomes: list[Any] = []

    def recheck() -> None:
        barrier.wait()
        try:
            outcomes.append(run_check(engine, cfg, MODEL, at=END1, now=NOW,
                                      recomputes=first.run_id))
        except BaseException as exc:  # asserted below
            outcomes.append(exc)

    threads = [threading.Thread(target=recheck) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(refused) == 1 and isinstance(refused[0], RunSuperseded), outcomes
    assert recomputed(engine) == Counter({first.run_id: 1})
    assert run_count(engine) == 2


def test_writes_under_a_lease_taken_over_are_refused(engine: sa.Engine, make_config) -> None:
    """The fencing token is checked in the run's own transaction: once another replica
    holds the model's lease, a check and a recheck of the old holder store nothing."""
    _, cfg = make_config(url_of(engine))
    load_days(engine, 2)
    with engine.begin() as conn:
        conn.execute(sa.insert(model_leases).values(model=MODEL, holder="a", token=7,
                                                    expires_at=NOW + DAY))
    start_watermark(engine, MODEL, T0, NOW)
    fence = Fence(MODEL, "a", 7, timeout=30.0)
    run = run_check(engine, cfg, MODEL, at=END1, now=NOW, expect_watermark=T0, fence=fence)
    assert run is not None and read_watermark(engine, MODEL) == END1

    with engine.begin() as conn:  # replica b takes the model over
        conn.execute(sa.update(model_leases).values(holder="b", token=8))
    with pytest.raises(LeaseLost, match="held by b"):
        run_check(engine, cfg, MODEL, at=END2, now=NOW, expect_watermark=END1, fence=fence)
    assert read_watermark(engine, MODEL) == END1 and run_count(engine) == 1
    add_labels(engine, ["r-1"], NOW)  # the first window is due for a recheck
    with pytest.raises(LeaseLost):
        recompute_immature(engine, cfg, MODEL, now=NOW + HOUR, fence=fence)
    assert run_count(engine) == 1
    # Under b's lease the same writes go through.
    b = Fence(MODEL, "b", 8, timeout=30.0)
    assert run_check(engine, cfg, MODEL, at=END2, now=NOW, expect_watermark=END1, fence=b)
    [redo] = recompute_immature(engine, cfg, MODEL, now=NOW + HOUR, fence=b)
    assert redo.recomputes == run.run_id

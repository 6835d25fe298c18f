"""The fallback state machine: trip and recovery counts, what never counts, overrides, staleness."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from monitor.policy import (
    AutoState,
    Override,
    Rules,
    RunOutcome,
    Transition,
    advance,
    classify,
    effective_flag,
    is_stale,
    replay,
)

T0 = datetime(2026, 10, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def run(i: int, status: str, *reasons: str) -> RunOutcome:
    """Run ``i`` checks the window ending on day ``i``."""
    return RunOutcome(run_id=i, window_end=T0 + i * DAY, status=status, reasons=reasons)


def fold(statuses: list[str], rules: Rules, state: AutoState | None = None,
         first: int = 1) -> tuple[AutoState, list[Transition]]:
    state = state or AutoState()
    transitions = []
    for i, status in enumerate(statuses, start=first):
        state, change = advance(state, run(i, status, f"reason of run {i}"), rules,
                                at=T0 + i * DAY + timedelta(minutes=5))
        if change:
            transitions.append(change)
    return state, transitions


@pytest.mark.parametrize("n", [1, 2, 3])
def test_trips_at_exactly_n_consecutive_bad_runs(n: int) -> None:
    rules = Rules(trip_after=n)
    before, none = fold(["ok"] + ["critical"] * (n - 1), rules)
    assert not before.active and none == []
    after, [trip] = fold(["critical"], rules, before, first=n + 1)
    assert after.active and (trip.old_active, trip.new_active) == (False, True)
    assert [r.run_id for r in trip.runs] == list(range(2, n + 2))  # the streak, not run 1
    assert trip.runs[-1].reasons == (f"reason of run {n + 1}",)
    assert trip.at == after.since == T0 + (n + 1) * DAY + timedelta(minutes=5)
    assert f"{n} consecutive bad runs" in trip.reason and f"reason of run {n + 1}" in trip.reason


@pytest.mark.parametrize("m", [1, 3])
def test_recovers_at_exactly_m_consecutive_ok_runs(m: int) -> None:
    rules = Rules(trip_after=1, recover_after=m)
    tripped, _ = fold(["critical"], rules)
    almost, none = fold(["ok"] * (m - 1), rules, tripped, first=2)
    assert almost.active and none == []
    after, [back] = fold(["ok"], rules, almost, first=m + 1)
    assert not after.active and (back.old_active, back.new_active) == (True, False)
    assert [r.run_id for r in back.runs] == list(range(2, m + 2))
    assert after.streak == ()  # evidence starts afresh after a transition


@pytest.mark.parametrize("neutral", ["insufficient_data", "error"])
def test_insufficient_data_and_error_runs_change_nothing(neutral: str) -> None:
    rules = Rules(trip_after=2, recover_after=2)
    one_bad, _ = fold(["critical"], rules)
    same, change = advance(one_bad, run(2, neutral), rules, at=T0 + 10 * DAY)
    assert same is one_bad and change is None  # not even last_success_at or the window
    # Transparent, not a reset: the streak goes on across them.
    state, [trip] = fold(["critical", neutral, neutral, "critical"], rules)
    assert state.active and [r.run_id for r in trip.runs] == [1, 4]
    state, [_, back] = fold(["critical", "critical", "ok", neutral, "ok"], Rules(
        trip_after=2, recover_after=2))
    assert not state.active and [r.run_id for r in back.runs] == [3, 5]


def test_warn_breaks_both_streaks_unless_configured_bad() -> None:
    rules = Rules(trip_after=2, recover_after=2)
    state, trips = fold(["critical", "warn", "critical"], rules)
    assert not state.active and trips == []
    assert (state.bad_streak, state.ok_streak) == (1, 0)
    active, _ = fold(["critical", "critical"], rules)
    state, backs = fold(["ok", "warn", "ok"], rules, active, first=3)
    assert state.active and backs == []  # warn is not ok: no recovery yet
    state, [back] = fold(["ok"], rules, state, first=6)
    assert not state.active and [r.run_id for r in back.runs] == [5, 6]

    strict = Rules(bad_statuses=frozenset({"warn", "critical"}), trip_after=2)
    assert classify("warn", strict) == "bad" and classify("warn", rules) == "between"
    state, [trip] = fold(["warn", "critical"], strict)
    assert state.active and trip.reason.startswith("2 consecutive bad runs (critical/warn;")


def test_only_a_newer_window_advances_the_state() -> None:
    rules = Rules(trip_after=2)
    state, _ = fold(["ok", "critical"], rules)
    for older in (run(1, "critical"), run(2, "critical")):  # a recompute, a second check
        same, change = advance(state, older, rules, at=T0 + 30 * DAY)
        assert same is state and change is None
    state, change = advance(state, run(3, "critical"), rules, at=T0 + 30 * DAY)
    assert state.active and change is not None
    assert (state.last_run_id, state.last_window_end) == (3, T0 + 3 * DAY)


def test_evidence_is_bounded_by_what_the_next_transition_needs() -> None:
    rules = Rules(trip_after=3, recover_after=2)
    state, _ = fold(["critical"] * 2, rules)
    assert [r.run_id for r in state.streak] == [1, 2]
    state, _ = fold(["critical"] * 4, rules, state, first=3)
    assert state.active and state.bad_streak == 6
    assert state.streak == ()  # bad runs while active are no evidence for recovery
    state, _ = fold(["ok"], rules, state, first=7)
    assert [r.run_id for r in state.streak] == [7]
    assert state.last_success_at == T0 + 7 * DAY + timedelta(minutes=5)


def test_rules_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Rules(trip_after=0)
    with pytest.raises(ValueError, match="subset of warn, critical"):
        Rules(bad_statuses=frozenset({"ok"}))


def test_an_override_beats_the_automatic_state_until_it_expires() -> None:
    auto = AutoState(active=True, since=T0, reason="2 consecutive bad runs")
    until = T0 + DAY
    off = Override(active=False, by="alice", at=T0, until=until, reason="false alarm")
    flag = effective_flag(auto, off, until - timedelta(seconds=1))
    assert (flag.active, flag.source, flag.expires_at) == (False, "manual", until)
    assert flag.reason == "forced off by alice: false alarm"
    flag = effective_flag(auto, off, until)  # expiry is inclusive
    assert (flag.active, flag.source, flag.reason, flag.expires_at) == (
        True, "auto", "2 consecutive bad runs", None)
    forever = Override(active=True, by="bob", at=T0)
    flag = effective_flag(AutoState(), forever, T0 + 1000 * DAY)
    assert (flag.active, flag.source, flag.reason) == (True, "manual", "forced on by bob")
    assert effective_flag(AutoState(), None, T0).source == "auto"


def test_stale_after_no_successful_run_for_longer_than_the_limit() -> None:
    limit = 3 * DAY
    fresh = AutoState(last_success_at=T0)
    assert not is_stale(fresh, T0 + limit, limit, tracked_since=T0 - 100 * DAY)
    assert is_stale(fresh, T0 + limit + timedelta(seconds=1), limit, tracked_since=T0)
    never = AutoState()  # no successful run yet: counted from when tracking began
    assert not is_stale(never, T0 + DAY, limit, tracked_since=T0)
    assert is_stale(never, T0 + 4 * DAY, limit, tracked_since=T0)


@pytest.mark.parametrize("statuses", [
    ["ok", "critical", "critical", "ok", "ok", "ok"],
    ["critical", "error", "critical", "warn", "critical", "critical", "ok"],
    ["insufficient_data", "ok", "critical"],
])
def test_replay_of_verdicts_in_any_order_is_the_state_in_window_order(
    statuses: list[str]
) -> None:
    rules = Rules()
    forward, transitions = fold(statuses, rules)
    runs = [run(i, s) for i, s in enumerate(statuses, start=1)]
    at = T0 + 30 * DAY
    replayed, last = replay(list(reversed(runs)), rules, at=at)
    assert (replayed.active, replayed.bad_streak, replayed.ok_streak) == (
        forward.active, forward.bad_streak, forward.ok_streak)
    assert [r.run_id for r in replayed.streak] == [r.run_id for r in forward.streak]
    assert (last is None) == (not transitions)
    if last is not None:
        assert [r.run_id for r in last.runs] == [r.run_id for r in transitions[-1].runs]

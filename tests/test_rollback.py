"""The versions verdict over stored windows: the tests behind it checked against scipy, the
best version picked on the windows both versions served, "no evidence" when the data cannot
tell, and the rollback advice a tripping run carries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from scipy import stats

from monitor.rollback import (
    VersionWindow,
    estimate_test,
    rollback_advice,
    summarize,
    two_proportion_test,
    verdict,
)

DAY = timedelta(days=1)
START = datetime(2026, 10, 1, tzinfo=UTC)


def window(day: int, version: str, correct: int, labelled: int, *, status: str = "ok",
           mature: bool = True, rows: int | None = None, estimated: float | None = None,
           error: float | None = None) -> VersionWindow:
    figures: dict[str, float | None] = {
        "rows": float(rows if rows is not None else labelled), "errors": 0.0,
        "labelled_rows": float(labelled), "correct": float(correct),
        "accuracy": correct / labelled if labelled and mature else None,
        "latency_p95_ms": 50.0,
    }
    if estimated is not None:
        figures |= {"estimated_accuracy": estimated, "estimated_sampling_error": error,
                    "estimated_rows": float(rows if rows is not None else labelled)}
    return VersionWindow(run_id=day, window_start=START + day * DAY,
                         window_end=START + (day + 1) * DAY, status=status, mature=mature,
                         version=version, figures=figures)


def scipy_two_proportion(ca: int, na: int, cb: int, nb: int) -> float:
    table = [[ca, na - ca], [cb, nb - cb]]
    return float(stats.chi2_contingency(table, correction=False).pvalue)


@pytest.mark.parametrize(("ca", "na", "cb", "nb"), [
    (850, 1000, 800, 1000), (701, 1000, 700, 1000), (45, 60, 30, 60), (1876, 2685, 1600, 2500),
    (9, 10, 1, 10),
])
def test_two_proportion_test_is_scipys_chi_squared_without_correction(
        ca: int, na: int, cb: int, nb: int) -> None:
    assert two_proportion_test(ca, na, cb, nb) == pytest.approx(
        scipy_two_proportion(ca, na, cb, nb), rel=1e-9)


def test_two_proportion_test_edges() -> None:
    assert two_proportion_test(10, 10, 20, 20) == 1.0  # both all right: nothing to test
    with pytest.raises(ValueError, match="at least one row"):
        two_proportion_test(0, 0, 1, 2)


def test_estimate_test_is_the_normal_test_of_the_difference() -> None:
    got = estimate_test(0.80, 0.01, 0.77, 0.012)
    z = 0.03 / (0.01**2 + 0.012**2) ** 0.5
    assert got == pytest.approx(2 * stats.norm.sf(z), rel=1e-9)
    assert estimate_test(0.8, 0.0, 0.7, 0.0) is None


def test_verdict_picks_the_better_version_with_scipys_p_value() -> None:
    rows = [window(d, "1.0", 430, 500) for d in range(3)]
    rows += [window(d, "2.0", 400, 500) for d in range(3)]
    found = verdict(rows)
    assert found.best == "1.0" and found.basis == "accuracy"
    assert found.p_value == pytest.approx(scipy_two_proportion(1290, 1500, 1200, 1500),
                                          rel=1e-9)
    assert found.p_value < 0.05 and found.confidence == pytest.approx(1 - found.p_value)
    [evidence] = found.evidence
    assert (evidence.shared, evidence.windows, evidence.rows_a, evidence.rows_b) == (
        True, 3, 1500, 1500)
    assert "1.0 is best on the evidence" in found.text


def test_the_same_versions_swapped_pick_the_other() -> None:
    rows = [window(d, "1.0", 400, 500) for d in range(3)]
    rows += [window(d, "2.0", 430, 500) for d in range(3)]
    assert verdict(rows).best == "2.0"


def test_no_evidence_when_the_versions_are_indistinguishable() -> None:
    rows = [window(d, "1.0", 401, 500) for d in range(3)]
    rows += [window(d, "2.0", 400, 500) for d in range(3)]
    found = verdict(rows)
    assert found.best is None and found.p_value is None
    assert found.text.startswith("no evidence")
    [evidence] = found.evidence
    assert evidence.better is None
    assert evidence.p_value == pytest.approx(scipy_two_proportion(1203, 1500, 1200, 1500))


def test_no_evidence_when_the_data_is_too_small() -> None:
    # 90% against 50% would be significant, but 20 labelled rows a side are too few.
    rows = [window(0, "1.0", 18, 20), window(0, "2.0", 10, 20)]
    found = verdict(rows)
    assert found.best is None and found.evidence[0].basis == "none"
    assert "too few labelled rows" in found.text


def test_no_evidence_with_one_recent_version() -> None:
    rows = [window(0, "1.0", 400, 500), window(9, "2.0", 300, 500)]
    found = verdict(rows, recent_windows=1)
    assert found.best is None and found.recent == ("2.0",)
    assert "only version" in found.text


def test_versions_are_compared_on_the_windows_both_served() -> None:
    # 1.0 served alone in easy early windows; in the hard windows both served, 2.0 is better.
    rows = [window(d, "1.0", 450, 500) for d in range(5)]
    rows += [window(d, "1.0", 300, 500) for d in range(5, 8)]
    rows += [window(d, "2.0", 350, 500) for d in range(5, 8)]
    summary = {s.version: s for s in summarize(rows)}
    assert summary["1.0"].accuracy > summary["2.0"].accuracy  # over their own windows
    found = verdict(rows)
    assert found.best == "2.0"
    assert found.p_value == pytest.approx(scipy_two_proportion(1050, 1500, 900, 1500))


def test_without_mature_labels_the_estimates_are_compared() -> None:
    rows = [window(d, "1.0", 0, 0, mature=False, rows=1000, estimated=0.85, error=0.01)
            for d in range(2)]
    rows += [window(d, "2.0", 0, 0, mature=False, rows=1000, estimated=0.80, error=0.01)
             for d in range(2)]
    found = verdict(rows)
    assert found.best == "1.0" and found.basis == "estimated_accuracy"
    # Two windows of equal rows: the combined sampling error is 0.01 / sqrt(2) a side.
    z = 0.05 / (2 * (0.01 / 2**0.5) ** 2) ** 0.5
    assert found.p_value == pytest.approx(2 * stats.norm.sf(z), rel=1e-9)


def test_summary_adds_up_the_windows() -> None:
    rows = [window(0, "1.0", 80, 100, rows=120), window(1, "1.0", 60, 100, rows=110,
                                                        status="critical"),
            window(2, "1.0", 0, 100, mature=False)]
    [s] = summarize(rows)
    assert (s.windows, s.rows, s.labelled_rows, s.correct) == (3, 330, 200, 140)
    assert s.accuracy == pytest.approx(0.7) and s.ok_accuracy == pytest.approx(0.8)
    assert (s.first_seen, s.last_seen) == (START, START + 3 * DAY)


def test_rollback_advice_names_the_version_that_was_ok() -> None:
    rows = [window(d, "1.4.0", 840, 1000) for d in range(7)]
    rows += [window(d, "1.4.0", 700, 1000, status="critical") for d in range(8, 10)]
    rows += [window(d, "1.5.0", 630, 1000, status="critical") for d in range(8, 10)]
    advice = rollback_advice(rows, ["1.4.0", "1.5.0"])
    assert advice is not None
    assert advice.startswith("version 1.5.0 since 2026-10-09; 1.4.0 was ok with accuracy "
                             "0.84: consider rolling back")
    p = scipy_two_proportion(1400, 2000, 1260, 2000)
    assert f"p={p:.2g}" in advice and "over the 2 windows both served" in advice


def test_no_rollback_advice_when_the_new_version_does_better_or_nothing_was_ok() -> None:
    rows = [window(d, "1.4.0", 840, 1000) for d in range(7)]
    rows += [window(d, "1.4.0", 600, 1000, status="critical") for d in range(8, 10)]
    rows += [window(d, "1.5.0", 700, 1000, status="critical") for d in range(8, 10)]
    assert rollback_advice(rows, ["1.4.0", "1.5.0"]) is None
    bad_before = [window(d, "1.4.0", 600, 1000, status="critical") for d in range(7)]
    assert rollback_advice(bad_before + rows[7:], ["1.4.0", "1.5.0"]) is None
    # One version only: nothing to roll back to.
    assert rollback_advice(rows[:9], ["1.4.0"]) is None


def test_an_estimate_that_favours_the_new_version_is_cited_not_obeyed() -> None:
    # Labels not in yet for the windows both served; the estimate (fooled by a drift)
    # prefers the new version.
    rows = [window(d, "1.4.0", 840, 1000) for d in range(7)]
    rows += [window(d, "1.4.0", 0, 0, status="critical", mature=False, rows=1000,
                    estimated=0.76, error=0.007) for d in range(8, 10)]
    rows += [window(d, "1.5.0", 0, 0, status="critical", mature=False, rows=1000,
                    estimated=0.79, error=0.007) for d in range(8, 10)]
    advice = rollback_advice(rows, ["1.4.0", "1.5.0"])
    assert advice is not None and "1.4.0 was ok with accuracy 0.84" in advice
    assert "only the estimate favours 1.5.0: estimated accuracy 1.4.0 0.760 vs 1.5.0 0.790" \
        in advice

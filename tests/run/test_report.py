"""The HTML report of a stored run (issue 13, item 16): it leads with the run's verdict and
reasons, describes the window as the run saw it (every row, the run's tests), says which
rows it used, and has a schema section."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from monitor.results import DriftResult
from monitor.run.check import run_check, run_schema_check
from monitor.run.report import write_report

M = "loan_default"
DRIFTED = datetime(2026, 10, 13, tzinfo=UTC)  # end of the window of 10-12: critical
LATER = datetime(2026, 11, 27, tzinfo=UTC)

pytestmark = pytest.mark.slow  # Evidently's views take seconds each


@pytest.fixture
def loaded(sample_store: Path, tmp_path: Path, make_config):  # type: ignore[no-untyped-def]
    from monitor.store.db import create_engine

    path = tmp_path / "store.db"
    shutil.copyfile(sample_store, path)
    eng = create_engine(f"sqlite:///{path}")
    _, cfg = make_config(f"sqlite:///{path}", min_rows=500)
    yield eng, cfg
    eng.dispose()


def in_page(page: str, text: str) -> bool:
    """Text as the page holds it: inside the widgets' JSON."""
    return json.dumps(text)[1:-1] in page


def test_the_report_describes_the_window_as_the_run_saw_it(loaded, tmp_path: Path) -> None:
    engine, cfg = loaded
    run = run_check(engine, cfg, M, at=DRIFTED, now=LATER)
    assert run is not None and run.run_id is not None and run.status == "critical"
    assert isinstance(run.drift, DriftResult)
    out = tmp_path / "report.html"
    done = write_report(engine, cfg, run.run_id, out)
    # Drift on every row of the window, as the run; quality on the labelled ones only.
    assert (done.rows, done.window_rows, done.run_rows) == (run.rows, run.rows, run.rows)
    assert 0 < done.labelled_rows < run.rows
    tested = [f for f in run.drift.features if f.error is None]
    run_drifted = sum(f.drifted for f in tested)
    assert (done.tested, done.drifted, done.run_drifted) == (len(tested), run_drifted,
                                                            run_drifted)
    page = out.read_text(encoding="utf-8")
    title = "loan_default: window 2026-10-12 00:00 to 2026-10-13 00:00 UTC: CRITICAL (run 1)"
    assert f"<title>{title}</title>" in page
    # The verdict and its reasons lead; Evidently's views follow.
    assert page.index("Verdict") < page.index("Drift: ") < page.index("Quality: ")
    for reason in run.reasons:
        assert in_page(page, f"- {reason}"), reason
    assert in_page(page, f"Drift: all {run.rows:,} rows of the window, against all 10,000 "
                         f"reference rows, with the run's method and threshold for each of "
                         f"the {len(tested)} columns it tested: {run_drifted} of "
                         f"{len(tested)} columns drifted (the run: {run_drifted} of "
                         f"{len(tested)}).")
    assert in_page(page, f"Quality: the {done.labelled_rows:,} labelled rows of those")
    assert "Schema: the contract, per column" in page
    assert in_page(page, "'OTHER'")  # the unseen category, among the schema's examples
    # Each model version of the window, with the comparison.
    for version in run.versions.versions:
        assert in_page(page, f"{version.version}: {version.rows:,} rows, accuracy ")
    for reason in run.versions.reasons:  # none on 10-12: the difference is within chance
        assert in_page(page, reason)


def test_a_sampled_report_says_so(loaded, tmp_path: Path) -> None:
    engine, cfg = loaded
    run = run_schema_check(engine, cfg, M, at=DRIFTED, persist=True)
    assert run is not None and run.run_id is not None
    out = tmp_path / "report.html"
    done = write_report(engine, cfg, run.run_id, out, sample=800)
    assert 600 < done.rows < 1000 < done.window_rows and done.reference_rows == 800
    assert done.run_drifted is None  # a schema-only run has no drift to compare with
    page = out.read_text(encoding="utf-8")
    assert in_page(page, f"a uniform sample of {done.rows:,} of the window's "
                         f"{done.window_rows:,} rows")
    assert in_page(page, "a sample of 800 of the 10,000 reference rows")
    assert "Schema: the contract, per column" in page
    assert "(run 1)</title>" in page

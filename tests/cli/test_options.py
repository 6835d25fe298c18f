"""Options every batch user leans on: ``--config`` before or after the command,
``--fail-on`` exit codes for check and backfill, and ``mqm runs``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from monitor.cli.main import main


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, list(args))


# --- --config in both places (issue 13, item 13) ----------------------------------------


def test_config_after_the_command(make_config, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = make_config()
    monkeypatch.setenv("MQM_CONFIG", str(path.parent / "absent.yaml"))
    upgraded = invoke("db", "upgrade", "--config", str(path))
    assert upgraded.exit_code == 0, upgraded.output
    assert f"sqlite:///{path.parent.resolve() / 'mqm.db'}" in upgraded.output
    shown = invoke("fallback", "show", "-m", "loan_default", "--config", str(path), "--json")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["flag"]["model"] == "loan_default"
    # Without it the environment's (absent) file is used: the option above took effect.
    absent = invoke("db", "upgrade")
    assert absent.exit_code == 1 and "absent.yaml: file not found" in absent.output


def test_config_in_both_places(make_config, tmp_path: Path) -> None:
    path, _ = make_config()
    same = invoke("--config", str(path), "check", "-m", "loan_default", "--config", str(path))
    assert "No such option" not in same.output
    assert same.exit_code == 1 and "has no logs yet" in same.output
    other = tmp_path / "other.yaml"
    shutil.copyfile(path, other)
    both = invoke("--config", str(path), "check", "-m", "loan_default", "--config", str(other))
    assert both.exit_code == 2
    assert "--config is given twice" in both.output


# --- --fail-on: exit codes for batch jobs (issue 13, item 14) ---------------------------


@pytest.mark.parametrize(("at", "fail_on", "code"), [
    ("2026-10-13", None, 0),  # critical, but no --fail-on: exit 0 as before
    ("2026-10-13", "critical", 5),
    ("2026-10-13", "warn", 5),
    ("2026-10-09", "warn", 3),
    ("2026-10-09", "error", 0),
    ("2026-10-09", "critical", 0),
    ("2026-10-05", "warn", 0),
])
def test_check_fail_on(sample_cli, at: str, fail_on: str | None, code: int) -> None:
    args = ["check", "-m", "loan_default", "--at", f"{at}T00:00:00Z", "--json", "--no-save"]
    if fail_on:
        args += ["--fail-on", fail_on]
    result = sample_cli(*args)
    assert result.exit_code == code, result.output
    assert json.loads(result.stdout)["status"] in ("ok", "warn", "critical")  # still printed
    if code:
        assert f"at or above --fail-on {fail_on}" in result.stderr


def test_fail_on_error_runs(make_config, sample_store: Path, tmp_path: Path) -> None:
    db = tmp_path / "copy.db"
    shutil.copyfile(sample_store, db)
    path, _ = make_config(f"sqlite:///{db}", min_rows=500, reference=str(tmp_path / "gone.csv"))
    args = ["--config", str(path), "check", "-m", "loan_default", "--at", "2026-10-05",
            "--no-save"]
    assert invoke(*args).exit_code == 0
    errored = invoke(*args, "--fail-on", "error")
    assert errored.exit_code == 4, errored.output
    assert "status ERROR" in errored.stdout
    assert invoke(*args, "--fail-on", "critical").exit_code == 0  # error ranks below critical
    assert invoke(*args, "--fail-on", "warn").exit_code == 4


def test_backfill_fail_on_takes_the_worst_run(sample_cli) -> None:
    args = ["backfill", "-m", "loan_default", "--since", "2026-10-06", "--until", "2026-10-09"]
    clean = sample_cli(*args, "--until", "2026-10-08", "--fail-on", "warn")
    assert clean.exit_code == 0, clean.output  # windows ending 10-07 and 10-08: ok
    warned = sample_cli(*args, "--fail-on", "warn", "--json")
    assert warned.exit_code == 3, warned.output  # ok, ok, warn (10-09)
    assert [r["status"] for r in json.loads(warned.stdout)] == ["ok", "ok", "warn"]
    assert sample_cli(*args, "--fail-on", "critical").exit_code == 0
    worst = sample_cli("backfill", "-m", "loan_default", "--since", "2026-10-08",
                       "--until", "2026-10-10", "--fail-on", "warn")
    assert worst.exit_code == 5, worst.output  # warn (10-09) and critical (10-10)
    assert "1 run(s) critical" in worst.stderr


# --- mqm runs (issue 13, item 15) ----------------------------------------------------


def test_runs_lists_the_ids_that_report_needs(sample_cli, tmp_path: Path) -> None:
    assert "no runs yet" in sample_cli("runs", "-m", "loan_default").output
    sample_cli("check", "-m", "loan_default", "--at", "2026-10-13T00:00:00Z")
    sample_cli("backfill", "-m", "loan_default", "--since", "2026-10-07", "--until", "2026-10-10")
    sample_cli("schema", "check", "-m", "loan_default", "--at", "2026-10-05T00:00:00Z")
    listed = sample_cli("runs", "-m", "loan_default", "--json")
    assert listed.exit_code == 0, listed.output
    runs = json.loads(listed.output)
    assert [(r["id"], r["kind"], r["window"]["end"][:10], r["status"]) for r in runs] == [
        (5, "schema", "2026-10-05", "ok"),
        (4, "check", "2026-10-10", "critical"),
        (3, "check", "2026-10-09", "warn"),
        (2, "check", "2026-10-08", "ok"),
        (1, "check", "2026-10-13", "critical"),
    ]  # newest first
    assert runs[1]["reasons"][0].startswith("schema: violation rate")
    assert runs[1]["rows"] == 3052 and runs[1]["recomputes"] is None
    assert [r["id"] for r in json.loads(sample_cli("runs", "-m", "loan_default", "--limit",
                                                   "2", "--json").output)] == [5, 4]
    text = sample_cli("runs", "-m", "loan_default", "--limit", "3").output.splitlines()
    assert text[0].split() == ["run", "kind", "window", "end", "(UTC)", "rows", "status",
                               "finished", "(UTC)", "why"]
    assert text[2].split()[:6] == ["4", "check", "2026-10-10", "00:00", "3052", "critical"]
    assert "schema: violation rate" in text[2]
    assert len(text) == 4
    # The id is the one `mqm report` takes.
    report = sample_cli("report", "--run", "4", "-o", str(tmp_path / "r.html"), "--sample", "500")
    assert report.exit_code == 0, report.output
    assert "run 4 (critical); drift on " in report.output
    assert " of 3,052 window rows (a uniform sample)" in report.output  # --sample 500


def test_runs_bad_input(sample_cli) -> None:
    unknown = sample_cli("runs", "-m", "nope")
    assert unknown.exit_code == 1 and "unknown model 'nope'" in unknown.output
    assert sample_cli("runs", "-m", "loan_default", "--limit", "0").exit_code == 2

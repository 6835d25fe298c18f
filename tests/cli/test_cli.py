"""The mqm command: one clear line and a non-zero exit on errors, JSON when asked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from monitor.cli.main import main
from tests.conftest import ROOT, good_row, write_csv


@pytest.fixture
def run(make_config):  # type: ignore[no-untyped-def]
    path, _ = make_config()
    runner = CliRunner()

    def invoke(*args: str):  # type: ignore[no-untyped-def]
        return runner.invoke(main, ["--config", str(path), *args], catch_exceptions=False)

    return invoke


def test_ingest_labels_and_schema_check(run, tmp_path: Path) -> None:
    rows = [good_row(i) for i in range(40)]
    rows[0]["home_ownership"] = "OTHER"
    logs = write_csv(tmp_path / "logs.csv", rows)
    result = run("ingest", "--model", "loan_default", str(logs))
    assert result.exit_code == 0, result.output
    assert "40 log rows read, 40 added, 0 already stored, 0 bad" in result.output
    again = run("ingest", "--model", "loan_default", str(logs), "--json")
    assert json.loads(again.output)["already_stored"] == 40

    labels = tmp_path / "labels.csv"
    labels.write_text("request_id,defaulted\nr-1,1\nr-2,0\n", encoding="utf-8")
    result = run("labels", "-m", "loan_default", str(labels))
    assert "2 label rows read, 2 added" in result.output

    result = run("schema", "check", "--model", "loan_default", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["rows"] == 40 and out["model"] == "loan_default"
    assert out["window"] == {"start": "2026-10-01T00:00:00+00:00",
                             "end": "2026-10-02T00:00:00+00:00"}
    home = next(c for c in out["columns"] if c["column"] == "home_ownership")
    assert home["unseen_category_rate"] == pytest.approx(1 / 40)
    assert out["status"] == "warn" and out["run_id"] >= 1  # 2.5%: between 1% and 5%

    text = run("schema", "check", "--model", "loan_default", "--at", "2026-10-01T00:20:00Z")
    assert "rows 20 " in text.output and "home_ownership" in text.output  # r-0..r-19


def test_errors_are_one_line_and_exit_non_zero(run, tmp_path: Path) -> None:
    bad = write_csv(tmp_path / "bad.csv", [good_row(0, timestamp="soon")])
    result = run("ingest", "--model", "loan_default", str(bad))
    assert result.exit_code == 1
    assert result.output.startswith("error: ")
    assert "line 2: field 'timestamp'" in result.output
    assert len(result.output.strip().splitlines()) == 1

    unknown = run("ingest", "--model", "nope", str(bad))
    assert unknown.exit_code == 1
    assert "unknown model 'nope'; the config declares: loan_default" in unknown.output

    empty = run("schema", "check", "--model", "loan_default")
    assert empty.exit_code == 1 and "has no logs yet" in empty.output


def test_skip_mode_from_the_cli(run, tmp_path: Path) -> None:
    bad = write_csv(tmp_path / "bad.csv", [good_row(0), good_row(1, timestamp="soon")])
    result = run("ingest", "--model", "loan_default", str(bad), "--on-error", "skip")
    assert result.exit_code == 0
    assert "1 added" in result.output and "skipped line 3: field 'timestamp'" in result.output


def test_bad_config_is_reported_with_file_and_key(tmp_path: Path) -> None:
    cfg = tmp_path / "monitor.yaml"
    cfg.write_text("models:\n  m:\n    schema: s.yaml\n    referenc: r.csv\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["--config", str(cfg), "db", "upgrade"])
    assert result.exit_code == 1
    assert f"{cfg}: models.m.referenc: unknown key" in result.output


def test_db_upgrade_is_idempotent(run) -> None:
    from monitor.store.db import head_revision

    first = run("db", "upgrade")
    assert f"upgraded from empty to {head_revision()}" in first.output
    assert f"already at revision {head_revision()}" in run("db", "upgrade").output


def test_unreachable_database(tmp_path: Path, schema_path: Path) -> None:
    cfg = tmp_path / "monitor.yaml"
    cfg.write_text(
        "database_url: postgresql+psycopg://postgres@127.0.0.1:1/x\n"
        f"models:\n  m:\n    schema: {schema_path}\n    reference: r.csv\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["--config", str(cfg), "db", "upgrade"])
    assert result.exit_code == 1
    assert "cannot reach the database at postgresql+psycopg://postgres@127.0.0.1:1/x" \
        in result.output


def test_schema_infer_writes_a_draft_and_refuses_to_overwrite(tmp_path: Path) -> None:
    ref = tmp_path / "ref.csv"
    pd.read_parquet(ROOT / "sample_data/reference.parquet").head(500).to_csv(ref, index=False)
    out = tmp_path / "draft.yaml"
    args = ["schema", "infer", str(ref), "-m", "loan_default", "--target", "defaulted",
            "-o", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and out.exists()
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1 and "already exists" in again.output


def test_python_dash_m_and_config_reference() -> None:
    proc = subprocess.run([sys.executable, "-m", "monitor", "config", "reference"],
                          capture_output=True, text=True, check=True, cwd=ROOT)
    assert "| `models.<name>.window` |" in proc.stdout


def test_demo_finds_the_documented_drift(make_config, tmp_path: Path) -> None:
    """The sample's week two drifts and decays; the demo flags it day by day."""
    path, _ = make_config(min_rows=500)
    result = CliRunner().invoke(main, ["--config", str(path), "demo",
                                       "--data", str(ROOT / "sample_data")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = [ln.split() for ln in result.output.splitlines() if ln.startswith("  2026-10-")]
    statuses = {cells[0]: cells[8] for cells in lines}
    assert len(statuses) == 14
    assert all(statuses[f"2026-10-0{d}"] == "ok" for d in range(2, 8))
    assert all(statuses[f"2026-10-{d}"] == "critical" for d in range(11, 16))
    # The first two bad windows (10-09 and 10-10 ends) trip the flag (trip_after 2).
    assert "Fallback flag: ON (auto): 2 consecutive bad runs" in result.output
    # 1.5.0 came with the drift and does worse on the same traffic: roll back to 1.4.0.
    [flag] = [ln for ln in result.output.splitlines() if ln.startswith("Fallback flag:")]
    assert ("version 1.5.0 since 2026-10-09; 1.4.0 was ok with accuracy 0.84: consider "
            "rolling back") in flag
    assert "best recent version: 1.4.0 (confidence" in result.output
    assert "1.4.0 is best on the evidence: accuracy 1.4.0 0.704 vs 1.5.0 0.639 over the 6 " \
           "windows both served" in result.output
    accuracy = {cells[0]: float(cells[5]) for cells in lines}
    # Independent: realized accuracy of 10-12 from the files themselves.
    logs = pd.read_parquet(ROOT / "sample_data/production_logs.parquet")
    labels = pd.read_parquet(ROOT / "sample_data/labels.parquet")
    day = logs[(logs.timestamp >= "2026-10-12") & (logs.timestamp < "2026-10-13")]
    joined = day.merge(labels, on="request_id")
    assert accuracy["2026-10-13"] == pytest.approx(
        (joined.prediction == joined.defaulted).mean(), abs=5e-4)
    rerun = CliRunner().invoke(main, ["--config", str(path), "demo",
                                      "--data", str(ROOT / "sample_data")])
    assert f"{len(logs)} read, 0 added, {len(logs)} already stored" in rerun.output


def test_check_json_and_table(sample_cli) -> None:
    result = sample_cli("check", "-m", "loan_default", "--at", "2026-10-13T00:00:00Z", "--json")
    assert result.exit_code == 0, result.output
    run = json.loads(result.output)
    assert run["status"] == "critical" and run["run_id"] >= 1
    assert set(run["checks"]) == {"schema", "drift", "performance", "service", "versions"}
    table = sample_cli("check", "-m", "loan_default", "--at", "2026-10-13T00:00:00Z").output
    assert "status CRITICAL" in table
    assert "credit_score" in table and "wasserstein" in table
    assert "estimated accuracy" in table
    assert "why: " in table


def test_backfill_recheck_and_report(sample_cli, tmp_path: Path) -> None:
    result = sample_cli("backfill", "-m", "loan_default", "--since", "2026-10-10",
                        "--until", "2026-10-12")
    assert result.exit_code == 0, result.output
    assert "2026-10-11 00:00" in result.output and "2026-10-12 00:00" in result.output
    assert "2026-10-13 00:00" not in result.output
    assert "no window is waiting for labels" in sample_cli("recheck", "-m",
                                                           "loan_default").output
    bad = sample_cli("backfill", "-m", "loan_default", "--since", "2026-10-12",
                     "--until", "2026-10-10")
    assert bad.exit_code == 1 and "--until must be after --since" in bad.output

    out = tmp_path / "report.html"
    result = sample_cli("report", "--run", "1", "-o", str(out), "--sample", "2000")
    assert result.exit_code == 0, result.output
    html = out.read_text(encoding="utf-8")
    assert len(html) > 100_000 and "credit_score" in html
    missing = sample_cli("report", "--run", "999", "-o", str(out))
    assert missing.exit_code == 1 and "no run with id 999" in missing.output


def test_compact_and_rebuild(sample_cli) -> None:
    first = json.loads(sample_cli("compact", "--json").output)
    assert [r["model"] for r in first] == ["loan_default"]  # every builtin model
    again = json.loads(sample_cli("compact", "-m", "loan_default", "--json").output)
    assert again[0]["rows"] == 0  # nothing new since
    rebuilt = json.loads(sample_cli("compact", "-m", "loan_default", "--rebuild",
                                    "--json").output)
    assert rebuilt[0]["rows"] > 40_000 and rebuilt[0]["blocks"] >= 1  # every log again
    text = sample_cli("compact", "-m", "loan_default").output
    assert "loan_default: 0 new log rows into 0 block(s)" in text
    unknown = sample_cli("compact", "-m", "nope")
    assert unknown.exit_code == 1 and "nope" in unknown.output


def test_fallback_set_show_clear(run) -> None:
    import getpass

    result = run("fallback", "set", "-m", "loan_default", "--until", "2h", "--reason",
                 "incident 7", "--by", "alice", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert (doc["active"], doc["source"], doc["reason"]) == (True, "manual",
                                                             "forced on by alice: incident 7")
    assert doc["expires_at"].endswith("Z")
    text = run("fallback", "show", "-m", "loan_default").output
    assert "loan_default  fallback ON (manual)" in text and "until " in text
    assert "manual off -> ON   by alice  incident 7" in text

    off = json.loads(run("fallback", "set", "-m", "loan_default", "--off",
                         "--until", "2030-01-01T00:00:00Z", "--json").output)
    assert (off["active"], off["expires_at"]) == (False, "2030-01-01T00:00:00Z")
    assert off["reason"] == f"forced off by {getpass.getuser()}"  # --by defaults to the user
    cleared = run("fallback", "clear", "-m", "loan_default", "--by", "bob", "--reason",
                  "resolved", "--json")
    assert json.loads(cleared.output)["source"] == "auto"
    shown = json.loads(run("fallback", "show", "-m", "loan_default", "--json",
                           "--events", "2").output)
    assert [(e["actor"], e["reason"]) for e in shown["events"]] == [
        ("bob", "resolved"), (getpass.getuser(), None)]
    assert shown["flag"]["active"] is False and shown["flag"]["default_prediction"] is None


def test_fallback_bad_input_is_one_line(run) -> None:
    for args, message in [
        (("set", "-m", "loan_default", "--until", "soonish"),
         "error: --until: cannot read 'soonish' as an ISO 8601 time or a duration"),
        (("set", "-m", "loan_default", "--until", "2020-01-01"),
         "error: the override would expire at 2020-01-01T00:00:00Z, which is not after now"),
        (("show", "-m", "nope"), "error: unknown model 'nope'"),
        (("clear", "-m", "nope"), "error: unknown model 'nope'"),
    ]:
        result = run("fallback", *args)
        assert result.exit_code == 1
        assert result.output.startswith(message), result.output
        assert len(result.output.strip().splitlines()) == 1


def test_readme_lists_every_command_and_no_other() -> None:
    import re

    import click

    def walk(group: click.Group, prefix: str) -> set[str]:
        names = set()
        for name, cmd in group.commands.items():
            if isinstance(cmd, click.Group):
                names |= walk(cmd, f"{prefix}{name} ")
            else:
                names.add(f"{prefix}{name}")
        return names

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("## Commands", 1)[1].split("\n\n", 2)[1]
    # The command words are the lowercase words before the first option or argument.
    listed = {re.match(r"\| `mqm ((?:[a-z]+ ?)+)", line).group(1).strip()  # type: ignore[union-attr]
              for line in table.splitlines() if line.startswith("| `mqm")}
    assert listed == walk(main, "")


def test_schema_infer_on_a_regressor_without_prediction_option(tmp_path: Path) -> None:
    """Issue 13, item 10: the prediction column is guessed when its name says so, and the
    user is told which one was taken."""
    import numpy as np

    rng = np.random.default_rng(1)
    ref = tmp_path / "houses.csv"
    pd.DataFrame({"MedInc": rng.normal(3, 1, 200), "MedHouseVal": rng.normal(2, 1, 200),
                  "predicted": rng.normal(2, 1, 200)}).to_csv(ref, index=False)
    result = CliRunner().invoke(main, ["schema", "infer", str(ref), "-m", "houses",
                                       "--target", "MedHouseVal"])
    assert result.exit_code == 0, result.output
    assert "prediction column: 'predicted' (guessed from its name" in result.stderr
    draft = yaml.safe_load(result.stdout)
    assert draft["prediction"]["column"] == "predicted" and draft["task"] == "regression"
    chosen = CliRunner().invoke(main, ["schema", "infer", str(ref), "-m", "houses",
                                       "--prediction", "MedInc"])
    assert yaml.safe_load(chosen.stdout)["prediction"]["column"] == "MedInc"
    assert "guessed" not in chosen.output


def test_a_features_only_model_from_the_command_line(tmp_path: Path) -> None:
    """Issue 13, item 11: a model monitored on its inputs alone, through every command a
    user would run on it: its logs load without a prediction, labels are refused naming
    it, check, backfill and runs show performance as not applicable, and the report builds."""
    from tests.conftest import FEATURES_MODEL, features_only_model, features_only_rows

    path = features_only_model(tmp_path, f"sqlite:///{tmp_path / 'mqm.db'}")
    since = pd.Timestamp("2026-10-01", tz="UTC").to_pydatetime()
    rows = [r for d, drifted in enumerate([False, True, True]) for r in features_only_rows(
        since + pd.Timedelta(days=d), 300, drifted=drifted, seed=d)]
    assert "prediction" not in rows[0]

    def mqm(*args: str):  # type: ignore[no-untyped-def]
        return CliRunner().invoke(main, ["--config", str(path), *args], catch_exceptions=False)

    result = mqm("ingest", "-m", FEATURES_MODEL, str(write_csv(tmp_path / "logs.csv", rows)))
    assert result.exit_code == 0, result.output
    assert "900 log rows read, 900 added" in result.output
    labels = tmp_path / "labels.csv"
    labels.write_text("request_id,label\n1001-0,1\n", encoding="utf-8")
    refused = mqm("labels", "-m", FEATURES_MODEL, str(labels))
    assert refused.exit_code == 1
    assert refused.output.startswith("error: ") and "'loan_inputs'" in refused.output
    assert "task: features" in refused.output and "Traceback" not in refused.output

    result = mqm("check", "-m", FEATURES_MODEL, "--at", "2026-10-02T00:00:00Z", "--json")
    assert result.exit_code == 0, result.output
    run = json.loads(result.output)
    assert run["status"] == "ok" and run["checks"]["performance"]["status"] == "not_applicable"
    text = mqm("backfill", "-m", FEATURES_MODEL, "--since", "2026-10-01",
               "--until", "2026-10-04", "--fail-on", "error")
    assert text.exit_code == 5, text.output  # critical, from drift alone
    header = next(line for line in text.output.splitlines() if "window end" in line)
    assert "drifted" in header and "accuracy" not in header and "labels" not in header
    assert "drift: " in text.output
    table = mqm("check", "-m", FEATURES_MODEL, "--at", "2026-10-04T00:00:00Z").output
    assert "status CRITICAL" in table
    assert "performance  not_applicable    does not apply: the contract declares no " \
           "prediction (task: features)" in table
    listed = json.loads(mqm("runs", "-m", FEATURES_MODEL, "--json").output)
    assert [r["status"] for r in listed][:3] == ["critical", "critical", "critical"]
    assert "critical" in mqm("runs", "-m", FEATURES_MODEL).output
    assert "no window is waiting for labels" in mqm("recheck", "-m", FEATURES_MODEL).output

    out = tmp_path / "report.html"
    result = mqm("report", "--run", str(listed[0]["id"]), "-o", str(out), "--sample", "300")
    assert result.exit_code == 0, result.output
    html = out.read_text(encoding="utf-8")
    assert "annual_income" in html and "Quality: does not apply" in html


def test_schema_infer_without_prediction(tmp_path: Path) -> None:
    """Issue 13, item 11: --no-prediction drafts a features-only contract; without it, a
    reference without predictions is an error that names the option."""
    ref = tmp_path / "inputs.csv"
    pd.DataFrame({"request_id": ["a", "b"], "MedInc": [1.5, 2.5],
                  "HouseAge": [10, 20]}).to_csv(ref, index=False)
    refused = CliRunner().invoke(main, ["schema", "infer", str(ref), "-m", "houses"])
    assert refused.exit_code == 1 and "--no-prediction" in refused.output
    result = CliRunner().invoke(main, ["schema", "infer", str(ref), "-m", "houses",
                                       "--no-prediction"])
    assert result.exit_code == 0, result.output
    assert "guessed" not in result.stderr
    draft = yaml.safe_load(result.stdout)
    assert draft["task"] == "features" and "prediction" not in draft
    assert [f["name"] for f in draft["features"]] == ["MedInc", "HouseAge"]


def test_retention_dry_run_then_run(sample_store: Path, tmp_path: Path, make_config) -> None:
    """The sample's logs (October 2026) are all older than a 30-day retention: the dry
    run counts them, the run deletes exactly those, a second run finds nothing; the
    scheduler's watermark holds the horizon back; retention null deletes nothing."""
    import shutil
    from datetime import UTC, datetime

    import sqlalchemy as sa

    from monitor.store.db import create_engine
    from monitor.store.watermarks import start_watermark

    db = tmp_path / "copy.db"
    shutil.copyfile(sample_store, db)
    engine = create_engine(f"sqlite:///{db}")

    def counts() -> tuple[int, int]:
        with engine.connect() as conn:
            return (conn.execute(sa.text("SELECT count(*) FROM inference_logs")).scalar_one(),
                    conn.execute(sa.text("SELECT count(*) FROM ground_truth")).scalar_one())

    def mqm(*args: str, **model: object):  # type: ignore[no-untyped-def]
        path, _ = make_config(f"sqlite:///{db}", **model)
        return CliRunner().invoke(main, ["--config", str(path), *args], catch_exceptions=False)

    logs, labels = counts()
    start_watermark(engine, "loan_default", datetime(2026, 10, 8, tzinfo=UTC),
                    datetime.now(UTC))
    held = json.loads(mqm("retention", "--dry-run", "--json", retention="30d").output)
    assert held[0]["horizon"] == "2026-10-08T00:00:00Z" and held[0]["held_by_watermark"]
    assert 0 < held[0]["logs"] < logs
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM scheduler_state"))

    dry = json.loads(mqm("retention", "--dry-run", "--json", retention="30d").output)
    assert [(d["model"], d["dry_run"], d["logs"], d["labels"]) for d in dry] == [
        ("loan_default", True, logs, labels)]
    assert counts() == (logs, labels)  # a dry run deletes nothing
    text = mqm("retention", "-m", "loan_default", "--dry-run", retention="30d").output
    assert text.startswith(f"loan_default: would delete {logs:,} logs, {labels:,} labels")

    done = json.loads(mqm("retention", "--json", retention="30d").output)
    assert (done[0]["logs"], done[0]["labels"], done[0]["complete"]) == (logs, labels, True)
    assert done[0]["batches"] > logs // 5000
    assert counts() == (0, 0)
    again = mqm("retention", "-m", "loan_default", retention="30d").output
    assert again.startswith("loan_default: deleted 0 logs, 0 labels and 0 log blocks")

    off = mqm("retention", "-m", "loan_default", retention=None)
    assert off.exit_code == 0 and "retention is off" in off.output
    assert json.loads(mqm("retention", "--json", retention=None).output) == []
    unknown = mqm("retention", "-m", "nope", retention="30d")
    assert unknown.exit_code == 1 and "nope" in unknown.output
    engine.dispose()


def test_the_program_exits_with_its_objects_frozen(monkeypatch, make_config) -> None:
    """``mqm`` (``run``) ends frozen, so that the interpreter's last collections skip
    what the imports made, with the command's exit code; ``main`` alone does not freeze
    (a test process goes on collecting)."""
    import gc

    from monitor.cli.main import run

    path, _ = make_config()
    gc.unfreeze()
    try:
        with pytest.raises(SystemExit) as plain:
            main(["--config", str(path), "check", "--model", "nope"], prog_name="mqm")
        assert plain.value.code == 1 and gc.get_freeze_count() == 0
        monkeypatch.setattr(sys, "argv", ["mqm", "--config", str(path), "check",
                                          "--model", "nope"])
        with pytest.raises(SystemExit) as program:
            run()
        assert program.value.code == 1
        assert gc.get_freeze_count() > 1000
    finally:
        gc.unfreeze()

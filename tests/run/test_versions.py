"""The versions section of check runs on the sample model (1.5.0 serves half the requests
from 2026-10-09), on both backends: its figures against the files, the verdict of
`mqm versions` and `GET /v1/models/{model}/versions` (the same document), and the rollback
advice in the flag's reason when the flag trips."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from scipy import stats

from monitor.alerting import alerts_for
from monitor.cli.main import main
from monitor.config import Config
from monitor.fallback.flag import flag_document
from monitor.ingest import ingest_labels, ingest_logs
from monitor.results import CheckRun, PerformanceResult, VersionsResult
from monitor.run.check import backfill
from monitor.store.runs import get_run
from tests.conftest import ROOT, fresh_pg_database

DATA = ROOT / "sample_data"
MODEL = "loan_default"
SINCE = datetime(2026, 10, 1, tzinfo=UTC)
UNTIL = datetime(2026, 10, 13, tzinfo=UTC)  # windows ending 10-02 .. 10-13
LATER = datetime(2026, 11, 27, tzinfo=UTC)  # every label has long arrived
ONE_DAY = timedelta(days=1)
ADVICE = ("version 1.5.0 since 2026-10-09; 1.4.0 was ok with accuracy 0.84: consider "
          "rolling back")


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def checked(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[sa.Engine, Path, Config, dict[datetime, CheckRun]]]:
    """The sample's logs and labels in a fresh store on each backend, checked day by day
    with the demo's schema limits (the flag trips on the windows ending 10-09 and 10-10).
    Built once per backend: the tests only read it (14 windows took 6-9 s a build)."""
    import yaml

    from monitor.config import load_config
    from monitor.schema import load_schema
    from monitor.store.db import create_engine, ensure_schema

    folder = tmp_path_factory.mktemp("versions")
    with ExitStack() as stack:
        url = (f"sqlite:///{folder / 'store.db'}" if request.param == "sqlite"
               else stack.enter_context(fresh_pg_database()))
        engine = create_engine(url)
        stack.callback(engine.dispose)
        ensure_schema(engine)
        schema = load_schema(ROOT / "schemas" / "loan_default.yaml")
        ingest_logs(engine, MODEL, schema, DATA / "production_logs.parquet")
        ingest_labels(engine, MODEL, schema, DATA / "labels.parquet")
        path = folder / "monitor.yaml"
        path.write_text(yaml.safe_dump({"database_url": url, "models": {MODEL: {
            "schema": str(ROOT / "schemas" / "loan_default.yaml"),
            "reference": str(DATA / "reference.parquet"), "window": "1d", "min_rows": 500,
            "schema_check": {"warn_violation_rate": 0.005,
                             "critical_violation_rate": 0.02}}}}), encoding="utf-8")
        cfg = load_config(path)
        runs = backfill(engine, cfg, MODEL, SINCE, UNTIL, now=LATER)
        yield engine, path, cfg, {r.end: r for r in runs}


@pytest.fixture(scope="module")
def files() -> pd.DataFrame:
    logs = pd.read_parquet(DATA / "production_logs.parquet")
    labels = pd.read_parquet(DATA / "labels.parquet")
    return logs.merge(labels[["request_id", "defaulted"]], on="request_id", how="left")


def _day(files: pd.DataFrame, day: str) -> pd.DataFrame:
    start = pd.Timestamp(day, tz="UTC")
    return files[(files.timestamp >= start) & (files.timestamp < start + pd.Timedelta(days=1))]


def _counts(rows: pd.DataFrame) -> tuple[int, int]:
    labelled = rows[rows.defaulted.notna() & rows.prediction.notna()]
    return int((labelled.prediction.astype(int) == labelled.defaulted).sum()), len(labelled)


def test_each_version_of_a_window_is_measured_as_the_files_say(checked, files) -> None:
    engine, _, _, runs = checked
    run = runs[datetime(2026, 10, 12, tzinfo=UTC)]  # the window of 10-11
    section = run.versions
    assert isinstance(section, VersionsResult) and section.mature
    assert [v.version for v in section.versions] == ["1.4.0", "1.5.0"]  # most rows first
    day = _day(files, "2026-10-11")
    for version, rows in day.groupby("model_version"):
        got = section.version(str(version))
        correct, labelled = _counts(rows)
        assert (got.rows, got.errors) == (len(rows), int(rows.error.sum()))
        assert (got.correct, got.labelled_rows) == (correct, labelled)
        assert got.accuracy == pytest.approx(correct / labelled)
        assert got.latency_p95_ms == pytest.approx(np.percentile(rows.latency_ms, 95))
        assert got.estimated_rows == int((~rows.error).sum())
        assert got.prediction_drifted is not None
    # 1.5.0 is worse on this window's traffic, by scipy's test too.
    [pair] = section.comparisons
    a, b = (_counts(day[day.model_version == v]) for v in ("1.4.0", "1.5.0"))
    p = stats.chi2_contingency([[a[0], a[1] - a[0]], [b[0], b[1] - b[0]]],
                               correction=False).pvalue
    assert (pair.a, pair.b, pair.basis, pair.better) == ("1.4.0", "1.5.0", "accuracy", "1.4.0")
    assert pair.p_value == pytest.approx(p, rel=1e-9)
    assert any(r.startswith("1.4.0 accuracy") for r in section.reasons)
    # Stored and read back typed; its figures per version in run_metrics.
    stored = get_run(engine, run.run_id)
    assert stored is not None and stored.run == run


def test_one_version_matches_the_window_figures(checked) -> None:
    _, _, _, runs = checked
    run = runs[datetime(2026, 10, 5, tzinfo=UTC)]
    [only] = run.versions.versions
    perf = run.performance
    assert isinstance(perf, PerformanceResult) and perf.estimated is not None
    assert only.version == "1.4.0" and only.rows == run.rows
    assert only.accuracy == pytest.approx(perf.metrics["accuracy"])
    assert only.estimated_accuracy == pytest.approx(perf.estimated.estimated_accuracy)
    assert only.estimated_sampling_error == pytest.approx(perf.estimated.sampling_error)
    assert only.prediction_drift_score == pytest.approx(run.drift.feature("prediction").score)
    assert only.error_rate == pytest.approx(run.service.error_rate)
    assert run.versions.comparisons == ()


def test_the_flag_that_trips_says_which_version_to_roll_back_to(checked) -> None:
    engine, _, cfg, _ = checked
    doc = flag_document(engine, cfg, MODEL)
    assert doc["active"]
    reason = doc["reason"]
    assert "run " in reason and ADVICE in reason
    # The window ending 10-10 tripped it: 1.4.0 and 1.5.0 compared on it.
    assert "over the 1 window both served" in reason
    [flag_alert, _] = alerts_for(MODEL, doc, "critical")
    assert ADVICE in flag_alert.description


def test_versions_cli_and_api_give_the_same_verdict(checked, files) -> None:
    import warnings

    from prometheus_client import CollectorRegistry

    with warnings.catch_warnings():
        # starlette 1.x warns at import that it prefers httpx2 to httpx; the client works.
        warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`")
        from fastapi.testclient import TestClient

    from monitor.serve.api import create_app

    engine, path, cfg, _ = checked
    out = CliRunner().invoke(main, ["--config", str(path), "versions", "--model", MODEL,
                                    "--json"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    with TestClient(create_app(engine, cfg, registry=CollectorRegistry())) as client:
        answer = client.get(f"/v1/models/{MODEL}/versions")
        assert answer.status_code == 200
        assert answer.json() == doc
        later = client.get(f"/v1/models/{MODEL}/versions",
                           params={"since": "2026-10-10T00:00:00Z"}).json()
        for bad in ("2026-10-10T00:00:00", "0.5", "yesterday"):
            assert client.get(f"/v1/models/{MODEL}/versions",
                              params={"since": bad}).status_code == 422
        assert client.get("/v1/models/nope/versions").status_code == 404
        spec = client.get("/openapi.json").json()
        ok = spec["paths"]["/v1/models/{model}/versions"]["get"]["responses"]["200"]
        assert ok["content"]["application/json"]["schema"]["$ref"].endswith("/VersionReport")
        assert {"best", "p_value", "evidence", "versions"} <= set(
            spec["components"]["schemas"]["VersionReport"]["properties"])
    # Against the files: the windows up to 10-13, where both versions served from 10-09.
    served = files[files.timestamp < "2026-10-13"]
    versions = {v["version"]: v for v in doc["versions"]}
    assert versions["1.5.0"]["first_seen"] == "2026-10-09T00:00:00Z"
    assert versions["1.5.0"]["last_seen"] == "2026-10-13T00:00:00Z"
    for name, rows in served.groupby("model_version"):
        assert versions[str(name)]["rows"] == len(rows)
    shared = served[served.timestamp >= "2026-10-09"]
    a, b = (_counts(shared[shared.model_version == v]) for v in ("1.4.0", "1.5.0"))
    p = stats.chi2_contingency([[a[0], a[1] - a[0]], [b[0], b[1] - b[0]]],
                               correction=False).pvalue
    assert (doc["best"], doc["basis"]) == ("1.4.0", "accuracy")
    assert doc["p_value"] == pytest.approx(p, rel=1e-9)
    assert doc["evidence"][0]["windows"] == 4
    # --since: only the windows ending after it (10-11 .. 10-13).
    assert {v["version"]: v["windows"] for v in later["versions"]} == {"1.4.0": 3, "1.5.0": 3}
    since = CliRunner().invoke(main, ["--config", str(path), "versions", "--model", MODEL,
                                      "--json", "--since", "2026-10-10T00:00:00Z"])
    assert json.loads(since.output) == later
    table = CliRunner().invoke(main, ["--config", str(path), "versions", "--model", MODEL])
    assert "best recent version: 1.4.0" in table.output and "1.5.0" in table.output


def test_versions_of_a_model_without_runs(engine, db_url: str, make_config) -> None:
    path, _ = make_config(db_url)
    out = CliRunner().invoke(main, ["--config", str(path), "versions", "--model", MODEL])
    assert out.exit_code == 0 and "no versions stored yet" in out.output
    doc: dict[str, Any] = json.loads(CliRunner().invoke(
        main, ["--config", str(path), "versions", "--model", MODEL, "--json"]).output)
    assert doc["best"] is None and doc["versions"] == [] and doc["text"].startswith("no ev")
    unknown = CliRunner().invoke(main, ["--config", str(path), "versions", "--model", "nope"])
    assert unknown.exit_code == 1 and "nope" in unknown.output




@pytest.fixture
def sample_copy(sample_store, tmp_path, make_config):  # type: ignore[no-untyped-def]
    """A private copy of the sample store (SQLite) with the demo's schema limits."""
    import shutil

    from monitor.store.db import create_engine

    path = tmp_path / "store.db"
    shutil.copyfile(sample_store, path)
    eng = create_engine(f"sqlite:///{path}")
    _, cfg = make_config(f"sqlite:///{path}", min_rows=500, schema_check={
        "warn_violation_rate": 0.005, "critical_violation_rate": 0.02})
    yield eng, cfg
    eng.dispose()


def test_a_versions_check_that_fails_is_an_error_section(sample_copy, monkeypatch) -> None:
    from monitor.checks import versions as check
    from monitor.results import ErrorSection
    from monitor.run.check import run_check

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("boom")

    engine, cfg = sample_copy
    monkeypatch.setattr(check, "check_versions", broken)
    run = run_check(engine, cfg, MODEL, at=datetime(2026, 10, 5, tzinfo=UTC), now=LATER)
    assert run is not None and isinstance(run.versions, ErrorSection)
    assert "ValueError: boom" in run.versions.error
    assert run.status == "error" and any(r.startswith("versions: could not run") for r in
                                         run.reasons)


def test_advice_that_cannot_be_worked_out_leaves_the_flag_as_it_was(
        sample_copy, monkeypatch, caplog) -> None:
    from monitor.store import versions as store

    def unreadable(*args: object, **kwargs: object) -> None:
        raise KeyError("figures")

    engine, cfg = sample_copy
    monkeypatch.setattr(store, "version_windows", unreadable)
    backfill(engine, cfg, MODEL, SINCE, datetime(2026, 10, 10, tzinfo=UTC), now=LATER)
    doc = flag_document(engine, cfg, MODEL)
    assert doc["active"] and "consider rolling back" not in doc["reason"]
    assert doc["reason"].startswith("2 consecutive bad runs")
    assert any("rollback advice" in r.message for r in caplog.records)


def test_a_users_table_names_its_version_column(engine, db_url: str, make_config) -> None:
    import sqlalchemy as sa

    from monitor.run.check import run_check

    t0 = datetime(2026, 10, 1, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "CREATE TABLE serving_log (rid INTEGER, created_at TIMESTAMP, feats TEXT, "
            "pred INTEGER, p0 FLOAT, p1 FLOAT, ver TEXT)"))
        conn.execute(sa.text("INSERT INTO serving_log VALUES (:rid, :ts, :feats, :pred, :p0, "
                             ":p1, :ver)"),
                     [{"rid": i, "ts": (t0 + i * (ONE_DAY / 300)).replace(tzinfo=None),
                       "feats": f'{{"age": {20 + i % 50}, "home_ownership": "OWN"}}',
                       "pred": i % 2, "p0": 0.6 if i % 2 == 0 else 0.3,
                       "p1": 0.4 if i % 2 == 0 else 0.7,
                       "ver": "2.0" if i % 3 == 0 else ("1.0" if i % 3 == 1 else None)}
                      for i in range(300)])
    columns = {"request_id": "rid", "timestamp": "created_at", "prediction": "pred",
               "features_json": "feats", "probabilities": {"0": "p0", "1": "p1"}}
    at = t0 + ONE_DAY
    _, mapped = make_config(db_url, source={"kind": "sql", "table": "serving_log", "columns": {
        **columns, "model_version": "ver"}})
    run = run_check(engine, mapped, MODEL, at=at, now=LATER, persist=False)
    assert run is not None and isinstance(run.versions, VersionsResult)
    # Rows without a version count as "unknown".
    assert {v.version: v.rows for v in run.versions.versions} == {
        "2.0": 100, "1.0": 100, "unknown": 100}
    _, unmapped = make_config(db_url, source={"kind": "sql", "table": "serving_log",
                                              "columns": columns})
    run = run_check(engine, unmapped, MODEL, at=at, now=LATER, persist=False)
    assert run is not None and [(v.version, v.rows) for v in run.versions.versions] == [
        ("unknown", 300)]


def test_version_codes_from_the_read_name_each_row_as_the_values_do() -> None:
    """Chunk after chunk, a chunk's versions given as the read's codes (texts and nulls,
    words in an order of their own, one no row holds) or as values name each row's
    version alike; floats among the codes, or codes of another length, are not used."""
    from monitor.checks.versions import UNKNOWN_VERSION, VersionCodes
    from monitor.text_codes import TextCodes

    rng = np.random.default_rng(2)
    words = np.array(["2.0", "1.0", "9.9", "1.1"], dtype=object)
    by_values, by_codes = VersionCodes(), VersionCodes()
    for n in (300, 200, 500):
        codes = rng.integers(-1, 3, n).astype(np.int8)  # "1.1": in the words, on no row
        values = pd.Series([words[c] if c >= 0 else None for c in codes], dtype=object)
        want = [by_values.names[c] for c in by_values.codes(values)]
        got = [by_codes.names[c] for c in by_codes.codes(values, TextCodes(codes, words))]
        assert got == want == [v if v is not None else UNKNOWN_VERSION for v in values]
        with_floats = TextCodes(codes, words, np.full(n, np.nan))
        assert [by_codes.names[c] for c in by_codes.codes(values, with_floats)] == want
        short = TextCodes(codes[:-1], words)
        assert [by_codes.names[c] for c in by_codes.codes(values, short)] == want

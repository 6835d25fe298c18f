"""Every page through Streamlit's AppTest: no exception, and the figures shown are the
store's; an empty store and an unreachable one; the override form and its token."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from monitor.config import load_config
from monitor.fallback.flag import flag_document
from monitor.store.db import create_engine
from monitor.store.flags import list_events
from monitor.store.history import window_runs
from monitor.store.runs import get_run
from tests.conftest import FEATURES_MODEL
from tests.dashboards.conftest import APP, MODEL

TIMEOUT = 120  # seconds per script run: two cores shared with other test runs


def open_page(page: str | None = None, **params: object) -> AppTest:
    """Run the app on ``page`` (None: the default one) with URL ``params``."""
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    if page is not None:
        # A first run registers the pages (st.navigation); before it, AppTest would run
        # the page's file alone, without app.py around it.
        at.run()
        at.switch_page(f"views/{page}.py")
    at.query_params.clear()
    at.query_params.update({k: str(v) for k, v in params.items()})
    return at.run()


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def charts(at: AppTest) -> list[Any]:
    return list(at.get("vega_lite_chart"))


def metric(at: AppTest, label: str) -> str:
    found = [m.value for m in at.metric if m.label == label]
    assert found, (label, [m.label for m in at.metric])
    return found[0]


_COLUMNS = {  # a table by the columns it has (a read-only dataframe keeps no key)
    "models": {"model", "note"},
    "windows": {"window_end", "status", "share_drifted"},
    "features": {"feature", "method", "score"},
    "schema_columns": {"column", "examples"},
    "metrics": {"metric", "reference"},
    "top_features": {"feature", "importance"},
    "events": {"event", "kind"},
    "segments": {"segment", "reference", "drifted share"},
    "estimates": {"metric", "estimated", "lower", "upper", "realized"},
    "versions": {"version", "first_seen", "prediction_drift"},
    "run_versions": {"version", "labelled_rows", "prediction_drift_score"},
    "version_pairs": {"a", "b", "basis", "p_value"},
}


def frame(at: AppTest, name: str):  # type: ignore[no-untyped-def]
    for df in at.dataframe:
        if _COLUMNS[name] <= set(df.value.columns):
            return df.value
    raise AssertionError(f"no {name} table")


def store(config: Path) -> tuple[Any, Any]:
    cfg = load_config(config)
    return cfg, create_engine(cfg.database_url)


def window(engine: Any, end: datetime) -> Any:
    return next(r for r in window_runs(engine, MODEL) if r.window_end == end)


# --- the demo store ------------------------------------------------------------------------


def test_overview_shows_each_model_as_stored(demo_config: Path) -> None:
    cfg, engine = store(demo_config)
    at = open_page()
    no_exception(at)
    assert [t.value for t in at.title] == ["Model quality"]
    latest = window_runs(engine, MODEL)[-1]
    flag = flag_document(engine, cfg, MODEL)
    table = frame(at, "models")
    row = table.set_index("model").loc[MODEL]
    assert row["status"] == latest.status == "critical"
    # Checked as of 2026-11-27: by now no run was taken in for longer than 3 windows.
    assert flag["active"] and flag["stale"]
    assert row["fallback"] == "ON (stale)"
    assert row["source"] == flag["source"] == "auto"
    assert row["run_id"] == latest.id
    assert metric(at, "Critical") == "1" and metric(at, "Fallback on") == "1"
    assert len(charts(at)) == 1  # the strip of recent windows
    [warning] = [w.value for w in at.warning]
    assert "the flag is ON since" in warning and flag["reason"] in warning


def test_model_page_shows_each_window_as_stored(demo_config: Path) -> None:
    _, engine = store(demo_config)
    at = open_page("model", model=MODEL, days="all")
    no_exception(at)
    runs = window_runs(engine, MODEL)
    table = frame(at, "windows")
    shown = dict(zip(table["window_end"], table["status"], strict=True))
    for run in runs:
        assert shown[f"{run.window_end:%Y-%m-%d %H:%M} UTC"] == run.status
    assert shown["2026-10-05 00:00 UTC"] == "ok"
    assert shown["2026-10-12 00:00 UTC"] == "critical"
    assert metric(at, "Critical windows") == str(sum(r.status == "critical" for r in runs))
    assert metric(at, "Fallback flag") == "ON"
    # status, drift share, heat-map, multivariate AUC, segments, accuracy, coverage,
    # versions, schema, latency, errors
    assert len(charts(at)) == 11
    strip = charts(at)[4].proto.spec
    assert "Status per segment" in str(strip)
    auc = next(c for c in charts(at) if "Multivariate drift" in str(c.spec))
    assert "auc_threshold" in str(auc.spec)
    shown_auc = dict(zip(table["window_end"], table["auc"], strict=True))
    for run in runs:
        section = get_run(engine, run.id).run.multivariate
        assert shown_auc[f"{run.window_end:%Y-%m-%d %H:%M} UTC"] == pytest.approx(section.auc)
    assert at.query_params["model"] == MODEL and at.query_params["days"] == "all"
    # The versions as `mqm versions` reads them, and the verdict.
    from monitor.rollback import verdict
    from monitor.store.versions import version_windows

    found = verdict(version_windows(engine, MODEL))
    versions = frame(at, "versions").set_index("version")
    for summary in found.versions:
        assert versions.loc[summary.version, "rows"] == summary.rows
        assert versions.loc[summary.version, "windows"] == summary.windows
    assert found.best == "1.4.0"
    [success] = [s.value for s in at.success]
    assert "Best recent version: **1.4.0**" in success and found.text in success


def test_model_page_range_and_window_picker_open_the_run(demo_config: Path) -> None:
    _, engine = store(demo_config)
    at = open_page("model", model=MODEL, days=7)
    no_exception(at)
    assert metric(at, "Windows shown") == "7"
    target = window(engine, datetime(2026, 10, 12, tzinfo=UTC))
    label = next(o for o in at.selectbox(key="window_pick").options
                 if o.endswith(f"run {target.id}"))
    at.selectbox(key="window_pick").select(label).run()
    at.button(key="open_run").click().run()
    no_exception(at)
    assert [t.value for t in at.title] == [f"{MODEL}: run {target.id}"]
    assert at.query_params["run"] == str(target.id)


def test_run_page_shows_the_run_as_stored(demo_config: Path) -> None:
    _, engine = store(demo_config)
    target = window(engine, datetime(2026, 10, 12, tzinfo=UTC))
    run = get_run(engine, target.id).run
    at = open_page("run", run=target.id)
    no_exception(at)
    assert metric(at, "Status") == run.status == "critical"
    features = frame(at, "features").set_index("feature")
    for name in ("credit_score", "home_ownership", "age"):
        assert features.loc[name, "score"] == pytest.approx(run.drift.feature(name).score)
        assert features.loc[name, "drifted"] == run.drift.feature(name).drifted
    assert features.loc["home_ownership", "unseen share"] == pytest.approx(
        run.drift.feature("home_ownership").unseen_share)
    # The distribution of the most drifted column, read from the window's logs.
    assert at.selectbox(key="feature").value == features.index[0]
    assert len(charts(at)) == 1
    schema = frame(at, "schema_columns").set_index("column")
    assert schema.loc["home_ownership", "violations"] == pytest.approx(
        run.schema.column("home_ownership").violation_rate)
    metrics = frame(at, "metrics").set_index("metric")
    assert metrics.loc["accuracy", "window"] == pytest.approx(run.performance.metrics["accuracy"])
    assert metrics.loc["accuracy", "reference"] == pytest.approx(0.84)
    segments = frame(at, "segments").set_index("segment")
    assert list(segments.index) == [s.key for s in run.segments.segments]
    other = run.segments.segment("home_ownership", "OTHER")
    assert segments.loc["home_ownership=OTHER", "status"] == other.status == "critical"
    assert segments.loc["home_ownership=OTHER", "reference"] == "whole reference"
    rent = run.segments.segment("home_ownership", "RENT")
    assert segments.loc["home_ownership=RENT", "drifted share"] == pytest.approx(
        rent.drift.share_drifted)
    assert segments.loc["home_ownership=RENT", "reference"] == "segment (4,151 rows)"
    # Every estimate without labels with its band, not only accuracy.
    est = run.performance.estimated
    estimates = frame(at, "estimates").set_index("metric")
    assert list(estimates.index) == ["accuracy", "f1", "precision", "recall", "roc_auc"]
    for name, value in est.metrics.items():
        assert estimates.loc[name, "estimated"] == pytest.approx(value)
        assert estimates.loc[name, "lower"] == pytest.approx(est.lower_bounds[name])
        assert estimates.loc[name, "upper"] == pytest.approx(est.upper_bounds[name])
    # The multivariate tab: the AUC, its threshold and what moved, as stored.
    section = run.multivariate
    assert metric(at, "Domain classifier AUC") == f"{section.auc:.3f}"
    assert metric(at, "AUC threshold") == "0.6"
    top = frame(at, "top_features")
    assert list(top["feature"]) == [f.feature for f in section.top_features]
    assert list(top["importance"]) == pytest.approx([f.importance for f in section.top_features])
    assert section.auc > 0.6 and top["feature"].iloc[0] == "annual_income"
    # Each model version of the window, and the pair compared.
    table = frame(at, "run_versions").set_index("version")
    for version in run.versions.versions:
        assert table.loc[version.version, "rows"] == version.rows
        assert table.loc[version.version, "accuracy"] == pytest.approx(version.accuracy)
    [pair] = run.versions.comparisons
    pairs = frame(at, "version_pairs")
    assert pairs["p_value"].tolist() == pytest.approx([pair.p_value])
    assert pairs["better"].tolist() == [pair.better or ""]


def test_deep_link_at_the_root_opens_the_run(demo_config: Path) -> None:
    _, engine = store(demo_config)
    target = window(engine, datetime(2026, 10, 5, tzinfo=UTC))
    at = open_page(model=MODEL, run=target.id)
    no_exception(at)
    assert [t.value for t in at.title] == [f"{MODEL}: run {target.id}"]
    assert metric(at, "Status") == "ok"
    # A clean window's multivariate tab: the classifier no better than chance, so no
    # feature named, and the page says why instead of an empty table.
    section = get_run(engine, target.id).run.multivariate
    assert section.auc_lower <= 0.5 and section.top_features == ()
    assert metric(at, "Domain classifier AUC") == f"{section.auc:.3f}"
    assert any(c.value.startswith("No feature is named") for c in at.caption)
    with pytest.raises(AssertionError, match="no top_features table"):
        frame(at, "top_features")


def test_deep_link_with_a_model_opens_the_model_page(demo_config: Path) -> None:
    at = open_page(model=MODEL)
    no_exception(at)
    assert [t.value for t in at.title] == [MODEL]


def test_a_run_that_does_not_exist_says_so(demo_config: Path) -> None:
    at = open_page("run", run=99999)
    no_exception(at)
    assert [e.value for e in at.error] == [
        "No run with id 99999 in the store (pruned, or another store?)."]


def test_an_unknown_model_says_so(demo_config: Path) -> None:
    at = open_page("model", model="nope")
    no_exception(at)
    assert len(at.error) == 1 and "Unknown model 'nope'" in at.error[0].value


def test_fallback_page_shows_the_flag_and_its_trail(demo_config: Path) -> None:
    cfg, engine = store(demo_config)
    at = open_page("fallback", model=MODEL)
    no_exception(at)
    flag = flag_document(engine, cfg, MODEL)
    assert metric(at, "Flag") == "ON" and flag["active"]
    assert metric(at, "Source") == flag["source"] == "auto"
    trail = frame(at, "events")
    assert list(trail["event"]) == [e.id for e in list_events(engine, MODEL)]
    assert "read-only" in " ".join(i.value for i in at.info).lower()
    assert not at.button  # no override form without a token


# --- a features-only model -------------------------------------------------------------------


@pytest.fixture
def features_only_config(tmp_path: Path, use_config):  # type: ignore[no-untyped-def]
    """A store holding a features-only model (contract task: features), one clean window
    then two drifted ones, checked; the dashboard pointed at it."""
    from monitor.run.check import backfill
    from monitor.store.db import ensure_schema
    from tests.conftest import FEATURES_T0, load_features_only

    engine = create_engine(f"sqlite:///{tmp_path / 'inputs.db'}")
    ensure_schema(engine)
    config, _ = load_features_only(engine, tmp_path, [False, True, True])
    runs = backfill(engine, load_config(config), FEATURES_MODEL, FEATURES_T0,
                    FEATURES_T0 + timedelta(days=3), now=FEATURES_T0 + timedelta(days=4))
    assert [r.status for r in runs] == ["ok", "critical", "critical"]
    engine.dispose()
    use_config(config)
    return config, runs


def test_pages_of_a_features_only_model(features_only_config) -> None:  # type: ignore[no-untyped-def]
    """Issue 13, item 11: every page and data read copes with a model without predictions:
    no accuracy anywhere, performance said not to apply."""
    from dashboards import data

    _, runs = features_only_config
    history = data.model_history(FEATURES_MODEL, None)
    assert history.task == "features"
    assert list(history.windows["status"]) == ["ok", "critical", "critical"]
    assert history.windows["accuracy"].isna().all()
    assert history.windows["share_drifted"].iloc[-1] == pytest.approx(
        runs[-1].drift.share_drifted)
    assert set(history.features["feature"]) == {f.feature for f in runs[-1].drift.features}
    view = data.run_view(runs[-1].run_id)
    assert view is not None and view.run == runs[-1]
    sample = data.feature_sample(view, "annual_income", "num")
    assert sample.sample_rows == sample.window_rows == 400
    assert data.overview().models.set_index("model").loc[FEATURES_MODEL, "status"] == \
        "critical"

    at = open_page()
    no_exception(at)
    row = frame(at, "models").set_index("model").loc[FEATURES_MODEL]
    assert row["status"] == "critical" and row["fallback"].startswith("ON")
    at = open_page("model", model=FEATURES_MODEL, days="all")
    no_exception(at)
    infos = " ".join(i.value for i in at.info)
    assert "Does not apply: the contract declares no prediction (task: features)" in infos
    # status, drift share, heat-map, schema, latency, errors: no accuracy, no coverage
    assert len(charts(at)) == 6
    at = open_page("run", run=runs[-1].run_id)
    no_exception(at)
    assert metric(at, "Status") == "critical"
    assert frame(at, "features").set_index("feature").loc["annual_income", "drifted"]
    infos = " ".join(i.value for i in at.info)
    assert "The performance check does not apply: the contract declares no prediction" \
        in infos


def test_pages_of_a_regressor_show_its_estimated_mae(tmp_path: Path, use_config) -> None:  # type: ignore[no-untyped-def]
    """A regressor's estimated MAE and RMSE (DLE): on the model page beside the realized
    ones over the windows (the shifted window has no labels, only the estimate), and on
    the run page with their bands."""
    from dashboards import data
    from monitor.store.db import ensure_schema
    from tests.regressor import MODEL as REGRESSOR
    from tests.regressor import checked_regressor

    engine = create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    ensure_schema(engine)
    _, _, runs = checked_regressor(engine, tmp_path)
    use_config(tmp_path / "monitor.yaml")
    windows = data.model_history(REGRESSOR, None).windows
    estimated = [r.performance.estimated for r in runs]
    assert list(windows["estimated_mae"]) == [e.estimated_mae for e in estimated]
    assert list(windows["estimated_mae_lower"]) == [e.lower_bound for e in estimated]
    assert list(windows["estimated_rmse_upper"]) == [e.upper_bounds["rmse"]
                                                     for e in estimated]
    assert windows["mae"].notna().tolist() == [True, False]  # day 2 has no labels yet

    at = open_page("model", model=REGRESSOR, days="all")
    no_exception(at)
    assert at.get("button_group")[0].value == "mae"  # the metric picker
    titles = [str(c.proto.spec) for c in charts(at)]
    assert any("mae: realized vs reference (dashed), estimated without labels" in t
               for t in titles)
    at = open_page("run", run=runs[-1].run_id)
    no_exception(at)
    shifted = estimated[-1]
    assert metric(at, "Estimated MAE") == f"{shifted.estimated_mae:.4g}"
    estimates = frame(at, "estimates").set_index("metric")
    assert list(estimates.index) == ["mae", "rmse"]
    assert estimates.loc["mae", "lower"] == pytest.approx(shifted.lower_bound)
    assert estimates.loc["rmse", "reference"] == pytest.approx(
        shifted.reference_metrics["rmse"])
    assert estimates["realized"].isna().all()


# --- overrides ----------------------------------------------------------------------------


def fill_override(at: AppTest, *, action: str, token: str, until: str = "") -> AppTest:
    at.radio(key="action").set_value(action)
    at.text_input(key="until").input(until)
    at.text_input(key="reason").input("bad release 1.4")
    at.text_input(key="by").input("alice")
    at.text_input(key="token").input(token)
    return at.button[0].click().run()  # the form's "Review"


def test_override_is_refused_without_the_token(demo_config: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, engine = store(demo_config)
    monkeypatch.setenv("MQM_API_TOKEN", "s3cret")
    before = list_events(engine, MODEL)
    at = open_page("fallback", model=MODEL)
    fill_override(at, action="Force off", token="wrong")
    no_exception(at)
    assert [e.value for e in at.error] == [
        "Refused: the API token is wrong. Nothing was changed."]
    assert not [b for b in at.button if b.key == "confirm"]
    assert list_events(engine, MODEL) == before
    assert flag_document(engine, cfg, MODEL)["source"] == "auto"


def test_override_is_applied_with_the_token_after_confirmation(
        demo_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, engine = store(demo_config)
    monkeypatch.setenv("MQM_API_TOKEN", "s3cret")
    at = open_page("fallback", model=MODEL)
    fill_override(at, action="Force off", token="s3cret", until="2h")
    no_exception(at)
    assert not at.error
    assert "force the flag of **loan_default** OFF until" in at.warning[0].value
    assert list_events(engine, MODEL)[0].kind == "auto"  # nothing yet: confirm first
    at.button(key="confirm").click().run()
    no_exception(at)
    assert at.success[0].value == "Done: the flag of loan_default is now off (manual)."
    event = list_events(engine, MODEL)[0]
    assert (event.kind, event.actor, event.reason, event.new_active) == (
        "manual", "alice", "bad release 1.4", False)
    doc = flag_document(engine, cfg, MODEL)
    assert (doc["active"], doc["source"]) == (False, "manual")
    assert doc["expires_at"] is not None
    assert metric(at, "Flag") == "off"
    assert frame(at, "events")["event"].iloc[0] == event.id  # the trail shows it at once
    assert at.text_input(key="token").value == ""  # the token is not left in the form

    fill_override(at, action="Clear the override", token="s3cret")
    at.button(key="confirm").click().run()
    no_exception(at)
    assert list_events(engine, MODEL)[0].details["action"] == "clear"
    assert flag_document(engine, cfg, MODEL)["source"] == "auto"


def test_override_can_be_cancelled(demo_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, engine = store(demo_config)
    monkeypatch.setenv("MQM_API_TOKEN", "s3cret")
    before = list_events(engine, MODEL)
    at = open_page("fallback", model=MODEL)
    fill_override(at, action="Force on", token="s3cret")
    at.button(key="cancel").click().run()
    no_exception(at)
    assert not at.warning and list_events(engine, MODEL) == before


def test_override_needs_who_and_why_and_a_future_expiry(
        demo_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MQM_API_TOKEN", "s3cret")
    at = open_page("fallback", model=MODEL)
    fill_override(at, action="Force on", token="s3cret", until="2020-01-01T00:00:00Z")
    assert "is not in the future" in at.error[0].value
    fill_override(at, action="Force on", token="s3cret", until="soon")
    assert at.error[0].value.startswith("Until: ")
    at.text_input(key="by").input("")
    at.text_input(key="until").input("")
    at.button[0].click().run()
    assert at.error[0].value == "Say who you are and why: both go into the audit trail."
    no_exception(at)


# --- an empty store, one without runs, one that cannot be reached --------------------------


def test_an_empty_store_explains_instead_of_failing(empty_config: Path) -> None:
    at = open_page()
    no_exception(at)
    assert not at.error
    text = " ".join(i.value for i in at.info)
    assert "No check runs yet" in text and "no logs and no check runs yet" in text
    for page in ("model", "run"):
        at = open_page(page, model=MODEL)
        no_exception(at)
        assert not at.error
        assert f"No check runs for {MODEL} yet" in at.info[0].value
    at = open_page("fallback", model=MODEL)
    no_exception(at)
    assert metric(at, "Flag") == "off"


def test_logs_without_runs_are_told_apart(logs_only_config: Path) -> None:
    at = open_page()
    no_exception(at)
    notes = frame(at, "models")["note"].tolist()
    assert notes == ["no check runs yet; logs from 2026-10-01 00:01 to 2026-10-14 23:59 UTC: "
                     "`mqm serve` checks them, or `mqm backfill`"]


@pytest.mark.parametrize("page", [None, "model", "run", "fallback"])
def test_an_unreachable_store_is_one_clear_error(unreachable_config: Path,
                                                 page: str | None) -> None:
    at = open_page(page, model=MODEL)
    no_exception(at)
    assert len(at.error) == 1, [e.value for e in at.error]
    message = at.error[0].value
    assert message.startswith("cannot reach the database at postgresql+psycopg://mqm@127.0.0.1:")
    assert "Traceback" not in message


def test_a_missing_config_is_one_clear_error(tmp_path: Path, use_config) -> None:  # type: ignore[no-untyped-def]
    use_config(tmp_path / "nowhere.yaml")
    at = open_page()
    no_exception(at)
    assert len(at.error) == 1 and "nowhere.yaml" in at.error[0].value


# --- the report -------------------------------------------------------------------------------


@pytest.mark.slow
def test_report_button_offers_the_evidently_report(demo_config: Path) -> None:
    _, engine = store(demo_config)
    target = window(engine, datetime(2026, 10, 12, tzinfo=UTC))
    at = open_page("run", run=target.id)
    at.button(key="build_report").click().run(timeout=300)
    no_exception(at)
    assert not at.error
    assert at.get("download_button"), "no download button after building the report"


# --- PostgreSQL ----------------------------------------------------------------------------


@pytest.mark.postgres
def test_pages_on_postgresql(pg_url: str, tmp_path: Path, use_config) -> None:  # type: ignore[no-untyped-def]
    from monitor.fallback.flag import set_override
    from monitor.store.db import ensure_schema
    from tests.dashboards.conftest import write_config
    from tests.dashboards.test_history import T0, check_run
    from tests.dashboards.test_history import store as save

    config = use_config(write_config(tmp_path, pg_url))
    cfg, engine = store(config)
    ensure_schema(engine)
    ids = [save(engine, check_run(MODEL, T0 + timedelta(days=d + 1),
                                  "critical" if d >= 3 else "ok",
                                  scores={"age": 0.02 * d, "credit_score": 0.05 * d}))
           for d in range(5)]
    set_override(engine, cfg, MODEL, active=True, by="alice", reason="drill")

    at = open_page()
    no_exception(at)
    row = frame(at, "models").set_index("model").loc[MODEL]
    assert (row["status"], row["fallback"], row["run_id"]) == ("critical", "ON", ids[-1])
    at = open_page("model", model=MODEL, days="all")
    no_exception(at)
    table = frame(at, "windows")
    assert list(table["status"]) == ["critical", "critical", "ok", "ok", "ok"]
    assert len(charts(at)) == 8
    at = open_page("run", run=ids[3])
    no_exception(at)
    features = frame(at, "features").set_index("feature")
    assert features.loc["credit_score", "score"] == pytest.approx(0.15)
    at = open_page("fallback", model=MODEL)
    no_exception(at)
    assert metric(at, "Source") == "manual"
    assert frame(at, "events")["who"].iloc[0] == "alice"
    engine.dispose()

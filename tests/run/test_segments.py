"""Segments: each run's checks per segment value, judged against the reference rows of
the same segment; bounded, severity-capped, stored and exported."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.stats import wasserstein_distance

from monitor.checks.drift import ReferenceProfile, check_drift
from monitor.checks.segments import SegmentLabels
from monitor.config import ModelConfig
from monitor.errors import ConfigError
from monitor.results import CheckRun, DriftResult, ErrorSection, SegmentsResult
from monitor.run.evaluate import evaluate_window
from monitor.run.model import ResolvedModel
from monitor.run.reference import drift_columns
from monitor.schema import load_schema
from monitor.store.sources import LogWindow

START = datetime(2026, 10, 1, tzinfo=UTC)
END = START + timedelta(days=1)
NOW = END + timedelta(days=30)
GROUPS = ("a", "b", "c")


def _rows(rng: np.random.Generator, counts: dict[str, int], shift: dict[str, float]
          ) -> pd.DataFrame:
    """Rows per group; ``shift`` moves x and y of a group by that many standard deviations."""
    parts = []
    for group, n in counts.items():
        move = shift.get(group, 0.0)
        x = rng.normal(50 + 10 * move, 10, n)
        y = rng.normal(5 + 2 * move, 2, n)
        proba = rng.uniform(0.05, 0.95, n).round(6)
        parts.append(pd.DataFrame({
            "x": x, "y": y, "group": group,
            "prediction": (proba >= 0.5).astype(int), "proba_1": proba,
            "proba_0": (1 - proba).round(6),
            "target": (rng.random(n) < proba).astype(int)}))
    return pd.concat(parts, ignore_index=True).sample(frac=1.0, random_state=3,
                                                      ignore_index=True)


@pytest.fixture
def model_files(tmp_path: Path) -> tuple[Path, Path]:
    schema = tmp_path / "seg.yaml"
    schema.write_text(yaml.safe_dump({
        "model": "seg", "task": "classification",
        "features": [{"name": "x", "type": "float"}, {"name": "y", "type": "float"},
                     {"name": "group", "type": "category"}],
        "prediction": {"column": "prediction", "type": "int", "classes": [0, 1],
                       "probability_columns": {"0": "proba_0", "1": "proba_1"}},
        "target": {"column": "target", "type": "int"}}))
    reference = tmp_path / "reference.parquet"
    _rows(np.random.default_rng(1), dict.fromkeys(GROUPS, 2000), {}).to_parquet(reference)
    return schema, reference


class _Memory:
    """A window held in memory (a ``LogSource``)."""

    def __init__(self, window: LogWindow) -> None:
        self.window = window

    def read_window(self, start: datetime, end: datetime) -> LogWindow:
        return self.window

    def count(self, start: datetime, end: datetime) -> int:
        return self.window.rows

    def iter_chunks(self, start: datetime, end: datetime, chunk_rows: int
                    ) -> Iterator[LogWindow]:
        w = self.window
        for lo in range(0, w.rows, chunk_rows):
            part = slice(lo, lo + chunk_rows)
            yield LogWindow(START, END, w.meta.iloc[part].reset_index(drop=True),
                            w.features.iloc[part].reset_index(drop=True),
                            w.probabilities.iloc[part].reset_index(drop=True),
                            w.labels.iloc[part].reset_index(drop=True))

    def time_range(self) -> tuple[datetime | None, datetime | None]:
        return START, END


def _window(frame: pd.DataFrame, versions: list[str] | None = None) -> LogWindow:
    n = len(frame)
    meta = pd.DataFrame({
        "request_id": [f"r{i}" for i in range(n)],
        "ts": [START + timedelta(seconds=i) for i in range(n)],
        "model_version": versions or ["1.0"] * n,
        "prediction": frame["prediction"].astype(object),
        "latency_ms": 20.0, "error": False, "error_message": None, "label_time": pd.NaT})
    return LogWindow(START, END, meta, frame[["x", "y", "group"]].astype(
        {"x": object, "group": object}),
        pd.DataFrame({"0": frame["proba_0"], "1": frame["proba_1"]}),
        frame["target"].astype(object))


def _model(files: tuple[Path, Path], window: LogWindow, **segments: Any) -> ResolvedModel:
    schema, reference = files
    cfg = ModelConfig.model_validate({
        "schema": str(schema), "reference": str(reference), "min_rows": 100,
        "segments": {"columns": ["group"], "min_rows": 200, "min_reference_rows": 200,
                     **segments}})
    return ResolvedModel("seg", cfg, load_schema(schema), _Memory(window))


def _run(files: tuple[Path, Path], frame: pd.DataFrame, **segments: Any) -> CheckRun:
    model = _model(files, _window(frame), **segments)
    return evaluate_window(model, start=START, end=END, now=NOW)


def _drifting_b(seed: int = 5, **counts: int) -> pd.DataFrame:
    """Segment b moved a fifth of a standard deviation in x and y; a and c as in the
    reference (and by default as many rows of each as in it)."""
    sizes = {"a": 1000, "b": 1000, "c": 1000} | counts
    return _rows(np.random.default_rng(seed), sizes, {"b": 0.2})


def _segments(run: CheckRun) -> SegmentsResult:
    assert isinstance(run.segments, SegmentsResult), run.segments
    return run.segments


def test_a_segment_drifts_while_the_whole_window_does_not(model_files) -> None:
    run = _run(model_files, _drifting_b())
    assert isinstance(run.drift, DriftResult)
    assert not any(f.drifted for f in run.drift.features), run.drift.reasons
    segs = _segments(run)
    b = segs.segment("group", "b")
    assert isinstance(b.drift, DriftResult) and b.drift.dataset_drift
    assert {f.feature for f in b.drift.features if f.drifted} == {"x", "y"}
    assert b.status == "critical"
    for other in ("a", "c"):
        assert segs.segment("group", other).status == "ok"
    # Capped at the default severity, warn; the reasons name the segment.
    assert segs.status == "warn" and run.status == "warn"
    assert any(r.startswith("segments: group=b: drift: 2 of 4 columns drifted")
               for r in run.reasons), run.reasons
    assert not any("group=a" in r for r in run.reasons)


def test_without_the_shift_no_segment_drifts(model_files) -> None:
    run = _run(model_files, _rows(np.random.default_rng(5), dict.fromkeys(GROUPS, 1000), {}))
    assert run.status == "ok", run.reasons
    assert all(seg.status == "ok" for seg in _segments(run).segments)


def test_segment_drift_is_check_drift_on_its_rows_against_its_reference_rows(
        model_files) -> None:
    # d: a value the reference lacks, so its segment falls back to the whole reference.
    frame = pd.concat([_drifting_b(), _rows(np.random.default_rng(9), {"d": 300}, {})],
                      ignore_index=True)
    run = _run(model_files, frame)
    schema = load_schema(model_files[0])
    kinds = drift_columns(schema)
    reference = pd.read_parquet(model_files[1])
    cfg = _model(model_files, _window(frame)).config
    drift_frame = frame[[c for c in kinds]].astype({"prediction": object})
    whole = ReferenceProfile.build(reference[list(kinds)], kinds)
    for value in ("a", "b", "c", "d"):
        seg = _segments(run).segment("group", value)
        rows = drift_frame[frame["group"] == value].reset_index(drop=True)
        if value == "d":
            assert seg.reference == "whole" and seg.reference_rows == 6000
            assert seg.reference_note is not None and "0 reference rows" in seg.reference_note
            profile = whole
        else:
            assert seg.reference == "segment" and seg.reference_rows == 2000
            assert seg.reference_note is None
            profile = ReferenceProfile.build(
                reference.loc[reference["group"] == value, list(kinds)], kinds)
        expected = check_drift(profile, rows, config=cfg.drift, prediction="prediction")
        assert isinstance(seg.drift, DriftResult)
        assert seg.drift.as_dict() == expected.as_dict(), value
        assert seg.rows == len(rows)
    # And the score itself, independently: Evidently's normed Wasserstein (2000
    # reference rows > 1000) is scipy's distance over the reference's std.
    b = _segments(run).segment("group", "b")
    ref_x = reference.loc[reference["group"] == "b", "x"].to_numpy()
    cur_x = frame.loc[frame["group"] == "b", "x"].to_numpy()
    score = b.drift.feature("x").score  # type: ignore[union-attr]
    assert b.drift.feature("x").method == "wasserstein"  # type: ignore[union-attr]
    assert score == pytest.approx(wasserstein_distance(ref_x, cur_x) / np.std(ref_x),
                                  rel=1e-9)


def test_segment_schema_counts_equal_a_check_of_its_rows_alone(model_files) -> None:
    from monitor.checks.schema_check import check_schema

    frame = _drifting_b()
    frame = frame.astype({"x": object})
    frame.loc[frame.index[:40], "x"] = "N/A"  # a type mismatch, in whatever groups
    window = _window(frame)
    model = _model(model_files, window)
    # Read in chunks too: the counts per segment add up across them.
    chunked = ModelConfig.model_validate(
        model.config.model_dump(by_alias=True) | {"drift": {"max_exact_rows": 1000}})
    for resolved in (model, ResolvedModel("seg", chunked, model.schema, model.source)):
        run = evaluate_window(resolved, start=START, end=END, now=NOW)
        for value in GROUPS:
            seg = _segments(run).segment("group", value)
            keep = (frame["group"] == value).to_numpy()
            alone = check_schema(window.features[keep], window.meta["prediction"][keep],
                                 model.schema, config=model.config.schema_check)
            assert seg.schema is not None and not isinstance(seg.schema, ErrorSection)
            assert seg.schema.violating_rows == alone.violating_rows > 0
            assert seg.schema.as_dict() | {"columns": None} == alone.as_dict() | {
                "columns": None}
            assert [c.type_mismatch_rate for c in seg.schema.columns] == [
                c.type_mismatch_rate for c in alone.columns]


def test_values_beyond_max_values_fold_into_other() -> None:
    labels = SegmentLabels("city")
    first = labels.add(pd.Series(["p"] * 50 + ["q"] * 40 + ["r"] * 30))
    second = labels.add(pd.Series(["s"] * 20 + ["t"] * 10 + [None] * 5 + ["u"] * 10))
    part = labels.segmentation(np.concatenate([first, second]), max_values=3)
    assert part.names == ("p", "q", "r", "__other__")
    assert part.rows == (50, 40, 30, 45)
    assert part.covers[-1] == frozenset({"s", "t", "u", "__null__"}) and part.folded == 4
    assert np.bincount(part.codes).tolist() == [50, 40, 30, 45]
    # Ties go by label, so that the same window always gives the same segments.
    tied = SegmentLabels("city")
    ids = tied.add(pd.Series(["z", "y", "x", "x"]))
    assert tied.segmentation(ids, max_values=2).names == ("x", "y", "__other__")


def test_max_values_bounds_the_segments_of_a_run(model_files) -> None:
    frame = _drifting_b(a=1300, b=450, c=1250)
    run = _run(model_files, frame, max_values=2)
    segs = _segments(run)
    assert [s.value for s in segs.segments] == ["a", "c", "__other__"]
    other = segs.segment("group", "__other__")
    assert other.rows == 450 and segs.folded == {"group": 1}
    assert segs.segment("group", "a").rows == 1300
    # __other__ is compared with the reference rows of the values it covers.
    assert other.reference == "segment" and other.reference_rows == 2000


def test_a_segment_below_min_rows_is_insufficient_data(model_files) -> None:
    run = _run(model_files, _drifting_b(b=150))
    b = _segments(run).segment("group", "b")
    assert b.status == "insufficient_data" and b.rows == 150
    assert b.drift is None and b.schema is None and b.performance is None
    assert b.reasons == ("150 rows < segments.min_rows 200",)
    assert run.status == "ok", run.reasons


@pytest.mark.parametrize(("severity", "section", "status"), [
    ("none", "ok", "ok"), ("warn", "warn", "warn"), ("critical", "critical", "critical")])
def test_severity_caps_what_a_segment_does_to_the_run(model_files, severity: str,
                                                     section: str, status: str) -> None:
    run = _run(model_files, _drifting_b(), severity=severity)
    segs = _segments(run)
    assert segs.segment("group", "b").status == "critical"
    assert (segs.status, run.status) == (section, status)
    named = any(r.startswith("segments: group=b") for r in run.reasons)
    assert named == (severity != "none")
    # Informing only, the section still says why.
    assert any(r.startswith("group=b: drift:") for r in segs.reasons)


def test_model_version_segments_use_the_whole_reference(model_files) -> None:
    frame = _drifting_b()
    versions = ["1.4.0"] * 2000 + ["1.5.0"] * (len(frame) - 2000)  # 1,000 rows
    model = _model(model_files, _window(frame, versions), columns=["group", "model_version"])
    run = evaluate_window(model, start=START, end=END, now=NOW)
    segs = _segments(run)
    assert [s.key for s in segs.segments if s.column == "model_version"] == [
        "model_version=1.4.0", "model_version=1.5.0"]
    new = segs.segment("model_version", "1.5.0")
    assert new.rows == 1000 and new.reference == "whole"
    assert new.reference_note is not None and "no model_version column" in new.reference_note


def test_bad_segment_columns_are_refused_by_name(model_files) -> None:
    cfg = _model(model_files, _window(_drifting_b())).config.segments
    types = {"x": "float", "group": "category"}
    with pytest.raises(ConfigError, match=r"segments.columns: 'nope' is not a feature"):
        cfg.model_copy(update={"columns": ("nope",)}).check_columns(types, "seg.yaml")
    with pytest.raises(ConfigError, match=r"'x' is a feature of type float; a segment "
                       "column must be categorical"):
        cfg.model_copy(update={"columns": ("x",)}).check_columns(types, "seg.yaml")
    with pytest.raises(ValueError, match="more than once: group"):
        ModelConfig.model_validate({"schema": "s.yaml", "reference": "r.parquet",
                                    "segments": {"columns": ["group", "group"]}})
    # In a run: the segments section fails alone, naming the field; the rest is judged.
    run = _run(model_files, _drifting_b(), columns=["x"])
    assert isinstance(run.segments, ErrorSection)
    assert "segments.columns: 'x' is a feature of type float" in run.segments.error
    assert isinstance(run.drift, DriftResult) and run.status == "error"


def test_a_run_with_segments_round_trips_through_its_document(model_files) -> None:
    run = _run(model_files, _drifting_b())
    back = CheckRun.from_dict(run.as_dict())
    assert back.as_dict() == run.as_dict()
    assert isinstance(back.segments, SegmentsResult)
    assert back.segments.segment("group", "b").drift == run.segments.segment(  # type: ignore[union-attr]
        "group", "b").drift


def test_segment_figures_are_keyed_by_segment(model_files) -> None:
    run = _run(model_files, _drifting_b())
    figures = {(m.check, m.metric, m.feature): m.value for m in run.metrics()}
    b = _segments(run).segment("group", "b")
    assert figures[("segments", "share_drifted", "group=b")] == b.drift.share_drifted  # type: ignore[union-attr]
    assert figures[("segments", "status_level", "group=b")] == 2.0
    assert figures[("segments", "rows", "group=a")] == 1000
    assert ("segments", "accuracy", "group=c") in figures


def test_segments_round_trip_through_the_store(engine, model_files) -> None:
    from monitor.store.runs import latest_runs, run_metrics_of
    from tests.serve.conftest import save_check_run

    run = _run(model_files, _drifting_b())
    run_id = save_check_run(engine, run)
    (record,) = latest_runs(engine, "seg", kind="check")
    back = record.run
    assert back is not None and back.run_id == run_id
    assert back.segments == run.segments
    assert back.status == "warn" and back.reasons == run.reasons
    stored = {(m.check, m.metric, m.feature): m.value for m in run_metrics_of(engine, run_id)}
    b = _segments(run).segment("group", "b")
    assert stored[("segments", "share_drifted", "group=b")] == b.drift.share_drifted  # type: ignore[union-attr]
    assert stored[("segments", "rows", "group=c")] == 1000


def test_segment_metrics_are_bounded_and_the_rest_counted(engine, model_files) -> None:
    from monitor.config import Config
    from monitor.serve.metrics import build_registry
    from tests.serve.conftest import save_check_run

    run = _run(model_files, _drifting_b(), columns=["group", "model_version"])
    assert [s.key for s in _segments(run).segments] == [
        "group=a", "group=b", "group=c", "model_version=1.0"]
    save_check_run(engine, run)
    schema, reference = model_files

    def scrape(limit: int) -> Any:
        cfg = Config.model_validate({
            "database_url": engine.url.render_as_string(hide_password=False),
            "serve": {"max_segment_labels": limit},
            "models": {"seg": {"schema": str(schema), "reference": str(reference)}}})
        return build_registry(engine, cfg)

    registry = scrape(2)
    segments = {s.labels["segment"] for fam in registry.collect() for s in fam.samples
                if "segment" in s.labels}
    assert segments == {"group=a", "group=b"}
    assert registry.get_sample_value("mqm_segment_labels_dropped", {"model": "seg"}) == 2
    labels = {"model": "seg", "version": "", "segment": "group=b"}  # no logs stored
    assert registry.get_sample_value("mqm_segment_status",
                                     labels | {"status": "critical"}) == 1
    assert registry.get_sample_value("mqm_segment_status", labels | {"status": "ok"}) == 0
    b = _segments(run).segment("group", "b")
    assert registry.get_sample_value("mqm_segment_drifted_features_ratio",
                                     labels) == b.drift.share_drifted  # type: ignore[union-attr]
    assert registry.get_sample_value("mqm_segment_rows_checked", labels) == 1000
    assert registry.get_sample_value("mqm_check_status", {
        "model": "seg", "version": "", "check": "segments", "status": "warn"}) == 1
    everything = scrape(100)
    assert everything.get_sample_value("mqm_segment_labels_dropped", {"model": "seg"}) == 0
    assert everything.get_sample_value("mqm_segment_rows_checked", {
        "model": "seg", "version": "", "segment": "model_version=1.0"}) == 3000


def test_a_segment_above_max_rows_is_checked_on_a_seeded_sample(model_files) -> None:
    frame = _drifting_b(a=1500)
    first = _run(model_files, frame, max_rows=1000)
    a = _segments(first).segment("group", "a")
    assert (a.rows, a.sample_rows) == (1500, 1000)
    assert isinstance(a.drift, DriftResult) and a.drift.rows_current == 1000
    assert a.performance.rows == 1000  # type: ignore[union-attr]
    # The schema counts stay those of every row; smaller segments are read whole.
    assert a.schema.rows == 1500  # type: ignore[union-attr]
    assert _segments(first).segment("group", "b").sample_rows is None
    # Seeded by the window: a rerun draws the same rows, so the same figures.
    again = _run(model_files, frame, max_rows=1000)
    assert _segments(again).segment("group", "a").as_dict() == a.as_dict()
    exact = _segments(_run(model_files, frame, max_rows=None)).segment("group", "a")
    assert exact.sample_rows is None and exact.drift.rows_current == 1500  # type: ignore[union-attr]

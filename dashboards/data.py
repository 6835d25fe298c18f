"""Every read the dashboard makes, cached for a few seconds (``st.cache_data``).

The pages call only these. Each goes through mqm's store API (``monitor.store.history``,
``runs``, ``flags``, ``monitor.fallback.flag``) and hands back small frames or typed
rows, never raw logs except the bounded sample of one window. A store that cannot be
read raises ``DatabaseError``; the app shows it as one error.
"""

from __future__ import annotations

import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from dashboards import frames
from monitor.config import Config, ModelConfig, config_path, load_config
from monitor.errors import MonitorError
from monitor.fallback.flag import clear_override, flag_document, set_override
from monitor.results import CheckRun, NotApplicable, PerformanceResult
from monitor.run.model import resolve
from monitor.run.reference_file import read_reference
from monitor.store import history
from monitor.store.db import Engine, create_engine, ensure_schema, safe_url
from monitor.store.runs import get_run
from monitor.store.versions import version_windows

__all__ = [
    "RECENT",
    "TTL",
    "FeatureSample",
    "ModelHistory",
    "Overview",
    "RunView",
    "Store",
    "VersionsView",
    "apply_override",
    "build_report",
    "clear",
    "feature_sample",
    "flag_view",
    "model_history",
    "model_versions",
    "overview",
    "run_view",
    "store",
]

TTL = 15  # seconds a read is reused: a check run shows within that long
RECENT = 14  # windows in the overview's strip
HEATMAP_COLUMNS = 120  # more windows than this are grouped into buckets in the heat-map
SAMPLE_ROWS = 5_000  # rows of a window (and of the reference) a distribution plot reads


@dataclass(frozen=True)
class Store:
    """The config and an engine on its store. ``key`` names both for cache keys."""

    config: Config
    engine: Engine
    key: str

    @property
    def url(self) -> str:
        return safe_url(self.config.database_url)

    @property
    def reader(self) -> Config:
        """The config for reads: flag documents read here never write flag files (that
        is the service's job; the dashboard's container may not even have the folder)."""
        return self.config.model_copy(update={"fallback_dir": None})


@st.cache_resource(show_spinner=False)
def _open(path: str, mtime_ns: int, url_override: str | None) -> Store:
    config = load_config(path)
    engine = create_engine(config.database_url)
    ensure_schema(engine)  # a clear error for a store of another mqm version
    return Store(config=config, engine=engine,
                 key=f"{path}:{mtime_ns}:{safe_url(config.database_url)}")


def store() -> Store:
    """The store of ``$MQM_CONFIG`` (else ./monitor.yaml); opened again when the file
    or ``MQM_DATABASE_URL`` changes. Raises ``MonitorError`` (config or store)."""
    path = config_path().resolve()
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        mtime = 0  # load_config names the missing file
    return _open(str(path), mtime, os.environ.get("MQM_DATABASE_URL"))


def clear() -> None:
    """Forget every cached read (after a write)."""
    st.cache_data.clear()


# --- overview ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Overview:
    """``models``: one row per configured model, worst first; ``strip``: their recent
    windows (``slot`` 1 is the oldest shown)."""

    models: pd.DataFrame
    strip: pd.DataFrame


def overview() -> Overview:
    s = store()
    return _overview(s, s.key)


def _no_runs_note(s: Store, model: str) -> str:
    try:
        first, last = resolve(s.engine, s.config, model).source.time_range()
    except MonitorError as exc:
        return f"no check runs; its logs cannot be read: {exc}"
    if first is None or last is None:
        return "no logs and no check runs yet: load logs (`mqm ingest`, InferenceLogger)"
    return (f"no check runs yet; logs from {first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M} "
            "UTC: `mqm serve` checks them, or `mqm backfill`")


@st.cache_data(ttl=TTL, show_spinner=False)
def _overview(_s: Store, key: str) -> Overview:
    names = list(_s.config.models)
    engine = _s.engine
    with history.reading(engine):
        recent = history.recent_windows(engine, names, per_model=RECENT)
        successes = history.last_successes(engine, names)
        flags = {m: flag_document(engine, _s.reader, m) for m in names}
        figures = history.figures_of(
            engine, [r.id for runs in recent.values() for r in runs],
            metrics=[metric for _, metric in frames.OVERVIEW_FIGURES], per_feature=False)
    notes = {m: _no_runs_note(_s, m) for m in names if m not in recent}
    table, strip = frames.overview_frames(names, recent, successes, flags, figures, notes,
                                          slots=RECENT)
    return Overview(models=table, strip=strip)


# --- one model over a time range ------------------------------------------------------------


@dataclass(frozen=True)
class ModelHistory:
    """A model over (since, until]: ``windows`` one row per window (``frames.window_table``),
    ``features`` the drift heat-map's cells (feature x bucket of at most
    ``HEATMAP_COLUMNS`` consecutive windows, ``frames.feature_cells``), ``violators`` (the
    columns violating the contract most), ``flags`` (flag changes on the time axis)."""

    model: str
    since: datetime | None
    until: datetime | None
    windows: pd.DataFrame
    features: pd.DataFrame
    violators: pd.DataFrame
    flags: pd.DataFrame
    # classification, regression, or features (features-only: no performance figures)
    task: str = "classification"
    newest_end: datetime | None = None
    # The segment strip's cells (``frames.segment_cells``); empty without segments.
    segments: pd.DataFrame | None = None


def model_history(model: str, days: int | None) -> ModelHistory:
    """The model's windows ending within ``days`` (None: all) of its newest window."""
    s = store()
    s.config.model(model)  # UnknownModelError before any query
    return _model_history(s, s.key, model, days)


@st.cache_data(ttl=TTL, show_spinner=False)
def _model_history(_s: Store, key: str, model: str, days: int | None) -> ModelHistory:
    engine = _s.engine
    with history.reading(engine):
        newest = history.recent_windows(engine, [model], per_model=1).get(model, [])
    if not newest:
        return ModelHistory(model=model, since=None, until=None,
                            windows=frames.window_table([], [], {}),
                            features=frames.feature_cells([], [], [], {}),
                            violators=_violators([]), flags=frames.flag_marks([], None, None))
    until = newest[0].window_end
    since = until - timedelta(days=days) if days else None
    # Independent reads run side by side, each on a connection of its own: the database
    # does the work (SQLite and the driver release the GIL), so a page waits for the
    # longest read, not for their sum.
    with history.reading(engine), ThreadPoolExecutor(max_workers=4) as pool:
        runs_f = pool.submit(history.window_runs, engine, model, since=since, until=until)
        whole_f = pool.submit(history.window_table, engine, model, frames.WINDOW_FIGURES,
                              since=since, until=until)
        totals_f = pool.submit(history.feature_totals, engine, model, "schema",
                               "violation_rate", since=since, until=until, limit=5)
        events_f = pool.submit(history.recent_events, engine, model, limit=500)
        runs = runs_f.result()
        # The heat-map: scores summed up in SQL per bucket of consecutive windows; the
        # null-rate change and unseen share of each bucket's newest window.
        bounds = frames.bucket_bounds(runs, HEATMAP_COLUMNS)
        run_ending = {r.window_end: r.id for r in runs}
        settings_f = pool.submit(history.run_settings, engine, runs)
        scores_f = pool.submit(history.feature_buckets, engine, model, bounds, since=since,
                               metrics=["score"])
        segments_f = pool.submit(history.feature_buckets, engine, model, bounds, since=since,
                                 check="segments", metrics=["status_level"])
        newest_f = pool.submit(history.figures_of, engine, [run_ending[b] for b in bounds],
                               checks=["drift"], metrics=["null_rate_change", "unseen_share"],
                               per_feature=True)
        settings = settings_f.result()
        whole, scores, newest_figures = whole_f.result(), scores_f.result(), newest_f.result()
        totals, events = totals_f.result(), events_f.result()
        segment_levels = segments_f.result()
    first = runs[0].window_start if runs else None
    task = "classification"
    for typed in settings.values():
        perf = typed.section("performance")
        if isinstance(perf, PerformanceResult):
            task = perf.task
        elif isinstance(typed.performance, NotApplicable):
            task = "features"  # no prediction: performance does not apply
    return ModelHistory(
        model=model, since=since if since is not None else first, until=until,
        windows=frames.window_table(runs, whole, settings),
        features=frames.feature_cells(runs, scores, bounds, settings, newest_figures),
        violators=_violators(totals),
        flags=frames.flag_marks(events, first, until),
        task=task, newest_end=until,
        segments=frames.segment_cells(runs, segment_levels, bounds),
    )


@dataclass(frozen=True)
class VersionsView:
    """A model's versions over (since, until]: each version's figures per window
    (``frames.version_windows``), one row per version, and the verdict: which recent
    version is best on the evidence (``monitor.rollback.verdict``)."""

    windows: pd.DataFrame
    table: pd.DataFrame
    best: str | None
    text: str
    p_value: float | None


def model_versions(model: str, since: datetime | None) -> VersionsView:
    """The model's versions in its windows ending after ``since`` (None: all)."""
    s = store()
    s.config.model(model)
    return _model_versions(s, s.key, model, since)


@st.cache_data(ttl=TTL, show_spinner=False)
def _model_versions(_s: Store, key: str, model: str, since: datetime | None) -> VersionsView:
    from monitor.rollback import verdict

    rows = version_windows(_s.engine, model, since=since)
    found = verdict(rows)
    return VersionsView(windows=frames.version_windows(rows),
                        table=frames.version_table(found.versions), best=found.best,
                        text=found.text, p_value=found.p_value)


def _violators(totals: list[history.FeatureTotal]) -> pd.DataFrame:
    return pd.DataFrame(
        [(t.feature, t.max, t.mean, t.nonzero_windows, t.windows) for t in totals
         if t.max and t.max > 0],
        columns=["column", "max_rate", "mean_rate", "windows_violating", "windows"])


# --- one run ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunView:
    """One stored run: its row's fields and the typed run (None: a schema-only run)."""

    id: int
    model: str
    kind: str
    window_start: datetime
    window_end: datetime
    status: str
    started_at: datetime
    finished_at: datetime
    run: CheckRun | None
    summary: dict[str, Any]


def run_view(run_id: int) -> RunView | None:
    s = store()
    return _run_view(s, s.key, run_id)


@st.cache_data(ttl=TTL, show_spinner=False)
def _run_view(_s: Store, key: str, run_id: int) -> RunView | None:
    with history.reading(_s.engine):
        record = get_run(_s.engine, run_id)
    if record is None:
        return None
    return RunView(id=record.id, model=record.model, kind=record.kind,
                   window_start=record.window_start, window_end=record.window_end,
                   status=record.status, started_at=record.started_at,
                   finished_at=record.finished_at, run=record.run, summary=record.summary)


@dataclass(frozen=True)
class FeatureSample:
    """Shares of one column in the reference and in a bounded sample of the window."""

    binned: pd.DataFrame
    kind: str
    window_rows: int
    sample_rows: int
    reference_rows: int


def feature_sample(run: RunView, feature: str, kind: str) -> FeatureSample:
    s = store()
    return _feature_sample(s, s.key, run.model, run.id, run.window_start, run.window_end,
                           feature, kind)


@st.cache_data(ttl=300, show_spinner=False)
def _feature_sample(_s: Store, key: str, model: str, run_id: int, start: datetime,
                    end: datetime, feature: str, kind: str) -> FeatureSample:
    resolved = resolve(_s.engine, _s.config, model)
    prediction = resolved.schema.prediction_column
    with history.reading(_s.engine):
        sample = history.window_sample(resolved.source, start, end, columns=[feature],
                                       prediction=prediction, rows=SAMPLE_ROWS, seed=run_id)
    reference = _reference(str(resolved.config.reference), _mtime(resolved.config))
    ref_values = (reference[feature] if feature in reference
                  else pd.Series([], dtype=object))
    binned = frames.binned_distribution(ref_values, sample.frame[feature], kind)
    return FeatureSample(binned=binned, kind=kind, window_rows=sample.window_rows,
                         sample_rows=len(sample.frame), reference_rows=len(ref_values))


def _mtime(model_cfg: ModelConfig) -> int:
    try:
        return Path(model_cfg.reference).stat().st_mtime_ns
    except OSError:
        return 0


@st.cache_resource(show_spinner=False, max_entries=8)
def _reference(path: str, mtime_ns: int) -> pd.DataFrame:
    """A bounded sample of the reference set (read once per file version)."""
    frame = read_reference(path)
    if len(frame) > SAMPLE_ROWS:
        frame = frame.sample(n=SAMPLE_ROWS, random_state=0).reset_index(drop=True)
    return frame


# --- the flag -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlagView:
    document: dict[str, Any]
    events: pd.DataFrame


def flag_view(model: str) -> FlagView:
    s = store()
    s.config.model(model)
    return _flag_view(s, s.key, model)


@st.cache_data(ttl=TTL, show_spinner=False)
def _flag_view(_s: Store, key: str, model: str) -> FlagView:
    with history.reading(_s.engine):
        doc = flag_document(_s.engine, _s.reader, model)
        events = history.recent_events(_s.engine, model, limit=100)
    frame = pd.DataFrame(
        [(e.at, e.kind, "on" if e.old_active else "off", "on" if e.new_active else "off",
          e.actor or "", e.reason or "", e.id) for e in events],
        columns=["at", "kind", "from", "to", "who", "reason", "event"])
    frame["at"] = pd.to_datetime(frame["at"], utc=True)
    return FlagView(document=doc, events=frame)


# --- writes: the report and the override ------------------------------------------------


def build_report(run_id: int) -> bytes:
    """The Evidently HTML report of a stored run's window (``mqm report``), as bytes."""
    from monitor.run.report import write_report

    s = store()
    with tempfile.TemporaryDirectory(prefix="mqm-report-") as folder:
        path = Path(folder) / "report.html"
        with history.reading(s.engine):
            write_report(s.engine, s.reader, run_id, path)
        return path.read_bytes()


def apply_override(model: str, *, action: str, by: str, reason: str,
                   until: datetime | None) -> dict[str, Any]:
    """Force the flag on (``action`` "on") or off ("off"), or clear the override
    ("clear"), through the code path of ``mqm fallback set/clear`` (the config as loaded,
    so the flag file is written where the service writes it); return the new document."""
    s = store()
    with history.reading(s.engine):
        if action == "clear":
            doc = clear_override(s.engine, s.config, model, by=by, reason=reason)
        else:
            doc = set_override(s.engine, s.config, model, active=action == "on", by=by,
                               reason=reason, until=until)
    clear()
    return doc

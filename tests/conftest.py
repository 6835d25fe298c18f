"""Shared fixtures: a fresh store on every backend, sample config, and data factories.

PostgreSQL tests read a server URL from ``MQM_TEST_POSTGRES_URL`` (any database on
the server; each test gets a database of its own, dropped afterwards). Without it
they skip with a message, unless ``MQM_REQUIRE_POSTGRES=1`` (set by ``.ci/run``)
turns the skip into a failure.
"""

from __future__ import annotations

import csv
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from monitor.store.logs import make_record

if TYPE_CHECKING:
    from monitor.store.sources import LogWindow

ROOT = Path(__file__).resolve().parents[1]
PG_ENV = "MQM_TEST_POSTGRES_URL"


def _pg_server_url() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        message = f"{PG_ENV} is not set; PostgreSQL tests skipped"
        if os.environ.get("MQM_REQUIRE_POSTGRES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return url


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line at the end when the PostgreSQL half did not run, saying how to run it."""
    skipped = [r for r in terminalreporter.stats.get("skipped", [])
               if PG_ENV in str(getattr(r, "longrepr", ""))]
    if skipped:
        terminalreporter.write_line(
            f"{len(skipped)} PostgreSQL tests skipped: {PG_ENV} is not set; run them with "
            f"{PG_ENV}=postgresql+psycopg://USER@HOST:PORT/DB make test", yellow=True)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """URL of a new, empty PostgreSQL database, dropped after the test."""
    with fresh_pg_database() as url:
        yield url


@contextmanager
def fresh_pg_database(template: str | None = None) -> Iterator[str]:
    """URL of a new PostgreSQL database, dropped on leaving (for a fixture of a wider scope
    than ``pg_url``'s): empty, or a copy of the database ``template``."""
    server = sa.make_url(_pg_server_url())
    name = f"mqm_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'
                                 + (f' TEMPLATE "{template}"' if template else "")))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        if os.environ.get("MQM_REQUIRE_POSTGRES") == "1":
            raise
        pytest.skip(f"PostgreSQL at {server.render_as_string()} unreachable: {exc.orig}")
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# A store migrated to the newest revision is made once per session (per xdist worker) on
# each backend, by ``ensure_schema`` as every store is, and each test that takes
# ``engine`` gets a copy of it: running every migration again took 0.4-0.7 s a test on
# PostgreSQL (about 300 tests) and 0.2 s on SQLite. Tests of an empty database or of the
# migrations themselves take ``db_url`` or ``pg_url`` without ``engine``, and get one.


@pytest.fixture(scope="session")
def pg_migrated() -> Iterator[str]:
    """The name of a PostgreSQL database at the newest revision, to copy."""
    from monitor.store.db import create_engine, ensure_schema

    with fresh_pg_database() as url:
        eng = create_engine(url)
        ensure_schema(eng)
        eng.dispose()  # a template is copied only while nobody is connected to it
        database = sa.make_url(url).database
        assert database is not None
        yield database


@pytest.fixture
def pg_migrated_url(pg_migrated: str) -> Iterator[str]:
    """URL of a new PostgreSQL database at the newest revision, dropped after the test."""
    with fresh_pg_database(template=pg_migrated) as url:
        yield url


@pytest.fixture(scope="session")
def sqlite_migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file at the newest revision, to copy."""
    from monitor.store.db import create_engine, ensure_schema

    path = tmp_path_factory.mktemp("migrated") / "store.db"
    eng = create_engine(f"sqlite:///{path}")
    ensure_schema(eng)
    eng.dispose()  # the last connection's close folds the write-ahead log into the file
    assert not path.with_name("store.db-wal").exists()
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database on each backend: the store's contract tests run on both. Empty,
    unless the test takes ``engine`` too: then already at the newest revision (a copy of
    one migrated once, see above), which ``engine`` would have made it anyway."""
    migrated = "engine" in request.fixturenames
    if request.param == "sqlite":
        path = tmp_path / "store.db"
        if migrated:
            shutil.copyfile(request.getfixturevalue("sqlite_migrated"), path)
        return f"sqlite:///{path}"
    return str(request.getfixturevalue("pg_migrated_url" if migrated else "pg_url"))


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    """An engine on a fresh database, migrated to the newest revision."""
    from monitor.store.db import create_engine, ensure_schema

    eng = create_engine(db_url)
    ensure_schema(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def schema_path() -> Path:
    return ROOT / "schemas" / "loan_default.yaml"


@pytest.fixture
def schema(schema_path: Path):  # type: ignore[no-untyped-def]
    from monitor.schema import load_schema

    return load_schema(schema_path)


@pytest.fixture
def make_config(tmp_path: Path, schema_path: Path):  # type: ignore[no-untyped-def]
    """Factory: write a monitor.yaml for the sample model (with overrides) and load it."""
    from monitor.config import load_config

    def make(database_url: str | None = None, **model_overrides: object):  # type: ignore[no-untyped-def]
        model = {
            "schema": str(schema_path),
            "reference": str(ROOT / "sample_data" / "reference.parquet"),
            "window": "1d",
            "min_rows": 10,
            **model_overrides,
        }
        data = {"database_url": database_url or f"sqlite:///{tmp_path / 'mqm.db'}",
                "models": {"loan_default": model}}
        path = tmp_path / "monitor.yaml"
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        return path, load_config(path)

    return make


def good_row(i: int, **overrides: object) -> dict[str, object]:
    """One valid log row of the sample model, as a flat (wide) record."""
    row: dict[str, object] = {
        "request_id": f"r-{i}",
        "timestamp": f"2026-10-01T{(i // 60) % 24:02d}:{i % 60:02d}:00Z",
        "age": 30 + i % 40,
        "annual_income": 40000.0 + 100 * i,
        "loan_amount": 10000.0,
        "credit_score": 700,
        "debt_to_income": 0.3,
        "employment_years": 5.0,
        "open_accounts": 4,
        "home_ownership": "RENT",
        "loan_purpose": "car",
        "has_cosigner": False,
        "application_channel": "web",
        "prediction": i % 2,
        "proba_0": 0.6 if i % 2 == 0 else 0.4,
        "proba_1": 0.4 if i % 2 == 0 else 0.6,
        "latency_ms": 20.0,
    }
    row.update(overrides)
    return row


@pytest.fixture
def sample_dir(tmp_path: Path) -> Path:
    """A copy of sample_data/ that a test may change."""
    dest = tmp_path / "sample_data"
    shutil.copytree(ROOT / "sample_data", dest, ignore=shutil.ignore_patterns("*.py", "*.md"))
    return dest


@pytest.fixture(scope="session")
def sample_store(tmp_path_factory: pytest.TempPathFactory, sqlite_migrated: Path) -> Path:
    """A SQLite store holding the sample's logs and labels, built once per test session."""
    from monitor.schema import load_schema
    from monitor.store.db import create_engine

    path = tmp_path_factory.mktemp("sample") / "store.db"
    shutil.copyfile(sqlite_migrated, path)
    eng = create_engine(f"sqlite:///{path}")
    schema = load_schema(ROOT / "schemas" / "loan_default.yaml")
    from monitor.ingest import ingest_labels, ingest_logs

    ingest_logs(eng, "loan_default", schema, ROOT / "sample_data" / "production_logs.parquet")
    ingest_labels(eng, "loan_default", schema, ROOT / "sample_data" / "labels.parquet")
    with eng.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    eng.dispose()
    return path


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return path


def log(i: int, ts: datetime, **features: object):  # type: ignore[no-untyped-def]
    row = good_row(i, **features)
    feats = {k: v for k, v in row.items() if k not in (
        "request_id", "timestamp", "prediction", "proba_0", "proba_1", "latency_ms")}
    return make_record({"request_id": row["request_id"], "timestamp": ts, "features": feats,
                        "prediction": row["prediction"], "latency_ms": 12.5})


def raw(frame: pd.DataFrame) -> pd.DataFrame:
    """Values as objects, every kind of null as None: chunks type columns on their own rows."""
    values = frame.astype(object)
    return values.where(values.notna(), None)


def stacked(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Frames one under the other, as raw values (pd.concat warns on all-NA columns)."""
    columns = list(dict.fromkeys(c for f in frames for c in f.columns))
    return raw(pd.DataFrame({c: [v for f in frames for v in (
        f[c].tolist() if c in f else [None] * len(f))] for c in columns}, dtype=object))


def concat(chunks: list[LogWindow]) -> dict[str, Any]:
    return {
        "meta": stacked([c.meta for c in chunks]),
        "features": stacked([c.features for c in chunks]),
        "probabilities": stacked([c.probabilities for c in chunks]),
        "labels": pd.concat([c.labels for c in chunks], ignore_index=True),
    }


# --- a features-only model (contract task: features) ------------------------------------

FEATURES_MODEL = "loan_inputs"
# The sample model's numeric features, each shifted within its contract limits in a
# drifted window: 7 of the 11 features, past drift_share 0.5 (dataset drift).
_SHIFTS = {"age": (1.0, 15, 18, 100), "annual_income": (1.8, 0, 0, None),
           "loan_amount": (1.6, 0, 500, 100000), "credit_score": (1.0, -90, 300, 850),
           "debt_to_income": (1.6, 0, 0, 1.5), "employment_years": (1.0, 8, 0, 60),
           "open_accounts": (1.0, 6, 0, 60)}
_MODEL_ONLY = ["prediction", "proba_0", "proba_1", "defaulted"]


def features_only_model(folder: Path, database_url: str, **model: object) -> Path:
    """The sample model monitored on its inputs alone: its contract with ``task: features``
    (no prediction, no target), its reference set without the model's columns, and a
    monitor.yaml declaring it (``model`` overrides its settings). Returns the config."""
    contract = yaml.safe_load((ROOT / "schemas" / "loan_default.yaml").read_text("utf-8"))
    del contract["prediction"], contract["target"]
    contract.update(model=FEATURES_MODEL, task="features")
    schema = folder / f"{FEATURES_MODEL}.yaml"
    schema.write_text(yaml.safe_dump(contract, sort_keys=False), encoding="utf-8")
    reference = folder / f"{FEATURES_MODEL}_reference.parquet"
    pd.read_parquet(ROOT / "sample_data" / "reference.parquet").drop(
        columns=_MODEL_ONLY).to_parquet(reference)
    settings = {"schema": str(schema), "reference": str(reference), "window": "1d",
                "min_rows": 100, **model}
    path = folder / "monitor.yaml"
    path.write_text(yaml.safe_dump({"database_url": database_url,
                                    "models": {FEATURES_MODEL: settings}}), encoding="utf-8")
    return path


def features_only_rows(day: datetime, rows: int, *, drifted: bool, seed: int
                       ) -> list[dict[str, Any]]:
    """``rows`` wide log rows without a prediction, spread over the day from ``day``: the
    reference's features drawn at random, and with ``drifted`` 7 of them shifted (still
    within the contract, so that the schema check stays clean)."""
    import numpy as np

    ref = pd.read_parquet(ROOT / "sample_data" / "reference.parquet").drop(
        columns=[*_MODEL_ONLY, "request_id", "timestamp"])
    frame = ref.sample(n=rows, random_state=seed).reset_index(drop=True)
    if drifted:
        for name, (scale, shift, low, high) in _SHIFTS.items():
            moved = frame[name] * scale + shift
            moved = moved.clip(lower=low, upper=high)
            frame[name] = moved.round() if frame[name].dtype.kind == "i" else moved
            if frame[name].dtype.kind == "f" and ref[name].dtype.kind == "i":
                frame[name] = frame[name].astype(int)
    step = 86400 / rows
    out = []
    for i, values in enumerate(frame.to_dict("records")):
        at = day.timestamp() + i * step
        row: dict[str, Any] = {
            "request_id": f"{day:%m%d}-{i}",
            "timestamp": datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z"),
            **{k: (None if isinstance(v, float) and np.isnan(v) else v)
               for k, v in values.items()},
            "latency_ms": 10.0 + i % 7,
        }
        out.append(row)
    return out


FEATURES_T0 = datetime(2026, 10, 1, tzinfo=UTC)  # the first day of ``load_features_only``


def load_features_only(engine: sa.Engine, folder: Path, days: list[bool], rows: int = 400
                       ) -> tuple[Path, int]:
    """The features-only model's config on ``engine``, and a CSV of one day of logs per
    entry of ``days`` from ``FEATURES_T0`` (True: drifted) loaded through ``mqm ingest``'s
    code; returns the config and the rows added."""
    from datetime import timedelta

    from monitor.config import load_config
    from monitor.ingest import ingest_logs
    from monitor.schema import load_schema

    config = features_only_model(folder, engine.url.render_as_string(hide_password=False))
    logs = [row for d, drifted in enumerate(days) for row in features_only_rows(
        FEATURES_T0 + d * timedelta(days=1), rows, drifted=drifted, seed=d)]
    path = write_csv(folder / "logs.csv", logs)
    schema = load_schema(load_config(config).model(FEATURES_MODEL).schema_path)
    report = ingest_logs(engine, FEATURES_MODEL, schema, path)
    return config, report.added


def call_counter(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[int]:
    """A counter of the calls to ``owner.name``, which still runs: ``[calls]``."""
    calls = [0]
    real = getattr(owner, name)

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, counting)
    return calls

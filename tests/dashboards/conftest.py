"""The demo store with its check runs (built once), and configs that point the dashboard
at a store: copies of it, an empty one, an unreachable one."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

APP = ROOT / "dashboards" / "app.py"
MODEL = "loan_default"
SINCE = datetime(2026, 10, 1, tzinfo=UTC)
UNTIL = datetime(2026, 10, 15, tzinfo=UTC)
LATER = datetime(2026, 11, 27, tzinfo=UTC)  # every label has long arrived


def write_config(folder: Path, database_url: str, **model: object) -> Path:
    """A monitor.yaml for the sample model, as the repository's own (min_rows 500, its
    schema limits), on ``database_url``."""
    settings = {
        "schema": str(ROOT / "schemas" / "loan_default.yaml"),
        "reference": str(ROOT / "sample_data" / "reference.parquet"),
        "window": "1d", "min_rows": 500,
        "schema_check": {"warn_violation_rate": 0.005, "critical_violation_rate": 0.02},
        "segments": {"columns": ["home_ownership", "model_version"]},
        "multivariate": {"enabled": True},
        **model,
    }
    path = folder / "monitor.yaml"
    path.write_text(yaml.safe_dump({"database_url": database_url,
                                    "models": {MODEL: settings}}), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def demo_store(sample_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample store checked day by day from 2026-10-01 to 2026-10-15 (14 windows; the
    flag trips on the windows ending 10-09 and 10-10), as of 2026-11-27.

    Built once for all of a run's xdist workers: the first to ask builds it under a lock
    in the folder they share, the others wait for it (a build is 14 checks with the
    multivariate section, 25-40 s; every worker had built its own at once)."""
    import fcntl

    from monitor.config import load_config
    from monitor.run.check import backfill
    from monitor.store.db import create_engine

    base = tmp_path_factory.getbasetemp()
    # Under xdist each worker's base is a folder of the run's own; alone, the base is it.
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    path = shared / "demo-store" / "store.db"
    with (shared / "demo-store.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            folder = tmp_path_factory.mktemp("demo")
            building = folder / "store.db"
            shutil.copyfile(sample_store, building)
            config = load_config(write_config(folder, f"sqlite:///{building}"))
            engine = create_engine(config.database_url)
            backfill(engine, config, MODEL, SINCE, UNTIL, now=LATER)
            with engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            engine.dispose()
            path.parent.mkdir()
            building.replace(path)  # whole, or not there: a failed build is not reused
    return path


@pytest.fixture
def use_config(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], Path]:
    """Point the dashboard (``MQM_CONFIG``) at a config file."""
    def use(path: Path) -> Path:
        monkeypatch.setenv("MQM_CONFIG", str(path))
        monkeypatch.delenv("MQM_DATABASE_URL", raising=False)
        monkeypatch.delenv("MQM_API_TOKEN", raising=False)
        return path
    return use


@pytest.fixture
def demo_config(demo_store: Path, tmp_path: Path, use_config) -> Path:  # type: ignore[no-untyped-def]
    """A private copy of the demo store, and the dashboard pointed at it."""
    path = tmp_path / "store.db"
    shutil.copyfile(demo_store, path)
    return use_config(write_config(tmp_path, f"sqlite:///{path}"))


@pytest.fixture
def empty_config(tmp_path: Path, use_config) -> Path:  # type: ignore[no-untyped-def]
    """A new store: no logs, no runs (the dashboard creates its tables)."""
    return use_config(write_config(tmp_path, f"sqlite:///{tmp_path / 'empty.db'}"))


@pytest.fixture
def logs_only_config(sample_store: Path, tmp_path: Path, use_config) -> Path:  # type: ignore[no-untyped-def]
    """The sample's logs and labels, not checked yet."""
    path = tmp_path / "logs.db"
    shutil.copyfile(sample_store, path)
    return use_config(write_config(tmp_path, f"sqlite:///{path}"))


@pytest.fixture
def unreachable_config(tmp_path: Path, use_config) -> Path:  # type: ignore[no-untyped-def]
    """A PostgreSQL URL on a loopback port where nothing listens."""
    from dashboards.screenshots import free_port

    url = f"postgresql+psycopg://mqm@127.0.0.1:{free_port()}/mqm?connect_timeout=3"
    return use_config(write_config(tmp_path, url))

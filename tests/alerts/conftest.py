"""Fixtures of the alerting tests: the binaries, processes stopped at the end, a webhook."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.alerts.stack import (
    CLEAN_DAY,
    CLEAN_SHIFT_DAYS,
    CRITICAL_DAY,
    Processes,
    Webhook,
    require,
)
from tests.conftest import ROOT


@pytest.fixture(scope="session")
def promtool() -> str:
    return require("promtool")


@pytest.fixture(scope="session")
def amtool() -> str:
    return require("amtool")


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        procs.stop_all()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    try:
        yield hook
    finally:
        hook.close()


@pytest.fixture(scope="module")
def logs_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One log file: the sample's critical day, and a clean day moved after it."""
    import pandas as pd

    logs = pd.read_parquet(ROOT / "sample_data" / "production_logs.parquet")
    day = logs["timestamp"].dt.strftime("%Y-%m-%d")
    critical = logs[day == CRITICAL_DAY]
    clean = logs[day == CLEAN_DAY].copy()
    clean["timestamp"] += pd.Timedelta(days=CLEAN_SHIFT_DAYS)
    clean["request_id"] = "replay-" + clean["request_id"]
    path = tmp_path_factory.mktemp("logs") / "logs.parquet"
    pd.concat([critical, clean], ignore_index=True).to_parquet(path)
    return path


@pytest.fixture(scope="module")
def small_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2,000 rows of the sample reference: a check of a process takes about a second less."""
    import pandas as pd

    path = tmp_path_factory.mktemp("reference") / "reference.parquet"
    reference = pd.read_parquet(ROOT / "sample_data" / "reference.parquet")
    reference.sample(2000, random_state=0).to_parquet(path)
    return path

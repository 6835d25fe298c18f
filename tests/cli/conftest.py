"""Fixtures of the CLI tests: the sample store behind a config, invoked through CliRunner."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from monitor.cli.main import main


@pytest.fixture
def sample_cli(sample_store: Path, tmp_path: Path, make_config):  # type: ignore[no-untyped-def]
    """Factory of ``mqm --config <config of a copy of the sample store> ARGS``."""
    db = tmp_path / "copy.db"
    shutil.copyfile(sample_store, db)
    path, _ = make_config(f"sqlite:///{db}", min_rows=500)
    runner = CliRunner()

    def invoke(*args: str):  # type: ignore[no-untyped-def]
        return runner.invoke(main, ["--config", str(path), *args], catch_exceptions=False)

    return invoke

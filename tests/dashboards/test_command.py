"""`mqm dashboard`: the streamlit command it becomes, and a bad config caught first."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from monitor.cli.main import main
from tests.dashboards.conftest import APP, write_config


class Exec(Exception):
    """Stands for the process image being replaced."""


def test_dashboard_execs_streamlit_with_the_config(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'mqm.db'}")
    seen: dict[str, Any] = {}

    def fake_execve(path: str, argv: list[str], env: dict[str, str]) -> None:
        seen.update(path=path, argv=argv, env=env)
        raise Exec

    monkeypatch.setattr(os, "execve", fake_execve)
    result = CliRunner().invoke(main, ["--config", str(config), "dashboard", "--port", "8600",
                                       "--host", "0.0.0.0"])
    assert isinstance(result.exception, Exec), result.output
    assert seen["path"] == sys.executable
    argv = seen["argv"]
    assert argv[:5] == [sys.executable, "-m", "streamlit", "run", str(APP)]
    options = dict(zip(argv[5::2], argv[6::2], strict=True))
    assert options == {"--server.headless": "true", "--browser.gatherUsageStats": "false",
                       "--server.port": "8600", "--server.address": "0.0.0.0",
                       "--client.toolbarMode": "viewer"}
    assert seen["env"]["MQM_CONFIG"] == str(config.resolve())


def test_dashboard_defaults_to_loopback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'mqm.db'}")
    monkeypatch.setenv("MQM_CONFIG", str(config))
    seen: list[list[str]] = []

    def fake_execve(path: str, argv: list[str], env: dict[str, str]) -> None:
        seen.append(argv)
        raise Exec

    monkeypatch.setattr(os, "execve", fake_execve)
    CliRunner().invoke(main, ["dashboard"])
    options = dict(zip(seen[0][5::2], seen[0][6::2], strict=True))
    assert (options["--server.address"], options["--server.port"]) == ("127.0.0.1", "8501")


def test_dashboard_with_a_bad_config_is_one_line(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "execve", lambda *a: pytest.fail("streamlit started"))
    result = CliRunner().invoke(main, ["--config", str(tmp_path / "none.yaml"), "dashboard"])
    assert result.exit_code == 1
    assert result.output.startswith("error: ") and "none.yaml" in result.output
    assert len(result.output.strip().splitlines()) == 1

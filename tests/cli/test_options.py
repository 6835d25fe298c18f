"""Options every batch user leans on: ``--config`` before or after the command,
``--fail-on`` exit codes for check and backfill, and ``mqm runs``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from monitor.cli.main import main


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, list(args))


# --- --config in both places (issue 13, item 13) ----------------------------------------


def test_config_after_the_command(make_config, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = make_config()
    monkeypatch.setenv("MQM_CONFIG", str(path.parent / "absent.yaml"))
    upgraded = invoke("db", "upgrade", "--config", str(path))
    assert upgraded.exit_code == 0, upgraded.output
    assert f"sqlite:///{path.parent.resolve() / 'mqm.db'}" in upgraded.output
    shown = invoke("fallback", "show", "-m", "loan_default", "--config", str(path), "--json")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["flag"]["model"] == "loan_default"
    # Without it the environment's (absent) file is used: the option above took effect.
    absent = invoke("db", "upgrade")
    assert absent.exit_code == 1 and "absent.yaml: file not found" in absent.output


def test_config_in_both_places(make_config, tmp_path: Path) -> None:
    path, _ = make_config()
    same = invoke("--config", str(path), "check", "-m", "loan_default", "--config", str(path))
    assert "No such option" not in same.output
    assert same.exit_code == 1 and "has no logs yet" in same.output
    other = tmp_path / "other.yaml"
    shutil.copyfile(path, other)
    both = invoke("--config", str(path), "check", "-m", "loan_default", "--config", str(other))
    assert both.exit_code == 2
    assert "--config is given twice" in both.output

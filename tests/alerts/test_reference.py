"""The README's alert table (generated from the rules) and the runbook: one section per
alert, at the anchor its runbook_url names, with meaning, impact, diagnosis, mitigation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from monitor.cli.alerts_docs import alert_reference
from monitor.errors import MonitorError
from tests.alerts.stack import RULES, RUNBOOK
from tests.conftest import ROOT

START, END = "<!-- alerts:start -->\n", "<!-- alerts:end -->"


def _alert_names() -> list[str]:
    data = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return list(dict.fromkeys(rule["alert"] for group in data["groups"]
                              for rule in group["rules"] if "alert" in rule))


def _runbook_sections() -> dict[str, str]:
    text = RUNBOOK.read_text(encoding="utf-8")
    parts = re.split(r"^## (\S+)\n", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_readme_alert_table_matches_the_rules() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme.count(START) == 1 and readme.count(END) == 1
    section = readme[readme.index(START) + len(START): readme.index(END)]
    assert section == alert_reference(RULES), (
        "README ## Alerts is stale: paste the output of `mqm alerts reference` "
        "between the markers")


def test_the_table_has_one_row_per_alert_and_merges_severities() -> None:
    table = alert_reference(RULES)
    rows = [line for line in table.splitlines()[2:]]
    assert [re.match(r"\| `(\w+)`", row).group(1) for row in rows] == _alert_names()  # type: ignore[union-attr]
    [drift] = [row for row in rows if row.startswith("| `MqmDatasetDrift`")]
    assert "| critical or warning |" in drift
    assert "(alerts/RUNBOOK.md#mqmdatasetdrift)" in drift
    [watchdog] = [row for row in rows if row.startswith("| `MqmWatchdog`")]
    assert "| at once |" in watchdog


def test_the_table_escapes_pipes_and_reports_a_bad_file(tmp_path: Path) -> None:
    rules = tmp_path / "r.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [
        {"record": "x:y", "expr": "vector(1)"},
        {"alert": "A", "expr": "vector(1)", "for": "5m", "labels": {"severity": "warning"},
         "annotations": {"summary": "a | b\n c", "runbook_url": "https://x/R.md#a"}},
    ]}]}), encoding="utf-8")
    assert alert_reference(rules, runbook="R.md").splitlines()[2] == \
        "| `A` | warning | a \\| b c | 5m | [runbook](R.md#a) |"
    rules.write_text("not: [rules", encoding="utf-8")
    with pytest.raises(MonitorError, match="cannot read the rules"):
        alert_reference(rules)
    rules.write_text("a: 1\n", encoding="utf-8")
    with pytest.raises(MonitorError, match="no 'groups' list"):
        alert_reference(rules)


def test_runbook_has_one_section_per_alert() -> None:
    sections = _runbook_sections()
    assert list(sections) == _alert_names()


@pytest.mark.parametrize("name", _alert_names())
def test_runbook_section_says_what_to_do(name: str) -> None:
    body = _runbook_sections()[name]
    for part in ("**Meaning.**", "**Impact.**", "**Diagnosis.**", "**Mitigation.**"):
        assert part in body, f"{name}: no {part}"
    # GitHub's anchor of "## MqmFoo" is "#mqmfoo", what runbook_url points at.
    assert re.fullmatch(r"Mqm[A-Za-z0-9]+", name)


def test_runbook_uses_the_commands_the_issue_names() -> None:
    text = RUNBOOK.read_text(encoding="utf-8")
    for command in ("mqm check --model M --json", "/v1/models/M/fallback",
                    "http://localhost:8501/?model=M", "mqm fallback set --model M",
                    "roll back", "retrain", "upstream pipeline"):
        assert command.lower() in text.lower(), command
    # Links inside the runbook point at sections that exist.
    for anchor in re.findall(r"\]\(#([a-z0-9-]+)\)", text):
        assert anchor in {n.lower() for n in _alert_names()}, anchor


def test_the_cli_prints_the_table() -> None:
    from click.testing import CliRunner

    from monitor.cli.main import main

    result = CliRunner().invoke(main, ["alerts", "reference", "--rules", str(RULES)])
    assert result.exit_code == 0, result.output
    assert result.output == alert_reference(RULES)

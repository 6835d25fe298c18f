"""The README's alert table, generated from the Prometheus rules file.

``alert_reference(rules_path)`` reads ``alerts/rules/mqm.rules.yml`` and returns a
Markdown table: one row per alert name (an alert declared once per severity is one row),
its severities, what fires it (the rule's static ``summary``), how long it must hold
(``for``) and a link to its runbook section (the fragment of its ``runbook_url``).
It reads the file and nothing else; a test keeps the README's ``## Alerts`` section equal
to it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from monitor.errors import MonitorError

__all__ = ["alert_reference"]


@dataclass
class _Alert:
    name: str
    summary: str
    anchor: str
    severities: list[str] = field(default_factory=list)
    durations: list[str] = field(default_factory=list)


def _cell(text: str) -> str:
    """One table cell: a single line, with the column separator escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _alerts(rules_path: Path) -> list[_Alert]:
    try:
        data: Any = yaml.safe_load(rules_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise MonitorError(f"{rules_path}: cannot read the rules: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("groups"), list):
        raise MonitorError(f"{rules_path}: not a Prometheus rules file (no 'groups' list)")
    found: dict[str, _Alert] = {}
    for group in data["groups"]:
        for rule in group.get("rules") or ():
            name = rule.get("alert")
            if not name:
                continue  # a recording rule
            labels = rule.get("labels") or {}
            annotations = rule.get("annotations") or {}
            if name not in found:
                fragment = urlsplit(str(annotations.get("runbook_url", ""))).fragment
                found[name] = _Alert(name, str(annotations.get("summary", "")), fragment)
            alert = found[name]
            severity = str(labels.get("severity", ""))
            if severity and severity not in alert.severities:
                alert.severities.append(severity)
            duration = str(rule.get("for", "")) or "at once"
            if duration not in alert.durations:
                alert.durations.append(duration)
    return list(found.values())


def alert_reference(rules_path: str | os.PathLike[str],
                    runbook: str = "alerts/RUNBOOK.md") -> str:
    """A Markdown table of the alerts in ``rules_path``; runbook links point into
    ``runbook`` (a path relative to the README) at each alert's ``runbook_url`` fragment.

    Raises ``MonitorError`` when the file cannot be read or holds no rule groups.
    """
    out = ["| alert | severity | fires when | for | runbook |", "|---|---|---|---|---|"]
    for alert in _alerts(Path(rules_path)):
        link = f"[runbook]({runbook}#{alert.anchor})" if alert.anchor else ""
        out.append(
            f"| `{alert.name}` | {' or '.join(alert.severities)} | {_cell(alert.summary)} "
            f"| {' or '.join(alert.durations)} | {link} |"
        )
    return "\n".join(out) + "\n"

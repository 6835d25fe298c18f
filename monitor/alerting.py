"""mqm's own alerts, posted to Alertmanager's v2 API, for teams without Prometheus.

After every check run (and every manual override) mqm posts the model's current truth:
``MqmFallbackActive`` while the served fallback flag is on, ``MqmModelCritical`` while
its latest run is critical. A firing alert carries ``endsAt`` = now + ``hold_for`` and is
posted again after each run while it holds; one that no longer holds is posted with
``endsAt`` = now, which resolves it. Alertmanager notifies a resolution only for an alert
it notified as firing, so posting the truth every time needs no memory here and heals a
post that was lost.

A failed post is logged and counted (``post_failures()``), never raised: alerting must
not stop a check. Standard library only.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from monitor.config import AlertingConfig, ModelConfig
from monitor.times import iso_z

__all__ = ["FLAG_ALERT", "RUN_ALERT", "Alert", "alerts_for", "post_alerts", "post_failures"]

FLAG_ALERT = "MqmFallbackActive"
RUN_ALERT = "MqmModelCritical"
_RUNBOOK = "alerts/RUNBOOK.md#"
_log = logging.getLogger("mqm.alerting")
_failures = 0
_lock = threading.Lock()


@dataclass(frozen=True)
class Alert:
    """One alert as Alertmanager's v2 API takes it."""

    name: str
    model: str
    firing: bool
    summary: str
    description: str
    severity: str = "critical"

    def as_dict(self, cfg: AlertingConfig, now: datetime, hold_for: timedelta
                ) -> dict[str, Any]:
        annotations = {"summary": self.summary, "description": self.description,
                       "runbook_url": _RUNBOOK + self.name.lower()}
        if cfg.dashboard_url:
            annotations["dashboard_url"] = f"{cfg.dashboard_url.rstrip('/')}/?model={self.model}"
        return {
            "labels": {**cfg.labels, "alertname": self.name, "model": self.model,
                       "severity": self.severity, "source": "mqm"},
            "annotations": annotations,
            "startsAt": iso_z(now),
            "endsAt": iso_z(now + hold_for if self.firing else now),
        }


def alerts_for(model: str, flag: Mapping[str, Any], run_status: str | None,
               run_reasons: tuple[str, ...] = ()) -> list[Alert]:
    """The two alerts of a model, firing or not, from its served flag document and the
    status of its latest run (None: no run now, so that alert is left alone). Pure."""
    source = flag.get("source") or "auto"
    alerts = [Alert(
        FLAG_ALERT, model, bool(flag.get("active")),
        summary=f"{model}: serving returns the fallback prediction",
        description=f"The fallback flag of {model} is on ({source}): "
                    f"{flag.get('reason') or 'no reason given'}.",
    )]
    if run_status is not None:
        why = "; ".join(run_reasons[:3]) or "see the run"
        alerts.append(Alert(
            RUN_ALERT, model, run_status == "critical",
            summary=f"{model}: the latest check run is critical",
            description=f"The latest check run of {model} is {run_status}: {why}.",
        ))
    return alerts


def _hold_for(cfg: AlertingConfig, model_cfg: ModelConfig) -> timedelta:
    if cfg.hold_for is not None:
        return cfg.hold_for
    return 2 * model_cfg.window + model_cfg.schedule.delay


def post_alerts(cfg: AlertingConfig, model_cfg: ModelConfig, alerts: list[Alert],
                now: datetime) -> bool:
    """POST the alerts to ``<alertmanager_url>/api/v2/alerts``; whether it was taken.
    Does nothing (True) without a URL; a failure is logged and counted."""
    global _failures
    if not cfg.alertmanager_url or not alerts:
        return True
    hold = _hold_for(cfg, model_cfg)
    body = json.dumps([a.as_dict(cfg, now, hold) for a in alerts]).encode()
    url = cfg.alertmanager_url.rstrip("/") + "/api/v2/alerts"
    import urllib.error  # here: every check imports this module, few post alerts
    import urllib.request

    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=cfg.timeout.total_seconds()) as answer:
            answer.read()
        return True
    except (urllib.error.URLError, OSError, ValueError) as exc:
        with _lock:
            _failures += 1
        _log.warning("mqm: posting %d alert(s) of %s to %s failed: %s", len(alerts),
                     alerts[0].model, url, getattr(exc, "reason", exc))
        return False


def post_failures() -> int:
    """Posts to Alertmanager that failed in this process."""
    return _failures

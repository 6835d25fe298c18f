"""What ``mqm versions``, the API and the dashboard read of a model's versions: each
version's figures per window (``run_metrics`` rows of the ``versions`` check, the version
where a feature name would be), of each window's latest check run.

One query, no run documents read: the figures are small rows already.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from monitor.rollback import VersionWindow
from monitor.store.history import _at, _latest_ids, reading
from monitor.store.tables import check_runs, run_metrics

__all__ = ["version_windows"]


def version_windows(engine: Engine, model: str, *, since: datetime | None = None,
                    until: datetime | None = None) -> list[VersionWindow]:
    """Each version's figures in each window of ``model`` ending in (since, until] (None:
    no bound), from the window's latest check run; oldest window first."""
    c, m = check_runs.c, run_metrics.c
    query = (sa.select(c.id, c.window_start, c.window_end, c.status, m.metric, m.feature,
                       m.value)
             .join(run_metrics, m.run_id == c.id)
             .where(c.id.in_(_latest_ids(model, since, until)), m.check_name == "versions")
             .order_by(c.window_end, m.feature))
    runs: dict[int, tuple[datetime, datetime, str]] = {}
    mature: dict[int, bool] = {}
    figures: dict[tuple[int, str], dict[str, float | None]] = {}
    with reading(engine), engine.connect() as conn:
        for run_id, start, end, status, metric, feature, value in conn.execute(query):
            runs[run_id] = (_at(start), _at(end), str(status))
            if feature == "":
                if metric == "mature":
                    mature[run_id] = bool(value)
                continue
            figures.setdefault((run_id, feature), {})[metric] = value
    out = [VersionWindow(run_id=run_id, window_start=runs[run_id][0],
                         window_end=runs[run_id][1], status=runs[run_id][2],
                         mature=mature.get(run_id, False), version=version, figures=values)
           for (run_id, version), values in figures.items()]
    return sorted(out, key=lambda r: (r.window_end, r.version))

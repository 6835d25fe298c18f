"""Retention of one model: which horizon its config allows now, and the pass that
deletes what lies before it (``monitor.store.retention``).

The horizon is the start of the window holding ``now - retention``: only whole windows
go, and every one of them ended at least ``retention`` ago, which the config keeps at or
above ``performance.max_label_delay + window``, so no window still awaiting labels (or a
recheck, which looks back that far) loses a row. It never passes the scheduler's
watermark either: a window ``mqm serve`` has not checked yet keeps its logs however old.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from monitor.config import Config, ModelConfig
from monitor.store.db import Engine
from monitor.store.locks import Fence
from monitor.store.retention import Pending, RetentionResult, delete_older, pending
from monitor.store.watermarks import read_watermark
from monitor.times import floor_window

__all__ = ["RetentionPlan", "apply_retention", "retention_horizon", "retention_plan"]


def retention_horizon(model_cfg: ModelConfig, now: datetime,
                      watermark: datetime | None) -> datetime | None:
    """Everything of the model before this time may go; None: retention is off."""
    period = model_cfg.retention_period
    if period is None:
        return None
    horizon = floor_window(now - period, model_cfg.window)
    if watermark is not None:
        horizon = min(horizon, floor_window(watermark, model_cfg.window))
    return horizon


@dataclass(frozen=True)
class RetentionPlan:
    """The horizon of a model now, why, and what lies before it."""

    model: str
    horizon: datetime | None
    held_by_watermark: bool
    pending: Pending | None


def retention_plan(engine: Engine, config: Config, model: str,
                   now: datetime | None = None) -> RetentionPlan:
    """The horizon and the counts a pass would delete (``mqm retention --dry-run``)."""
    model_cfg = config.model(model)
    now = now or datetime.now(UTC)
    watermark = read_watermark(engine, model)
    horizon = retention_horizon(model_cfg, now, watermark)
    unheld = retention_horizon(model_cfg, now, None)
    return RetentionPlan(model, horizon, horizon != unheld,
                         None if horizon is None else pending(engine, model, horizon))


def apply_retention(
    engine: Engine,
    config: Config,
    model: str,
    *,
    now: datetime | None = None,
    fence: Fence | None = None,
    keep_going: Callable[[], bool] | None = None,
    batch: int | None = None,
) -> RetentionResult | None:
    """Delete the model's logs, labels and log blocks before its horizon; None when its
    retention is off. ``fence``, ``keep_going``: as ``monitor.store.retention.delete_older``.
    """
    model_cfg = config.model(model)
    now = now or datetime.now(UTC)
    horizon = retention_horizon(model_cfg, now, read_watermark(engine, model))
    if horizon is None:
        return None
    extra = {} if batch is None else {"batch": batch}
    return delete_older(engine, model, horizon, fence=fence, keep_going=keep_going, now=now,
                        **extra)

"""Retention of one model: which horizon its config allows now, and the pass that
deletes what lies before it (``monitor.store.retention``).

The horizon is the start of the window holding ``now - retention``: only whole windows
go, and every one of them ended at least ``retention`` ago, which the config keeps at or
above ``performance.max_label_delay + window``, so no window still awaiting labels (or a
recheck, which looks back that far) loses a row. It never passes the scheduler's
watermark either: a window ``mqm serve`` has not checked yet keeps its logs however old.

A complete pass also deletes the stored reference profiles that no configured model's
reference uses any more (a reference replaced by another leaves its profile behind),
once they are older than ``PROFILE_GRACE``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from monitor.config import Config, ModelConfig
from monitor.store.db import Engine
from monitor.store.locks import Fence
from monitor.store.retention import Pending, RetentionResult, delete_older, pending
from monitor.store.watermarks import read_watermark
from monitor.times import floor_window

__all__ = ["PROFILE_GRACE", "RetentionPlan", "apply_retention", "current_profile_keys",
           "prune_reference_profiles", "retention_horizon", "retention_plan"]

# A profile of no configured reference is kept this long after it was built: during a
# rolling deploy another replica's config may name a reference this one does not.
PROFILE_GRACE = timedelta(days=1)


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
    result = delete_older(engine, model, horizon, fence=fence, keep_going=keep_going, now=now,
                          **extra)
    if result.complete:
        result.profiles = prune_reference_profiles(engine, config, now)
    return result


def current_profile_keys(config: Config) -> set[str] | None:
    """The reference profile key of every configured model as its files are now; None
    when some model's cannot be known (an unreadable contract, a missing reference)."""
    from monitor.errors import MonitorError
    from monitor.run.model import reference_version
    from monitor.run.reference import profile_key
    from monitor.schema import load_schema

    keys = set()
    for model_cfg in config.models.values():
        version = reference_version(model_cfg.reference)
        if version is None:
            return None
        try:
            keys.add(profile_key(model_cfg, load_schema(model_cfg.schema_path), version))
        except MonitorError:
            return None
    return keys


def prune_reference_profiles(engine: Engine, config: Config, now: datetime) -> int:
    """Delete stored reference profiles that no configured model's reference uses and
    that are older than ``PROFILE_GRACE`` (each is a built reference set: 146 MB per
    million rows); nothing while some model's key cannot be known."""
    from monitor.store.profiles import prune_profiles

    keys = current_profile_keys(config)
    if keys is None:
        return 0
    return prune_profiles(engine, keys, now - PROFILE_GRACE)

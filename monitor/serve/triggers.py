"""When each model's check job fires: an interval, a standard cron line in UTC, or by
default each aligned window end plus the schedule's delay."""

from __future__ import annotations

from datetime import UTC
from typing import TYPE_CHECKING

from monitor.config import ModelConfig
from monitor.errors import ConfigError
from monitor.times import EPOCH

if TYPE_CHECKING:
    from apscheduler.triggers.base import BaseTrigger

__all__ = ["cron_trigger", "trigger_for"]


_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _weekday_number(token: str) -> int:
    token = token.strip().lower()
    if token in _WEEKDAYS:
        return _WEEKDAYS.index(token)
    number = int(token)
    if not 0 <= number <= 7:
        raise ValueError(f"weekday {number} is not in 0-7")
    return number % 7


def _standard_weekdays(field: str) -> str:
    """A crontab weekday field (0 or 7: Sunday) as APScheduler 3.x weekday names.

    APScheduler 3.x reads weekday numbers with 0 as Monday; names mean the same to both.
    """
    if field == "*":
        return "*"
    days: set[int] = set()
    for part in field.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"step {step} must be positive")
        if base == "*":
            low, high = 0, 6
        elif "-" in base:
            first, last = base.split("-", 1)
            low, high = _weekday_number(first), _weekday_number(last)
            if last.strip() == "7":
                high = 7  # "5-7": Friday to Sunday
        else:
            low = _weekday_number(base)
            high = 6 if step_text else low  # "1/2": from Monday, every other day
        if low > high:
            raise ValueError(f"range {base!r} runs backwards")
        days.update(d % 7 for d in range(low, high + 1, step))
    return ",".join(_WEEKDAYS[d] for d in sorted(days))


def cron_trigger(line: str) -> BaseTrigger:
    """A five-field cron line, read as standard cron in UTC."""
    from apscheduler.triggers.cron import CronTrigger

    minute, hour, day, month, weekday = line.split()
    return CronTrigger(minute=minute, hour=hour, day=day, month=month,
                       day_of_week=_standard_weekdays(weekday), timezone=UTC)


def trigger_for(model: str, model_cfg: ModelConfig) -> BaseTrigger:
    """The check job's trigger: ``every``, ``cron``, or each window end + ``delay``.

    Raises ``ConfigError`` (naming the model) for a cron line APScheduler refuses.
    """
    from apscheduler.triggers.interval import IntervalTrigger

    schedule = model_cfg.schedule
    if schedule.cron is not None:
        try:
            return cron_trigger(schedule.cron)
        except ValueError as exc:
            raise ConfigError(f"model {model!r}: schedule.cron {schedule.cron!r}: {exc}") from None
    if schedule.every is not None:
        return IntervalTrigger(seconds=schedule.every.total_seconds(), timezone=UTC)
    # Fires at EPOCH + delay + k * window: each aligned window end, plus the delay.
    return IntervalTrigger(seconds=model_cfg.window.total_seconds(),
                           start_date=EPOCH + schedule.delay, timezone=UTC)





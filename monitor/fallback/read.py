"""The flag document for a reader (the API's ``GET .../fallback``): computed as
``monitor.fallback.flag.flag_document`` computes it, without writing the flag file.

A read must not write files: the file is brought up to date by whatever changes the
flag (a run taken in, an override set or cleared), not by every poll of every serving
replica. Interim home: this belongs in ``monitor.fallback.flag``, with
``flag_document`` defined as ``read_document`` followed by the file write; until then
it reuses that module's private steps, so both compute the same document.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from monitor.config import Config
from monitor.fallback.flag import _document, _expire
from monitor.store.db import Engine
from monitor.store.flags import lock_flag, read_flag, save_flag
from monitor.times import utc

__all__ = ["read_document"]


def read_document(
    engine: Engine, config: Config, model: str, now: datetime | None = None
) -> dict[str, Any]:
    """The model's flag document at ``now`` (default: the current time), as
    ``flag_document`` returns it, without touching the flag file.

    Like ``flag_document`` it writes the store when it must: the first time a model is
    read (its ``fallback_state`` row is created, which starts its staleness clock) and
    when an override has expired (cleared, with its ``expiry`` event). Raises
    ``UnknownModelError`` for a model the config does not declare.
    """
    model_cfg = config.model(model)
    now = datetime.now(UTC) if now is None else utc(now)
    with engine.connect() as conn:
        state = read_flag(conn, model)
    if state is None or (state.override is not None and state.override.expired(now)):
        with engine.begin() as conn:
            state, events = _expire(conn, model, lock_flag(conn, model, now), now)
            if events:
                save_flag(conn, model, state)
    return _document(model, model_cfg, state, now)

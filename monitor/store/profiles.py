"""Stored reference profiles (table ``reference_profiles``): opaque bytes under a key.

What the bytes hold, and what the key hashes, is ``monitor.run.reference``'s business;
the store only keeps them, one row per key, written once.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from monitor.store.db import Engine
from monitor.store.tables import reference_profiles
from monitor.store.upsert import insert_if_absent

__all__ = ["load_profile", "save_profile"]


def load_profile(engine: Engine, key: str) -> bytes | None:
    """The profile stored under ``key``, or None."""
    with engine.connect() as conn:
        data = conn.execute(sa.select(reference_profiles.c.data)
                            .where(reference_profiles.c.key == key)).scalar_one_or_none()
    return None if data is None else bytes(data)


def save_profile(engine: Engine, key: str, *, reference_version: str, data: bytes,
                 replace: bool = False, now: datetime | None = None) -> None:
    """Store a profile under ``key`` unless one is there already (two processes that built
    the same profile at once both succeed; the first one's row stays). ``replace``: the
    row under ``key`` goes first (one that could not be read)."""
    with engine.begin() as conn:
        if replace:
            conn.execute(sa.delete(reference_profiles).where(reference_profiles.c.key == key))
        insert_if_absent(conn, reference_profiles, {
            "key": key, "reference_version": reference_version, "data": data,
            "created_at": now or datetime.now(UTC)}, "key")

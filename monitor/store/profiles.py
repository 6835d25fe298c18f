"""Stored reference profiles (table ``reference_profiles``): opaque bytes under a key.

What the bytes hold, and what the key hashes, is ``monitor.run.reference``'s business;
the store only keeps them, one row per key, written once.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime

import sqlalchemy as sa

from monitor.store.db import Engine
from monitor.store.tables import reference_profiles
from monitor.store.upsert import insert_if_absent

__all__ = ["load_profile", "prune_profiles", "save_profile"]


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


def prune_profiles(engine: Engine, keep: Collection[str], created_before: datetime) -> int:
    """Delete the profiles created before ``created_before`` whose key is not in ``keep``
    (the keys of the references configured now); return how many went. A profile is a
    cache: one deleted while some process still uses it is built again, never wrong."""
    t = reference_profiles
    with engine.begin() as conn:
        query = sa.delete(t).where(t.c.created_at < created_before)
        if keep:
            query = query.where(t.c.key.not_in(list(keep)))
        return int(conn.execute(query).rowcount or 0)

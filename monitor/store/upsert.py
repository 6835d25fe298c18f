"""Insert a row unless its key exists: one statement on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

__all__ = ["insert_if_absent"]


def insert_if_absent(conn: sa.Connection, table: sa.Table, values: dict[str, Any],
                     key: str) -> None:
    """``INSERT ... ON CONFLICT (key) DO NOTHING``; elsewhere a savepoint that swallows the
    duplicate. On SQLite the INSERT also takes the write lock before anything is read."""
    name = conn.dialect.name
    if name in ("postgresql", "sqlite"):
        from sqlalchemy.dialects import postgresql, sqlite

        insert = postgresql.insert if name == "postgresql" else sqlite.insert
        conn.execute(insert(table).values(**values).on_conflict_do_nothing(index_elements=[key]))
        return
    try:
        with conn.begin_nested():
            conn.execute(sa.insert(table).values(**values))
    except sa.exc.IntegrityError:
        pass  # another writer created it first

"""Log blocks kept as written on PostgreSQL: their bytes are LZ4-compressed already.

PostgreSQL compressed each block's bytes again (pglz, the default ``EXTENDED`` storage)
on every insert: the stored size was the raw size (LZ4 output does not compress), and
trying cost 1.9 s per million rows' blocks, more than writing them. ``EXTERNAL`` keeps
them out of line, as they are: 0.43 s for the same blocks, the same size. Nothing
changes on SQLite, which stores a blob as given.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _storage(kind: str) -> None:
    if op.get_bind().dialect.name == "postgresql":
        # Applies to blocks written from now on; those stored stay as they are (read the
        # same either way).
        op.execute(f"ALTER TABLE log_blocks ALTER COLUMN data SET STORAGE {kind}, "
                   f"ALTER COLUMN labels SET STORAGE {kind}")


def upgrade() -> None:
    _storage("EXTERNAL")


def downgrade() -> None:
    _storage("EXTENDED")

"""Alembic environment: runs on a connection handed over by ``monitor.store.db``.

For a new revision: ``MQM_DATABASE_URL=sqlite:///dev.db alembic -c
monitor/store/alembic.ini revision --autogenerate -m "what changed"``.
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from alembic import context

from monitor.store.tables import metadata

config = context.config


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things in place; batch mode copies the table.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    engine = sa.create_engine(os.environ.get("MQM_DATABASE_URL", "sqlite:///mqm.db"))
    with engine.begin() as conn:
        _run(conn)

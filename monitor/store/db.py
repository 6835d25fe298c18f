"""Engines and migrations. Every other store module takes the ``Engine`` made here,
injected by the caller (never a global), and owns the queries of its tables."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, make_url

from monitor.errors import DatabaseError

__all__ = [
    "Connection",
    "Engine",
    "create_engine",
    "current_revision",
    "driver_connection",
    "ensure_schema",
    "head_revision",
    "ping",
    "safe_url",
    "upgrade",
]

_MIGRATIONS = Path(__file__).parent / "migrations"


def _on_sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets the dashboard and API read while a check run writes; foreign keys
    # are off by default in SQLite; a busy timeout waits for a writer instead of failing.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def safe_url(url: str) -> str:
    """The URL with any password hidden, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable database URL>"


def create_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``; SQLite files get WAL and foreign keys, their folder is created."""
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise DatabaseError(f"invalid database URL {url!r}: {exc}") from None
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database
        if db and db != ":memory:" and not db.startswith("file:"):
            Path(db).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed, **kwargs)
        sa.event.listen(engine, "connect", _on_sqlite_connect)
        return engine
    try:
        return sa.create_engine(parsed, pool_pre_ping=True, **kwargs)
    except ModuleNotFoundError as exc:
        raise DatabaseError(f"no driver for {safe_url(url)}: {exc}") from None


def _alembic_config(connection: sa.Connection) -> Any:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    from alembic.config import Config as AlembicConfig
    from alembic.script import ScriptDirectory

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with _connect(engine) as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _connect(engine: Engine) -> sa.Connection:
    try:
        return engine.connect()
    except sa.exc.OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseError(
            f"cannot reach the database at {safe_url(str(engine.url))}: {reason}"
        ) from None


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Migrate to ``revision`` (default: the newest) in one transaction; return (before,
    after)."""
    from alembic import command

    before = current_revision(engine)
    with _connect(engine) as conn, conn.begin():
        command.upgrade(_alembic_config(conn), revision)
    return before, current_revision(engine)


@lru_cache(maxsize=1)
def _head_from_files() -> str | None:
    """The newest revision, read from the migration files' ``revision`` and
    ``down_revision`` lines; None unless exactly one revision is no other's parent."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (_MIGRATIONS / "versions").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        found = re.search(r"""^revision = ["']([^"']+)["']$""", text, re.M)
        if found is None:
            return None
        revisions.add(found.group(1))
        down = re.search(r"^down_revision = (.*)$", text, re.M)
        if down is not None:
            parents.update(re.findall(r"""["']([^"']+)["']""", down.group(1)))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def _revision_by_sql(engine: Engine) -> str | None:
    """The database's revision read with one query; None when that fails (no table)."""
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
    except sa.exc.DBAPIError:
        return None
    return str(rows[0][0]) if len(rows) == 1 else None


def ensure_schema(engine: Engine) -> None:
    """Create the tables in an empty database; refuse to run on an outdated one.

    Upgrading a database that holds data is the user's decision (``mqm db upgrade``),
    so that no command migrates production data as a side effect.
    """
    # The common case, a database at this mqm's revision, without importing alembic
    # (a tenth of a second at every command's start).
    head = _head_from_files()
    if head is not None and _revision_by_sql(engine) == head:
        return
    current = current_revision(engine)
    head = head_revision()
    if current == head:
        return
    if current is None:
        with _connect(engine) as conn:
            existing = set(sa.inspect(conn).get_table_names())
        from monitor.store.tables import metadata

        if existing & set(metadata.tables):
            raise DatabaseError(
                f"the database at {safe_url(str(engine.url))} has mqm tables but no migration "
                "revision; it was not created by mqm"
            )
        upgrade(engine)
        return
    if not _known_revision(current):
        raise DatabaseError(
            f"the database at {safe_url(str(engine.url))} is at revision {current}, which this "
            "mqm does not know: it was migrated by a newer mqm; upgrade mqm"
        )
    raise DatabaseError(
        f"the database at {safe_url(str(engine.url))} is at revision {current}, this mqm "
        f"expects {head}: run `mqm db upgrade`"
    )


def _known_revision(revision: str) -> bool:
    from alembic.config import Config as AlembicConfig
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    try:
        return ScriptDirectory.from_config(cfg).get_revision(revision) is not None
    except CommandError:
        return False


def ping(engine: Engine) -> None:
    """One round trip to the database; raises the driver's error when it does not answer."""
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))


def driver_connection(conn: Connection) -> Any:
    """The DBAPI connection under ``conn`` (sqlite3's or psycopg's), for the fast paths that
    talk to the driver directly."""
    raw = conn.connection.driver_connection
    if raw is None:
        raise DatabaseError("the database connection is closed")
    return raw

"""Schema migrations (alembic, scripts in `db/migrations/`).

`Store(url)` calls `ensure_schema` on construction; `upgrade(url)` is the
same for scripts and deployment. The alembic CLI works too:
`alembic -c db/alembic.ini -x url=sqlite:///runs/search.db upgrade head`, and
a new revision after a model change:
`alembic -c db/alembic.ini -x url=... revision --autogenerate -m "..."`.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import URL

from db.engine import make_engine, writer

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# Serializes concurrent upgrades of one PostgreSQL database (the API and the
# runner starting at once). SQLite gets the same from BEGIN IMMEDIATE.
_MIGRATION_LOCK_KEY = 0x65766F6E6F726D02


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


@functools.cache
def head_revisions() -> tuple[str, ...]:
    """The revisions `upgrade head` ends at (read once: parsing scripts is slow)."""
    return tuple(sorted(ScriptDirectory.from_config(alembic_config()).get_heads()))


def current_revisions(connection: Connection) -> tuple[str, ...]:
    return tuple(sorted(MigrationContext.configure(connection).get_current_heads()))


def ensure_schema(engine: Engine) -> bool:
    """Upgrade to head unless already there; returns whether it migrated.

    The fast path is one read of alembic_version. The slow path takes a lock
    and checks again, so two processes starting together migrate once.
    """
    with engine.connect() as conn:
        if current_revisions(conn) == head_revisions():
            return False
    with writer(engine).connect() as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
        if current_revisions(conn) == head_revisions():
            return False
        _run(conn, "upgrade", "head")
    return True


def upgrade(url: str | os.PathLike[str] | URL, revision: str = "head") -> None:
    """Upgrade the database at `url` to `revision` (default: the latest)."""
    engine = make_engine(url)
    try:
        if revision == "head":
            ensure_schema(engine)
            return
        with writer(engine).connect() as conn, conn.begin():
            _run(conn, "upgrade", revision)
    finally:
        engine.dispose()


def downgrade(url: str | os.PathLike[str] | URL, revision: str) -> None:
    """Downgrade the database at `url` to `revision` ("base" drops every table)."""
    engine = make_engine(url)
    try:
        with writer(engine).connect() as conn, conn.begin():
            _run(conn, "downgrade", revision)
    finally:
        engine.dispose()


def _run(conn: Connection, direction: str, revision: str) -> None:
    # env.py runs on this connection, inside the caller's transaction, so
    # the whole migration commits or rolls back as one (both backends have
    # transactional DDL).
    config = alembic_config()
    config.attributes["connection"] = conn
    if direction == "upgrade":
        command.upgrade(config, revision)
    else:
        command.downgrade(config, revision)

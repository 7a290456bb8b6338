"""Engines for the two supported backends, configured once here.

SQLite (the embedded default) and PostgreSQL. Everything that opens a
connection (the store, migrations, tests) goes through `make_engine`, so the
pragmas and transaction handling below apply everywhere.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine, make_url

# Execution option that marks a connection as a writer. On SQLite a writer
# starts with BEGIN IMMEDIATE: it takes the write lock up front (waiting up
# to busy_timeout) instead of failing with SQLITE_BUSY when a read inside the
# transaction has to be upgraded to a write after another writer committed.
WRITE_OPTION = "evonorm_write"

SQLITE_BUSY_TIMEOUT_MS = 30_000


def normalize_url(url: str | os.PathLike[str] | URL) -> URL:
    """A SQLAlchemy URL from a URL, or from a file path meaning SQLite.

    `postgresql://` and `postgres://` pick the psycopg (v3) driver, the only
    one this project installs. In-memory SQLite is refused: every pooled
    connection would see its own empty database.
    """
    if isinstance(url, URL):
        parsed = url
    else:
        text = os.fspath(url)
        if text == ":memory:":
            text = "sqlite://"
        if "://" not in text:
            path = Path(text).expanduser().resolve()
            parsed = URL.create("sqlite", database=str(path))
        else:
            if text.startswith("postgres://"):
                text = "postgresql://" + text[len("postgres://") :]
            parsed = make_url(text)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or database.startswith("file::memory:"):
            raise ValueError(
                "in-memory SQLite is not supported (each pooled connection would get its own "
                "empty database); use a file, e.g. a temporary directory"
            )
    elif backend != "postgresql":
        raise ValueError(f"unsupported database {backend!r}: use a SQLite path or postgresql URL")
    return parsed


def json_dumps(value: Any) -> str:
    """JSON for the database; non-finite floats become null.

    PostgreSQL's json type rejects NaN/Infinity tokens and SQLite would keep
    them, so without this the same metrics would round-trip differently per
    backend. A diverged run's `loss: NaN` is stored as `loss: null`.
    """
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except ValueError:
        return json.dumps(_finite_or_none(value), allow_nan=False, separators=(",", ":"))


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(v) for v in value]
    return value


def make_engine(url: str | os.PathLike[str] | URL, *, echo: bool = False) -> Engine:
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, echo=echo)
    # Name the connections in pg_stat_activity, unless the URL already does.
    connect_args = {} if "application_name" in parsed.query else {"application_name": "evonorm-search"}
    return create_engine(
        parsed,
        echo=echo,
        json_serializer=json_dumps,
        # A connection that died while idle in the pool (server restart) is
        # replaced on checkout instead of failing the next query.
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=10,
        connect_args=connect_args,
    )


def _sqlite_engine(url: URL, *, echo: bool) -> Engine:
    if url.database:
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, echo=echo, json_serializer=json_dumps)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module (which only
        # BEGINs before DML) so `_on_begin` decides how each one starts.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # First: the switch to WAL below needs a lock, and on a fresh file that other
            # connections are opening (the API and a runner starting together) it must wait for
            # it rather than fail at once with "database is locked".
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            # WAL: readers never block the writer and vice versa, which is
            # what lets the API read while the runner writes.
            cursor.execute("PRAGMA journal_mode=WAL")
            # In WAL mode NORMAL cannot corrupt the database; it only may lose
            # the last commits on power loss, and saves an fsync per commit.
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def writer(engine: Engine) -> Engine:
    """The same engine (and pool), with connections marked as writers."""
    return engine.execution_options(**{WRITE_OPTION: True})

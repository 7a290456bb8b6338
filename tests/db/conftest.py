"""Fixtures: every store test runs on each backend.

- sqlite: a fresh file in the test's tmp_path.
- postgresql: a fresh, uniquely named schema in the server at
  EVONORM_TEST_PG_URL (default: postgres@127.0.0.1:5432/test), selected via
  the connection's search_path and dropped afterwards. Unique names make
  concurrent runs (pytest-xdist, two checkouts) safe. Skipped with the
  reason when the server is not reachable.

No `__init__.py` in tests/ on purpose: a package named `tests.db` would be
imported as `db` and shadow the real package, so test module names start
with `test_db_` to stay unique.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from db import Store

PG_URL = os.environ.get("EVONORM_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]

_pg_unreachable: str | None = None
_pg_checked = False


def pg_unreachable_reason() -> str | None:
    """Why PostgreSQL can't be used (None when it can); checked once per session."""
    global _pg_checked, _pg_unreachable
    if not _pg_checked:
        _pg_checked = True
        url = make_url(PG_URL)
        host, port = url.host or "127.0.0.1", url.port or 5432
        try:
            with socket.create_connection((host, port), timeout=1.0):
                pass
            engine = create_engine(url, connect_args={"connect_timeout": 3})
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            engine.dispose()
        except Exception as exc:
            _pg_unreachable = (
                f"PostgreSQL at {url.render_as_string(hide_password=True)} is not usable "
                f"({type(exc).__name__}: {exc}); set EVONORM_TEST_PG_URL to run these tests"
            )
    return _pg_unreachable


@dataclass(frozen=True)
class Database:
    """A fresh, empty database for one test."""

    backend: str
    url: str


def _pg_schema_url(schema: str) -> str:
    url = make_url(PG_URL)
    # libpq `options` selects the schema for every pooled connection,
    # alembic_version included.
    query = dict(url.query)
    query["options"] = f"-csearch_path={schema}"
    return url.set(query=query).render_as_string(hide_password=False)


def admin_engine() -> Engine:
    """An autocommit engine on the test server, for setup and for killing connections."""
    return create_engine(PG_URL, isolation_level="AUTOCOMMIT")


@contextmanager
def fresh_pg_database() -> Iterator[Database]:
    reason = pg_unreachable_reason()
    if reason:
        pytest.skip(reason)
    schema = f"evonorm_test_{uuid.uuid4().hex[:16]}"
    admin = admin_engine()
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield Database("postgresql", _pg_schema_url(schema))
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A fresh database on each backend."""
    if request.param == "sqlite":
        yield Database("sqlite", str(tmp_path / "store.db"))
        return
    with fresh_pg_database() as db:
        yield db


@pytest.fixture
def pg_database() -> Iterator[Database]:
    """A fresh PostgreSQL database only, for PostgreSQL-specific tests."""
    with fresh_pg_database() as db:
        yield db


@pytest.fixture
def store(database: Database) -> Iterator[Store]:
    s = Store(database.url)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def pg_admin() -> Iterator[Engine]:
    """An autocommit engine on the PostgreSQL test server (skips when unreachable)."""
    reason = pg_unreachable_reason()
    if reason:
        pytest.skip(reason)
    engine = admin_engine()
    try:
        yield engine
    finally:
        engine.dispose()

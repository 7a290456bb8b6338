"""Fixtures shared by every test directory: a fresh database on each backend.

- sqlite: a fresh file in the test's tmp_path.
- postgresql: a fresh, uniquely named schema in the server at
  EVONORM_TEST_PG_URL (default: postgres@127.0.0.1:5432/test), selected via
  the connection's search_path and dropped afterwards. Unique names make
  concurrent runs (pytest-xdist, two checkouts) safe. Skipped with the
  reason when the server is not reachable.

No `__init__.py` in tests/ on purpose: a package named `tests.db` would be
imported as `db` and shadow the real package, so test module names carry a
per-directory prefix (`test_db_`, `test_api_`, ...) to stay unique. Helpers
are fixtures, since a conftest without a package cannot be imported reliably.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import pytest

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
        url = urlsplit(PG_URL)
        host, port = url.hostname or "127.0.0.1", url.port or 5432
        try:
            with socket.create_connection((host, port), timeout=1.0):
                pass
            with psycopg.connect(_libpq(PG_URL), connect_timeout=3) as conn:
                conn.execute("SELECT 1")
        except Exception as exc:
            shown = PG_URL.replace(f":{url.password}@", ":***@") if url.password else PG_URL
            _pg_unreachable = (
                f"PostgreSQL at {shown} is not usable "
                f"({type(exc).__name__}: {exc}); set EVONORM_TEST_PG_URL to run these tests"
            )
    return _pg_unreachable


@dataclass(frozen=True)
class Database:
    """A fresh, empty database for one test."""

    backend: str
    url: str


def _libpq(url: str) -> str:
    """A SQLAlchemy URL (`postgresql+psycopg://...`) as a libpq connection URI."""
    scheme, rest = url.split("://", 1)
    return f"{scheme.split('+', 1)[0]}://{rest}"


def _pg_schema_url(schema: str) -> str:
    # libpq `options` selects the schema for every pooled connection,
    # alembic_version included. (No SQLAlchemy here: only db/ and tests/db import it.)
    url = urlsplit(PG_URL)
    query = [(k, v) for k, v in parse_qsl(url.query) if k != "options"]
    query.append(("options", f"-csearch_path={schema}"))
    return urlunsplit(url._replace(query=urlencode(query)))


def _admin_execute(sql: str) -> None:
    with psycopg.connect(_libpq(PG_URL), autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


@contextmanager
def fresh_pg_database() -> Iterator[Database]:
    reason = pg_unreachable_reason()
    if reason:
        pytest.skip(reason)
    schema = f"evonorm_test_{uuid.uuid4().hex[:16]}"
    _admin_execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield Database("postgresql", _pg_schema_url(schema))
    finally:
        _admin_execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A fresh database on each backend."""
    if request.param == "sqlite":
        yield Database("sqlite", str(tmp_path / "store.db"))
        return
    with fresh_pg_database() as db:
        yield db


@pytest.fixture
def store(database: Database) -> Iterator[Store]:
    """The store opened on `database`: every test that takes it runs on each backend."""
    s = Store(database.url)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module", params=BACKENDS)
def module_database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[Database]:
    """A fresh database on each backend, shared by the tests of one module (for expensive setups)."""
    if request.param == "sqlite":
        yield Database("sqlite", str(tmp_path_factory.mktemp("store") / "store.db"))
        return
    with fresh_pg_database() as db:
        yield db


@pytest.fixture
def pg_database() -> Iterator[Database]:
    """A fresh PostgreSQL database only, for PostgreSQL-specific tests."""
    with fresh_pg_database() as db:
        yield db


@pytest.fixture
def pg_url() -> str:
    """The PostgreSQL test server's SQLAlchemy URL (skips when unreachable)."""
    reason = pg_unreachable_reason()
    if reason:
        pytest.skip(reason)
    return PG_URL

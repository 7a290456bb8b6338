"""Fixtures shared by every test directory: a fresh database on each backend.

- sqlite: a fresh file in the test's tmp_path.
- postgresql: a fresh, uniquely named schema in the server at
  EVONORM_TEST_PG_URL (default: postgres@127.0.0.1:5432/test), selected via
  the connection's search_path and dropped afterwards. Unique names make
  concurrent runs (pytest-xdist, two checkouts) safe. Skipped with the
  reason when the server is not reachable.
- throwaway_pg: a private PostgreSQL cluster (`pg_throwaway.py`) for the
  tests that stop or restart a server. The shared server is never restarted
  or altered: the session fails when its start time changed during the run.

No `__init__.py` in tests/ on purpose: a package named `tests.db` would be
imported as `db` and shadow the real package, so test module names carry a
per-directory prefix (`test_db_`, `test_api_`, ...) to stay unique. Helpers
are fixtures, since a conftest without a package cannot be imported reliably.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from pg_throwaway import ThrowawayPostgres, fresh_schema, libpq, unavailable

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
            with psycopg.connect(libpq(PG_URL), connect_timeout=3) as conn:
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


@contextmanager
def fresh_pg_database(server_url: str | None = None) -> Iterator[Database]:
    """A fresh schema in the shared test server, or in the server at `server_url` (a throwaway one)."""
    if server_url is None:
        reason = pg_unreachable_reason()
        if reason:
            pytest.skip(reason)
    with fresh_schema(server_url or PG_URL) as url:
        yield Database("postgresql", url)


# -- the shared server is left as it was ------------------------------------------------------------

_shared_start: object = None


def _shared_pg_start_time() -> object:
    """The shared test server's start time, or None when it is not reachable."""
    try:
        with psycopg.connect(libpq(PG_URL), connect_timeout=3) as conn:
            row = conn.execute("SELECT pg_postmaster_start_time()").fetchone()
            return row[0] if row else None
    except Exception:
        return None


def pytest_sessionstart(session: pytest.Session) -> None:
    global _shared_start
    _shared_start = _shared_pg_start_time()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when the shared server was restarted (or stopped) while the tests ran."""
    if _shared_start is None:
        return
    now = _shared_pg_start_time()
    if now != _shared_start:
        what = "is down" if now is None else f"was restarted at {now}"
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = (f"the shared PostgreSQL server at {PG_URL} (up since {_shared_start}) {what} during "
                   f"the tests: a test must never restart or alter a server it did not start")
        if reporter is not None:
            reporter.write_line(f"FAILED: {message}", red=True, bold=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def throwaway_pg() -> Iterator[ThrowawayPostgres]:
    """A private PostgreSQL cluster for the session, that tests may stop, restart or kill."""
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    cluster = ThrowawayPostgres()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def throwaway_database(throwaway_pg: ThrowawayPostgres) -> Iterator[Database]:
    """A fresh schema in the throwaway cluster, which is running when the test starts."""
    if not throwaway_pg.is_running():
        throwaway_pg.start()
    with fresh_pg_database(throwaway_pg.url) as db:
        yield db


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

"""Fixtures for the store tests: every test runs on each backend.

The backend fixtures (`database`, `pg_database`, `pg_url`) and `store`
live in tests/conftest.py, shared with the other test directories; this
file adds a SQLAlchemy admin engine (only db/ and tests/db import SQLAlchemy).

No `__init__.py` in tests/ on purpose: a package named `tests.db` would be
imported as `db` and shadow the real package, so test module names start
with `test_db_` to stay unique.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine


@pytest.fixture
def pg_admin(pg_url: str) -> Iterator[Engine]:
    """An autocommit engine on the PostgreSQL test server (skips when unreachable)."""
    engine = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        yield engine
    finally:
        engine.dispose()

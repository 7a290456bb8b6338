"""Fixtures for the search tests: the store on each backend.

`database` (tests/conftest.py) is a fresh SQLite file or a fresh PostgreSQL
schema, so every test that takes `store` runs the runner (and the rerank
table) against both; PostgreSQL tests skip with the reason when the server
is unreachable.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from db import Store


@pytest.fixture
def store(database: Any) -> Iterator[Store]:
    s = Store(database.url)
    try:
        yield s
    finally:
        s.close()

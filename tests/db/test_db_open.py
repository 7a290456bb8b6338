"""open_store: the one place a URL or path becomes a Store (the CLI and the API both use it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from db import open_store, sqlite_file


@pytest.mark.parametrize(("url", "expected"), [
    ("runs/evonorm.db", Path("runs/evonorm.db")),
    ("sqlite:///runs/evonorm.db", Path("runs/evonorm.db")),
    ("sqlite:////tmp/x/evonorm.db?timeout=5", Path("/tmp/x/evonorm.db")),
    ("sqlite:///:memory:", None),
    (":memory:", None),
    ("postgresql+psycopg://user@db/evonorm", None),
])
def test_sqlite_file_of_paths_and_urls(url: str, expected: Path | None) -> None:
    assert sqlite_file(url) == expected


def test_a_missing_file_is_refused_without_create_and_made_with_it(tmp_path: Path) -> None:
    path = tmp_path / "deeper" / "evonorm.db"
    with pytest.raises(FileNotFoundError, match=r"evonorm\.db"):
        open_store(str(path), create=False)
    assert not path.parent.exists()  # refusing created nothing
    store = open_store(f"sqlite:///{path}")
    try:
        search = store.create_search("s", {}, seed=0)
    finally:
        store.close()
    reopened = open_store(str(path), create=False)
    try:
        assert reopened.get_search(search.id).name == "s"
    finally:
        reopened.close()

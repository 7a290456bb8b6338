"""Open a store from a URL or a path: a SQLite file's folder is created, a missing file refused on request."""

from __future__ import annotations

from pathlib import Path

from db.store import Store


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite path or `sqlite:///` URL; None for in-memory SQLite and other databases."""
    if "://" not in url:
        return Path(url).expanduser() if url != ":memory:" else None
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///").split("?", 1)[0]
        return Path(path) if path and path != ":memory:" else None
    return None


def open_store(url: str, *, create: bool = True) -> Store:
    """The store at `url`. Without `create` a missing SQLite file is a FileNotFoundError
    (read-only commands: a mistyped path must not become a new, empty database)."""
    path = sqlite_file(url)
    if path is not None:
        if not create and not path.is_file():
            raise FileNotFoundError(str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
    return Store(url)

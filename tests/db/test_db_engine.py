"""URLs and per-backend engine settings."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from sqlalchemy import text

from db import Store
from db.engine import json_dumps, make_engine, normalize_url

REPO = Path(__file__).resolve().parents[2]


def test_a_path_means_sqlite(tmp_path):
    url = normalize_url(tmp_path / "a" / "b.db")
    assert url.drivername == "sqlite"
    assert url.database == str((tmp_path / "a" / "b.db").resolve())
    assert normalize_url("relative.db").database == str(Path("relative.db").resolve())


def test_urls_are_normalized():
    assert normalize_url("sqlite:///x.db").database == "x.db"
    assert normalize_url("postgresql://u@h/d").drivername == "postgresql+psycopg"
    assert normalize_url("postgres://u@h/d").drivername == "postgresql+psycopg"
    assert normalize_url("postgresql+psycopg://u@h/d").drivername == "postgresql+psycopg"


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", ":memory:"])
def test_in_memory_sqlite_is_refused(url):
    with pytest.raises(ValueError, match="in-memory"):
        normalize_url(url)


def test_other_databases_are_refused():
    with pytest.raises(ValueError, match="unsupported"):
        normalize_url("mysql://u@h/d")


def test_sqlite_pragmas(tmp_path):
    engine = make_engine(tmp_path / "p.db")
    try:
        with engine.connect() as conn:
            pragma = {
                name: conn.execute(text(f"PRAGMA {name}")).scalar()
                for name in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")
            }
    finally:
        engine.dispose()
    assert pragma == {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 30_000, "synchronous": 1}


def test_store_creates_the_sqlite_directory_and_reports_itself(tmp_path):
    with Store(tmp_path / "new" / "dir" / "s.db") as store:
        assert store.backend == "sqlite"
        assert store.url.endswith("/new/dir/s.db")
        assert store.create_search("s", {}).id == 1


def test_json_dumps_nulls_non_finite_floats():
    assert json_dumps({"a": float("nan"), "b": [float("inf"), 1.5], "c": "NaN"}) == (
        '{"a":null,"b":[null,1.5],"c":"NaN"}'
    )


def test_only_db_imports_sqlalchemy():
    # The architecture rule: everything outside db/ (and its tests) sees
    # records, never SQLAlchemy.
    offenders = []
    skip_dirs = {"db", "build", "node_modules"}
    sources = [
        path
        for top in REPO.iterdir()
        if top.is_dir() and top.name not in skip_dirs and not top.name.startswith(".")
        for path in top.rglob("*.py")
    ]
    for path in sources:
        rel = path.relative_to(REPO)
        if rel.parts[:2] == ("tests", "db"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and node.level == 0
                else []
            )
            if any(n == "sqlalchemy" or n.startswith("sqlalchemy.") for n in names):
                offenders.append(f"{rel}:{node.lineno}")
    assert offenders == []

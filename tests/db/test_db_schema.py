"""Migrations: the migrated schema is exactly the models, and upgrading is safe to repeat."""

from __future__ import annotations

import threading

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

import db.migrate
from db import Store, StoreError
from db.engine import make_engine
from db.models import Base

TABLES = {"searches", "candidates", "evaluations", "events", "rerank_results", "rerank_trials"}


def schema_diff(url: str) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def table_names(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_migrated_schema_matches_models(database):
    Store(database.url).close()
    assert schema_diff(database.url) == []


def test_compare_detects_a_difference(database):
    # Guards the test above against comparing nothing: drop an index and
    # the comparison must notice.
    Store(database.url).close()
    engine = make_engine(database.url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX ix_candidates_fingerprint")
    engine.dispose()
    diff = schema_diff(database.url)
    assert [d[0] for d in diff if isinstance(d, tuple)] == ["add_index"]


def test_store_upgrades_a_fresh_database_and_then_takes_the_fast_path(database):
    engine = make_engine(database.url)
    try:
        assert db.migrate.ensure_schema(engine) is True
        assert set(inspect(engine).get_table_names()) >= TABLES
        assert db.migrate.ensure_schema(engine) is False
        with engine.connect() as conn:
            assert db.migrate.current_revisions(conn) == db.migrate.head_revisions()
    finally:
        engine.dispose()


def test_upgrade_function_then_store_without_migrate(database):
    db.upgrade(database.url)
    assert table_names(database.url) == TABLES
    with Store(database.url, migrate=False) as store:
        assert store.list_searches() == []


def test_store_without_migrate_refuses_an_unmigrated_database(database):
    with pytest.raises(StoreError, match=r"db\.migrate\.upgrade"):
        Store(database.url, migrate=False)


def test_downgrade_to_base_and_up_again(database):
    with Store(database.url) as store:
        store.create_search("s", {})
    db.migrate.downgrade(database.url, "base")
    assert table_names(database.url) == set()
    db.upgrade(database.url)
    assert schema_diff(database.url) == []
    with Store(database.url) as store:
        assert store.list_searches() == []


def test_concurrent_first_opens_migrate_once(database):
    # The API and the runner starting together on a fresh database.
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def open_store() -> None:
        try:
            barrier.wait()
            Store(database.url).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert schema_diff(database.url) == []

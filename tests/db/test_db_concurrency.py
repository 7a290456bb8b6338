"""Concurrency and connection loss.

- The runner writing while the API reads and changes status, in one process
  (threads) and through two Store objects on one database (as two processes
  would), without "database is locked" or any other error.
- PostgreSQL: connections killed while idle (a server restart) are replaced;
  a read whose connection dies mid-transaction is retried once; a write
  raises RetryableStoreError.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from db import (
    CandidateOutcome,
    CandidateStatus,
    NewCandidate,
    NewEvaluation,
    RetryableStoreError,
    SearchStatus,
    Store,
    TransitionError,
)


def run_threads(targets: list[Callable[[], None]], timeout: float = 120) -> list[BaseException]:
    errors: list[BaseException] = []

    def guarded(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:
                errors.append(exc)

        return run

    threads = [threading.Thread(target=guarded(fn)) for fn in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    return errors


def test_runner_writes_while_api_threads_read_and_change_status(database, store):
    search = store.create_search("busy", {})
    other = store.create_search("paused-and-resumed", {})
    store.set_search_status(search.id, SearchStatus.RUNNING)
    second = Store(database.url)  # another "process" on the same database
    batches, batch = 25, 32
    runner_done = threading.Event()
    reads = [0]

    def runner() -> None:
        try:
            for b in range(batches):
                added = store.add_candidates(search.id, [NewCandidate("{}", f"{b}-{i}") for i in range(batch)])
                ids = store.mark_evaluating([c.id for c in added])
                store.finish_candidates(
                    [
                        CandidateOutcome(
                            i,
                            CandidateStatus.EVALUATED,
                            objectives=[float(i)],
                            evaluations=[NewEvaluation("r", "t", {"accuracy": 0.5})],
                        )
                        if i % 4
                        else CandidateOutcome(i, CandidateStatus.REJECTED, rejection_stage="static")
                        for i in ids
                    ]
                )
        finally:
            runner_done.set()

    def reader(s: Store) -> Callable[[], None]:
        def run() -> None:
            cursor = 0
            while not runner_done.is_set():
                s.get_search(search.id)
                s.count_by_status(search.id)
                s.list_candidates(search.id, status="evaluated", limit=20, descending=True)
                for e in s.events_after(cursor, search_id=search.id):
                    cursor = e.id
                reads[0] += 1

        return run

    def api() -> None:
        # Pause/resume another search, and try to pause the busy one and back.
        while not runner_done.is_set():
            second.set_search_status(other.id, SearchStatus.PAUSED)
            second.set_search_status(other.id, SearchStatus.QUEUED)
            try:
                second.set_search_status(search.id, SearchStatus.PAUSED, expected={"running"})
                second.set_search_status(search.id, SearchStatus.RUNNING, expected={"paused"})
            except TransitionError:
                pass

    errors = run_threads([runner, reader(store), reader(store), reader(second), api])
    second.close()
    assert errors == []
    assert reads[0] > 0
    final = store.get_search(search.id)
    n = batches * batch
    assert final.num_candidates == n
    assert final.num_evaluated == n * 3 // 4 and final.num_rejected == n // 4
    assert store.count_by_status(search.id)[CandidateStatus.EVALUATED] == final.num_evaluated


def test_sqlite_writers_queue_instead_of_failing(tmp_path):
    # Many writers on one SQLite file, each with its own Store (pool), doing
    # read-then-write transactions: BEGIN IMMEDIATE + busy_timeout make them
    # wait their turn instead of raising "database is locked".
    url = str(tmp_path / "contended.db")
    stores = [Store(url) for _ in range(6)]
    searches = [stores[0].create_search(f"s{i}", {}) for i in range(6)]

    def writer(k: int) -> Callable[[], None]:
        def run() -> None:
            s, search_id = stores[k], searches[k].id
            for b in range(15):
                s.add_candidates(search_id, [NewCandidate("{}", f"{b}-{i}") for i in range(8)])
                s.set_search_status(search_id, "paused" if b % 2 == 0 else "queued")
                s.append_event("tick", {"b": b}, search_id=search_id)

        return run

    errors = run_threads([writer(k) for k in range(6)])
    for s in stores:
        s.close()
    assert errors == []


# -- PostgreSQL connection loss ---------------------------------------------


@pytest.fixture
def pg_store(pg_database) -> Iterator[tuple[Store, str]]:
    app = f"evonorm-test-{uuid.uuid4().hex[:12]}"
    url = make_url(pg_database.url)
    url = url.set(query={**url.query, "application_name": app})
    s = Store(url.render_as_string(hide_password=False))
    try:
        yield s, app
    finally:
        s.close()


def kill_backends(admin, app: str) -> int:
    with admin.connect() as conn:
        return len(
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE application_name = :app"
                ),
                {"app": app},
            ).all()
        )


def kill_on_statement(admin, store: Store, needle: str) -> list[int]:
    """Terminate the store's own backend just before the first statement containing `needle`."""
    killed: list[int] = []

    @event.listens_for(store._engine, "before_cursor_execute")
    def _kill(conn, cursor, statement, parameters, context, executemany) -> None:
        if not killed and needle in statement:
            pid = conn.connection.dbapi_connection.info.backend_pid
            with admin.connect() as admin_conn:
                admin_conn.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid})
            killed.append(pid)

    return killed


@pytest.mark.postgres
def test_idle_connections_killed_by_a_restart_are_replaced(pg_admin, pg_store):
    store, app = pg_store
    search = store.create_search("s", {})
    # Fill the pool with several connections, then kill them all.
    run_threads([lambda: store.get_search(search.id) for _ in range(4)])
    assert kill_backends(pg_admin, app) >= 1
    time.sleep(0.1)
    assert store.get_search(search.id).id == search.id
    assert store.set_search_status(search.id, "running").status is SearchStatus.RUNNING


@pytest.mark.postgres
def test_read_that_loses_its_connection_is_retried_once(pg_admin, pg_store):
    store, _ = pg_store
    search = store.create_search("s", {})
    killed = kill_on_statement(pg_admin, store, "FROM searches")
    assert store.get_search(search.id).id == search.id
    assert len(killed) == 1


@pytest.mark.postgres
def test_write_that_loses_its_connection_raises_retryable(pg_admin, pg_store):
    store, _ = pg_store
    search = store.create_search("s", {})
    [cand] = store.add_candidates(search.id, [NewCandidate("{}", "h")])
    killed = kill_on_statement(pg_admin, store, "INSERT INTO evaluations")
    outcome = CandidateOutcome(
        cand.id, CandidateStatus.EVALUATED, objectives=[1.0], evaluations=[NewEvaluation("r", "t", {})]
    )
    with pytest.raises(RetryableStoreError, match="connection lost"):
        store.finish_candidates([outcome])
    assert len(killed) == 1
    # Nothing was committed; retrying is safe and completes the write once.
    assert store.get_candidate(cand.id).status is CandidateStatus.PENDING
    store.finish_candidates([outcome])
    store.finish_candidates([outcome])
    assert len(store.evaluations_for(cand.id)) == 1


# -- a COMMIT that went through but whose answer was lost ---------------------------------


def lose_the_first_commit_ack(store: Store) -> list[int]:
    """Make the store's first write transaction commit and then fail as if the connection dropped
    before the server's answer arrived (a PostgreSQL restart at the wrong moment)."""
    real = store._transaction
    lost: list[int] = []

    @contextmanager
    def transaction(*, write: bool) -> Iterator[Any]:
        with real(write=write) as session:
            yield session
        if write and not lost:
            lost.append(1)
            raise OperationalError("COMMIT", {}, ConnectionError("server closed the connection unexpectedly"),
                                   connection_invalidated=True)

    store._transaction = transaction  # type: ignore[method-assign]
    return lost


def test_add_candidates_repeated_after_a_lost_commit_returns_what_the_first_attempt_inserted(store):
    search = store.create_search("s", {})
    [old] = store.add_candidates(search.id, [NewCandidate("{}", "h0")])
    runner_view = store.with_reconnect(10)
    lost = lose_the_first_commit_ack(runner_view)
    batch = [NewCandidate("{}", "h2"), NewCandidate("{}", "h0"), NewCandidate("{}", "h1")]
    added = runner_view.add_candidates(search.id, batch)
    assert lost == [1]
    # the committed rows come back (not skipped as duplicates of themselves), in input order; h0 was there
    assert [c.structural_hash for c in added] == ["h2", "h1"] and old.id not in [c.id for c in added]
    assert store.get_search(search.id).num_candidates == 3
    events = [e for e in store.events_after(search_id=search.id) if e.kind == "candidates_added"]
    assert [e.payload["ids"] for e in events] == [[old.id], sorted(c.id for c in added)]


def test_a_status_move_repeated_after_a_lost_commit_is_done_once(store):
    search = store.create_search("s", {})
    runner_view = store.with_reconnect(10)
    lost = lose_the_first_commit_ack(runner_view)
    moved = runner_view.set_search_status(search.id, SearchStatus.RUNNING, expected=[SearchStatus.QUEUED])
    assert lost == [1] and moved.status is SearchStatus.RUNNING
    events = [e for e in store.events_after(search_id=search.id) if e.kind == "search_status"]
    assert [(e.payload["from"], e.payload["to"]) for e in events] == [("queued", "running")]
    # Without the reconnect window the caller hears that the outcome is unknown.
    lose_the_first_commit_ack(store)
    with pytest.raises(RetryableStoreError, match="may or may not have been committed"):
        store.set_search_status(search.id, SearchStatus.FINISHED)

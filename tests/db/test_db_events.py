"""The event log: order, cursors, filters, and no skipped ids under concurrent writers."""

from __future__ import annotations

import threading
import time

import pytest

from db import EventKind, NotFoundError, Store, StoreError


def test_append_and_read_in_order(store):
    search = store.create_search("s", {})
    first = store.append_event("note", {"text": "hello", "n": [1, 2]}, search_id=search.id)
    second = store.append_event("global", None)
    assert first.kind == "note" and first.payload == {"text": "hello", "n": [1, 2]}
    assert first.search_id == search.id and first.candidate_id is None
    assert second.payload == {} and second.search_id is None
    assert second.id > first.id
    all_events = store.events_after(0)
    assert [e.kind for e in all_events] == [EventKind.SEARCH_CREATED, "note", "global"]
    assert all_events[1] == first and all_events[2] == second
    assert [e.id for e in all_events] == sorted(e.id for e in all_events)


def test_cursor_returns_only_new_events(store):
    search = store.create_search("s", {})
    cursor = store.last_event_id()
    assert store.events_after(cursor) == []
    made = [store.append_event("tick", {"i": i}, search_id=search.id) for i in range(5)]
    page = store.events_after(cursor, limit=3)
    assert page == made[:3]
    rest = store.events_after(page[-1].id)
    assert rest == made[3:]
    assert store.events_after(rest[-1].id) == []
    assert store.last_event_id() == made[-1].id
    assert store.last_event_id(search_id=search.id) == made[-1].id


def test_filter_by_search(store):
    a = store.create_search("a", {})
    b = store.create_search("b", {})
    store.append_event("x", search_id=a.id)
    store.append_event("y", search_id=b.id)
    store.append_event("z")
    assert [e.kind for e in store.events_after(0, search_id=a.id)] == ["search_created", "x"]
    assert [e.kind for e in store.events_after(0, search_id=b.id)] == ["search_created", "y"]
    assert store.last_event_id(search_id=999) == 0
    with pytest.raises(ValueError):
        store.events_after(0, limit=-1)


def test_event_for_unknown_search_is_refused(store):
    # Foreign keys are enforced on SQLite too (PRAGMA foreign_keys=ON).
    with pytest.raises(StoreError) as info:
        store.append_event("x", search_id=424242)
    assert not isinstance(info.value, NotFoundError)


def test_follower_never_skips_an_event_while_several_writers_append(database, store):
    # The dashboard's contract: polling events_after(last seen id) sees every
    # event exactly once and in id order, even when several transactions
    # append at the same time (the runner plus the API, or two runners).
    search = store.create_search("s", {})
    writers, per_writer = 4, 60
    stores = [Store(database.url) for _ in range(writers)]
    stop = threading.Event()
    errors: list[BaseException] = []
    seen: list[int] = []
    start = store.last_event_id()

    def write(w: int) -> None:
        try:
            for i in range(per_writer):
                stores[w].append_event("w", {"w": w, "i": i}, search_id=search.id)
        except BaseException as exc:
            errors.append(exc)

    def follow() -> None:
        cursor = start
        try:
            while True:
                done = stop.is_set()  # read before polling: one more poll after writers end
                for event in store.events_after(cursor, limit=50):
                    seen.append(event.id)
                    cursor = event.id
                if done and store.events_after(cursor) == []:
                    return
                time.sleep(0.0005)
        except BaseException as exc:
            errors.append(exc)

    follower = threading.Thread(target=follow)
    follower.start()
    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    follower.join(timeout=60)
    for s in stores:
        s.close()
    assert errors == []
    expected = [e.id for e in store.events_after(start, limit=10_000)]
    assert len(expected) == writers * per_writer
    assert seen == expected


def test_a_searchs_faults_are_read_from_the_kind_index_not_its_whole_log(store):
    """The dashboard reads a search's faults on every visit: on a big search that walked every event."""
    from sqlalchemy import event

    from db import FAULT_EVENT_KINDS

    search = store.create_search("s", {})
    for i in range(30):
        store.append_event("candidate_finished", {"i": i}, search_id=search.id)
    fault = store.append_event(EventKind.NODE_LOST, {"node": "n"}, search_id=search.id)
    store.append_event("candidate_finished", {"i": 30}, search_id=search.id)
    seen: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT") and "FROM events" in statement:
            seen.append((statement, parameters))

    engine = store._engine
    event.listen(engine, "before_cursor_execute", capture)
    try:
        assert store.events_after(0, search_id=search.id, kinds=FAULT_EVENT_KINDS) == [fault]
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    [(sql, params)] = seen
    explain = "EXPLAIN QUERY PLAN " if store.backend == "sqlite" else "EXPLAIN "
    with engine.connect() as conn:
        plan = " ".join(str(row) for row in conn.exec_driver_sql(explain + sql, params))
    if store.backend == "sqlite":   # PostgreSQL's planner picks by its statistics; SQLite keeps none here
        assert "ix_events_search_id_kind_id" in plan, plan

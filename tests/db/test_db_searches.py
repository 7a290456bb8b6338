"""Searches: round trips, listing, and the status state machine."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from db import (
    SEARCH_TRANSITIONS,
    TERMINAL_SEARCH_STATUSES,
    EventKind,
    NotFoundError,
    SearchStatus,
    Store,
    TransitionError,
)

S = SearchStatus

# Allowed moves that bring a new (queued) search into each status.
PATH_TO = {
    S.QUEUED: [],
    S.RUNNING: [S.RUNNING],
    S.PAUSED: [S.PAUSED],
    S.CANCELLED: [S.CANCELLED],
    S.FINISHED: [S.RUNNING, S.FINISHED],
    S.FAILED: [S.FAILED],
}


def search_in(store, status: SearchStatus) -> int:
    search = store.create_search(f"in-{status}", {})
    for step in PATH_TO[status]:
        store.set_search_status(search.id, step)
    return search.id


def test_create_and_get_round_trip(store):
    before = datetime.now(UTC)
    config = {"population": 64, "backbones": ["resnet20", "mobilenet"], "nested": {"lr": 0.1}}
    created = store.create_search("evo-1", config, seed=2**62)
    assert created.name == "evo-1"
    assert created.config == config
    assert created.seed == 2**62
    assert created.status is S.QUEUED
    assert (created.num_candidates, created.num_evaluated, created.num_rejected) == (0, 0, 0)
    assert created.error is None and created.started_at is None and created.finished_at is None
    assert created.created_at.tzinfo is UTC and created.created_at >= before
    assert store.get_search(created.id) == created


def test_seed_is_optional_and_range_checked(store):
    assert store.create_search("no-seed", {}).seed is None
    assert store.create_search("negative", {}, seed=-5).seed == -5
    with pytest.raises(ValueError, match="64-bit"):
        store.create_search("huge", {}, seed=2**64)


def test_non_finite_floats_in_config_are_stored_as_null(store):
    search = store.create_search("nan", {"a": float("nan"), "b": [1.0, float("inf")]})
    assert search.config == {"a": None, "b": [1.0, None]}
    assert store.get_search(search.id).config == search.config


def test_records_are_frozen_copies(store):
    search = store.create_search("s", {"k": 1})
    with pytest.raises(AttributeError):
        search.name = "other"  # type: ignore[misc]
    search.config["k"] = 2  # a caller's copy, not the store's
    assert store.get_search(search.id).config == {"k": 1}


def test_unknown_search_raises_not_found(store):
    with pytest.raises(NotFoundError):
        store.get_search(12345)
    with pytest.raises(NotFoundError):
        store.set_search_status(12345, S.RUNNING)


def test_list_searches_pages_newest_first_and_filters(store):
    ids = [store.create_search(f"s{i}", {}).id for i in range(7)]
    store.set_search_status(ids[2], S.RUNNING)
    store.set_search_status(ids[5], S.RUNNING)
    assert [s.id for s in store.list_searches(limit=3)] == ids[::-1][:3]
    assert [s.id for s in store.list_searches(limit=3, offset=3)] == ids[::-1][3:6]
    assert [s.id for s in store.list_searches(newest_first=False, limit=None)] == ids
    assert [s.id for s in store.list_searches(status=S.RUNNING)] == [ids[5], ids[2]]
    assert [s.id for s in store.searches_with_status([S.RUNNING, "queued"])] == ids
    assert store.searches_with_status(S.PAUSED) == []
    with pytest.raises(ValueError):
        store.list_searches(limit=-1)


def test_every_transition_is_allowed_or_refused_as_the_table_says(store):
    # One test walks all 36 (from, to) pairs on a fresh search each.
    for current in S:
        for target in S:
            search_id = search_in(store, current)
            if target in SEARCH_TRANSITIONS[current]:
                assert store.set_search_status(search_id, target).status is target
            else:
                with pytest.raises(TransitionError) as info:
                    store.set_search_status(search_id, target)
                assert (info.value.current, info.value.requested) == (current, target)
                assert store.get_search(search_id).status is current


def test_transition_table_matches_the_brief():
    assert {s for s in S if S.PAUSED in SEARCH_TRANSITIONS[s]} == {S.QUEUED, S.RUNNING}
    assert {s for s in S if S.CANCELLED in SEARCH_TRANSITIONS[s]} == {
        S.QUEUED,
        S.RUNNING,
        S.PAUSED,
        S.FAILED,
    }
    assert {s for s in S if not SEARCH_TRANSITIONS[s]} == TERMINAL_SEARCH_STATUSES
    # Resuming (leaving paused for running or the queue) from paused, and from failed.
    assert SEARCH_TRANSITIONS[S.PAUSED] >= {S.RUNNING, S.QUEUED}
    assert SEARCH_TRANSITIONS[S.FAILED] == {S.RUNNING, S.QUEUED, S.CANCELLED}
    assert S.PAUSED not in SEARCH_TRANSITIONS[S.PAUSED]


def test_expected_makes_the_change_conditional(store):
    search_id = search_in(store, S.PAUSED)
    with pytest.raises(TransitionError, match="expected"):
        store.set_search_status(search_id, S.RUNNING, expected={S.QUEUED})
    assert store.get_search(search_id).status is S.PAUSED
    resumed = store.set_search_status(search_id, "running", expected={"paused"})
    assert resumed.status is S.RUNNING


def test_timestamps_and_error(store):
    search_id = search_in(store, S.RUNNING)
    started = store.get_search(search_id).started_at
    assert started is not None
    store.set_search_status(search_id, S.PAUSED)
    resumed = store.set_search_status(search_id, S.RUNNING)
    assert resumed.started_at == started  # the first start is kept
    assert resumed.finished_at is None
    failed = store.set_search_status(search_id, S.FAILED, error="worker pool died")
    assert failed.error == "worker pool died"
    assert failed.finished_at is not None and failed.finished_at >= failed.started_at
    assert failed.updated_at == failed.finished_at
    # The user resumes a failed search: it has not ended any more, and the old error is gone.
    again = store.set_search_status(search_id, S.QUEUED, expected={S.FAILED})
    assert (again.status, again.finished_at, again.error) == (S.QUEUED, None, None)
    assert again.started_at == started


def test_status_changes_are_logged_as_events(store):
    search_id = search_in(store, S.RUNNING)
    store.set_search_status(search_id, S.CANCELLED, error="user")
    events = store.events_after(0, search_id=search_id)
    assert [e.kind for e in events] == [
        EventKind.SEARCH_CREATED,
        EventKind.SEARCH_STATUS,
        EventKind.SEARCH_STATUS,
    ]
    assert events[-1].payload == {"from": "running", "to": "cancelled", "error": "user"}


def test_racing_compare_and_set_has_exactly_one_winner(database, store):
    # Eight "runners" try to finish the same running search at once; the
    # expected-status check and the update must be one atomic step.
    search_id = search_in(store, S.RUNNING)
    stores = [Store(database.url) for _ in range(4)]
    barrier = threading.Barrier(8)
    outcomes: list[str] = []
    lock = threading.Lock()

    def attempt(i: int) -> None:
        barrier.wait()
        target = S.FINISHED if i % 2 else S.CANCELLED
        try:
            stores[i % 4].set_search_status(search_id, target, expected={S.RUNNING})
            result = "won"
        except TransitionError:
            result = "lost"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.close()
    assert sorted(outcomes) == ["lost"] * 7 + ["won"]
    assert store.get_search(search_id).status in TERMINAL_SEARCH_STATUSES
    assert len(store.events_after(0, search_id=search_id)) == 3  # created, running, the winner

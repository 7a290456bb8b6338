"""The runner's lease on a search: one writer at a time, taken over only from a dead or silent holder."""

from __future__ import annotations

import threading
import time

import pytest

from db import LeaseError, NotFoundError, Store


def test_claim_renew_release(store: Store) -> None:
    sid = store.create_search("s", {}).id
    assert store.get_search(sid).runner is None
    claimed = store.claim_search(sid, "a", stale_after_s=30)
    assert claimed.runner == "a" and claimed.runner_heartbeat is not None
    assert store.claim_search(sid, "a", stale_after_s=30).runner == "a"   # re-entrant
    with pytest.raises(LeaseError, match="being run by a") as refused:
        store.claim_search(sid, "b", stale_after_s=30)
    assert refused.value.holder == "a" and refused.value.age_s < 30
    first = store.get_search(sid).runner_heartbeat
    assert first is not None
    time.sleep(0.01)
    assert store.renew_lease(sid, "a")
    renewed = store.get_search(sid).runner_heartbeat
    assert renewed is not None and renewed > first
    assert not store.renew_lease(sid, "b")           # b never held it
    store.release_search(sid, "b")                   # not b's to release
    assert store.get_search(sid).runner == "a"
    store.release_search(sid, "a")
    assert store.get_search(sid).runner is None
    assert store.claim_search(sid, "b", stale_after_s=30).runner == "b"


def test_a_silent_or_dead_holder_is_taken_over(store: Store) -> None:
    sid = store.create_search("s", {}).id
    store.claim_search(sid, "a", stale_after_s=30)
    with pytest.raises(LeaseError):
        store.claim_search(sid, "b", stale_after_s=30, take_from="someone-else")
    # The caller saw process `a` gone: taken at once.
    assert store.claim_search(sid, "b", stale_after_s=30, take_from="a").runner == "b"
    assert not store.renew_lease(sid, "a")           # a, if it was only suspended, learns it lost
    # A holder silent for longer than stale_after_s is presumed dead.
    time.sleep(0.05)
    assert store.claim_search(sid, "c", stale_after_s=0.01).runner == "c"


def test_concurrent_claims_grant_exactly_one(store: Store) -> None:
    sid = store.create_search("s", {}).id
    won: list[str] = []
    lost: list[str] = []
    barrier = threading.Barrier(6)

    def claim(name: str) -> None:
        barrier.wait()
        try:
            store.claim_search(sid, name, stale_after_s=30)
            won.append(name)
        except LeaseError:
            lost.append(name)

    threads = [threading.Thread(target=claim, args=(f"r{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(won) == 1 and len(lost) == 5
    assert store.get_search(sid).runner == won[0]


def test_claim_of_an_unknown_search(store: Store) -> None:
    with pytest.raises(NotFoundError):
        store.claim_search(999, "a", stale_after_s=30)
    assert not store.renew_lease(999, "a")

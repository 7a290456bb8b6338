"""One runner per search: a second is refused, a dead one is taken over, a usurped one stops writing."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import pytest
import search_fakes

from db import CandidateStatus, EventKind, LeaseError, SearchStatus, Store
from evonorm_search.config import load_config
from evonorm_search.lease import LeaseLost, _process_start, holder_is_gone, runner_identity
from evonorm_search.runner import SearchRunner
from workers.executors import InProcessExecutor


def new_search(store: Store, budget: int = 40) -> int:
    cfg = load_config("quick", {"budget": budget, "population_size": 8, "tournament_size": 3, "in_flight": 2})
    return store.create_search(cfg.name, cfg.model_dump(mode="json"), seed=cfg.seed).id


def runner(store: Store, sid: int) -> SearchRunner:
    return SearchRunner(store, sid, InProcessExecutor(), rung_fn=search_fakes.SLOW_RUNG,
                        status_poll_s=0.01)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_holder_is_gone() -> None:
    host = socket.gethostname()
    assert not holder_is_gone(runner_identity())                     # this process
    assert holder_is_gone(f"{host}:{dead_pid()}:123:abcd")           # exited
    assert not holder_is_gone(f"elsewhere:{dead_pid()}:123:abcd")    # another host: only silence tells
    assert not holder_is_gone("not an identity")
    # A live pid with another start time is a new process that reused the pid: the holder is gone.
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as proc:
        try:
            start = _process_start(proc.pid)
            assert not holder_is_gone(f"{host}:{proc.pid}:{start}:abcd")
            if start != "-":
                assert holder_is_gone(f"{host}:{proc.pid}:1:abcd")
        finally:
            proc.kill()


def test_a_second_runner_is_refused_and_touches_nothing(store: Store) -> None:
    sid = new_search(store)
    first = runner(store, sid)
    done: list[object] = []
    thread = threading.Thread(target=lambda: done.append(first.run()))
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while store.count_by_status(sid)[CandidateStatus.EVALUATING] == 0:
            assert time.monotonic() < deadline and thread.is_alive(), "the first runner never got going"
            time.sleep(0.01)
        with pytest.raises(LeaseError, match=f"search {sid} is being run by"):
            runner(store, sid).run()
        # The refused runner reset nothing: the first one's work is still in flight under its lease.
        assert store.get_search(sid).runner == first.lease.runner
    finally:
        thread.join(120)
    [result] = done
    assert getattr(result, "status", None) is SearchStatus.FINISHED
    rows = store.list_candidates(sid, limit=None)
    assert len(rows) == 40 and all(c.finished for c in rows)
    assert store.get_search(sid).runner is None      # released at the end


def test_a_dead_runner_on_this_host_is_taken_over_at_once(store: Store) -> None:
    sid = new_search(store, budget=10)
    store.set_search_status(sid, SearchStatus.RUNNING)
    dead = f"{socket.gethostname()}:{dead_pid()}:1:dead"
    store.claim_search(sid, dead, stale_after_s=3600)
    start = time.monotonic()
    assert runner(store, sid).run().status is SearchStatus.FINISHED
    assert time.monotonic() - start < 60   # not the hour the lease would take to go stale
    # The takeover is in the search's events, naming the dead holder.
    [takeover] = [e.payload for e in store.events_after(0, search_id=sid, kinds=[EventKind.RUNNER_TAKEOVER])]
    assert takeover["previous"] == dead and takeover["runner"] != dead


def test_a_runner_whose_lease_is_taken_stops_without_writing(store: Store) -> None:
    sid = new_search(store, budget=400)
    r = runner(store, sid)
    r.lease.renew_s = 0.02
    errors: list[BaseException] = []

    def run() -> None:
        try:
            r.run()
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 60
    while store.get_search(sid).num_evaluated < 3:
        assert time.monotonic() < deadline and thread.is_alive(), "the runner never got going"
        time.sleep(0.01)
    store.claim_search(sid, "usurper", stale_after_s=0)     # as if the runner had been silent too long
    thread.join(60)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], LeaseLost), errors
    # It stopped, and left the search to its new holder: not failed, not released, not finished.
    after = store.get_search(sid)
    assert after.status is SearchStatus.RUNNING and after.runner == "usurper" and after.num_candidates < 400

"""A search waits out a store outage of any length, then carries on by itself.

The runner's store rides out short outages itself (`Store.with_reconnect`).
A longer one makes `SearchRunner.run` raise RetryableStoreError with the
search left `running` (nothing can be written while the database is away).
`run_through_outages` then polls the store until it answers, records a
`store_outage` event, and starts a fresh runner, whose recovery moves the
candidates that were in flight back to pending. The coordinator and `run`
both go through it, so neither ever marks a search failed for an outage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from db import RetryableStoreError, SearchRecord, Store
from db.records import EventKind
from evonorm_search.runner import SearchRunner

log = logging.getLogger(__name__)


def run_through_outages(make_runner: Callable[[], SearchRunner], store: Store, search_id: int, *,
                        check_stop: Callable[[], None] = lambda: None, poll_s: float = 1.0,
                        on_wait: Callable[[str], None] | None = None) -> SearchRecord:
    """`make_runner().run()`, started again after every store outage it stops for.

    `check_stop()` is called while waiting and may raise to give up (a coordinator shutting down).
    """
    probe = store.with_reconnect(0)   # one attempt per poll, so a stop is noticed at once
    while True:
        runner: SearchRunner | None = None
        try:
            runner = make_runner()
            return runner.run()
        except RetryableStoreError as e:
            since = e.down_since or time.time()   # when the runner first found the database away
            log.warning("search %s: the database is unreachable (%s); waiting for it", search_id, e)
            if on_wait is not None:
                on_wait("the database is unreachable; the search waits for it and then carries on")
            _wait_for_store(probe, search_id, check_stop, poll_s)
        if runner is not None:
            # It could not release its lease with the store away: the next runner in this process takes over.
            store.release_search(search_id, runner.lease.runner)
        # No driver error in the payload: events are readable by every API client.
        outage = {"since": round(since, 3), "down_s": round(time.time() - since, 1), "runner_restarted": True}
        store.append_event(EventKind.STORE_OUTAGE, outage, search_id=search_id)
        log.info("search %s: the database is back; resuming", search_id)


def _wait_for_store(probe: Store, search_id: int, check_stop: Callable[[], None], poll_s: float) -> None:
    while True:
        check_stop()
        try:
            probe.get_search(search_id)
            return
        except RetryableStoreError:
            time.sleep(poll_s)

"""Errors raised by `db.Store`.

Callers never see SQLAlchemy or driver exceptions: every database error is
translated into one of these, so code outside `db/` can handle failures
without importing SQLAlchemy.
"""

from __future__ import annotations


class StoreError(Exception):
    """A database operation failed; the message names the operation."""


class RetryableStoreError(StoreError):
    """The operation may succeed if the caller tries again.

    Raised for lost connections (server restart, network), SQLite "database is
    locked" after the busy timeout, and PostgreSQL serialization failures or
    deadlocks. For a write, the transaction may or may not have been committed
    when a connection is lost during COMMIT: only retry writes that are safe to
    repeat (`finish_candidates` and `add_candidates` are; see their docs).

    `down_since` (a UNIX time) is when a store from `with_reconnect` first found the database
    unreachable, when it gave up waiting; None otherwise.
    """

    down_since: float | None = None


class NotFoundError(StoreError, LookupError):
    """A search or candidate id that does not exist."""


class TransitionError(StoreError):
    """A search status change that the state machine does not allow.

    `current` is the status the search had when the change was refused.
    """

    def __init__(self, search_id: int, current: str, requested: str, reason: str) -> None:
        super().__init__(f"search {search_id}: cannot go from {current!r} to {requested!r}: {reason}")
        self.search_id = search_id
        self.current = current
        self.requested = requested


class LeaseError(StoreError):
    """Another runner holds the search's lease, and renewed it recently."""

    def __init__(self, search_id: int, holder: str, age_s: float) -> None:
        super().__init__(f"search {search_id} is being run by {holder} (lease renewed {age_s:.0f}s ago)")
        self.search_id = search_id
        self.holder = holder
        self.age_s = age_s

"""The store's outage handling that the coordinator relies on (the PostgreSQL restart test runs it for real)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from deploy_cluster import free_port

from db import NewCandidate, RetryableStoreError, Store


def test_an_unreachable_server_is_a_retryable_error() -> None:
    # Connection refused: nothing was sent, so the caller may retry (the API answers 503, not 500).
    with pytest.raises(RetryableStoreError, match="unreachable"):
        Store(f"postgresql://postgres@127.0.0.1:{free_port()}/test")


def test_with_reconnect_shares_the_engine_and_marks_idempotently(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    patient = store.with_reconnect(5.0)
    try:
        search = patient.create_search("s", {})
        [c] = patient.add_candidates(search.id, [NewCandidate("{}", "h")])
        assert store.get_candidate(c.id).id == c.id   # one database, one pool
        t = time.monotonic()
        assert patient.mark_evaluating([c.id]) == [c.id]
        assert patient.mark_evaluating([c.id]) == []   # a fresh call still moves only pending rows
        assert time.monotonic() - t < 2
    finally:
        store.close()

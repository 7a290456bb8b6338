"""Persistence for searches, candidates, evaluations, events and rerank results.

The only package that imports SQLAlchemy. Everything else uses `Store` and
the frozen records it returns:

    from db import Store, NewCandidate, CandidateStatus
    store = Store("runs/search.db")            # or "postgresql+psycopg://..."
    search = store.create_search("evo-1", {"population": 64}, seed=0)
"""

from db.errors import LeaseError, NotFoundError, RetryableStoreError, StoreError, TransitionError
from db.migrate import upgrade
from db.open import open_store, sqlite_file
from db.records import (
    ENDED_SEARCH_STATUSES,
    FAULT_EVENT_KINDS,
    FINISHED_CANDIDATE_STATUSES,
    SEARCH_TRANSITIONS,
    TERMINAL_SEARCH_STATUSES,
    CandidateOutcome,
    CandidateRecord,
    CandidateStatus,
    Estimate,
    EvaluationRecord,
    EventKind,
    EventRecord,
    NewCandidate,
    NewEvaluation,
    NewRerankResult,
    NewRerankTrial,
    RerankRecord,
    RerankTrialRecord,
    RungOutcome,
    SearchRecord,
    SearchStatus,
)
from db.store import Store

__all__ = [
    "ENDED_SEARCH_STATUSES",
    "FAULT_EVENT_KINDS",
    "FINISHED_CANDIDATE_STATUSES",
    "SEARCH_TRANSITIONS",
    "TERMINAL_SEARCH_STATUSES",
    "CandidateOutcome",
    "CandidateRecord",
    "CandidateStatus",
    "Estimate",
    "EvaluationRecord",
    "EventKind",
    "EventRecord",
    "LeaseError",
    "NewCandidate",
    "NewEvaluation",
    "NewRerankResult",
    "NewRerankTrial",
    "NotFoundError",
    "RerankRecord",
    "RerankTrialRecord",
    "RetryableStoreError",
    "RungOutcome",
    "SearchRecord",
    "SearchStatus",
    "Store",
    "StoreError",
    "TransitionError",
    "open_store",
    "sqlite_file",
    "upgrade",
]

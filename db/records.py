"""Plain values that go in and out of `db.Store`.

Records (`*Record`) are what the store returns: frozen dataclasses built from
rows, detached from any session, safe to pass between threads. Their JSON
fields (`config`, `metrics`, `payload`) are fresh dicts per call, so mutating
one does not change the store or another caller's copy. Sequences are tuples.

Inputs (`New*`, `CandidateOutcome`) are what callers pass to write methods;
they validate themselves on construction so a bad value fails at the caller,
not half-way through a transaction.

All timestamps are timezone-aware UTC on every backend.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class SearchStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    FINISHED = "finished"
    FAILED = "failed"


class CandidateStatus(StrEnum):
    PENDING = "pending"
    EVALUATING = "evaluating"
    REJECTED = "rejected"
    EVALUATED = "evaluated"


# A search that ended for good. A failed one has ended too (it gets a finished_at) but can be
# resumed by the user, so it is not terminal.
TERMINAL_SEARCH_STATUSES: frozenset[SearchStatus] = frozenset(
    {SearchStatus.CANCELLED, SearchStatus.FINISHED}
)
ENDED_SEARCH_STATUSES: frozenset[SearchStatus] = TERMINAL_SEARCH_STATUSES | {SearchStatus.FAILED}
FINISHED_CANDIDATE_STATUSES: frozenset[CandidateStatus] = frozenset(
    {CandidateStatus.REJECTED, CandidateStatus.EVALUATED}
)

# The search state machine: status -> statuses it may move to. Staying in the
# same status is not a transition (pausing a paused search is refused), so
# callers learn when their view of a search is stale.
#   running -> queued   hands a search back to the queue (runner shutdown or
#                       crash recovery), so another runner may pick it up.
#   paused  -> queued   resumes through the queue; paused -> running resumes
#                       directly when the runner is the one resuming.
#   failed  -> queued   the user resumes a failed search (POST /resume, `run --resume`), or
#                       cancels it; its error and finished_at are cleared when it runs again.
SEARCH_TRANSITIONS: Mapping[SearchStatus, frozenset[SearchStatus]] = {
    SearchStatus.QUEUED: frozenset(
        {SearchStatus.RUNNING, SearchStatus.PAUSED, SearchStatus.CANCELLED, SearchStatus.FAILED}
    ),
    SearchStatus.RUNNING: frozenset(
        {
            SearchStatus.QUEUED,
            SearchStatus.PAUSED,
            SearchStatus.CANCELLED,
            SearchStatus.FINISHED,
            SearchStatus.FAILED,
        }
    ),
    SearchStatus.PAUSED: frozenset(
        {SearchStatus.QUEUED, SearchStatus.RUNNING, SearchStatus.CANCELLED, SearchStatus.FAILED}
    ),
    SearchStatus.CANCELLED: frozenset(),
    SearchStatus.FINISHED: frozenset(),
    SearchStatus.FAILED: frozenset({SearchStatus.QUEUED, SearchStatus.RUNNING, SearchStatus.CANCELLED}),
}


class EventKind(StrEnum):
    """Kinds of events the store writes itself. `append_event` accepts any string."""

    SEARCH_CREATED = "search_created"  # payload: name, seed
    SEARCH_STATUS = "search_status"  # payload: from, to, error
    CANDIDATES_ADDED = "candidates_added"  # payload: ids (inserted), skipped (duplicates)
    CANDIDATE_FINISHED = "candidate_finished"  # payload: status, objectives, stage, reused_from
    RERANK_ADDED = "rerank_added"  # payload: ids
    CANDIDATE_PROMOTED = "candidate_promoted"  # payload: rung, objectives, verified
    # Faults, written by the runner or the coordinator (see docs/deployment.md):
    STORE_OUTAGE = "store_outage"  # payload: since, down_s, and op or runner_restarted
    NODE_LOST = "node_lost"  # payload: node, address, candidates (running there)
    CANDIDATE_RETRIED = "candidate_retried"  # payload: from_node, to_node, same_node, candidates
    RUNNER_TAKEOVER = "runner_takeover"  # payload: previous, runner (a dead runner's lease taken over)


FAULT_EVENT_KINDS: frozenset[str] = frozenset(
    {EventKind.STORE_OUTAGE, EventKind.NODE_LOST, EventKind.CANDIDATE_RETRIED, EventKind.RUNNER_TAKEOVER}
)


@dataclass(frozen=True, slots=True)
class Estimate:
    """One objective of a candidate as an estimate over the seeds it ran at.

    `stderr` is the standard error of the mean (sample standard deviation /
    sqrt(n)); None when n < 2, where no spread can be estimated.
    """

    mean: float
    stderr: float | None
    n: int

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean, "stderr": self.stderr, "n": self.n}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Estimate:
        stderr = d.get("stderr")
        return cls(float(d["mean"]), None if stderr is None else float(stderr), int(d["n"]))


# -- records (out) --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SearchRecord:
    id: int
    name: str
    config: dict[str, Any]
    status: SearchStatus
    seed: int | None
    error: str | None
    num_candidates: int  # rows in candidates for this search
    num_evaluated: int  # candidates finished as evaluated
    num_rejected: int  # candidates finished as rejected
    created_at: datetime
    started_at: datetime | None  # first time it went to running
    finished_at: datetime | None  # when it reached a terminal status
    updated_at: datetime
    runner: str | None = None  # the runner holding the search's lease (host:pid:start:nonce)
    runner_heartbeat: datetime | None = None  # when that runner last renewed it
    core_s: float = 0.0  # worker seconds its jobs ran (core-seconds; GPU-seconds on GPU workers)


@dataclass(frozen=True, slots=True)
class CandidateRecord:
    id: int
    search_id: int
    graph: str  # the graph's JSON text, as given
    structural_hash: str
    fingerprint: str | None
    parent_ids: tuple[int, ...]
    mutation: str | None
    generation: int
    status: CandidateStatus
    rejection_stage: str | None
    rejection_reason: str | None
    objectives: tuple[float, ...] | None
    reused_from: int | None  # candidate whose result was reused (functional duplicate)
    created_at: datetime
    updated_at: datetime
    rung: int | None = None  # the highest funnel rung finished (None: none yet)
    estimates: tuple[Estimate, ...] | None = None  # the objectives as estimates at that rung
    verified: bool = False  # the top rung, held-out tasks included, is done

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_CANDIDATE_STATUSES


@dataclass(frozen=True, slots=True)
class EvaluationRecord:
    id: int
    candidate_id: int
    backbone: str
    task: str
    metrics: dict[str, Any]
    wall_s: float | None
    worker: str | None
    created_at: datetime
    rung: int | None = None  # the funnel rung the run was made for
    seed: int | None = None  # its seed (initialization and data order)
    steps: int | None = None  # its optimizer steps


@dataclass(frozen=True, slots=True)
class EventRecord:
    id: int
    kind: str
    payload: dict[str, Any]
    search_id: int | None
    candidate_id: int | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class RerankRecord:
    id: int
    search_id: int
    candidate_id: int | None
    zoo_layer: str | None
    backbone: str
    metrics: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class RerankTrialRecord:
    """One finished re-ranking trial (see `Store.put_rerank_trial`)."""

    id: int
    search_id: int
    key: str
    candidate_id: int | None
    zoo_layer: str | None
    objective: str
    metrics: dict[str, Any]
    created_at: datetime


# -- inputs (in) ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewCandidate:
    graph: str
    structural_hash: str
    parent_ids: Sequence[int] = ()
    mutation: str | None = None
    generation: int = 0
    fingerprint: str | None = None

    def __post_init__(self) -> None:
        if not self.structural_hash:
            raise ValueError("NewCandidate.structural_hash must be a non-empty string")


@dataclass(frozen=True, slots=True)
class NewEvaluation:
    backbone: str
    task: str
    metrics: Mapping[str, Any] = field(default_factory=dict)
    wall_s: float | None = None
    worker: str | None = None
    rung: int | None = None
    seed: int | None = None
    steps: int | None = None


@dataclass(frozen=True, slots=True)
class CandidateOutcome:
    """The result of one candidate, written by `Store.finish_candidates`.

    `evaluated` needs `objectives` and no rejection stage; `rejected` needs a
    `rejection_stage` (objectives optional: a candidate may be rejected after
    it was measured). Objectives must be finite: they are what the search
    ranks by, and JSON cannot carry NaN or infinity.
    """

    candidate_id: int
    status: CandidateStatus
    objectives: Sequence[float] | None = None
    rejection_stage: str | None = None
    rejection_reason: str | None = None
    evaluations: Sequence[NewEvaluation] = ()
    reused_from: int | None = None
    fingerprint: str | None = None
    rung: int | None = None
    estimates: Sequence[Estimate] | None = None
    verified: bool = False
    core_s: float = 0.0  # the worker seconds the job(s) behind this result ran

    def __post_init__(self) -> None:
        _check_estimates(f"candidate {self.candidate_id}", self.objectives, self.estimates)
        if self.estimates is not None:
            object.__setattr__(self, "estimates", tuple(self.estimates))
        status = CandidateStatus(self.status)
        object.__setattr__(self, "status", status)
        where = f"candidate {self.candidate_id}"
        if status not in FINISHED_CANDIDATE_STATUSES:
            raise ValueError(f"{where}: a finish status is evaluated or rejected, got {status!r}")
        if status is CandidateStatus.EVALUATED:
            if self.objectives is None:
                raise ValueError(f"{where}: an evaluated candidate needs objectives")
            if self.rejection_stage is not None or self.rejection_reason is not None:
                raise ValueError(f"{where}: an evaluated candidate has no rejection stage/reason")
        elif not self.rejection_stage:
            raise ValueError(f"{where}: a rejected candidate needs a rejection_stage")
        if self.objectives is not None:
            values = tuple(float(v) for v in self.objectives)
            if not all(math.isfinite(v) for v in values):
                raise ValueError(f"{where}: objectives must be finite, got {list(values)}")
            object.__setattr__(self, "objectives", values)


@dataclass(frozen=True, slots=True)
class RungOutcome:
    """A candidate's result at a higher funnel rung, written by `Store.record_rung`.

    The candidate stays evaluated; its objectives, estimates, rung and
    verified flag are replaced, and the rung's new runs are added.
    """

    candidate_id: int
    rung: int
    objectives: Sequence[float]
    estimates: Sequence[Estimate]
    evaluations: Sequence[NewEvaluation] = ()
    verified: bool = False
    core_s: float = 0.0  # the worker seconds the rung's job ran

    def __post_init__(self) -> None:
        values = tuple(float(v) for v in self.objectives)
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"candidate {self.candidate_id}: objectives must be finite, got {list(values)}")
        object.__setattr__(self, "objectives", values)
        _check_estimates(f"candidate {self.candidate_id}", values, self.estimates)
        object.__setattr__(self, "estimates", tuple(self.estimates))
        if self.rung < 0:
            raise ValueError(f"candidate {self.candidate_id}: rung must be >= 0, got {self.rung}")


def _check_estimates(where: str, objectives: Sequence[float] | None,
                     estimates: Sequence[Estimate] | None) -> None:
    if estimates is None:
        return
    if objectives is None or len(estimates) != len(objectives):
        raise ValueError(f"{where}: one estimate per objective is needed")
    for e in estimates:
        if not math.isfinite(e.mean) or (e.stderr is not None and not math.isfinite(e.stderr)) or e.n < 1:
            raise ValueError(f"{where}: estimates need a finite mean and stderr and n >= 1, got {e}")


@dataclass(frozen=True, slots=True)
class NewRerankResult:
    """One row of the final re-training table: exactly one of `candidate_id`, `zoo_layer`."""

    backbone: str
    metrics: Mapping[str, Any]
    candidate_id: int | None = None
    zoo_layer: str | None = None

    def __post_init__(self) -> None:
        if (self.candidate_id is None) == (self.zoo_layer is None):
            raise ValueError("NewRerankResult needs exactly one of candidate_id or zoo_layer")


@dataclass(frozen=True, slots=True)
class NewRerankTrial:
    """One finished re-ranking trial: exactly one of `candidate_id`, `zoo_layer`; `key` names the trial."""

    key: str
    objective: str
    metrics: Mapping[str, Any]
    candidate_id: int | None = None
    zoo_layer: str | None = None

    def __post_init__(self) -> None:
        if (self.candidate_id is None) == (self.zoo_layer is None):
            raise ValueError("NewRerankTrial needs exactly one of candidate_id or zoo_layer")
        if not self.key or len(self.key) > 64:
            raise ValueError("NewRerankTrial.key must be 1 to 64 characters")

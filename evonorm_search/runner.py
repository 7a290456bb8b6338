"""The search runner: the one writer of a search.

It keeps up to `in_flight` jobs on the executor, writes every candidate and
result to the store as it happens, and obeys pause / resume / cancel set on
the search's status (by the API or the CLI) between jobs.

A candidate goes through two jobs (see `workers.evaluation`):

    propose -> add (structural duplicates skipped) -> screen job
        rejected            -> finished rejected
        fingerprint known   -> finished as a duplicate of that result
        fingerprint running -> parked until that evaluation ends
        else                -> evaluate job -> finished evaluated / rejected

Only real results enter the fingerprint cache: a rejection at the `worker`
stage (timeout, out of memory, a dead worker) says nothing about the layer, so
a later candidate with that fingerprint (or one parked on it) is evaluated
afresh rather than inheriting the failure. No fingerprint gets two real
results; one may be tried again after a worker failure.

One writer: `run` first claims the search's lease (`evonorm_search.lease`)
and renews it while it runs; a second runner for the same search is refused.

Crash safety: everything the runner knows is in the store. A restarted
runner moves `evaluating` candidates back to `pending`, rebuilds the
population and the fingerprint cache from finished candidates (by the same
rule: worker-stage rejections stay out of it), resubmits the
pending ones and continues the proposal sequence where it stopped.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from db import Store
from db.records import (
    CandidateOutcome,
    CandidateRecord,
    CandidateStatus,
    NewCandidate,
    NewEvaluation,
    SearchRecord,
    SearchStatus,
)
from evonorm_search.config import SearchConfig
from evonorm_search.evolution import AgingEvolution, Individual, Proposal, RandomSearch
from evonorm_search.lease import Lease, LeaseLost
from primitives import Graph, structural_hash
from primitives.zoo import ZOO
from workers.evaluation import EvalSpec, EvaluationResult, Screening, evaluate, screen
from workers.executors import Executor, JobFailure
from workers.rejection import Stage

log = logging.getLogger(__name__)

# Give up proposing after this many structural duplicates in a row (a tiny,
# exhausted search space), rather than spin.
MAX_DUPLICATE_PROPOSALS = 10_000


@dataclass
class Progress:
    """What a progress bar shows; updated by the runner after every change."""

    budget: int
    created: int = 0
    evaluated: int = 0
    rejected: int = 0
    duplicates: int = 0
    in_flight: int = 0
    by_stage: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    best: tuple[float, ...] | None = None   # the best mean over the maximised objectives (the cost is not)

    @property
    def finished(self) -> int:
        return self.evaluated + self.rejected


@dataclass
class _Job:
    kind: str                      # "screen" | "evaluate"
    candidate: CandidateRecord
    screening: Screening | None = None


class SearchRunner:
    def __init__(self, store: Store, search_id: int, executor: Executor, *,
                 screen_fn: Callable[..., Screening] = screen,
                 evaluate_fn: Callable[..., EvaluationResult] = evaluate,
                 on_progress: Callable[[Progress], None] | None = None,
                 status_poll_s: float = 0.25) -> None:
        self.store = store
        self.search_id = search_id
        self.executor = executor
        self.screen_fn = screen_fn
        self.evaluate_fn = evaluate_fn
        self.on_progress = on_progress
        self.status_poll_s = status_poll_s

        search = store.get_search(search_id)
        self.config = SearchConfig.model_validate(search.config)
        self.spec: EvalSpec = self.config.eval_spec()
        self.maximise = self.config.maximise
        seeds = [(n, ZOO[n].graph) for n in self.config.seed_with_zoo]
        self.strategy: RandomSearch
        if self.config.strategy == "evolution":
            self.strategy = AgingEvolution(
                population_size=self.config.population_size, tournament_size=self.config.tournament_size,
                maximise=self.maximise, seed=self.config.seed, batch_independent=self.config.batch_independent,
                rewire_prob=self.config.rewire_prob, seeds=[(n, g) for n, g in seeds if g is not None])
        else:
            self.strategy = RandomSearch(seed=self.config.seed, batch_independent=self.config.batch_independent,
                                         seeds=[(n, g) for n, g in seeds if g is not None])
        self.progress = Progress(budget=self.config.budget)
        self._jobs: dict[int, _Job] = {}
        self._training: dict[str, CandidateRecord] = {}      # fingerprint -> candidate being evaluated
        self._parked: dict[str, list[tuple[CandidateRecord, Screening]]] = defaultdict(list)
        self._known: dict[str, CandidateRecord] = {}         # fingerprint -> finished original
        self._generation: dict[int, int] = {}
        self._proposals = 0
        self._pending: list[CandidateRecord] = []
        self._last_status_check = 0.0
        self._status = search.status
        self.lease = Lease(store, search_id)

    # -- recovery ------------------------------------------------------------
    def _recover(self) -> None:
        """Rebuild everything from the store (a fresh start is the empty case)."""
        self.store.reset_evaluating(self.search_id)
        finished = self.store.candidates_by_status(
            self.search_id, [CandidateStatus.EVALUATED, CandidateStatus.REJECTED])
        # Population order is finish order: the aging population keeps the newest.
        for c in sorted(finished, key=lambda c: (c.updated_at, c.id)):
            self._account(c)
        self._pending = sorted(self.store.candidates_by_status(self.search_id, [CandidateStatus.PENDING]),
                               key=lambda c: c.id)
        search = self.store.get_search(self.search_id)
        self.progress.created = search.num_candidates
        self._proposals = search.num_candidates
        for c in self._pending:
            self._generation[c.id] = c.generation

    def _account(self, c: CandidateRecord) -> None:
        """Count a finished candidate and let it into the population and the cache."""
        self._generation[c.id] = c.generation
        if c.reused_from is not None:
            self.progress.duplicates += 1
        elif c.fingerprint and _cacheable(c):
            self._known.setdefault(c.fingerprint, c)
        if c.status is CandidateStatus.EVALUATED and c.objectives is not None:
            self.progress.evaluated += 1
            self.strategy.tell(Individual(c.id, Graph.loads(c.graph), tuple(c.objectives)))
            best = self.progress.best
            score = _maximised_mean(c.objectives, self.maximise)
            if best is None or score > _maximised_mean(best, self.maximise):
                self.progress.best = tuple(c.objectives)
        else:
            self.progress.rejected += 1
            self.progress.by_stage[c.rejection_stage or "?"] += 1

    # -- main loop -------------------------------------------------------------
    def run(self) -> SearchRecord:
        """Run until the budget is spent, or the search is paused or cancelled.

        Raises LeaseError, having touched nothing, while another runner holds the search.
        """
        self.lease.claim()
        try:
            return self._run()
        finally:
            try:
                self.lease.release()
            except Exception:  # the lease goes stale on its own
                log.warning("could not release the lease on search %s", self.search_id, exc_info=True)

    def _run(self) -> SearchRecord:
        search = self.store.get_search(self.search_id)
        if search.status in (SearchStatus.QUEUED, SearchStatus.PAUSED):
            search = self.store.set_search_status(self.search_id, SearchStatus.RUNNING)
        if search.status is not SearchStatus.RUNNING:
            return search
        self._status = SearchStatus.RUNNING
        self._recover()
        try:
            while True:
                self._refresh_status()
                if self._status is SearchStatus.CANCELLED:
                    self._cancel_in_flight()
                    break
                if self._status is SearchStatus.RUNNING:
                    self._fill()
                if not self._jobs:
                    if self._status is not SearchStatus.RUNNING or self._done_proposing():
                        break
                    continue
                self._collect(self.executor.wait(timeout_s=self.status_poll_s))
        except BaseException as e:
            # Leave the search resumable: in-flight candidates return to pending on restart.
            self._cancel_in_flight(record=False)
            # Interrupted, or taken over by another runner (whose search it now is): not a failure.
            if not isinstance(e, KeyboardInterrupt | SystemExit | LeaseLost):
                self._set_status(SearchStatus.FAILED, error=f"{type(e).__name__}: {e}")
            raise
        if self._status is SearchStatus.RUNNING:
            self._set_status(SearchStatus.FINISHED)
        return self.store.get_search(self.search_id)

    def _set_status(self, status: SearchStatus, error: str | None = None) -> None:
        try:
            self.store.set_search_status(self.search_id, status, error=error)
        except Exception:  # the transition may have raced with the API; the store's word stands
            log.warning("could not move search %s to %s", self.search_id, status, exc_info=True)

    def _refresh_status(self) -> None:
        self.lease.renew()
        now = time.monotonic()
        if now - self._last_status_check >= self.status_poll_s:
            self._last_status_check = now
            self._status = self.store.get_search(self.search_id).status

    def _done_proposing(self) -> bool:
        return self.progress.created >= self.config.budget and not self._pending and not self._parked

    def _fill(self) -> None:
        """Top the executor up to `in_flight` jobs: pending candidates first, then new proposals."""
        # Never more jobs than the executor runs at once: a job's deadline starts at submission.
        free = min(self.config.in_flight, self.executor.slots) - len(self._jobs)
        if free <= 0:
            return
        batch = self._pending[:free]
        del self._pending[:free]
        batch += self._propose(free - len(batch))
        if not batch:
            return
        moved = set(self.store.mark_evaluating([c.id for c in batch]))
        for c in batch:
            if c.id in moved:
                job_id = self.executor.submit(self.screen_fn, c.graph, self.spec, timeout_s=60.0)
                self._jobs[job_id] = _Job("screen", c)
        self._report()

    def _propose(self, n: int) -> list[CandidateRecord]:
        out: list[CandidateRecord] = []
        misses = 0
        while len(out) < n and self.progress.created < self.config.budget:
            want = min(n - len(out), self.config.budget - self.progress.created)
            proposals: list[Proposal] = [self.strategy.propose(self._proposals + i) for i in range(want)]
            self._proposals += want
            news = [NewCandidate(graph=p.graph.dumps(), structural_hash=structural_hash(p.graph),
                                 parent_ids=p.parents, mutation=p.mutation or p.origin,
                                 generation=self._child_generation(p.parents))
                    for p in proposals]
            added = self.store.add_candidates(self.search_id, news)
            for c in added:
                self._generation[c.id] = c.generation
            out += added
            self.progress.created += len(added)
            misses = 0 if added else misses + want
            if misses >= MAX_DUPLICATE_PROPOSALS:
                log.warning("search %s: %d structural duplicates in a row; stopping proposals",
                            self.search_id, misses)
                self.progress.budget = self.progress.created
                self.config = self.config.model_copy(update={"budget": self.progress.created})
                break
        return out

    def _child_generation(self, parents: tuple[int, ...]) -> int:
        return 1 + max((self._generation.get(i, 0) for i in parents), default=-1)

    # -- results -----------------------------------------------------------------
    def _collect(self, outcomes: list[tuple[int, Any]]) -> None:
        finished: list[CandidateOutcome] = []
        for job_id, outcome in outcomes:
            job = self._jobs.pop(job_id, None)
            if job is None:
                continue
            if job.kind == "screen":
                finished += self._screened(job.candidate, outcome)
            else:
                finished += self._evaluated(job, outcome)
        self._finish(finished)

    def _screened(self, c: CandidateRecord, outcome: Screening | JobFailure) -> list[CandidateOutcome]:
        if isinstance(outcome, JobFailure):
            return [_worker_failure(c, outcome)]
        if outcome.rejection:
            return [CandidateOutcome(c.id, CandidateStatus.REJECTED, rejection_stage=outcome.rejection.stage,
                                     rejection_reason=outcome.rejection.reason)]
        fp = outcome.fingerprint
        assert fp is not None
        if fp in self._known:
            return [_duplicate(c, self._known[fp], fp)]
        if fp in self._training:
            self._parked[fp].append((c, outcome))
            return []
        self._train(c, outcome)
        return []

    def _train(self, c: CandidateRecord, screening: Screening) -> None:
        assert screening.fingerprint is not None
        self._training[screening.fingerprint] = c
        job_id = self.executor.submit(self.evaluate_fn, c.graph, self.spec, None, screening,
                                      timeout_s=self.config.timeout_s)
        self._jobs[job_id] = _Job("evaluate", c, screening)

    def _evaluated(self, job: _Job, outcome: EvaluationResult | JobFailure) -> list[CandidateOutcome]:
        c = job.candidate
        assert job.screening is not None and job.screening.fingerprint is not None
        fp = job.screening.fingerprint
        # `_training[fp]` stays until `_finish` has recorded the result: a screening of the same
        # fingerprint collected in this batch must park on it, not train it again.
        if isinstance(outcome, JobFailure):
            result = _worker_failure(c, outcome, fp)
        elif outcome.status == "evaluated":
            evals = [NewEvaluation(backbone=s.backbone, task=s.task, metrics=s.metrics(), wall_s=s.wall_s,
                                   worker=outcome.worker) for s in outcome.scores]
            result = CandidateOutcome(c.id, CandidateStatus.EVALUATED, evaluations=evals, fingerprint=fp,
                                      objectives=list(outcome.objectives or ()))
        else:
            rej = outcome.rejection
            result = CandidateOutcome(c.id, CandidateStatus.REJECTED, fingerprint=fp,
                                      rejection_stage=rej.stage if rej else Stage.WORKER,
                                      rejection_reason=rej.reason if rej else "no reason given")
        return [result]

    def _finish(self, outcomes: list[CandidateOutcome]) -> None:
        if not outcomes:
            return
        records = self.store.finish_candidates(outcomes)
        resolved: list[CandidateOutcome] = []
        for rec in records:
            self._account(rec)
            if rec.fingerprint and rec.reused_from is None and self._training.get(rec.fingerprint) is not None \
                    and self._training[rec.fingerprint].id == rec.id:
                del self._training[rec.fingerprint]
            fp = rec.fingerprint
            if rec.reused_from is None and fp and fp in self._parked:
                if _cacheable(rec):
                    self._known.setdefault(fp, rec)
                    resolved += [_duplicate(p, rec, fp) for p, _ in self._parked.pop(fp)]
                elif fp not in self._training:
                    # The worker failed, not the layer: the first parked duplicate trains it
                    # afresh, the others stay parked on that evaluation.
                    waiting = self._parked[fp]
                    c, screening = waiting.pop(0)
                    if not waiting:
                        del self._parked[fp]
                    self._train(c, screening)
        self._report()
        self._finish(resolved)

    def _cancel_in_flight(self, record: bool = True) -> None:
        cancelled = [job.candidate for job in self._jobs.values()]
        cancelled += [c for waiting in self._parked.values() for c, _ in waiting]
        if record:   # a cancelled search leaves nothing pending either
            cancelled += self._pending
            self._pending = []
        for job_id in list(self._jobs):
            self.executor.cancel(job_id)
        self._jobs.clear()
        self._parked.clear()
        if record and cancelled:
            self._finish([cancelled_outcome(c) for c in cancelled])

    def _report(self) -> None:
        self.progress.in_flight = len(self._jobs) + sum(len(v) for v in self._parked.values())
        if self.on_progress:
            self.on_progress(self.progress)


def cancelled_outcome(c: CandidateRecord) -> CandidateOutcome:
    """How an unfinished candidate of a cancelled search ends."""
    return CandidateOutcome(c.id, CandidateStatus.REJECTED, rejection_stage="cancelled",
                            rejection_reason="the search was cancelled")


def _worker_failure(c: CandidateRecord, failure: JobFailure, fp: str | None = None) -> CandidateOutcome:
    return CandidateOutcome(c.id, CandidateStatus.REJECTED, rejection_stage=Stage.WORKER,
                            rejection_reason=f"{failure.kind}: {failure.message}"[:2000], fingerprint=fp)


def _duplicate(c: CandidateRecord, original: CandidateRecord, fp: str) -> CandidateOutcome:
    """Reuse the original's result: same status, objectives and rejection; nothing trained."""
    if original.status is CandidateStatus.EVALUATED:
        return CandidateOutcome(c.id, CandidateStatus.EVALUATED, objectives=original.objectives,
                                reused_from=original.id, fingerprint=fp)
    return CandidateOutcome(c.id, CandidateStatus.REJECTED, rejection_stage=original.rejection_stage or "?",
                            rejection_reason=f"functional duplicate of candidate {original.id}: "
                                             f"{original.rejection_reason}", reused_from=original.id,
                            fingerprint=fp)


def _cacheable(c: CandidateRecord) -> bool:
    """Whether a finished original's result belongs to its fingerprint (is reused by duplicates).

    A worker-stage rejection (timeout, out of memory, a dead worker) or a
    cancellation is not the layer's fault, so it is not.
    """
    return c.status is CandidateStatus.EVALUATED or c.rejection_stage not in (Stage.WORKER, "cancelled")


def _maximised_mean(values: tuple[float, ...] | list[float], maximise: list[bool]) -> float:
    """Mean of the maximised objectives (the accuracies); a minimised cost does not count."""
    kept = [v for v, up in zip(values, maximise, strict=False) if up]
    return sum(kept) / max(1, len(kept))

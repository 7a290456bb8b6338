"""The search runner: the one writer of a search.

It keeps up to `in_flight` jobs on the executor, writes every candidate and
result to the store as it happens, and obeys pause / resume / cancel set on
the search's status (by the API or the CLI) between jobs.

A candidate goes through a screen job and then the promotion funnel
(`workers.evaluation.screen`, `workers.funnel.train_rung`,
`evonorm_search.funnel`):

    propose -> add (structural duplicates skipped) -> screen job
        rejected            -> finished rejected
        fingerprint known   -> finished as a duplicate of that result
        fingerprint running -> parked until that evaluation ends
        else                -> rung 0 job (stability, short runs, quality)
                               -> finished evaluated (estimates at rung 0) / rejected
    evaluated -> climbs rung by rung while it ranks in the rung's top fraction
                 (ASHA, asynchronous), its estimates replaced at each; the top
                 rung's held-out runs make it verified

The search's baselines (BN-ReLU; GN-ReLU and EvoNorm-S0 in a
batch-independent search) are candidates too, added first and sent up every
rung, so each rung has them at the same seeds. A baseline that is not one of
the search's zoo seeds never joins the population: it is measured, not bred.

Only real results enter the fingerprint cache: a rejection at the `worker`
stage (timeout, out of memory, a dead worker) says nothing about the layer, so
a later candidate with that fingerprint (or one parked on it) is evaluated
afresh rather than inheriting the failure. No fingerprint gets two real
results; one may be tried again after a worker failure.

One writer: `run` first claims the search's lease (`evonorm_search.lease`)
and renews it while it runs; a second runner for the same search is refused.

Failures: a store outage longer than the store's reconnect window is not the
search's failure: `run` raises the RetryableStoreError and leaves the search
running, for `run_through_outages` to start again once the store is back.
Any other error marks it failed, with its in-flight candidates moved back to
pending, so a user can resume it. Faults the executor reports (a lost node,
a retried job), a taken-over lease and outages the store rode out go to the
search's events.

Crash safety: everything the runner knows is in the store. A restarted
runner moves `evaluating` candidates back to `pending`, rebuilds the
population and the fingerprint cache from finished candidates (by the same
rule: worker-stage rejections stay out of it), and the funnel from the stored
runs (rung, seed, steps per run); it resubmits the pending ones, recomputes
who is due to climb (a climb in flight at the crash is simply due again: its
runs were not recorded, since a rung's runs are written together when its
job ends) and continues the proposal sequence where it stopped.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from db import RetryableStoreError, Store
from db.records import (
    CandidateOutcome,
    CandidateRecord,
    CandidateStatus,
    EventKind,
    NewCandidate,
    NewEvaluation,
    RungOutcome,
    SearchRecord,
    SearchStatus,
)
from evonorm_search.domain import CandidateView, search_config
from evonorm_search.evolution import Individual, Proposal, Strategy, make_strategy
from evonorm_search.funnel import funnel_for, runs_of
from evonorm_search.lease import Lease, LeaseLost
from evonorm_search.pareto import maximised_mean
from primitives import structural_hash
from primitives.zoo import ZOO
from workers.evaluation import EvalSpec, Screening, screen
from workers.executors import Executor, JobFailure
from workers.funnel import RungResult, train_rung
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
    rungs: dict[int, int] = field(default_factory=lambda: defaultdict(int))  # rung -> candidates there now
    verified: int = 0
    doing: str = ""                          # the newest job started, for a progress line
    core_s: float = 0.0                      # worker seconds spent (SearchConfig.max_core_hours)
    # What is happening now, for a live display: (candidate id, "screen" | "rung <n>") per job, and the
    # candidates recorded since the last report (a rejection shows as it comes).
    running: tuple[tuple[int, str], ...] = ()
    just_finished: tuple[CandidateRecord, ...] = ()

    @property
    def finished(self) -> int:
        return self.evaluated + self.rejected


@dataclass
class _Job:
    kind: str                      # "screen" | "rung"
    candidate: CandidateRecord
    screening: Screening | None = None
    rung: int = 0
    submitted: float = field(default_factory=time.monotonic)

    def core_s(self, outcome: Any) -> float:
        """The worker seconds this job spent: what the worker measured, or (a job that failed) the
        time since it was submitted; a rung-0 job carries its candidate's screening too."""
        if isinstance(outcome, JobFailure):
            spent = time.monotonic() - self.submitted
        elif isinstance(outcome, Screening):
            spent = _screen_s(outcome)
        else:
            spent = float(getattr(outcome, "wall_s", 0.0))
        return spent + (_screen_s(self.screening) if self.kind == "rung" and self.screening else 0.0)


def _screen_s(screening: Screening) -> float:
    return sum(t for _, t in screening.stage_seconds)


class SearchRunner:
    def __init__(self, store: Store, search_id: int, executor: Executor, *,
                 screen_fn: Callable[..., Screening] = screen,
                 rung_fn: Callable[..., RungResult] = train_rung,
                 on_progress: Callable[[Progress], None] | None = None,
                 status_poll_s: float = 0.25) -> None:
        self.store = store
        self.search_id = search_id
        self.executor = executor
        self.screen_fn = screen_fn
        self.rung_fn = rung_fn
        self.on_progress = on_progress
        self.status_poll_s = status_poll_s

        search = store.get_search(search_id)
        self.config = search_config(search)
        self.spec: EvalSpec = self.config.eval_spec()
        self.maximise = self.config.maximise
        self.strategy: Strategy = make_strategy(self.config)
        self.progress = Progress(budget=self.config.budget)
        self.funnel = funnel_for(self.config)
        self._baseline_hashes = {structural_hash(g): n for n in self.config.baseline_names
                                 if (g := ZOO[n].graph) is not None}
        self._baselines: set[int] = set()                   # candidate ids of the baselines
        self._baseline_rows = 0                             # baselines added beside the proposals
        self._rung_of: dict[int, int] = {}                  # evaluated original -> highest rung finished
        self._climbing: set[int] = set()                    # a climb in flight or queued
        self._stuck: set[int] = set()                       # a climb failed (worker, error): stays put
        self._climbs: list[tuple[CandidateRecord, int]] = []  # due to climb, not yet submitted
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
        self._add_baselines()
        finished = self.store.candidates_by_status(
            self.search_id, [CandidateStatus.EVALUATED, CandidateStatus.REJECTED])
        originals = [c.id for c in finished if c.status is CandidateStatus.EVALUATED and c.reused_from is None]
        for cid, evals in self.store.evaluations_for_candidates(originals).items():
            self.funnel.add(cid, runs_of(evals).items())
        # Population order is finish order: the aging population keeps the newest.
        for c in sorted(finished, key=lambda c: (c.updated_at, c.id)):
            self._account(c)
        self._pending = sorted(self.store.candidates_by_status(self.search_id, [CandidateStatus.PENDING]),
                               key=lambda c: c.id)
        search = self.store.get_search(self.search_id)
        self.progress.core_s = search.core_s
        self.progress.created = search.num_candidates - self._baseline_rows
        self._proposals = search.num_candidates - self._baseline_rows
        for c in self._pending:
            self._generation[c.id] = c.generation
            self._note_baseline(c)
        self._queue_climbs()

    def _add_baselines(self) -> None:
        """The baselines that are not zoo seeds (those come as proposals), added once, first."""
        seeded = {structural_hash(g) for n in self.config.seed_with_zoo if (g := ZOO[n].graph) is not None}
        news = [NewCandidate(graph=g.dumps(), structural_hash=h, mutation=f"baseline:{name}")
                for h, name in self._baseline_hashes.items() if h not in seeded
                for g in [ZOO[name].graph] if g is not None]
        self.store.add_candidates(self.search_id, news)
        found = self.store.find_by_hashes(self.search_id, list(self._baseline_hashes))
        self._baselines = {c.id for c in found.values()}
        self._baseline_rows = sum((c.mutation or "").startswith("baseline:") for c in found.values())

    def _note_baseline(self, c: CandidateRecord) -> None:
        if c.structural_hash in self._baseline_hashes:
            self._baselines.add(c.id)

    def _account(self, c: CandidateRecord) -> None:
        """Count a finished candidate and let it into the population and the cache."""
        self._generation[c.id] = c.generation
        if c.reused_from is not None:
            self.progress.duplicates += 1
        elif c.fingerprint and _cacheable(c):
            self._known.setdefault(c.fingerprint, c)
        self._note_baseline(c)
        if c.status is CandidateStatus.EVALUATED and c.objectives is not None:
            self.progress.evaluated += 1
            if c.reused_from is None and c.rung is not None:
                self._rung_of[c.id] = c.rung
                self.progress.rungs[c.rung] += 1
                self.progress.verified += c.verified
                if self.spec.measure_cost:
                    self.funnel.cost[c.id] = c.objectives[-1]
            if self._breeds(c):
                self.strategy.tell(Individual(c.id, CandidateView(c).graph, tuple(c.objectives)))
            self._note_best(c.objectives)
        else:
            self.progress.rejected += 1
            self.progress.by_stage[c.rejection_stage or "?"] += 1

    # -- main loop -------------------------------------------------------------
    def run(self) -> SearchRecord:
        """Run until the budget is spent, or the search is paused or cancelled.

        Raises LeaseError, having touched nothing, while another runner holds the search.
        """
        previous = self.lease.claim()
        if previous is not None:
            self._event(EventKind.RUNNER_TAKEOVER, {"previous": previous, "runner": self.lease.runner})
        store_away = False
        try:
            return self._run()
        except RetryableStoreError:
            store_away = True   # releasing would wait out the reconnect window again; done once it is back
            raise
        finally:
            try:
                if not store_away:
                    self.lease.release()
            except Exception:  # the lease goes stale on its own
                log.warning("could not release the lease on search %s", self.search_id, exc_info=True)

    def _run(self) -> SearchRecord:
        search = self.store.get_search(self.search_id)
        if search.status in (SearchStatus.QUEUED, SearchStatus.PAUSED, SearchStatus.FAILED):
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
                    if self._status is not SearchStatus.RUNNING:
                        break
                    # The end of the stream: a small rung's quota may round to 0, so the final
                    # pass lets each rung's best climb (and again, until nobody is due).
                    if self._done_proposing() and not self._climbs and not self._queue_climbs(final=True):
                        break
                    continue
                outcomes = self.executor.wait(timeout_s=self.status_poll_s)
                self._record_faults()   # before the jobs they name are collected
                self._collect(outcomes)
        except BaseException as e:
            # Leave the search resumable: in-flight candidates return to pending on restart.
            self._cancel_in_flight(record=False)
            # Interrupted, taken over by another runner (whose search it now is), or the store is out
            # (the search waits for it, see run_through_outages): not a failure.
            if not isinstance(e, KeyboardInterrupt | SystemExit | LeaseLost | RetryableStoreError):
                try:   # no candidate stays evaluating without a runner
                    self.store.reset_evaluating(self.search_id)
                except Exception:
                    log.warning("could not reset the evaluating candidates of search %s", self.search_id,
                                exc_info=True)
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

    def _record_faults(self) -> None:
        """The executor's faults and the outages the store rode out, as events of this search."""
        for fault in self.executor.faults():
            fault = dict(fault)
            kind = fault.pop("kind")
            jobs = [self._jobs[j].candidate.id for j in fault.pop("jobs", []) if j in self._jobs]
            self._event(kind, {**fault, "candidates": jobs})
        for outage in self.store.take_outages():
            self._event(EventKind.STORE_OUTAGE, outage)

    def _event(self, kind: str, payload: dict[str, Any]) -> None:
        log.warning("search %s: %s %s", self.search_id, kind, payload)
        self.store.append_event(kind, payload, search_id=self.search_id)

    def _refresh_status(self) -> None:
        self.lease.renew()
        now = time.monotonic()
        if now - self._last_status_check >= self.status_poll_s:
            self._last_status_check = now
            self._status = self.store.get_search(self.search_id).status

    def _note_best(self, objectives: tuple[float, ...]) -> None:
        """The best estimate shown so far (any rung's), by mean accuracy."""
        best = self.progress.best
        if best is None or maximised_mean(objectives, self.maximise) > maximised_mean(best, self.maximise):
            self.progress.best = tuple(objectives)

    def _breeds(self, c: CandidateRecord) -> bool:
        """Whether a candidate may be a parent: not a baseline added beside the proposals."""
        return not (c.mutation or "").startswith("baseline:")

    def _done_proposing(self) -> bool:
        return self._budget_spent() and not self._pending and not self._parked

    def _budget_spent(self) -> bool:
        """No more proposals: the candidate budget is used up, or the core-hours are (the jobs in
        flight, the pending candidates and the funnel's climbs still finish)."""
        limit = self.config.max_core_hours
        return self.progress.created >= self.config.budget or (
            limit is not None and self.progress.core_s >= limit * 3600)

    def _queue_climbs(self, final: bool = False) -> bool:
        """Queue every candidate due to climb a rung now; whether any was."""
        due = self.funnel.promotions(self._rung_of, baselines=self._baselines,
                                     busy=self._climbing | self._stuck, final=final)
        if not due:
            return False
        records = {c.id: c for c in self.store.get_candidates([cid for cid, _ in due])}
        for cid, rung in due:
            self._climbing.add(cid)
            self._climbs.append((records[cid], rung))
        # Baselines first (every rung needs them to compare against), then the higher rungs.
        self._climbs.sort(key=lambda cr: (cr[0].id not in self._baselines, -cr[1], cr[0].id))
        return True

    def _fill(self) -> None:
        """Top the executor up to `in_flight` jobs: pending candidates first, then new proposals."""
        # Never more jobs than the executor runs at once (its share of a cluster, which may grow or shrink).
        free = min(self.config.in_flight, self.executor.slots) - len(self._jobs)
        while free > 0 and self._climbs:
            c, rung = self._climbs.pop(0)
            self._submit_rung(c, rung, None)
            free -= 1
        if free <= 0:
            self._report()
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
        while len(out) < n and not self._budget_spent():
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
                self._note_baseline(c)
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
            spent = job.core_s(outcome)
            self.progress.core_s += spent
            if job.kind == "screen":
                finished += _spending(self._screened(job.candidate, outcome), spent)
            else:
                finished += _spending(self._evaluated(job, outcome), spent) if job.rung == 0 else []
                if job.rung > 0:
                    self._climbed(job.candidate, job.rung, outcome, spent)
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
        self._submit_rung(c, 0, screening)

    def _submit_rung(self, c: CandidateRecord, rung: int, screening: Screening | None) -> None:
        # The time limit scales with the rung's share of a full evaluation (steps x seeds, held-out too).
        job_id = self.executor.submit(self.rung_fn, c.graph, self.spec, self.funnel.rungs[rung], screening,
                                      self.funnel.done(c.id), timeout_s=self._rung_timeout(rung))
        self._jobs[job_id] = _Job("rung", c, screening, rung)
        self.progress.doing = f"#{c.id} rung {rung}"

    def _rung_timeout(self, rung: int) -> float | None:
        if self.config.timeout_s is None:
            return None
        r = self.funnel.rungs[rung]
        share = r.steps_frac * len(r.seeds) * (1 + (len(self.spec.heldout_tasks) / len(self.spec.tasks)
                                                    if r.top else 0))
        return self.config.timeout_s * max(1.0, share)

    def _rung_runs(self, outcome: RungResult) -> list[NewEvaluation]:
        return [NewEvaluation(backbone=r.backbone, task=r.task, metrics=r.metrics(), wall_s=r.wall_s,
                              worker=outcome.worker, rung=outcome.rung, seed=r.seed, steps=r.steps)
                for r in outcome.runs]

    def _evaluated(self, job: _Job, outcome: RungResult | JobFailure) -> list[CandidateOutcome]:
        c = job.candidate
        assert job.screening is not None and job.screening.fingerprint is not None
        fp = job.screening.fingerprint
        # `_training[fp]` stays until `_finish` has recorded the result: a screening of the same
        # fingerprint collected in this batch must park on it, not train it again.
        if isinstance(outcome, JobFailure):
            return [_worker_failure(c, outcome, fp)]
        if outcome.rejection:
            return [CandidateOutcome(c.id, CandidateStatus.REJECTED, fingerprint=fp,
                                     rejection_stage=outcome.rejection.stage,
                                     rejection_reason=outcome.rejection.reason)]
        self.funnel.add(c.id, [(r.key, r.accuracy) for r in outcome.runs])
        if outcome.cost is not None:
            self.funnel.cost[c.id] = outcome.cost
        estimates = self.funnel.estimates(c.id, 0)
        return [CandidateOutcome(c.id, CandidateStatus.EVALUATED, evaluations=self._rung_runs(outcome),
                                 fingerprint=fp, objectives=[e.mean for e in estimates], rung=0,
                                 estimates=estimates, verified=self.funnel.top == 0)]

    def _climbed(self, c: CandidateRecord, rung: int, outcome: RungResult | JobFailure, core_s: float) -> None:
        """A climb's result: the candidate's estimates move up a rung, or it stays where it was."""
        self._climbing.discard(c.id)
        if isinstance(outcome, JobFailure) or outcome.rejection:
            failure = (f"{outcome.kind}: {outcome.message}" if isinstance(outcome, JobFailure) else
                       f"{outcome.rejection.stage}: {outcome.rejection.reason}" if outcome.rejection else "")
            # Not a rejection: what it showed at the lower rung stands; it just climbs no further.
            self._stuck.add(c.id)
            log.warning("search %s: candidate %s could not climb to rung %s: %s", self.search_id, c.id, rung,
                        failure)
            self.store.record_spend(self.search_id, core_s, "climb_failed",
                                    {"rung": rung, "reason": failure[:2000]}, candidate_id=c.id)
            return
        self.funnel.add(c.id, [(r.key, r.accuracy) for r in outcome.runs])
        estimates = self.funnel.estimates(c.id, rung)
        verified = rung == self.funnel.top
        rec = self.store.record_rung(RungOutcome(c.id, rung, [e.mean for e in estimates], estimates,
                                                 self._rung_runs(outcome), verified, core_s))
        if rec.fingerprint and self._known.get(rec.fingerprint, rec).id == rec.id:
            self._known[rec.fingerprint] = rec     # later duplicates copy the climbed result
        previous = self._rung_of.get(c.id)
        if previous is not None:
            self.progress.rungs[previous] -= 1
        self._rung_of[c.id] = rung
        self.progress.rungs[rung] += 1
        self.progress.verified += verified
        if rec.objectives is not None:
            self._note_best(rec.objectives)
            if self._breeds(rec):
                self.strategy.revise(Individual(rec.id, CandidateView(rec).graph, tuple(rec.objectives)))
        self._queue_climbs()

    def _finish(self, outcomes: list[CandidateOutcome]) -> None:
        if not outcomes:
            return
        records = self.store.finish_candidates(outcomes)
        self.progress.just_finished += tuple(records)
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
                    resolved += [replace(_duplicate(p, rec, fp), core_s=_screen_s(sc))
                                 for p, sc in self._parked.pop(fp)]
                elif fp not in self._training:
                    # The worker failed, not the layer: the first parked duplicate trains it
                    # afresh, the others stay parked on that evaluation.
                    waiting = self._parked[fp]
                    c, screening = waiting.pop(0)
                    if not waiting:
                        del self._parked[fp]
                    self._train(c, screening)
        self._queue_climbs()
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
        self._climbs.clear()
        self._climbing.clear()
        if record and cancelled:
            self._finish([cancelled_outcome(c) for c in cancelled])

    def _report(self) -> None:
        parked = sum(len(v) for v in self._parked.values())
        self.progress.in_flight = len(self._jobs) + parked + len(self._climbs)
        self.progress.running = tuple((j.candidate.id, "screen" if j.kind == "screen" else f"rung {j.rung}")
                                      for j in self._jobs.values())
        if self.on_progress:
            self.on_progress(self.progress)
        self.progress.just_finished = ()


def cancelled_outcome(c: CandidateRecord) -> CandidateOutcome:
    """How an unfinished candidate of a cancelled search ends."""
    return CandidateOutcome(c.id, CandidateStatus.REJECTED, rejection_stage=Stage.CANCELLED,
                            rejection_reason="the search was cancelled")


def _spending(outcomes: list[CandidateOutcome], core_s: float) -> list[CandidateOutcome]:
    """The job's worker seconds go with the first result it produced (one, or none when parked)."""
    return [replace(o, core_s=core_s) if i == 0 else o for i, o in enumerate(outcomes)]


def _worker_failure(c: CandidateRecord, failure: JobFailure, fp: str | None = None) -> CandidateOutcome:
    return CandidateOutcome(c.id, CandidateStatus.REJECTED, rejection_stage=Stage.WORKER,
                            rejection_reason=f"{failure.kind}: {failure.message}"[:2000], fingerprint=fp)


def _duplicate(c: CandidateRecord, original: CandidateRecord, fp: str) -> CandidateOutcome:
    """Reuse the original's result: same status, objectives and rejection; nothing trained."""
    if original.status is CandidateStatus.EVALUATED:
        return CandidateOutcome(c.id, CandidateStatus.EVALUATED, objectives=original.objectives,
                                reused_from=original.id, fingerprint=fp, rung=original.rung,
                                estimates=original.estimates, verified=original.verified)
    return CandidateOutcome(c.id, CandidateStatus.REJECTED, rejection_stage=original.rejection_stage or "?",
                            rejection_reason=f"functional duplicate of candidate {original.id}: "
                                             f"{original.rejection_reason}", reused_from=original.id,
                            fingerprint=fp)


_NOT_THE_LAYERS_FAULT = frozenset(s for s in Stage if not s.layers_fault)


def _cacheable(c: CandidateRecord) -> bool:
    """Whether a finished original's result belongs to its fingerprint (is reused by duplicates).

    A worker-stage rejection (timeout, out of memory, a dead worker) or a
    cancellation is not the layer's fault, so it is not.
    """
    return c.status is CandidateStatus.EVALUATED or c.rejection_stage not in _NOT_THE_LAYERS_FAULT

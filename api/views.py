"""Records -> response models, and the read logic shared by several routes."""

from __future__ import annotations

import re
from typing import Any

from api.deps import AppState
from api.schemas import (
    Baseline,
    CandidateSummary,
    ComparisonPublic,
    EstimatePublic,
    FrontMember,
    FrontPublic,
    HypervolumePoint,
    RunnerProgress,
    SearchDetail,
    SearchPublic,
    StatusCounts,
)
from db import CandidateRecord, CandidateStatus, SearchRecord
from evonorm_search.domain import CandidateView, SearchView
from evonorm_search.domain import baselines as seeded_baselines
from evonorm_search.funnel import MemberStats, member_stats
from evonorm_search.live import FrontSnapshot

LINEAGE_DEPTH = 100


def search_public(state: AppState, s: SearchRecord) -> SearchPublic:
    return SearchPublic(**_search_fields(state, SearchView.of(s)))


def _search_fields(state: AppState, view: SearchView) -> dict[str, Any]:
    s = view.record
    return dict(
        id=s.id, name=s.name, status=s.status, seed=s.seed, error=s.error, num_candidates=s.num_candidates,
        num_evaluated=s.num_evaluated, num_rejected=s.num_rejected, created_at=s.created_at,
        started_at=s.started_at, finished_at=s.finished_at, updated_at=s.updated_at,
        objectives=view.objectives.names, maximise=view.objectives.maximise,
        budget=int(s.config.get("budget", 0)), core_hours=s.core_s / 3600,
        strategy=str(s.config.get("strategy", "")), active=state.coordinator.is_running(s.id),
        runner=s.runner, runner_heartbeat=s.runner_heartbeat, config=s.config)


def status_counts(state: AppState, s: SearchRecord) -> StatusCounts:
    """Counts per status without a COUNT over the search's rows.

    Finished counts are the search row's counters; the unfinished rows (pending or evaluating: at most
    what is in flight) are few, so the evaluating ones are listed through the (search, status, id) index.
    """
    unfinished = max(0, s.num_candidates - s.num_evaluated - s.num_rejected)
    if unfinished > 10_000:  # a very wide search: counting is cheaper than listing
        counts = state.store.count_by_status(s.id)
        return StatusCounts(**{status.value: n for status, n in counts.items()})
    evaluating = 0
    if unfinished:
        evaluating = len(state.store.list_candidates(s.id, status=CandidateStatus.EVALUATING, limit=unfinished))
    return StatusCounts(pending=unfinished - evaluating, evaluating=evaluating, evaluated=s.num_evaluated,
                        rejected=s.num_rejected)


def snapshot(state: AppState, s: SearchRecord) -> FrontSnapshot:
    """The search's live front (and counts by rejection stage)."""
    return state.fronts.snapshot(s.id, SearchView.of(s).objectives.maximise)


def search_detail(state: AppState, s: SearchRecord) -> SearchDetail:
    view = SearchView.of(s)
    snap = state.fronts.snapshot(s.id, view.objectives.maximise)
    progress = state.coordinator.progress(s.id)
    live = None
    if progress is not None:
        live = RunnerProgress(in_flight=progress.in_flight, duplicates=progress.duplicates,
                              best=list(progress.best) if progress.best else None)
    return SearchDetail(**_search_fields(state, view), counts=status_counts(state, s),
                        rejected_by_stage=snap.by_stage, progress=live)


def estimates_public(c: CandidateRecord, names: list[str]) -> list[EstimatePublic] | None:
    if c.estimates is None:
        return None
    return [EstimatePublic(objective=n, mean=e.mean, stderr=e.stderr, n=e.n)
            for n, e in zip(names, c.estimates, strict=False)]


def candidate_summary(c: CandidateRecord, objective_names: list[str]) -> CandidateSummary:
    return CandidateSummary(
        id=c.id, search_id=c.search_id, status=c.status, formula=CandidateView(c).formula,
        objectives=list(c.objectives) if c.objectives is not None else None, rejection_stage=c.rejection_stage,
        rejection_reason=c.rejection_reason, generation=c.generation, mutation=c.mutation,
        parent_ids=list(c.parent_ids), reused_from=c.reused_from, structural_hash=c.structural_hash,
        created_at=c.created_at, updated_at=c.updated_at, rung=c.rung, verified=c.verified,
        estimates=estimates_public(c, objective_names))


def baselines(state: AppState, view: SearchView) -> list[Baseline]:
    """Zoo layers trained with the search's recipe: its seeds and the baselines run at every rung."""
    return [_baseline(name, c, view.objectives.names) for name, c in seeded_baselines(state.store, view)]


def _baseline(name: str, c: CandidateRecord, names: list[str], stats: MemberStats | None = None) -> Baseline:
    return Baseline(name=name, candidate_id=c.id, status=c.status,
                    objectives=list(c.objectives) if c.objectives is not None else None,
                    rejection_stage=c.rejection_stage, rung=c.rung, verified=c.verified,
                    estimates=estimates_public(c, names),
                    heldout=_heldout_public(stats))


def _heldout_public(stats: MemberStats | None) -> list[EstimatePublic]:
    return [EstimatePublic(objective=o, mean=e.mean, stderr=e.stderr, n=e.n)
            for o, e in (stats.heldout.items() if stats else ())]


def front(state: AppState, s: SearchRecord) -> FrontPublic:
    view = SearchView.of(s)
    snap = state.fronts.snapshot(s.id, view.objectives.maximise)
    names = view.objectives.names
    ids = list(dict.fromkeys(m.candidate_id for m in (*snap.members, *snap.verified_members)))
    records = {i: state.candidates.get(i) for i in ids}
    base = seeded_baselines(state.store, view)
    stats = member_stats(state.store, view.config, list(records.values()), base) if view.config else {}

    def member(candidate_id: int) -> FrontMember:
        c = CandidateView(records[candidate_id])
        r = c.record
        st = stats.get(r.id)
        return FrontMember(
            id=c.id, formula=c.formula, objectives=list(r.objectives or ()), origin=c.origin,
            generation=r.generation, zoo_name=c.zoo_name, rung=r.rung, verified=r.verified,
            estimates=estimates_public(r, names),
            heldout=_heldout_public(st),
            comparisons=[ComparisonPublic(baseline=x.baseline, objective=x.objective, diff=x.diff.mean,
                                          diff_stderr=x.diff.stderr, n=x.diff.n, p=x.p, beats=x.beats)
                         for x in (st.comparisons if st else ())])

    return FrontPublic(
        search_id=s.id, objectives=names, maximise=view.objectives.maximise,
        members=[member(m.candidate_id) for m in snap.members],
        verified_members=[member(m.candidate_id) for m in snap.verified_members],
        baselines=[_baseline(name, c, names, stats.get(c.id)) for name, c in base],
        hypervolume=snap.hypervolume,
        hypervolume_history=[HypervolumePoint(finished=h.finished, evaluated=h.evaluated,
                                              hypervolume=h.hypervolume, at=h.at) for h in snap.history],
        finished=snap.finished, evaluated=snap.evaluated, rejected=snap.rejected,
        last_event_id=snap.last_event_id)


_FIELD_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def field_loc(field: str) -> list[str | int]:
    """`nodes[2].inputs[0]` -> ["nodes", 2, "inputs", 0] (a GraphError's field as a JSON path)."""
    if field == "$":
        return []
    return [name if name else int(index) for name, index in _FIELD_PART.findall(field)]

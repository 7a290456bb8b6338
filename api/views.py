"""Records -> response models, and the read logic shared by several routes."""

from __future__ import annotations

import re
from typing import Any

from api.deps import AppState
from api.schemas import (
    Baseline,
    CandidateSummary,
    FrontMember,
    FrontPublic,
    HypervolumePoint,
    RunnerProgress,
    SearchDetail,
    SearchPublic,
    StatusCounts,
)
from db import CandidateRecord, CandidateStatus, SearchRecord
from evonorm_search.config import SearchConfig
from evonorm_search.live import graph_formula
from primitives.compile import class_name_for
from primitives.graph import Graph

LINEAGE_DEPTH = 100


def config_of(state: AppState, s: SearchRecord) -> SearchConfig | None:
    """The search's config, parsed once (None if it no longer validates: an old search, a changed schema)."""
    if s.id not in state.configs:
        try:
            state.configs[s.id] = SearchConfig.model_validate(s.config)
        except ValueError:
            state.configs[s.id] = None
    return state.configs[s.id]


def objectives_of(state: AppState, s: SearchRecord) -> list[str]:
    config = config_of(state, s)
    if config is not None:
        return config.objectives
    tasks = s.config.get("tasks") or []
    return [f"{t.get('backbone')}:{t.get('task')}" for t in tasks if isinstance(t, dict)]


def maximise_of(state: AppState, s: SearchRecord) -> list[bool]:
    """Per objective: accuracies are maximised, a cost is minimised."""
    config = config_of(state, s)
    if config is not None:
        return config.maximise
    return [name != "cost" for name in objectives_of(state, s)]


def seeds_of(config: dict[str, Any]) -> list[str]:
    seeds = config.get("seed_with_zoo") or []
    return [s for s in seeds if isinstance(s, str)]


def search_public(state: AppState, s: SearchRecord) -> SearchPublic:
    return SearchPublic(**_search_fields(state, s))


def _search_fields(state: AppState, s: SearchRecord) -> dict[str, Any]:
    return dict(
        id=s.id, name=s.name, status=s.status, seed=s.seed, error=s.error, num_candidates=s.num_candidates,
        num_evaluated=s.num_evaluated, num_rejected=s.num_rejected, created_at=s.created_at,
        started_at=s.started_at, finished_at=s.finished_at, updated_at=s.updated_at,
        objectives=objectives_of(state, s), maximise=maximise_of(state, s),
        budget=int(s.config.get("budget", 0)),
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


def search_detail(state: AppState, s: SearchRecord) -> SearchDetail:
    snapshot = state.fronts.snapshot(s.id, maximise_of(state, s))
    progress = state.coordinator.progress(s.id)
    live = None
    if progress is not None:
        live = RunnerProgress(in_flight=progress.in_flight, duplicates=progress.duplicates,
                              best=list(progress.best) if progress.best else None)
    return SearchDetail(**_search_fields(state, s), counts=status_counts(state, s),
                        rejected_by_stage=snapshot.by_stage, progress=live)


def candidate_summary(c: CandidateRecord) -> CandidateSummary:
    return CandidateSummary(
        id=c.id, search_id=c.search_id, status=c.status, formula=graph_formula(c.graph),
        objectives=list(c.objectives) if c.objectives is not None else None, rejection_stage=c.rejection_stage,
        generation=c.generation, mutation=c.mutation, parent_ids=list(c.parent_ids), reused_from=c.reused_from,
        structural_hash=c.structural_hash, created_at=c.created_at, updated_at=c.updated_at)


def zoo_name(c: CandidateRecord) -> str | None:
    origin = c.mutation or ""
    return origin.split(":", 1)[1] if origin.startswith("seed:") else None


def module_name(c: CandidateRecord) -> str:
    """The downloaded layer's name: the zoo layer a seed is, else candidate_<id>."""
    return zoo_name(c) or f"candidate_{c.id}"


def class_name(c: CandidateRecord) -> str:
    return class_name_for(module_name(c), Graph.loads(c.graph))


def baselines(state: AppState, s: SearchRecord) -> list[Baseline]:
    """Zoo layers seeded into the search: its first rows, trained with its recipe."""
    seeds = seeds_of(s.config)
    if not seeds:
        return []
    out = []
    for c in state.store.list_candidates(s.id, limit=len(seeds)):
        name = zoo_name(c)
        if name is not None:
            out.append(Baseline(name=name, candidate_id=c.id, status=c.status,
                                objectives=list(c.objectives) if c.objectives is not None else None,
                                rejection_stage=c.rejection_stage))
    return out


def front(state: AppState, s: SearchRecord) -> FrontPublic:
    maximise = maximise_of(state, s)
    snap = state.fronts.snapshot(s.id, maximise)
    members = []
    for m in snap.members:
        c = state.candidates.get(m.candidate_id)
        members.append(FrontMember(id=c.id, formula=graph_formula(c.graph), objectives=list(m.objectives),
                                   origin=c.mutation or "", generation=c.generation, zoo_name=zoo_name(c)))
    return FrontPublic(
        search_id=s.id, objectives=objectives_of(state, s), maximise=maximise, members=members,
        baselines=baselines(state, s), hypervolume=snap.hypervolume,
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

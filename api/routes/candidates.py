"""One candidate: its graph, formula, lineage, evaluations; its layer as a module to download."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from api.deps import State
from api.exports import export_response
from api.schemas import MAX_ID, CandidateDetail, ErrorBody, EvaluationPublic, Layout, LineageEntry
from api.views import baselines, candidate_summary
from db import CandidateRecord, NotFoundError
from evonorm_search.domain import CandidateView, SearchView, task_objective
from primitives.export import ExportFormat

router = APIRouter(tags=["candidates"])

CandidateId = Annotated[int, Path(ge=1, le=MAX_ID, description="Candidate id")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody, "description": "No such candidate"}}


def _lineage(state: State, c: CandidateRecord) -> list[LineageEntry]:
    out: list[LineageEntry] = []
    seen = {c.id}
    parents = list(c.parent_ids)
    while parents and len(out) < 100:
        pid = parents[0]
        if pid in seen:
            break
        seen.add(pid)
        try:
            p = state.candidates.get(pid)
        except NotFoundError:
            break
        out.append(LineageEntry(id=p.id, formula=CandidateView(p).formula, status=p.status,
                                generation=p.generation, mutation=p.mutation,
                                objectives=list(p.objectives) if p.objectives is not None else None))
        parents = list(p.parent_ids)
    return out


@router.get("/api/candidates/{candidate_id}", response_model=CandidateDetail,
            responses={404: NOT_FOUND[404], 422: {"description": "Invalid id"}}, summary="One candidate")
def get_candidate(state: State, candidate_id: CandidateId) -> CandidateDetail:
    """Graph JSON, formula, lineage, per-task evaluations, rejection reason, and the search's baselines."""
    c = state.candidates.get(candidate_id)
    view = CandidateView(c)
    search = SearchView.of(state.store.get_search(c.search_id))
    source = c.reused_from if c.reused_from is not None else c.id
    graph = view.graph
    evaluations = [EvaluationPublic(backbone=e.backbone, task=e.task,
                                    objective=task_objective(e.backbone, e.task), metrics=e.metrics,
                                    wall_s=e.wall_s, worker=e.worker, created_at=e.created_at, rung=e.rung,
                                    seed=e.seed, steps=e.steps)
                   for e in state.store.evaluations_for(source)]
    return CandidateDetail(
        **candidate_summary(c, search.objectives.names).model_dump(), search_name=search.record.name,
        objective_names=search.objectives.names, maximise=search.objectives.maximise,
        graph=graph.to_json(), batch_dependent=graph.batch_dependent, fingerprint=c.fingerprint,
        lineage=_lineage(state, c), evaluations=evaluations,
        evaluations_from=source if evaluations else None, baselines=baselines(state, search),
        eps=search.eps, class_name=view.class_name)


@router.get("/api/candidates/{candidate_id}/module", response_class=Response,
            responses={200: {"description": "The layer as a file",
                             "content": {"text/x-python": {"schema": {"type": "string"}},
                                         "application/octet-stream": {"schema": {"type": "string",
                                                                                 "format": "binary"}}}},
                       404: NOT_FOUND[404], 422: {"description": "Invalid parameters"}},
            summary="Download the candidate's layer")
async def get_module(
    state: State,
    candidate_id: CandidateId,
    format: Annotated[ExportFormat, Query(description="py (source), torchscript (.pt), export (.pt2)")]
    = ExportFormat.PY,
    layout: Annotated[Layout, Query(description="nchw (images) or tokens (B, T, C)")] = "nchw",
    num_features: Annotated[int, Query(ge=1, le=4096, description="Width traced into .pt/.pt2 files")] = 64,
) -> Response:
    """A standalone `.py` (needs only torch), a TorchScript `.pt` or a `torch.export` `.pt2`."""
    c = CandidateView(await run_in_threadpool(state.candidates.get, candidate_id))
    search = SearchView.of(await run_in_threadpool(state.store.get_search, c.record.search_id))
    return await export_response(c.graph, format, layout=layout, num_features=num_features,
                                 name=c.module_name, eps=search.eps)

"""Searches: launch, list, inspect, pause / resume / cancel; their candidates and Pareto front."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Body, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import Field, ValidationError

from api.deps import Authorized, State
from api.schemas import (
    MAX_ID,
    CandidatePage,
    ErrorBody,
    EventPublic,
    FrontPublic,
    PresetsPublic,
    SearchDetail,
    SearchList,
    SearchPublic,
    TransitionErrorBody,
    ValidationErrorBody,
)
from api.views import candidate_summary, front, search_detail, search_public, snapshot, status_counts
from db import FAULT_EVENT_KINDS, CandidateStatus, SearchStatus
from evonorm_search.config import PRESETS, SearchConfig, backbone_layouts, load_config, task_kinds
from evonorm_search.domain import SearchView
from primitives.zoo import ZOO

router = APIRouter(tags=["searches"])

SearchId = Annotated[int, Path(ge=1, le=MAX_ID, description="Search id")]

if TYPE_CHECKING:
    PresetName = str
else:
    PresetName = Literal[tuple(PRESETS)]    # the config's presets: pydantic checks, the schema lists them

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody, "description": "No such search"}}
UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing or wrong bearer token (when the server has one)"}}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": TransitionErrorBody, "description": "The search's status does not allow this"}}
INVALID: dict[int | str, dict[str, Any]] = {
    422: {"model": ValidationErrorBody, "description": "Invalid input; each error names its field"}}
BAD_BODY: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "The body could not be read (not JSON, not UTF-8)"}}

_QUICK_EXAMPLE = load_config("quick", {"name": "quick-demo"}).model_dump(mode="json")
_SMALL_EXAMPLE = {"name": "tiny", "budget": 16, "population_size": 4, "tournament_size": 2,
                  "tasks": [{"backbone": "resnet", "task": "digits", "steps": 50}]}


def _storable(config: SearchConfig) -> None:
    """What JSON in every backend can hold: no NUL characters (PostgreSQL text), no infinities."""
    def walk(value: Any, loc: list[str | int]) -> None:
        bad = ("must not contain NUL characters" if isinstance(value, str) and "\x00" in value else
               "must be a finite number" if isinstance(value, float) and not math.isfinite(value) else None)
        if bad:
            raise HTTPException(422, [{"loc": ["body", *loc], "field": ".".join(map(str, loc)) or "(body)",
                                       "msg": bad, "type": "value_error"}])
        if isinstance(value, dict):
            for k, v in value.items():
                walk(k, loc)
                walk(v, [*loc, k])
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, [*loc, i])

    walk(config.model_dump(), [])


class LaunchRequest(SearchConfig):
    """A search config; with `preset`, the preset's config with the fields given here on top."""

    preset: PresetName | None = Field(
        None, description="Start from this preset (`GET /api/presets`); the other fields given override it")


def _strict(body: bytes) -> None:
    """No silent coercion: `"budget": "5"` or `"cost_objective": 0` is a 422, not a guess."""
    try:
        LaunchRequest.model_validate_json(body, strict=True)
    except ValidationError as e:
        raise RequestValidationError([{**err, "loc": ("body", *err["loc"])} for err in e.errors()]) from None


def _with_preset(request: LaunchRequest) -> SearchConfig:
    """The config a launch asks for: its preset (if any) with the fields it gave on top, validated whole."""
    given = request.model_dump(mode="json", exclude_unset=True, exclude={"preset"})
    try:
        return load_config(request.preset, given)
    except ValidationError as e:
        raise RequestValidationError([{**err, "loc": ("body", *err["loc"])} for err in e.errors()]) from None


@router.post("/api/searches", status_code=201, response_model=SearchPublic, dependencies=[Authorized],
             responses={**BAD_BODY, **UNAUTHORIZED, **INVALID}, summary="Launch a search")
async def launch_search(
    state: State,
    request: Request,
    launch: Annotated[LaunchRequest, Body(openapi_examples={
        "preset": {"summary": "The quick preset, smaller", "value": {"preset": "quick", "budget": 24}},
        "quick": {"summary": "The quick preset spelled out (two tasks, 40 candidates or 0.2 core-hours)",
                  "value": _QUICK_EXAMPLE},
        "tiny": {"summary": "A tiny one-task search", "value": _SMALL_EXAMPLE}})],
) -> SearchPublic:
    """Create a search from a `SearchConfig` (every field optional; see `GET /api/presets`) and start it.
    With `preset`, the fields given override that preset's.

    It starts `queued` and moves to `running` as soon as the coordinator has a free slot.
    """
    _strict(await request.body())
    config = _with_preset(launch)
    _storable(config)
    if config.data_root is None and state.settings.data_dir:
        config = config.model_copy(update={"data_root": state.settings.data_dir})
    record = await run_in_threadpool(state.coordinator.launch, config)
    return await run_in_threadpool(search_public, state, record)


@router.get("/api/searches", response_model=SearchList, responses=INVALID, summary="List searches")
def list_searches(
    state: State,
    status: Annotated[list[SearchStatus] | None, Query(max_length=6, description="Only these statuses")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> SearchList:
    """Newest first."""
    rows = state.store.list_searches(status=status or None, limit=limit, offset=offset)
    return SearchList(items=[search_public(state, s) for s in rows], limit=limit, offset=offset,
                      last_event_id=state.store.last_event_id())


@router.get("/api/searches/{search_id}", response_model=SearchDetail, responses={**NOT_FOUND, **INVALID},
            summary="A search with its counts")
def get_search(state: State, search_id: SearchId) -> SearchDetail:
    """The search, candidates per status and per rejection stage, and the live runner's progress."""
    return search_detail(state, state.store.get_search(search_id))


def _transition(action: str, doc: str) -> None:
    @router.post(f"/api/searches/{{search_id}}/{action}", response_model=SearchPublic,
                 dependencies=[Authorized], responses={**UNAUTHORIZED, **NOT_FOUND, **CONFLICT, **INVALID},
                 summary=f"{action.title()} a search", operation_id=f"{action}_search", description=doc)
    async def transition(state: State, search_id: SearchId) -> SearchPublic:
        method = getattr(state.coordinator, action)
        record = await run_in_threadpool(method, search_id)
        return search_public(state, record)


_transition("pause", "running or queued -> paused. In-flight candidates finish first; nothing new starts.")
_transition("resume", "paused or failed -> queued -> running: a fresh runner continues from the store "
                      "(a failed search's error is cleared).")
_transition("cancel", "-> cancelled, from queued, running or paused. In-flight candidates are recorded as "
                      "rejected at stage `cancelled`. 409 once the search has ended.")


SortKey = Literal["id", "generation", "created_at", "updated_at"]


@router.get("/api/searches/{search_id}/candidates", response_model=CandidatePage,
            responses={**NOT_FOUND, **INVALID}, summary="A page of a search's candidates")
def list_candidates(
    state: State,
    search_id: SearchId,
    status: Annotated[list[CandidateStatus] | None, Query(max_length=4, description="Only these statuses")]
    = None,
    rejection_stage: Annotated[str | None, Query(max_length=64, pattern=r"^[a-z_]+$",
                                                 description="Only rejected at this stage")] = None,
    sort: Annotated[SortKey, Query(description="Sort key (ties broken by id)")] = "id",
    order: Annotated[Literal["asc", "desc"], Query()] = "asc",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    after: Annotated[int | None, Query(ge=0, le=MAX_ID, description=(
        "Cursor: only candidates with a larger id, in id order (`sort` and `order` do not apply). Pass the "
        "last `next_after` to fetch only new rows; status changes of older rows arrive as events "
        "(`/api/events`)."))] = None,
) -> CandidatePage:
    """Filter by status and rejection stage, sort, page with limit/offset, or follow with `after`."""
    if after is not None:
        # The cursor is an id: in any other order a page would skip newer rows that sort before it.
        sort, order = "id", "asc"
    search = state.store.get_search(search_id)
    total: int | None = None
    if after is None:
        statuses = set(status or CandidateStatus)
        if rejection_stage is not None:
            by_stage = snapshot(state, search).by_stage
            total = by_stage.get(rejection_stage, 0) if CandidateStatus.REJECTED in statuses else 0
        elif not status:
            total = search.num_candidates
        else:
            counts = status_counts(state, search).model_dump()
            total = sum(counts[s.value] for s in statuses)
    # Ids grow in creation order, so created_at order is id order, which an index serves.
    key: SortKey = "id" if sort == "created_at" else sort
    descending = order == "desc"
    # An OFFSET walks the skipped rows: a page past the middle is read from the other end, reversed,
    # so the last page costs what the first does (when no runner is adding rows meanwhile).
    settled = search.status not in (SearchStatus.RUNNING, SearchStatus.QUEUED)
    flip = settled and total is not None and 0 < offset < total and offset + limit > total - offset
    if flip and total is not None:
        skip, take = max(0, total - offset - limit), min(limit, total - offset)
        rows = state.store.list_candidates(search_id, status=status or None, rejection_stage=rejection_stage,
                                           order_by=key, descending=not descending, limit=take, offset=skip)
        rows.reverse()
    elif total is not None and offset >= total:
        rows = []
    else:
        rows = state.store.list_candidates(search_id, status=status or None, rejection_stage=rejection_stage,
                                           after_id=after, order_by=key, descending=descending, limit=limit,
                                           offset=offset)
    next_after = max((c.id for c in rows), default=after)
    names = SearchView.of(search).objectives.names
    return CandidatePage(items=[candidate_summary(c, names) for c in rows], total=total, limit=limit,
                         offset=offset, next_after=next_after)


@router.get("/api/searches/{search_id}/front", response_model=FrontPublic, responses={**NOT_FOUND, **INVALID},
            summary="The Pareto front, the zoo baselines and the hypervolume history")
def get_front(state: State, search_id: SearchId) -> FrontPublic:
    """Maintained incrementally from the event log: a read costs what is new since the last one."""
    return front(state, state.store.get_search(search_id))


@router.get("/api/searches/{search_id}/faults", response_model=list[EventPublic],
            responses={**NOT_FOUND, **INVALID}, summary="The faults a search went through")
def get_faults(state: State, search_id: SearchId,
               limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[EventPublic]:
    """Its fault events, oldest first: `store_outage` (it waited for the database), `node_lost` (a Ray node
    went away), `candidate_retried` (Ray ran a job again elsewhere), `runner_takeover` (a new runner took
    over from a dead one). The same events arrive live on `/api/events`."""
    state.store.get_search(search_id)   # 404 for an unknown search
    rows = state.store.events_after(0, search_id=search_id, kinds=FAULT_EVENT_KINDS, limit=limit)
    return [EventPublic(id=e.id, kind=e.kind, search_id=e.search_id, candidate_id=e.candidate_id,
                        payload=e.payload, created_at=e.created_at) for e in rows]


@router.get("/api/presets", response_model=PresetsPublic, summary="What a launch form offers")
def presets() -> PresetsPublic:
    return PresetsPublic(
        default=SearchConfig().model_dump(mode="json"),
        presets={name: load_config(name).model_dump(mode="json") for name in PRESETS},
        tasks=task_kinds(),
        backbones=backbone_layouts(),
        zoo_seeds=[name for name, layer in ZOO.items() if layer.in_search_space])

"""Server-sent events: the store's event log, live."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent

from api.deps import AppState, State
from api.schemas import MAX_ID, ErrorBody, EventPublic
from db import EventRecord

router = APIRouter(tags=["events"])


def _read(state: AppState, cursor: int, search_id: int | None) -> list[EventRecord]:
    return state.store.events_after(cursor, search_id=search_id, limit=BATCH)

POLL_S = 0.5
BATCH = 500


def _search_exists(state: State, request: Request) -> None:
    """404 before the stream opens: a stream for a search that does not exist would stay empty for ever.
    (An invalid `search_id` is the endpoint's 422.)"""
    given = request.query_params.get("search_id", "")
    if given.isdigit() and 1 <= int(given) <= MAX_ID:
        state.store.get_search(int(given))


@router.get("/api/events", response_class=EventSourceResponse, dependencies=[Depends(_search_exists)],
            responses={
    404: {"description": "No such search (JSON, before any stream opens)",
          "content": {"application/json": {"schema": ErrorBody.model_json_schema()}}},
    200: {"description": "`text/event-stream`: one event per log entry; `id` is the event id, `event` its "
                         "kind, `data` an EventPublic as JSON"},
    422: {"description": "Invalid parameters"}}, summary="Follow the event log (SSE)")
async def events(
    request: Request,
    state: State,
    after: Annotated[int, Query(ge=0, le=MAX_ID, description="Start after this event id (0: the start)")] = 0,
    search_id: Annotated[int | None, Query(ge=1, le=MAX_ID, description="Only this search's events")] = None,
    follow: Annotated[bool, Query(description="Keep the stream open for new events (false: send the backlog, "
                                              "then close)")] = True,
    timeout_s: Annotated[float | None, Query(gt=0, le=86_400, description="Close the stream after this long")]
    = None,
    last_event_id: Annotated[str | None, Header(max_length=32, description="Set by EventSource on reconnect; "
                                                                           "wins over `after`")] = None,
) -> AsyncIterator[ServerSentEvent]:
    """Each event: `id: <event id>`, `event: <kind>`, `data: {id, kind, search_id, candidate_id, payload,
    created_at}`. Reconnecting EventSources resume from `Last-Event-ID`. The store is polled every 0.5 s in
    the threadpool; the stream ends when the client goes away.
    """
    cursor = after
    if last_event_id and last_event_id.strip().isdigit():
        cursor = min(int(last_event_id.strip()), MAX_ID)
    deadline = time.monotonic() + timeout_s if timeout_s else None
    state.metrics.sse_clients.inc()
    try:
        yield ServerSentEvent(comment="evonorm events", retry=2000)
        while True:
            batch = await anyio.to_thread.run_sync(_read, state, cursor, search_id)
            for e in batch:
                body = EventPublic(id=e.id, kind=e.kind, search_id=e.search_id, candidate_id=e.candidate_id,
                                   payload=e.payload, created_at=e.created_at)
                yield ServerSentEvent(data=body, event=e.kind, id=str(e.id))
                cursor = e.id
            if len(batch) == BATCH:
                continue
            if not follow or (deadline is not None and time.monotonic() >= deadline):
                return
            if await request.is_disconnected():
                return
            wait = POLL_S if deadline is None else min(POLL_S, max(0.0, deadline - time.monotonic()))
            await anyio.sleep(wait)
    finally:
        state.metrics.sse_clients.dec()

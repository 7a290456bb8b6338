"""Server-sent events: the store's event log, live.

The stream is this module's own async generator in a `StreamingResponse`
(`EventStream`), not FastAPI's generator-endpoint SSE: that one feeds the
response through a memory stream from a task group, and when a client hangs
up while the backlog is still flowing, its forwarding task's `send` finds the
receiving end closed and the task group raises `BrokenResourceError` into the
server log (a traceback per disconnected client). Here a disconnect cancels
the one generator, which ends, and the response returns quietly.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.sse import KEEPALIVE_COMMENT, format_sse_event
from starlette.requests import ClientDisconnect
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from api.deps import AppState, State
from api.schemas import MAX_ID, ErrorBody, EventPublic
from db import EventRecord

router = APIRouter(tags=["events"])

POLL_S = 0.5
BATCH = 500
PING_S = 15.0     # an idle stream sends a comment this often: proxies keep it open, a gone client is noticed

# The wire format of one event, as the OpenAPI document describes `text/event-stream` items.
_ITEM_SCHEMA = {"type": "object", "properties": {"data": {"type": "string"}, "event": {"type": "string"},
                                                 "id": {"type": "string"},
                                                 "retry": {"type": "integer", "minimum": 0}}}


def _read(state: AppState, cursor: int, search_id: int | None) -> list[EventRecord]:
    return state.store.events_after(cursor, search_id=search_id, limit=BATCH)


class EventStream(StreamingResponse):
    """`text/event-stream` from an async generator of wire bytes.

    A client that goes away ends the response without an error: Starlette cancels the stream when it
    sees `http.disconnect` (or a send fails: `ClientDisconnect`), and the generator is closed here in any
    case, so its `finally` runs before the response returns.
    """

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[bytes]) -> None:
        # no-cache: nothing between keeps the stream; X-Accel-Buffering: nginx does not buffer it
        super().__init__(content, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._events = content

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except ClientDisconnect:
            pass
        finally:
            aclose = getattr(self._events, "aclose", None)
            if aclose is not None:
                await aclose()


def _search_exists(state: State, request: Request) -> None:
    """404 before the stream opens: a stream for a search that does not exist would stay empty for ever.
    (An invalid `search_id` is the endpoint's 422.)"""
    given = request.query_params.get("search_id", "")
    if given.isdigit() and 1 <= int(given) <= MAX_ID:
        state.store.get_search(int(given))


async def _stream(state: AppState, cursor: int, search_id: int | None, follow: bool,
                  deadline: float | None) -> AsyncIterator[bytes]:
    state.metrics.sse_clients.inc()
    try:
        yield format_sse_event(comment="evonorm events", retry=2000)
        quiet_since = time.monotonic()
        while True:
            batch = await anyio.to_thread.run_sync(_read, state, cursor, search_id)
            for e in batch:
                body = EventPublic(id=e.id, kind=e.kind, search_id=e.search_id, candidate_id=e.candidate_id,
                                   payload=e.payload, created_at=e.created_at)
                yield format_sse_event(data_str=body.model_dump_json(), event=e.kind, id=str(e.id))
                cursor = e.id
                # A checkpoint per event: a backlog streams in a loop that never waits otherwise, and a
                # client that hung up must be noticed (its disconnect delivered) before the next write.
                await anyio.sleep(0)
            now = time.monotonic()
            if batch:
                quiet_since = now
            if len(batch) == BATCH:
                continue
            if not follow or (deadline is not None and now >= deadline):
                return
            if now - quiet_since >= PING_S:
                yield KEEPALIVE_COMMENT
                quiet_since = now
            wait = POLL_S if deadline is None else min(POLL_S, max(0.0, deadline - now))
            await anyio.sleep(wait)
    finally:
        state.metrics.sse_clients.dec()


# The route returns an EventStream; `Response` (no media type) leaves the OpenAPI content to `responses`.
@router.get("/api/events", response_class=Response, dependencies=[Depends(_search_exists)],
            responses={
    404: {"description": "No such search (JSON, before any stream opens)",
          "content": {"application/json": {"schema": ErrorBody.model_json_schema()}}},
    200: {"description": "`text/event-stream`: one event per log entry; `id` is the event id, `event` its "
                         "kind, `data` an EventPublic as JSON",
          "content": {"text/event-stream": {"itemSchema": _ITEM_SCHEMA}}},
    422: {"description": "Invalid parameters"}}, summary="Follow the event log (SSE)")
async def events(
    state: State,
    after: Annotated[int, Query(ge=0, le=MAX_ID, description="Start after this event id (0: the start)")] = 0,
    search_id: Annotated[int | None, Query(ge=1, le=MAX_ID, description="Only this search's events")] = None,
    follow: Annotated[bool, Query(description="Keep the stream open for new events (false: send the backlog, "
                                              "then close)")] = True,
    timeout_s: Annotated[float | None, Query(gt=0, le=86_400, description="Close the stream after this long")]
    = None,
    last_event_id: Annotated[str | None, Header(max_length=32, description="Set by EventSource on reconnect; "
                                                                           "wins over `after`")] = None,
) -> Any:
    """Each event: `id: <event id>`, `event: <kind>`, `data: {id, kind, search_id, candidate_id, payload,
    created_at}`. Reconnecting EventSources resume from `Last-Event-ID`. The store is polled every 0.5 s in
    the threadpool; the stream ends when the client goes away.
    """
    cursor = after
    if last_event_id and last_event_id.strip().isdigit():
        cursor = min(int(last_event_id.strip()), MAX_ID)
    deadline = time.monotonic() + timeout_s if timeout_s else None
    return EventStream(_stream(state, cursor, search_id, follow, deadline))

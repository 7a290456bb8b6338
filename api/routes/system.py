"""Health and Prometheus metrics."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from api.deps import State
from api.schemas import ErrorBody, Health
from db import StoreError

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5


def unavailable() -> JSONResponse:
    """503 without the database's address or driver error (those go to the log): `Retry-After` says when."""
    return JSONResponse({"detail": "database unavailable, try again later"}, status_code=503,
                        headers={"Retry-After": str(RETRY_AFTER_S)})

router = APIRouter(tags=["system"])


@router.get("/healthz", response_model=Health, responses={503: {"model": ErrorBody,
                                                               "description": "The database is unreachable "
                                                                              "(with Retry-After)"}},
            summary="Liveness and database check")
async def healthz(state: State) -> Health | JSONResponse:
    try:
        await run_in_threadpool(state.store.last_event_id)
    except StoreError as e:
        log.warning("healthz: database unavailable: %s", e)
        return unavailable()
    return Health(status="ok", database=state.store.backend, runners=len(state.coordinator.running()))


@router.get("/metrics", response_class=Response, responses={200: {
    "description": "Prometheus text exposition", "content": {"text/plain": {"schema": {"type": "string"}}}}},
    summary="Prometheus metrics")
async def metrics(state: State) -> Response:
    data = await run_in_threadpool(state.metrics.render)
    return Response(data, media_type=CONTENT_TYPE_LATEST)

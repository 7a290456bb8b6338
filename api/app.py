"""The FastAPI app: REST API, server-sent events, metrics and the dashboard, around one coordinator.

    app = create_app(Settings(db_url="runs/evonorm.db", executor="inprocess"))

The lifespan starts the coordinator (resuming searches left running or
queued) and stops it on shutdown (handing running searches back to the
queue, so the next start resumes them).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.datastructures import Headers
from starlette.middleware.gzip import GZipMiddleware
from starlette.staticfiles import NotModifiedResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import AppState
from api.metrics import Metrics, MetricsMiddleware
from api.routes import candidates, dashboard, events, graphs, searches, system, zoo
from api.routes.graphs import GraphFieldError
from api.views import field_loc, snapshot
from db import NotFoundError, RetryableStoreError, Store, StoreError, TransitionError, open_store
from evonorm_search.coordinator import Coordinator, ExecutorFactory
from evonorm_search.live import CandidateCache, LiveFronts
from evonorm_search.settings import Settings, get_settings

log = logging.getLogger(__name__)

DESCRIPTION = """
Launch evolutionary searches for normalization-activation layers, follow their Pareto front
live, and download the winning layers as PyTorch modules.

* **Searches**: `POST /api/searches` with a search config; pause, resume, cancel.
* **Candidates**: filter, sort, page or follow (`?after=`) a search's candidates; a candidate's graph,
  formula, lineage and evaluations; its layer as `.py`, TorchScript or `torch.export`.
* **Front**: the non-dominated candidates, the zoo baselines trained with the same recipe, hypervolume history.
* **Events**: the store's event log as server-sent events.

POST routes need `Authorization: Bearer <token>` when the server is configured with a token.
"""

TAGS = [
    {"name": "searches", "description": "Launch and control searches; their candidates and front"},
    {"name": "candidates", "description": "One candidate and its layer"},
    {"name": "graphs", "description": "Validate your own graph or turn it into a module"},
    {"name": "zoo", "description": "Known layers"},
    {"name": "events", "description": "The event log, live"},
    {"name": "system", "description": "Health and metrics"},
]


def _warm(state: AppState, n: int) -> None:
    dashboard.precompress()
    if not n:
        return
    try:
        for search in state.store.list_searches(limit=n):
            snapshot(state, search)
    except Exception:  # only a head start: a read does the same work when it needs it
        log.debug("warming the fronts failed", exc_info=True)


def create_app(settings: Settings | None = None, *, store: Store | None = None,
               coordinator: Coordinator | None = None, executor_factory: ExecutorFactory | None = None,
               runner_kwargs: Mapping[str, Any] | None = None, warm_fronts: int = 8) -> FastAPI:
    """The app around one store and one coordinator (built from `settings` unless given).

    `executor_factory` / `runner_kwargs` go to the coordinator (tests inject a fast evaluation). On
    startup the fronts of the `warm_fronts` newest searches are caught up with the event log in the
    background, so the dashboard's first look at a big search does not wait for it.
    """
    settings = settings or get_settings()
    owns_store = store is None
    store = store or open_store(settings.db_url)
    coordinator = coordinator or Coordinator(
        store, executor=settings.executor, ray_address=settings.ray_address, executor_factory=executor_factory,
        runner_kwargs=runner_kwargs, max_running=settings.max_running, export_dir=settings.export_dir,
        reconnect_s=settings.reconnect_s)
    metrics = Metrics(store, lambda: coordinator)
    state = AppState(settings=settings, store=store, coordinator=coordinator, fronts=LiveFronts(store),
                     candidates=CandidateCache(store), metrics=metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        coordinator.prepare()   # ray.init on the main thread, before the first runner needs it
        resumed = await run_in_threadpool(coordinator.start)
        if resumed:
            log.info("resumed searches %s", resumed)
        # the dashboard's compressed assets and the newest fronts, ahead of the first page load
        threading.Thread(target=_warm, args=(state, warm_fronts), daemon=True, name="warm-up").start()
        try:
            yield
        finally:
            await run_in_threadpool(coordinator.stop)
            if owns_store:
                store.close()  # the engine stays usable: a later start reconnects

    # The API docs pages (/docs, /redoc) load Swagger UI and ReDoc from the installed fastapi-offline
    # package, not a CDN: a cluster's coordinator often has no internet.
    app = FastAPIOffline(title="evonorm-search", version="0.1.0", description=DESCRIPTION, openapi_tags=TAGS,
                         lifespan=lifespan)
    app.state.evonorm = state
    app.add_middleware(AllowHeaderMiddleware, openapi=lambda: app.openapi())
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(BodyLimitMiddleware)
    # Compressed responses (the dashboard's script bundles, big JSON pages); event streams are left alone.
    app.add_middleware(GZipMiddleware, minimum_size=1024)
    _security_as_configured(app, bool(settings.token))
    _exception_handlers(app)
    for module in (searches, candidates, graphs, zoo, events, system, dashboard):
        app.include_router(module.router)
    app.mount("/static", CachedStaticFiles(directory=dashboard.STATIC), name="static")
    return app


class CachedStaticFiles(StaticFiles):
    """The dashboard's script and style: revalidated on each load (a 304 via their ETag, no body), so a new
    release shows at once.

    Scripts and styles go out gzip-compressed from memory, compressed once per file version
    (`dashboard.gzipped`), not on every request by GZipMiddleware in the event loop, where a first
    page load's API calls wait behind it.
    """

    def file_response(self, full_path: Any, stat_result: Any, scope: Scope, status_code: int = 200) -> Any:
        request = Headers(scope=scope)
        response: Response = FileResponse(full_path, status_code=status_code, stat_result=stat_result)
        if (scope.get("method") == "GET" and status_code == 200 and "range" not in request
                and "gzip" in request.get("accept-encoding", "") and dashboard.compressible(str(full_path))):
            headers = {"etag": response.headers["etag"].rstrip('"') + '-gzip"',   # another representation
                       "last-modified": response.headers["last-modified"], "content-encoding": "gzip",
                       "vary": "Accept-Encoding"}
            body = dashboard.gzipped(str(full_path), stat_result.st_mtime_ns, stat_result.st_size)
            response = Response(body, media_type=response.media_type, headers=headers)
        response.headers["Cache-Control"] = "no-cache"
        if self.is_not_modified(response.headers, request):
            return NotModifiedResponse(response.headers)
        return response


class AllowHeaderMiddleware:
    """A 405 names every documented method of the path, not just those of the route that matched first.

    FastAPI makes one route per method (GET and POST /api/searches are two routes), and Starlette's
    405 lists the methods of the first one only. The OpenAPI document knows them all.
    """

    def __init__(self, app: ASGIApp, openapi: Callable[[], dict[str, Any]]) -> None:
        self.app = app
        self.openapi = openapi
        self._paths: list[tuple[re.Pattern[str], str]] | None = None

    def allowed(self, path: str) -> str | None:
        if self._paths is None:
            self._paths = [(re.compile("^" + re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template)) + "$"),
                            ", ".join(sorted(m.upper() for m in ops)))
                           for template, ops in self.openapi().get("paths", {}).items()]
        return next((methods for pattern, methods in self._paths if pattern.match(path)), None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 405:
                methods = self.allowed(scope["path"])
                if methods:
                    headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"]
                    message = {**message, "headers": [*headers, (b"allow", methods.encode())]}
            await send(message)

        await self.app(scope, receive, send_wrapper)


def _field(loc: list[Any]) -> str:
    if loc and loc[0] in ("body", "query", "path", "header"):
        loc = loc[1:]
    return ".".join(map(str, loc)) or "(body)"


def _unreadable_body(exc: RequestValidationError) -> str | None:
    """The message for a body that is not JSON (FastAPI reports it as a 422 at the error's offset)."""
    for e in exc.errors():
        if e.get("type") == "json_invalid":
            ctx = e.get("ctx") or {}
            where = e.get("loc", ())[-1] if e.get("loc") else "?"
            return f"the body is not valid JSON: {ctx.get('error', 'invalid')} at character {where}"
    return None


MAX_BODY_BYTES = 1 << 20   # a search config is a few kB; a graph less


class BodyLimitMiddleware:
    """413 for a request body over `limit` bytes, declared (Content-Length) or streamed."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._too_large(send)
            return
        seen = 0
        over = replied = False

        async def counted() -> Message:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    over = True
                    raise _TooLarge
            return message

        async def answered(message: Message) -> None:
            # The app may turn the interrupted read into its own error (FastAPI: a 400); say what it was.
            if not over:
                await send(message)
            elif message["type"] == "http.response.start" and not replied:
                await reply()

        async def reply() -> None:
            nonlocal replied
            replied = True
            await self._too_large(send)

        try:
            await self.app(scope, counted, answered)
        except _TooLarge:
            if not replied:
                await reply()

    async def _too_large(self, send: Send) -> None:
        response = JSONResponse({"detail": f"request body larger than {self.limit:,} bytes"}, status_code=413)
        await response({"type": "http"}, _no_receive, send)


class _TooLarge(Exception):
    pass


async def _no_receive() -> Message:  # pragma: no cover - a JSONResponse never reads
    return {"type": "http.disconnect"}


def _security_as_configured(app: FastAPI, token_set: bool) -> None:
    """Without a token nothing needs one: drop bearer auth from the OpenAPI document, which otherwise
    marks every POST route as requiring it."""
    if token_set:
        return
    plain = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = plain()
            for ops in schema.get("paths", {}).values():
                for op in ops.values():
                    if isinstance(op, dict):
                        op.pop("security", None)
                        op.get("responses", {}).pop("401", None)
            schema.get("components", {}).pop("securitySchemes", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _exception_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        unreadable = _unreadable_body(exc)
        if unreadable:  # the OpenAPI promises 400 for a body that is not JSON at all
            return JSONResponse({"detail": unreadable}, status_code=400)
        errors = []
        for e in exc.errors():
            loc = list(e.get("loc", ()))
            msg = str(e.get("msg", "invalid"))
            kind = str(e.get("type", "value_error"))
            errors.append({"loc": loc, "field": _field(loc), "msg": msg, "type": kind})
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(GraphFieldError)
    async def bad_graph(request: Request, exc: GraphFieldError) -> JSONResponse:
        loc: list[Any] = ["body", *exc.prefix, *field_loc(exc.field)]
        parts = [*map(str, exc.prefix), *([exc.field] if exc.field != "$" else [])]
        field = ".".join(parts)
        return JSONResponse({"detail": [{"loc": loc, "field": field or "(body)", "msg": exc.message,
                                         "type": "graph_error"}]}, status_code=422)

    @app.exception_handler(NotFoundError)
    async def not_found(request: Request, exc: NotFoundError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(TransitionError)
    async def conflict(request: Request, exc: TransitionError) -> JSONResponse:
        current, requested = str(exc.current), str(exc.requested)
        detail = f"search {exc.search_id} is {current}: it cannot move to {requested}"
        return JSONResponse({"detail": detail, "current": current, "requested": requested}, status_code=409)

    @app.exception_handler(RetryableStoreError)
    async def busy(request: Request, exc: RetryableStoreError) -> JSONResponse:
        # The driver's message names the database host, port and user: the log gets it, clients do not.
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
        return system.unavailable()

    @app.exception_handler(StoreError)
    async def store_error(request: Request, exc: StoreError) -> JSONResponse:
        log.error("store error on %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": "database error"}, status_code=500)

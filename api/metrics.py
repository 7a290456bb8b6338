"""Prometheus metrics: requests, searches by status, candidates finished, live streams.

Each app has its own registry, so several apps (tests) in one process do not
clash on metric names.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from db import SearchStatus, Store
from evonorm_search.coordinator import Coordinator

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _SearchCollector(Collector):
    """Read at scrape time: searches by status (store), finished candidates and runners (coordinator)."""

    def __init__(self, store: Store, coordinator: Callable[[], Coordinator | None]) -> None:
        self.store = store
        self.coordinator = coordinator

    def collect(self) -> Iterable[Metric]:
        searches = GaugeMetricFamily("evonorm_searches", "Searches by status", labels=["status"])
        counts = dict.fromkeys((s.value for s in SearchStatus), 0)
        try:
            for s in self.store.list_searches(limit=None):
                counts[s.status.value] += 1
        except Exception:  # a scrape must not fail because the database is down
            counts = {}
        for status, n in counts.items():
            searches.add_metric([status], n)
        yield searches
        coord = self.coordinator()
        finished = CounterMetricFamily("evonorm_candidates_finished",
                                       "Candidates finished by this process's runners", labels=["status"])
        totals = coord.finished_totals() if coord else {}
        for status in ("evaluated", "rejected"):
            finished.add_metric([status], totals.get(status, 0))
        yield finished
        runners = GaugeMetricFamily("evonorm_active_runners", "Searches with a runner in this process")
        runners.add_metric([], len(coord.running()) if coord else 0)
        yield runners


class Metrics:
    def __init__(self, store: Store, coordinator: Callable[[], Coordinator | None]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("evonorm_http_requests", "HTTP requests", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("evonorm_http_request_duration_seconds", "HTTP request latency",
                                 ["method", "route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.sse_clients = Gauge("evonorm_sse_clients", "Open /api/events streams", registry=self.registry)
        self.registry.register(_SearchCollector(store, coordinator))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Times every HTTP request; labels by route template (`/api/searches/{search_id}`), not raw path."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "(unmatched)"
            method = scope.get("method", "?")
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - start)

"""Fixtures for the deploy tests: one Ray cluster (head + one worker node) and one coordinator per module.

Starting Ray nodes and the coordinator costs tens of seconds on a small
machine, so the fault tests share them and each test adds what it kills
(its own extra worker node) or restores what it breaks (the coordinator, the
database server). Teardown kills every process tree even when a test fails.

The database is a fresh schema in a throwaway PostgreSQL cluster (the
deployed backend; `throwaway_pg`, started for the session in a temporary
directory), which the fault tests stop and restart; the shared server at
127.0.0.1:5432 is never touched. Without PostgreSQL binaries it is a SQLite
file, and the PostgreSQL-only tests skip with the reason.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from deploy_cluster import CoordinatorProcess, RayCluster
from pg_throwaway import ThrowawayPostgres, fresh_schema, unavailable

from db import SearchStatus, Store


@dataclass(frozen=True)
class DeployDatabase:
    backend: str
    url: str
    skip_reason: str | None = None   # why PostgreSQL is not used
    server: ThrowawayPostgres | None = None   # the private cluster the tests may restart


@pytest.fixture(scope="module")
def deploy_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[DeployDatabase]:
    reason = unavailable()
    if reason:
        yield DeployDatabase("sqlite", str(tmp_path_factory.mktemp("deploy-db") / "store.db"), reason)
        return
    server: ThrowawayPostgres = request.getfixturevalue("throwaway_pg")
    if not server.is_running():
        server.start()
    with fresh_schema(server.url) as url:
        yield DeployDatabase("postgresql", url, server=server)


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RayCluster]:
    # A short path: Ray's unix sockets live under the temp dir and have a ~100-byte limit.
    temp = Path(tempfile.mkdtemp(prefix="evray-", dir="/tmp"))
    cluster = RayCluster(temp)
    try:
        head = cluster.start_head()
        cluster.wait_started(head)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def coordinator(ray_cluster: RayCluster, deploy_db: DeployDatabase,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[CoordinatorProcess]:
    """The coordinator on the cluster (head + worker-1, 2 CPUs), started while the worker node joins."""
    logs = tmp_path_factory.mktemp("deploy-logs")
    coord = CoordinatorProcess(deploy_db.url, ray_cluster, logs / "coordinator.log")
    try:
        worker = ray_cluster.add_worker("worker-1")
        coord.start()
        ray_cluster.wait_started(worker)
        coord.wait_healthy()
        yield coord
    finally:
        coord.stop()


@pytest.fixture(scope="module")
def store(deploy_db: DeployDatabase, coordinator: CoordinatorProcess) -> Iterator[Store]:
    """The coordinator's database, read directly (after the coordinator has migrated it)."""
    s = Store(deploy_db.url, migrate=False)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def client(coordinator: CoordinatorProcess) -> Iterator[httpx.Client]:
    """REST client of the shared coordinator; cancels what a test leaves active, so slots stay free."""
    with httpx.Client(base_url=coordinator.url, timeout=30) as c:
        yield c
        if coordinator.proc is None:
            return
        try:
            for s in c.get("/api/searches", params={"limit": 500}).json()["items"]:
                if s["status"] in (SearchStatus.RUNNING, SearchStatus.QUEUED, SearchStatus.PAUSED):
                    c.post(f"/api/searches/{s['id']}/cancel")
        except httpx.HTTPError:
            pass

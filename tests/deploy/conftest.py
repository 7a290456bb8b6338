"""Fixtures for the deploy tests: one Ray cluster (head + one worker node) and one coordinator per module.

Starting Ray nodes and the coordinator costs tens of seconds on a small
machine, so the fault tests share them and each test adds what it kills
(its own extra worker node) or restores what it breaks (the coordinator, the
database server). Teardown kills every process tree even when a test fails.

The database is a fresh schema in the PostgreSQL test server (the deployed
backend) when it is reachable, else a SQLite file; the PostgreSQL-only test
skips with the reason.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import psycopg
import pytest
from deploy_cluster import CoordinatorProcess, RayCluster

from db import SearchStatus, Store

PG_URL = os.environ.get("EVONORM_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@dataclass(frozen=True)
class DeployDatabase:
    backend: str
    url: str
    skip_reason: str | None = None   # why PostgreSQL is not used


def _libpq(url: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme.split('+', 1)[0]}://{rest}"


def _admin(sql: str) -> None:
    with psycopg.connect(_libpq(PG_URL), autocommit=True, connect_timeout=3) as conn:
        conn.execute(sql)


@pytest.fixture(scope="module")
def deploy_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeployDatabase]:
    schema = f"evonorm_deploy_{uuid.uuid4().hex[:12]}"
    try:
        _admin(f'CREATE SCHEMA "{schema}"')
    except Exception as e:
        reason = f"PostgreSQL at {PG_URL} is not usable ({type(e).__name__}: {e}); set EVONORM_TEST_PG_URL"
        yield DeployDatabase("sqlite", str(tmp_path_factory.mktemp("deploy-db") / "store.db"), reason)
        return
    url = urlsplit(PG_URL)
    query = [(k, v) for k, v in parse_qsl(url.query) if k != "options"]
    query.append(("options", f"-csearch_path={schema}"))
    try:
        yield DeployDatabase("postgresql", urlunsplit(url._replace(query=urlencode(query))))
    finally:
        # Best effort: a server being restarted by someone else keeps the (empty-named) schema.
        with contextlib.suppress(Exception):
            _admin(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


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

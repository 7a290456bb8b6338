"""Fixtures for the API tests: the app over a real store (SQLite and PostgreSQL), fake training.

The runners are real (`SearchRunner` in the coordinator's threads, the
in-process executor, real screening); only the proxy training is replaced
by `api_fakes.fake_evaluate`, so a whole search takes about a second.

Module names start with `test_api_` (tests/ has no `__init__.py`; basenames
must be unique across the suite).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import api_fakes
import pytest
from fastapi import FastAPI

from api.app import create_app
from evonorm_search.settings import Settings

with warnings.catch_warnings():
    # starlette's TestClient warns that its httpx support is deprecated; it works, and it is what we have.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient



def make_app(url: str, *, runner: dict[str, Any] | None = None, **settings: Any) -> FastAPI:
    return create_app(Settings(db_url=url, executor="inprocess", **settings),
                      runner_kwargs=runner or api_fakes.FAST_RUNNER)


@pytest.fixture
def app_factory(database: Any) -> Callable[..., FastAPI]:
    """`app_factory(runner=..., token=..., max_running=...)`: an app over this test's fresh database."""
    def factory(**kwargs: Any) -> FastAPI:
        return make_app(database.url, **kwargs)

    return factory


@pytest.fixture
def client(app_factory: Callable[..., FastAPI]) -> Iterator[TestClient]:
    with TestClient(app_factory()) as c:
        yield c


@pytest.fixture(scope="module")
def finished(module_database: Any) -> Iterator[tuple[TestClient, int]]:
    """A client and a search that ran to the end (30 candidates), shared by a module's read-only tests."""
    with TestClient(make_app(module_database.url)) as c:
        sid = c.post("/api/searches", json=api_fakes.TINY_SEARCH).json()["id"]
        # finished, and its runner gone: the runner records "finished" before its thread has ended
        api_fakes.wait_for(lambda: (lambda s: s["status"] == "finished" and not s["active"])(
            c.get(f"/api/searches/{sid}").json()), 120, what="the search to finish")
        yield c, sid


@pytest.fixture
def live_server(app_factory: Callable[..., FastAPI]) -> Callable[..., api_fakes.LiveServer]:
    """`with live_server(**app_kwargs) as server:` the app on a real socket (server.url)."""
    def start(**kwargs: Any) -> api_fakes.LiveServer:
        return api_fakes.LiveServer(app_factory(**kwargs))

    return start

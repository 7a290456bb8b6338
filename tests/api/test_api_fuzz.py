"""Schema-driven fuzzing of the OpenAPI document (schemathesis): no request makes the server fail.

Every operation gets generated valid and invalid requests; the responses
must be no 5xx, documented status codes and content types, and bodies that
match their schemas. The app runs over SQLite with one finished search
(so generated ids sometimes exist), a token (so schemathesis also checks
that POST routes refuse requests without it) and `max_running=0`, so
launched searches queue instead of burning the CPU.

The app is built at import (schemathesis needs its OpenAPI document to
generate one test per operation; its lazy fixture loader does not work with
this pytest); the data is seeded by a fixture before the first test.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import api_fakes
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from api.app import create_app
from db import Store
from evonorm_search.config import load_config
from evonorm_search.runner import SearchRunner
from evonorm_search.settings import Settings
from workers.executors import InProcessExecutor

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

_DIR = Path(tempfile.mkdtemp(prefix="evonorm-fuzz-"))
STORE = Store(str(_DIR / "fuzz.db"))
TOKEN = "fuzz-token"
APP = create_app(Settings(db_url=str(_DIR / "fuzz.db"), executor="inprocess", max_running=0, token=TOKEN),
                 store=STORE)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module", autouse=True)
def seeded() -> Iterator[None]:
    cfg = load_config(None, {**api_fakes.TINY_SEARCH, "budget": 12})
    sid = STORE.create_search(cfg.name, cfg.model_dump(mode="json"), seed=0).id
    SearchRunner(STORE, sid, InProcessExecutor(), rung_fn=api_fakes.rung_fn(api_fakes.fake_evaluate)).run()
    yield
    STORE.close()
    shutil.rmtree(_DIR, ignore_errors=True)


SEMANTIC = {"/api/searches", "/api/graphs/validate", "/api/graphs/module"}


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_server_errors(case: Any) -> None:
    if case.path == "/api/events":
        # an SSE stream that follows the log never ends: bound it
        case.query = {**(case.query or {}), "timeout_s": 0.2}
    excluded = []
    if case.operation.method.upper() == "POST" and case.path in SEMANTIC:
        # A schema-valid body may still be refused (422): the schema cannot say that a node reads only
        # earlier nodes, or that a backbone fits its data set. Everything else is checked.
        excluded.append(schemathesis.checks.positive_data_acceptance)
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, excluded_checks=excluded)

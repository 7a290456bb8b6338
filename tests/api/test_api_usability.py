"""What users of the REST API hit (issue 15): presets with overrides, backbone_kwargs checked at launch,
a body limit, 400 for a body that is not JSON, blank tokens refused, auth documented only when a token
is set, 404 for the events of a search that does not exist, quiet SSE disconnects."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError

from evonorm_search.config import PRESETS
from evonorm_search.settings import Settings


def test_a_preset_name_with_overrides_launches(client: TestClient) -> None:
    r = client.post("/api/searches", json={"preset": "quick", "budget": 24, "name": "mine"})
    assert r.status_code == 201, r.text
    config = client.get(f"/api/searches/{r.json()['id']}").json()["config"]
    assert config["budget"] == 24 and config["name"] == "mine"
    quick = PRESETS["quick"]
    assert config["seed_with_zoo"] == quick["seed_with_zoo"] and config["in_flight"] == quick["in_flight"]
    assert [t["backbone"] for t in config["tasks"]] == [t["backbone"] for t in quick["tasks"]]
    client.post(f"/api/searches/{r.json()['id']}/cancel")


def test_an_unknown_preset_names_the_field(client: TestClient) -> None:
    r = client.post("/api/searches", json={"preset": "huge"})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "preset"


@pytest.mark.parametrize(("kwargs", "named"), [
    ({"widht_mult": 2.0}, "backbone_kwargs.widht_mult: unknown key"),
    ({"widths": [8, 1_000_000], "blocks": [1, 1]}, "backbone_kwargs.widths.1"),
    ({"blocks": [1000]}, "backbone_kwargs.blocks.0"),
    ({"widths": [8, 16], "blocks": [1]}, "must have the same length"),
])
def test_backbone_kwargs_are_checked_at_launch(client: TestClient, kwargs: dict[str, Any], named: str) -> None:
    body = {"budget": 4, "tasks": [{"backbone": "resnet", "task": "digits", "backbone_kwargs": kwargs}]}
    r = client.post("/api/searches", json=body)
    assert r.status_code == 422, r.text
    error = r.json()["detail"][0]
    assert error["field"] == "tasks.0" and named in error["msg"], error
    assert client.get("/api/searches").json()["items"] == [], "nothing was launched"


def test_transformer_kwargs_are_checked_too(client: TestClient) -> None:
    body = {"tasks": [{"backbone": "transformer", "task": "pydoc_chars",
                       "backbone_kwargs": {"n_embd": 30, "n_head": 4}}]}
    r = client.post("/api/searches", json=body)
    assert r.status_code == 422 and "divisible" in r.json()["detail"][0]["msg"]


def test_a_large_body_is_refused(client: TestClient) -> None:
    big = b'{"name": "' + b"x" * (5 << 20) + b'"}'
    r = client.post("/api/searches", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text[:200]

    def chunks() -> Any:  # no Content-Length: counted as it streams
        for _ in range(40):
            yield b" " * (64 << 10)
    r = client.post("/api/graphs/validate", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_a_body_that_is_not_json_is_a_400(client: TestClient) -> None:
    r = client.post("/api/searches", content=b'{"budget": 4,,}', headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert "not valid JSON" in r.json()["detail"]


@pytest.mark.parametrize("token", ["", "   ", " padded "])
def test_a_blank_token_is_refused(token: str) -> None:
    with pytest.raises(ValidationError, match="token"):
        Settings(token=token)


def test_openapi_marks_auth_only_when_a_token_is_set(app_factory: Callable[..., FastAPI]) -> None:
    with TestClient(app_factory()) as open_client:
        doc = open_client.get("/openapi.json").json()
    launch = doc["paths"]["/api/searches"]["post"]
    assert "security" not in launch and "401" not in launch["responses"]
    with TestClient(app_factory(token="s3cret")) as guarded:
        doc = guarded.get("/openapi.json").json()
    for path, ops in doc["paths"].items():
        if "post" in ops:
            assert ops["post"]["security"] and "401" in ops["post"]["responses"], path
    assert "HTTPBearer" in doc["components"]["securitySchemes"]


def test_events_of_a_search_that_does_not_exist_are_a_404(client: TestClient) -> None:
    r = client.get("/api/events", params={"search_id": 999, "follow": "false"})
    assert r.status_code == 404


def test_a_client_leaving_an_event_stream_logs_no_traceback(
        live_server: Callable[..., Any], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING), live_server() as server:
        server_url = server.url
        for _ in range(3):
            with httpx.stream("GET", f"{server_url}/api/events", timeout=10) as r:
                assert r.status_code == 200
                next(r.iter_raw())   # the stream is open; leave it
        time.sleep(1.5)              # the server notices at its next poll
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [r.getMessage() for r in bad]

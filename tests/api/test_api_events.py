"""Server-sent events: the backlog, Last-Event-ID, a live stream on a real socket, and its end."""

from __future__ import annotations

import json
import time
from typing import Any

import api_fakes
import httpx
from fastapi.testclient import TestClient


def parse(text: str) -> list[dict[str, Any]]:
    """SSE wire text -> events with id, event and data (comments dropped)."""
    events = []
    for block in text.split("\n\n"):
        fields: dict[str, Any] = {}
        for line in block.splitlines():
            if line.startswith(":") or ":" not in line:
                continue
            key, _, value = line.partition(":")
            fields[key] = value[1:] if value.startswith(" ") else value
        if "data" in fields:
            fields["data"] = json.loads(fields["data"])
            events.append(fields)
    return events


def test_backlog_filter_and_last_event_id(finished: tuple[TestClient, int]) -> None:
    client, sid = finished
    r = client.get("/api/events", params={"follow": "false", "search_id": sid})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = parse(r.text)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "search_created" and "candidate_finished" in kinds
    assert sum(k == "candidate_finished" for k in kinds) == api_fakes.TINY_SEARCH["budget"]
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(ids) and all(e["data"]["search_id"] == sid for e in events)
    assert [e["data"]["id"] for e in events] == ids
    middle = ids[len(ids) // 2]
    after = parse(client.get("/api/events", params={"follow": "false", "search_id": sid, "after": middle}).text)
    assert [int(e["id"]) for e in after] == [i for i in ids if i > middle]
    resumed = parse(client.get("/api/events", params={"follow": "false", "search_id": sid},
                               headers={"Last-Event-ID": str(middle)}).text)
    assert [int(e["id"]) for e in resumed] == [i for i in ids if i > middle]


def test_stream_bounded_by_timeout(finished: tuple[TestClient, int]) -> None:
    client, sid = finished
    start = time.monotonic()
    r = client.get("/api/events", params={"search_id": sid, "after": 10**9, "timeout_s": 0.3})
    assert r.status_code == 200 and parse(r.text) == []
    assert time.monotonic() - start < 5


def gauge(base: str, name: str) -> float:
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_live_stream_delivers_new_events_and_ends_on_disconnect(live_server: Any) -> None:
    with live_server() as server, httpx.Client(base_url=server.url, timeout=30) as http:
        start_id = http.get("/api/searches").json()["last_event_id"]
        seen: list[dict[str, Any]] = []
        with http.stream("GET", "/api/events", params={"after": start_id}) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            api_fakes.wait_for(lambda: gauge(server.url, "evonorm_sse_clients") == 1, 10, what="stream open")
            sid = http.post("/api/searches", json=api_fakes.TINY_SEARCH).json()["id"]
            buffer = ""
            for chunk in stream.iter_text():
                buffer += chunk
                seen = parse(buffer)
                if any(e["event"] == "search_status" and e["data"]["payload"]["to"] == "finished"
                       for e in seen):
                    break
        assert seen[0]["event"] == "search_created" and seen[0]["data"]["search_id"] == sid
        assert sum(e["event"] == "candidate_finished" for e in seen) == api_fakes.TINY_SEARCH["budget"]
        # the client hung up: the server's generator ends and the gauge drops back
        api_fakes.wait_for(lambda: gauge(server.url, "evonorm_sse_clients") == 0, 10, what="stream closed")

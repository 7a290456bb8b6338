"""Server-sent events: the backlog, Last-Event-ID, a live stream on a real socket, and its end."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import api_fakes
import httpx
from fastapi.testclient import TestClient

from db import CandidateOutcome, CandidateStatus, NewCandidate, SearchStatus, Store


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


def test_client_disconnects_leave_no_traceback_in_the_server_log(tmp_path: Path) -> None:
    """Clients that hang up while a backlog is streaming: the server (a real uvicorn process) logs nothing.

    With FastAPI's generator-endpoint SSE each such disconnect logged a `BrokenResourceError` traceback
    (its forwarding task wrote into the closed response stream)."""
    db = str(tmp_path / "sse.db")
    store = Store(db)
    sid = store.create_search("backlog", {}).id
    for start in range(0, 3000, 1000):   # a backlog of 3,000 events, ~0.6 MB on the wire
        news = [NewCandidate(f'{{"n": {k}}}', f"h{k}") for k in range(start, start + 1000)]
        added = store.add_candidates(sid, news)
        store.finish_candidates([CandidateOutcome(c.id, CandidateStatus.REJECTED, rejection_stage="quality",
                                                  rejection_reason="backlog") for c in added])
    store.set_search_status(sid, SearchStatus.CANCELLED)   # nothing for the coordinator to start
    store.close()
    port = api_fakes.free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"

    def up() -> bool:
        try:
            return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, str(Path(api_fakes.__file__)), db, str(port)], stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        api_fakes.wait_for(up, 60, 0.2, what="the server")
        for i in range(8):
            # a raw socket with a small window (the server stays ahead), half of them reset on close
            s = socket.create_connection(("127.0.0.1", port))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(f"GET /api/events?search_id={sid} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert s.recv(1000).startswith(b"HTTP/1.1 200")
            time.sleep(0.05 * (i % 4))
            if i % 2:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        with httpx.Client(base_url=base, timeout=30) as http:
            for _ in range(4):   # a well-behaved client that leaves after the first chunk
                with http.stream("GET", "/api/events") as stream:
                    next(stream.iter_bytes())
            # every stream has ended on the server
            api_fakes.wait_for(lambda: gauge(base, "evonorm_sse_clients") == 0, 20, what="the streams to end")
            # and the server still serves a whole backlog
            r = http.get("/api/events", params={"search_id": sid, "follow": "false"})
            assert sum(e["event"] == "candidate_finished" for e in parse(r.text)) == 3000
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    text = log.read_text()
    assert "Traceback" not in text and "BrokenResourceError" not in text, text[-3000:]
    assert "socket.send() raised exception" not in text, "wrote on after the client had gone"

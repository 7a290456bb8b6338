"""Searches over REST on a real store (SQLite and PostgreSQL): launch, read, control, page, front."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import api_fakes
import pytest
from fastapi.testclient import TestClient

from db import Store
from evonorm_search.pareto import nondominated
from evonorm_search.summary import evaluated, pareto_front

TINY = api_fakes.TINY_SEARCH


def wait_status(client: TestClient, sid: int, *statuses: str, timeout: float = 60) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        body: dict[str, Any] = client.get(f"/api/searches/{sid}").json()
        return body if body["status"] in statuses else None

    result: dict[str, Any] = api_fakes.wait_for(check, timeout, what=f"search {sid} to reach {statuses}")
    return result


# -- a finished search, read many ways -----------------------------------------------------------------


def test_finished_search_detail_and_counts(finished: tuple[TestClient, int]) -> None:
    client, sid = finished
    s = client.get(f"/api/searches/{sid}").json()
    assert s["status"] == "finished" and s["num_candidates"] == TINY["budget"]
    assert s["objectives"] == ["resnet:shapes32", "transformer:pydoc_chars"]
    assert s["counts"]["evaluated"] + s["counts"]["rejected"] == TINY["budget"]
    assert s["counts"]["pending"] == s["counts"]["evaluating"] == 0
    assert sum(s["rejected_by_stage"].values()) == s["counts"]["rejected"]
    assert s["config"]["population_size"] == TINY["population_size"] and s["active"] is False
    listed = client.get("/api/searches").json()
    assert sid in [x["id"] for x in listed["items"]] and listed["last_event_id"] > 0


def test_front_is_the_non_dominated_set_with_baselines(finished: tuple[TestClient, int]) -> None:
    client, sid = finished
    front = client.get(f"/api/searches/{sid}/front").json()
    assert front["objectives"] == ["resnet:shapes32", "transformer:pydoc_chars"]
    assert front["members"], "a finished search has a front"
    # the incremental front equals the one recomputed from every evaluated row
    store: Store = client.app.state.evonorm.store  # type: ignore[attr-defined]
    full = pareto_front(evaluated(store, sid), [True, True])
    assert sorted(m["id"] for m in front["members"]) == sorted(m.candidate_id for m in full)
    points = [m["objectives"] for m in front["members"]]
    assert sorted(nondominated(points, [True, True])) == list(range(len(points)))
    assert {b["name"] for b in front["baselines"]} == {"bn_relu", "evonorm_s0"}
    history = front["hypervolume_history"]
    assert history and history[-1]["hypervolume"] == pytest.approx(front["hypervolume"])
    # Not monotone: a climb replaces a member's estimates with more seeds' mean, which may be lower.
    assert all(h["hypervolume"] >= 0 for h in history)
    assert front["finished"] == TINY["budget"]


def test_candidates_paging_filters_sort_and_cursor(finished: tuple[TestClient, int]) -> None:
    client, sid = finished
    url = f"/api/searches/{sid}/candidates"
    page1 = client.get(url, params={"limit": 10}).json()
    page2 = client.get(url, params={"limit": 10, "offset": 10}).json()
    assert page1["total"] == TINY["budget"] and len(page1["items"]) == 10
    ids = [c["id"] for c in page1["items"] + page2["items"]]
    assert ids == sorted(ids) and len(set(ids)) == 20
    assert page1["items"][0]["formula"] and page1["items"][0]["mutation"] == "seed:bn_relu"
    # cursor: only newer rows
    after = client.get(url, params={"after": page1["next_after"], "limit": 500}).json()
    assert [c["id"] for c in after["items"]][:10] == [c["id"] for c in page2["items"]]
    assert after["total"] is None and after["next_after"] == max(c["id"] for c in after["items"])
    empty = client.get(url, params={"after": after["next_after"]}).json()
    assert empty["items"] == [] and empty["next_after"] == after["next_after"]
    # Followed in pages, in any requested order, the cursor sees every row once (it pages by id).
    for params in ({"order": "desc"}, {"sort": "generation"}, {"sort": "updated_at", "order": "desc"}):
        seen: list[int] = []
        cursor = 0
        while True:
            page = client.get(url, params={"after": cursor, "limit": 7, **params}).json()
            if not page["items"]:
                break
            seen += [c["id"] for c in page["items"]]
            cursor = page["next_after"]
        assert seen == sorted(seen) and len(seen) == TINY["budget"], params
    # filters
    rejected = client.get(url, params={"status": "rejected", "limit": 500}).json()
    assert rejected["items"] and all(c["status"] == "rejected" for c in rejected["items"])
    assert rejected["total"] == len(rejected["items"])
    both = client.get(url, params=[("status", "rejected"), ("status", "evaluated")]).json()
    assert both["total"] == TINY["budget"]
    stage = rejected["items"][0]["rejection_stage"]
    by_stage = client.get(url, params={"rejection_stage": stage, "limit": 500}).json()
    assert by_stage["items"] and all(c["rejection_stage"] == stage for c in by_stage["items"])
    assert by_stage["total"] == len(by_stage["items"])
    # sort
    desc = client.get(url, params={"sort": "generation", "order": "desc", "limit": 500}).json()["items"]
    keys = [(c["generation"], c["id"]) for c in desc]
    assert keys == sorted(keys, reverse=True)
    # every page equals the slice of the whole list (pages past the middle are read from the other end)
    for params in ({}, {"order": "desc"}, {"sort": "generation"}, {"status": "evaluated"}):
        whole = [c["id"] for c in client.get(url, params={**params, "limit": 500}).json()["items"]]
        for offset in (0, 7, 12, 20, 25, len(whole) - 1, len(whole), len(whole) + 5):
            page = client.get(url, params={**params, "limit": 10, "offset": offset}).json()
            assert [c["id"] for c in page["items"]] == whole[offset:offset + 10], (params, offset)


def test_presets_and_zoo(finished: tuple[TestClient, int]) -> None:
    client, _ = finished
    presets = client.get("/api/presets").json()
    assert {"quick", "cluster"} <= set(presets["presets"]) and "evonorm_s0" in presets["zoo_seeds"]
    assert presets["backbones"]["transformer"] == "tokens" and presets["tasks"]["shapes32"] == "image"
    zoo = {z["name"]: z for z in client.get("/api/zoo").json()}
    assert zoo["evonorm_s0"]["formula"] == "x * sigmoid(v1 * x) / std_group(x)"
    assert zoo["selu"]["graph"] is None and not zoo["selu"]["in_search_space"]


# -- errors ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/searches/999999", "/api/searches/999999/candidates",
                                  "/api/searches/999999/front"])
def test_unknown_search_is_404(finished: tuple[TestClient, int], path: str) -> None:
    client, _ = finished
    r = client.get(path)
    assert r.status_code == 404 and "999999" in r.json()["detail"]


@pytest.mark.parametrize("action", ["pause", "resume", "cancel"])
def test_control_of_unknown_search_is_404_and_ended_search_409(finished: tuple[TestClient, int],
                                                               action: str) -> None:
    client, sid = finished
    assert client.post(f"/api/searches/999999/{action}").status_code == 404
    r = client.post(f"/api/searches/{sid}/{action}")
    assert r.status_code == 409
    assert r.json()["current"] == "finished" and "finished" in r.json()["detail"]


def fields(response: Any) -> set[str]:
    assert response.status_code == 422, response.text
    return {e["field"] for e in response.json()["detail"]}


def test_launch_422_names_each_bad_field(finished: tuple[TestClient, int]) -> None:
    client, _ = finished
    r = client.post("/api/searches", json={"budget": 0, "population_size": -3, "strategy": "genetic",
                                           "tasks": [{"backbone": "resnet", "task": "imagenet"}], "bogus": 1})
    assert fields(r) == {"budget", "population_size", "strategy", "tasks.0.task", "bogus"}
    assert fields(client.post("/api/searches", json={"tasks": []})) == {"tasks"}
    assert fields(client.post("/api/searches", json={"seed_with_zoo": ["selu"]})) == {"seed_with_zoo"}
    assert fields(client.post("/api/searches", json={"name": "a\x00b"})) == {"name"}
    assert fields(client.post("/api/searches", content=b'{"budget": 5, "timeout_s": Infinity}',
                              headers={"content-type": "application/json"})) == {"timeout_s"}
    r = client.post("/api/searches", json={"population_size": 4, "tournament_size": 8})
    assert r.status_code == 422 and "tournament_size" in r.json()["detail"][0]["msg"]
    assert client.post("/api/searches", content=b"{not json", headers={"content-type": "application/json"}
                       ).status_code == 400   # as the OpenAPI says: not JSON at all


def test_micro_batch_launches_as_its_own_objective_and_a_bad_one_is_422(client: TestClient) -> None:
    """A task at micro-batches of 4 beside the same task at the full batch: two objectives, each run
    recorded under its own task; a micro-batch that does not divide the batch is a 422 on its field."""
    full = {"backbone": "resnet", "task": "shapes32"}
    bad = [({**full, "micro_batch": 3}, "must divide the shapes32 recipe's batch size for resnet (64)"),
           ({**full, "micro_batch": 0}, "greater than or equal to 1"),
           ({**full, "batch_size": 10, "micro_batch": 4}, "must divide batch_size (10)"),
           ({**full, "micro_batch": "4"}, "valid integer")]
    for task, msg in bad:
        r = client.post("/api/searches", json={**TINY, "tasks": [full, task]})
        assert fields(r) == {"tasks.1.micro_batch"}, task
        assert msg in r.json()["detail"][0]["msg"]
    r = client.post("/api/searches", json={**TINY, "budget": 12, "tasks": [full, {**full, "micro_batch": 4}]})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    s = wait_status(client, sid, "finished")
    assert s["objectives"] == ["resnet:shapes32", "resnet:shapes32@mb4"]
    assert s["config"]["tasks"][1]["micro_batch"] == 4 and "micro_batch" not in s["config"]["tasks"][0]
    best = client.get(f"/api/searches/{sid}/candidates", params={"status": "evaluated"}).json()["items"][0]
    evaluations = client.get(f"/api/candidates/{best['id']}").json()["evaluations"]
    seen = {(e["task"], e["objective"]) for e in evaluations}
    assert {("shapes32", "resnet:shapes32"), ("shapes32@mb4", "resnet:shapes32@mb4")} <= seen
    schema = client.get("/openapi.json").json()["components"]["schemas"]["TaskConfig"]["properties"]
    assert "micro_batch" in schema and "@mb" in schema["micro_batch"]["description"]


def test_the_small_batch_preset_launches(client: TestClient) -> None:
    presets = client.get("/api/presets").json()["presets"]
    assert any(t.get("micro_batch") for t in presets["cluster"]["tasks"])
    tasks = presets["small_batch"]["tasks"]
    assert any(t.get("micro_batch") for t in tasks) and any("micro_batch" not in t for t in tasks)
    r = client.post("/api/searches", json={"preset": "small_batch", "budget": 3})
    assert r.status_code == 201, r.text
    assert any("@mb" in o for o in client.get(f"/api/searches/{r.json()['id']}").json()["objectives"])
    assert fields(client.post("/api/searches", json={"preset": "tiny"})) == {"preset"}


@pytest.mark.parametrize("params, field", [
    ({"limit": 0}, "limit"), ({"limit": 10_000}, "limit"), ({"offset": -1}, "offset"),
    ({"sort": "formula"}, "sort"), ({"status": "done"}, "status.0"), ({"after": -5}, "after"),
    ({"rejection_stage": "DROP TABLE"}, "rejection_stage"),
])
def test_candidates_422(finished: tuple[TestClient, int], params: dict[str, Any], field: str) -> None:
    client, sid = finished
    assert fields(client.get(f"/api/searches/{sid}/candidates", params=params)) == {field}


def test_ids_out_of_range_are_422(finished: tuple[TestClient, int]) -> None:
    client, _ = finished
    assert fields(client.get(f"/api/searches/{2**63}")) == {"search_id"}
    assert fields(client.get("/api/searches/0/front")) == {"search_id"}


# -- control: launch, pause, resume, cancel on a live search --------------------------------------------------


def test_pause_resume_cancel(app_factory: Any) -> None:
    with TestClient(app_factory(runner=api_fakes.SLOW_RUNNER)) as client:
        r = client.post("/api/searches", json={**TINY, "budget": 400, "in_flight": 2})
        assert r.status_code == 201 and r.json()["status"] in ("queued", "running")
        sid = r.json()["id"]
        api_fakes.wait_for(lambda: client.get(f"/api/searches/{sid}").json()["num_evaluated"] >= 2,
                           what="evaluations")
        running = client.get(f"/api/searches/{sid}").json()
        assert running["runner"] and running["runner_heartbeat"]   # the coordinator's runner holds it
        paused = client.post(f"/api/searches/{sid}/pause")
        assert paused.status_code == 200 and paused.json()["status"] == "paused"
        assert client.post(f"/api/searches/{sid}/pause").status_code == 409   # already paused
        # the runner drains and returns; nothing new happens while paused
        api_fakes.wait_for(lambda: not client.get(f"/api/searches/{sid}").json()["active"], what="runner exit")
        before = client.get(f"/api/searches/{sid}").json()
        assert before["counts"]["evaluating"] == 0 and before["runner"] is None   # released its hold
        resumed = client.post(f"/api/searches/{sid}/resume")
        assert resumed.status_code == 200 and resumed.json()["status"] in ("queued", "running")
        assert client.post(f"/api/searches/{sid}/resume").status_code == 409   # not paused any more
        api_fakes.wait_for(lambda: client.get(f"/api/searches/{sid}").json()["num_candidates"]
                           > before["num_candidates"] + 2, what="progress after resume")
        cancelled = client.post(f"/api/searches/{sid}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        final = wait_status(client, sid, "cancelled")
        api_fakes.wait_for(lambda: not client.get(f"/api/searches/{sid}").json()["active"], what="runner exit")
        final = client.get(f"/api/searches/{sid}").json()
        assert final["counts"]["pending"] == final["counts"]["evaluating"] == 0
        assert final["num_candidates"] < 400
        for action in ("pause", "resume", "cancel"):
            assert client.post(f"/api/searches/{sid}/{action}").status_code == 409


def test_queue_runs_at_most_max_running(app_factory: Any) -> None:
    with TestClient(app_factory(max_running=1, runner=api_fakes.SLOW_RUNNER)) as client:
        coordinator = client.app.state.evonorm.coordinator  # type: ignore[attr-defined]
        a = client.post("/api/searches", json=TINY).json()["id"]
        b = client.post("/api/searches", json={**TINY, "name": "second"}).json()["id"]
        wait_status(client, a, "running")
        # While the first runs, the second waits in the queue.
        for _ in range(10):
            assert client.get(f"/api/searches/{b}").json()["status"] == "queued"
            assert coordinator.running() in ([a], [])
            time.sleep(0.05)
        wait_status(client, a, "finished", timeout=120)
        wait_status(client, b, "finished", timeout=120)
        runs = {sid: client.get(f"/api/searches/{sid}").json() for sid in (a, b)}
        # One at a time: the second started only after the first finished.
        started, finished = (datetime.fromisoformat(runs[sid][k].replace("Z", "+00:00"))
                             for sid, k in ((b, "started_at"), (a, "finished_at")))
        assert started >= finished, runs


def test_nothing_runs_with_max_running_zero(app_factory: Any) -> None:
    with TestClient(app_factory(max_running=0)) as client:
        sid = client.post("/api/searches", json=TINY).json()["id"]
        assert client.get(f"/api/searches/{sid}").json()["status"] == "queued"
        assert client.post(f"/api/searches/{sid}/pause").json()["status"] == "paused"
        assert client.post(f"/api/searches/{sid}/resume").json()["status"] == "queued"
        assert client.post(f"/api/searches/{sid}/cancel").json()["status"] == "cancelled"


# -- auth ---------------------------------------------------------------------------------------------------


def test_token_guards_post_routes_only(app_factory: Any) -> None:
    with TestClient(app_factory(token="s3cret", max_running=0)) as client:
        assert client.post("/api/searches", json=TINY).status_code == 401
        r = client.post("/api/searches", json=TINY, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        basic = client.post("/api/searches", json=TINY, headers={"Authorization": "Basic s3cret"})
        assert basic.status_code == 401
        ok = client.post("/api/searches", json=TINY, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 201
        sid = ok.json()["id"]
        for action in ("pause", "resume", "cancel"):
            assert client.post(f"/api/searches/{sid}/{action}").status_code == 401
        graph = {"nodes": [{"op": "sigmoid", "inputs": ["x"]}]}
        assert client.post("/api/graphs/validate", json=graph).status_code == 401
        assert client.post("/api/graphs/module", json={"graph": graph}).status_code == 401
        # reads stay open
        assert client.get(f"/api/searches/{sid}").status_code == 200
        assert client.get("/api/zoo").status_code == 200
        spec = client.get("/openapi.json").json()
        assert spec["paths"]["/api/searches"]["post"]["security"] == [{"HTTPBearer": []}]


def test_a_verified_baseline_shows_its_held_out_scores_in_the_front(client: TestClient) -> None:
    """With a held-out task, BN-ReLU (verified: it climbs every rung) carries its held-out estimate in
    the front's baselines, as the verified members do."""
    held_out = {"backbone": "resnet", "task": "digits"}
    sid = client.post("/api/searches", json={**TINY, "budget": 12, "heldout_tasks": [held_out]}).json()["id"]
    wait_status(client, sid, "finished", timeout=120)
    front = client.get(f"/api/searches/{sid}/front").json()
    bn = next(b for b in front["baselines"] if b["name"] == "bn_relu")
    assert bn["verified"]
    assert [(h["objective"], h["n"]) for h in bn["heldout"]] == [("resnet:digits", 3)]
    assert all(bool(m["heldout"]) == m["verified"] for m in front["verified_members"] + front["members"])


def test_front_members_are_estimates_with_rung_verified_and_paired_comparisons(
        finished: tuple[TestClient, int]) -> None:
    client, sid = finished
    front = client.get(f"/api/searches/{sid}/front").json()
    names = front["objectives"]
    for m in front["members"] + front["verified_members"]:
        assert [e["objective"] for e in m["estimates"]] == names
        assert [e["mean"] for e in m["estimates"]] == pytest.approx(m["objectives"])
        assert m["rung"] is not None and m["verified"] == (m["rung"] == 2)
        for e in m["estimates"]:
            assert (e["stderr"] is None) == (e["n"] < 2)
        for x in m["comparisons"]:
            assert x["baseline"] in {b["name"] for b in front["baselines"]} and x["objective"] in names
            assert x["beats"] == (x["p"] is not None and x["p"] < 0.05 and x["diff"] > 0)
    # the search verified something, and the verified front is made of verified members only
    assert front["verified_members"] and all(m["verified"] for m in front["verified_members"])
    assert all(m["heldout"] == [] for m in front["members"] if not m["verified"])
    # BN-ReLU (the search's baseline) climbed every rung at the same seeds: 3 runs per objective
    bn = next(b for b in front["baselines"] if b["name"] == "bn_relu")
    assert bn["rung"] == 2 and bn["verified"] and [e["n"] for e in bn["estimates"]] == [3, 3]
    top = [m for m in front["verified_members"] if m["zoo_name"] != "bn_relu"]
    if top:   # compared at the top rung's 3 seeds with BN-ReLU
        assert {x["n"] for x in top[0]["comparisons"] if x["baseline"] == "bn_relu"} == {3}

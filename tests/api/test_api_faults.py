"""Cluster faults on PostgreSQL: a long store outage, failed searches resumed, a growing and shrinking
Ray cluster, time queued in Ray, and the events each leaves.

The outage test stops a throwaway PostgreSQL cluster (`throwaway_pg`), never the shared server. The Ray
tests run a real multi-node cluster on this machine (`ray.cluster_utils.Cluster`: a head with one CPU and
a node added and removed), with an evaluation that sleeps instead of training, so their wall time is
Ray's, not torch's.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import api_fakes
import pytest
from fastapi.testclient import TestClient

from db import CandidateStatus, EventKind, NewCandidate, SearchStatus, Store
from evonorm_search.config import load_config
from evonorm_search.coordinator import Coordinator
from evonorm_search.runner import SearchRunner
from primitives import structural_hash
from primitives.zoo import ZOO
from workers.executors import InProcessExecutor, RayExecutor

pytestmark = pytest.mark.postgres


def assert_exactly_once(store: Store, sid: int, budget: int) -> None:
    search = store.get_search(sid)
    assert search.status is SearchStatus.FINISHED and search.error is None, search
    rows = store.list_candidates(sid, limit=None)
    assert len(rows) == budget and all(c.finished for c in rows)
    finished = Counter(e.candidate_id for e in store.events_after(0, search_id=sid, limit=10_000)
                       if e.kind == EventKind.CANDIDATE_FINISHED)
    assert finished == Counter({c.id: 1 for c in rows})


def kinds(store: Store, sid: int) -> Counter[str]:
    return Counter(e.kind for e in store.events_after(0, search_id=sid, limit=10_000))


def test_store_outage_longer_than_the_retry_window_pauses_the_search_then_it_carries_on(
        throwaway_pg: Any, throwaway_database: Any) -> None:
    store = Store(throwaway_database.url)
    coord = Coordinator(store, executor="inprocess", runner_kwargs=api_fakes.SLOW_RUNNER, reconnect_s=1.0)
    budget = 24
    try:
        coord.start()
        sid = coord.launch(load_config(None, {**api_fakes.TINY_SEARCH, "budget": budget})).id
        api_fakes.wait_for(lambda: store.get_search(sid).num_evaluated >= 3, 60, what="some evaluations")
        throwaway_pg.stop()
        time.sleep(3.0)   # three times the runner's retry window
        assert coord.is_running(sid), "the runner gave up on the search"
        throwaway_pg.start()
        api_fakes.wait_for(lambda: store.get_search(sid).status is SearchStatus.FINISHED, 90, 0.1,
                           what="the search to finish after the outage")
    finally:
        coord.stop()
        if not throwaway_pg.is_running():
            throwaway_pg.start()
    assert_exactly_once(store, sid, budget)
    events = store.events_after(0, search_id=sid, limit=10_000)
    [outage] = [e for e in events if e.kind == EventKind.STORE_OUTAGE and e.payload.get("runner_restarted")]
    assert outage.payload["down_s"] >= 2.5   # from when the runner first found it away (3 s down)
    # Never failed, not even for a moment.
    assert not [e for e in events if e.kind == EventKind.SEARCH_STATUS and e.payload["to"] == "failed"]
    store.close()


def _failed_search_with_a_stuck_candidate(store: Store, budget: int) -> int:
    """What the old runner left after a long outage: failed, a candidate still evaluating."""
    cfg = load_config(None, {**api_fakes.TINY_SEARCH, "budget": budget})
    sid = store.create_search(cfg.name, cfg.model_dump(mode="json"), seed=0).id
    store.set_search_status(sid, SearchStatus.RUNNING)
    graph = ZOO["bn_relu"].graph
    assert graph is not None
    [c] = store.add_candidates(sid, [NewCandidate(graph=graph.dumps(), structural_hash=structural_hash(graph),
                                                  mutation="seed:bn_relu")])
    store.mark_evaluating([c.id])
    store.set_search_status(sid, SearchStatus.FAILED, error="RetryableStoreError: database unreachable")
    return sid


def test_a_failed_search_is_resumed_by_the_user_over_rest(app_factory: Any) -> None:
    with TestClient(app_factory()) as client:
        store: Store = client.app.state.evonorm.store  # type: ignore[attr-defined]
        sid = _failed_search_with_a_stuck_candidate(store, 12)
        r = client.post(f"/api/searches/{sid}/resume")
        assert r.status_code == 200, r.text
        api_fakes.wait_for(lambda: store.get_search(sid).status is SearchStatus.FINISHED, 60, what="finish")
    assert_exactly_once(store, sid, 12)


def test_a_failed_search_is_resumed_by_run_resume_and_the_coordinator_unsticks_it(pg_database: Any) -> None:
    store = Store(pg_database.url)
    sid = _failed_search_with_a_stuck_candidate(store, 8)
    # A coordinator starting up leaves no candidate of a failed search evaluating: none runs it.
    Coordinator(store, executor="inprocess").start()
    assert not store.candidates_by_status(sid, [CandidateStatus.EVALUATING])
    # `run --resume` runs this: the runner takes a failed search back to running.
    result = SearchRunner(store, sid, InProcessExecutor(), **api_fakes.FAST_RUNNER).run()
    assert result.status is SearchStatus.FINISHED and result.error is None and result.finished_at
    assert_exactly_once(store, sid, 8)
    store.close()


# -- Ray: a cluster that grows and shrinks, and a busy one -------------------------------------------------

@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    from ray import cloudpickle
    from ray.cluster_utils import Cluster

    # The fake training lives in a test module the Ray workers cannot import: ship it by value.
    cloudpickle.register_pickle_by_value(api_fakes)

    # Notice a lost node within about a second (the default is tens of seconds).
    fast = {"health_check_period_ms": 300, "health_check_failure_threshold": 3, "health_check_timeout_ms": 300}
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False, "_system_config": fast})
    try:
        yield cluster
    finally:
        cluster.shutdown()
        cloudpickle.unregister_pickle_by_value(api_fakes)


@pytest.fixture
def ray_executor_factory(ray_cluster: Any) -> Iterator[Any]:
    made: list[RayExecutor] = []

    def make(**kwargs: Any) -> RayExecutor:
        ex = RayExecutor(ray_cluster.address, refresh_s=0.2, **kwargs)
        made.append(ex)
        return ex

    yield make
    for ex in made:
        ex.close()
    import ray

    ray.shutdown()


ONE_RUNG = [{"steps_frac": 1.0, "seeds": 1}]   # one training job per candidate


def _sleepy_runner(seconds: float) -> dict[str, Any]:
    """Runner kwargs whose every training rung sleeps `seconds` on a Ray worker and scores by fingerprint."""
    # Nested, so cloudpickle ships it to the Ray workers by value (api_fakes too: see ray_cluster).
    def sleepy(graph: Any, spec: Any, cache: Any = None, screening: Any = None) -> Any:
        time.sleep(seconds)
        return api_fakes.fake_evaluate(graph, spec, cache, screening)

    return {"rung_fn": api_fakes.rung_fn(sleepy, climb_delay_s=seconds), "status_poll_s": 0.05}


def test_slots_follow_nodes_joining_and_leaving_and_the_faults_are_events(
        ray_cluster: Any, ray_executor_factory: Any, pg_database: Any) -> None:
    store = Store(pg_database.url)
    budget = 14
    cfg = load_config(None, {**api_fakes.TINY_SEARCH, "budget": budget, "in_flight": 4, "timeout_s": 60,
                             "rungs": ONE_RUNG})
    sid = store.create_search(cfg.name, cfg.model_dump(mode="json"), seed=0).id
    ex = ray_executor_factory()
    assert ex.slots == 1
    seen: list[int] = []
    runner = SearchRunner(store, sid, ex, on_progress=lambda p: seen.append(p.in_flight), **_sleepy_runner(1.0))
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    api_fakes.wait_for(lambda: store.get_search(sid).num_evaluated >= 1, 60, what="a first evaluation")
    assert max(seen) == 1   # one CPU: one job at a time
    node = ray_cluster.add_node(num_cpus=1)
    api_fakes.wait_for(lambda: ex.slots == 2, 60, 0.1, what="the new node's slot")
    api_fakes.wait_for(lambda: max(seen[-20:]) == 2, 60, 0.1, what="two jobs in flight")
    # Lose the node with a job running on it: Ray runs it again on the head. The job must have
    # started there just now (seen starting by this poll), not be about to finish: a job that ends
    # before the node goes is not lost, and nothing is retried.
    first_seen: dict[int, float] = {}

    def training_there(arm: bool = False) -> bool:
        jobs, now = dict(runner._jobs), time.monotonic()
        for job_id, j in list(ex._running.items()):
            training = job_id in jobs and jobs[job_id].kind != "screen"
            if j.started and j.started.node == node.node_id and training:
                first_seen.setdefault(job_id, -float("inf") if arm else now)
                if now - first_seen[job_id] < 0.3:
                    return True
        return False

    training_there(arm=True)   # the jobs running there already are not fresh
    api_fakes.wait_for(training_there, 60, 0.02, what="an evaluation starting on the new node")
    ray_cluster.remove_node(node, allow_graceful=False)
    thread.join(120)
    assert not thread.is_alive()
    assert ex.slots == 1
    assert_exactly_once(store, sid, budget)
    lost_jobs = [(c.id, c.rejection_reason) for c in store.list_candidates(sid, limit=None)
                 if c.rejection_stage == "worker"]
    assert not lost_jobs   # the lost job was retried, not rejected
    events = store.events_after(0, search_id=sid, limit=10_000)
    [lost] = [e.payload for e in events if e.kind == EventKind.NODE_LOST]
    assert lost["node"] == node.node_id
    # The job that ran there finished on the head: one candidate_retried event names it.
    retried = [e.payload for e in events if e.kind == EventKind.CANDIDATE_RETRIED]
    assert retried and all(r["from_node"] == node.node_id and not r["same_node"] for r in retried)
    assert all(len(r["candidates"]) == 1 for r in retried)
    store.close()


def test_time_queued_behind_another_search_is_not_counted_and_the_cluster_is_shared(
        ray_cluster: Any, pg_database: Any) -> None:
    # Two searches on one CPU, each job 1 s with a 1.8 s limit: every job but the first waits about
    # a second for the CPU. Timed from submission they would all be rejected as timeouts.
    store = Store(pg_database.url)
    budget = 5
    coord = Coordinator(store, executor="ray", ray_address=ray_cluster.address,
                        runner_kwargs=_sleepy_runner(1.0), max_running=2)
    try:
        coord.start()
        cfgs = [load_config(None, {**api_fakes.TINY_SEARCH, "name": f"share-{i}", "budget": budget,
                                   "in_flight": 4, "timeout_s": 1.8, "seed": i, "rungs": ONE_RUNG})
                for i in range(2)]
        sids = [coord.launch(c).id for c in cfgs]
        api_fakes.wait_for(lambda: all(store.get_search(s).status is SearchStatus.FINISHED for s in sids),
                           120, 0.2, what="both searches to finish")
    finally:
        coord.stop()
    for sid in sids:
        assert_exactly_once(store, sid, budget)
        timed_out = [c.rejection_reason for c in store.list_candidates(sid, limit=None)
                     if c.rejection_stage == "worker"]
        assert not timed_out   # rejections on the layer's own merits (numeric, quality) may happen
    # Shared, not one after the other: each search finished candidates before the other one ended.
    ends = [store.get_search(s).finished_at for s in sids]
    firsts = [min(c.updated_at for c in store.list_candidates(s, limit=None)) for s in sids]
    assert firsts[0] < ends[1] and firsts[1] < ends[0]
    store.close()


def test_503_while_the_database_is_down_names_no_host_and_says_when_to_retry(
        throwaway_pg: Any, throwaway_database: Any) -> None:
    from api.app import create_app
    from evonorm_search.settings import Settings

    app = create_app(Settings(db_url=throwaway_database.url, executor="inprocess"),
                     runner_kwargs=api_fakes.FAST_RUNNER)
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        throwaway_pg.stop()
        try:
            for path in ("/healthz", "/api/searches"):
                r = client.get(path)
                assert r.status_code == 503, (path, r.text)
                assert int(r.headers["Retry-After"]) > 0
                body = r.text.lower()
                for secret in (str(throwaway_pg.port), "127.0.0.1", "postgres", "psycopg", "connection"):
                    assert secret not in body, (path, secret, r.text)
        finally:
            throwaway_pg.start()
        assert client.get("/healthz").status_code == 200


def test_faults_route_lists_a_searchs_fault_events_only(client: TestClient) -> None:
    store: Store = client.app.state.evonorm.store  # type: ignore[attr-defined]
    sid = store.create_search("f", {**api_fakes.TINY_SEARCH, "budget": 3}, seed=0).id
    other = store.create_search("g", {**api_fakes.TINY_SEARCH, "budget": 3}, seed=0).id
    store.append_event(EventKind.RUNNER_TAKEOVER, {"previous": "host:1:2:abc", "runner": "host:3:4:def"},
                       search_id=sid)
    store.append_event(EventKind.NODE_LOST, {"node": "n", "address": "a", "candidates": []}, search_id=other)
    faults = client.get(f"/api/searches/{sid}/faults").json()
    assert [f["kind"] for f in faults] == ["runner_takeover"]   # not search_created, not the other's
    assert client.get("/api/searches/999/faults").status_code == 404

"""The coordinator: a graceful restart and a crash both resume searches; nothing is lost or doubled."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import api_fakes
import httpx
from fastapi.testclient import TestClient

from db import CandidateStatus, NewCandidate, SearchStatus, Store
from evonorm_search.config import load_config
from evonorm_search.coordinator import Coordinator
from primitives import structural_hash
from primitives.zoo import ZOO

HERE = Path(__file__).parent


def assert_complete(store: Store, sid: int, budget: int) -> None:
    search = store.get_search(sid)
    assert search.status is SearchStatus.FINISHED, search
    rows = store.list_candidates(sid, limit=None)
    assert len(rows) == budget == search.num_candidates
    assert all(c.finished for c in rows)
    assert len({c.structural_hash for c in rows}) == budget
    originals = [c.fingerprint for c in rows if c.fingerprint and c.reused_from is None]
    assert len(originals) == len(set(originals)), "a fingerprint was trained twice"
    assert Counter(c.rejection_stage for c in rows)["cancelled"] == 0


def test_graceful_shutdown_hands_back_and_restart_resumes(app_factory: Any) -> None:
    budget = 60
    with TestClient(app_factory(runner=api_fakes.SLOW_RUNNER)) as client:
        store: Store = client.app.state.evonorm.store  # type: ignore[attr-defined]
        sid = client.post("/api/searches", json={**api_fakes.TINY_SEARCH, "budget": budget}).json()["id"]
        api_fakes.wait_for(lambda: store.get_search(sid).num_evaluated >= 5, what="some evaluations")
    # shutdown: handed back to the queue, never failed
    stopped = store.get_search(sid)
    assert stopped.status is SearchStatus.QUEUED and stopped.error is None
    assert stopped.num_candidates < budget
    with TestClient(app_factory()) as client:
        assert client.get(f"/api/searches/{sid}").json()["status"] in ("queued", "running", "finished")
        api_fakes.wait_for(lambda: store.get_search(sid).status is SearchStatus.FINISHED, 120, what="finish")
    assert_complete(store, sid, budget)


def test_start_resumes_a_search_a_crash_left_running(database: Any) -> None:
    store = Store(database.url)
    cfg = load_config(None, {**api_fakes.TINY_SEARCH, "budget": 20})
    sid = store.create_search(cfg.name, cfg.model_dump(mode="json"), seed=0).id
    store.set_search_status(sid, SearchStatus.RUNNING)
    # what a runner killed mid-flight leaves: the seeds in flight
    seeds = [ZOO[n].graph for n in cfg.seed_with_zoo]
    added = store.add_candidates(sid, [NewCandidate(g.dumps(), structural_hash(g), mutation=f"seed:{n}")
                                       for n, g in zip(cfg.seed_with_zoo, seeds, strict=True) if g is not None])
    store.mark_evaluating([c.id for c in added])
    coordinator = Coordinator(store, executor="inprocess", runner_kwargs=api_fakes.FAST_RUNNER)
    assert coordinator.start() == [sid]
    try:
        api_fakes.wait_for(lambda: store.get_search(sid).status is SearchStatus.FINISHED, 120, what="finish")
    finally:
        coordinator.stop()
    assert_complete(store, sid, 20)
    assert [c.mutation for c in store.list_candidates(sid, limit=2)] == ["seed:bn_relu", "seed:evonorm_s0"]
    store.close()


def test_cancelling_a_paused_search_leaves_nothing_unfinished(database: Any) -> None:
    store = Store(database.url)
    cfg = load_config(None, {**api_fakes.TINY_SEARCH, "budget": 20})
    sid = store.create_search(cfg.name, cfg.model_dump(mode="json"), seed=0).id
    graphs = [ZOO[n].graph for n in ("bn_relu", "gn_relu", "layernorm", "evonorm_s0")]
    added = store.add_candidates(sid, [NewCandidate(g.dumps(), structural_hash(g)) for g in graphs if g])
    store.mark_evaluating([added[0].id])   # what a crash mid-evaluation leaves
    store.set_search_status(sid, SearchStatus.PAUSED)
    coordinator = Coordinator(store, executor="inprocess", runner_kwargs=api_fakes.FAST_RUNNER)
    coordinator.start()
    try:
        record = coordinator.cancel(sid)
    finally:
        coordinator.stop()
    assert record.status is SearchStatus.CANCELLED and record.num_rejected == 4
    rows = store.list_candidates(sid, limit=None)
    assert [(c.status, c.rejection_stage) for c in rows] == [(CandidateStatus.REJECTED, "cancelled")] * 4
    store.close()


def test_a_finished_search_exports_its_front_to_the_export_dir(database: Any, tmp_path: Path) -> None:
    import importlib.util

    import torch

    store = Store(database.url)
    cfg = load_config(None, {**api_fakes.TINY_SEARCH, "budget": 12})
    coordinator = Coordinator(store, executor="inprocess", runner_kwargs=api_fakes.FAST_RUNNER,
                              export_dir=tmp_path / "exports")
    coordinator.start()
    try:
        sid = coordinator.launch(cfg).id
        api_fakes.wait_for(lambda: store.get_search(sid).status is SearchStatus.FINISHED, 120, what="finish")
        out = tmp_path / "exports" / f"search-{sid}" / "winners"
        api_fakes.wait_for(lambda: out.is_dir() and any(out.glob("*.py")), 30, what="the exported winners")
    finally:
        coordinator.stop()
    from evonorm_search.summary import evaluated, pareto_front

    front = pareto_front(evaluated(store, sid), cfg.maximise)
    # images and text: each layer once per layout (`<name>.py`, `<name>_tokens.py`)
    assert len(list(out.glob("*_tokens.py"))) == len(list(out.glob("*.py"))) - len(front) == len(front) > 0
    for path in out.glob("*.py"):   # each is a working module
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        layers = [v for v in vars(module).values() if isinstance(v, type) and issubclass(v, torch.nn.Module)
                  and v.__module__ == module.__name__]
        x = torch.randn(2, 5, 8) if path.stem.endswith("_tokens") else torch.randn(2, 8, 4, 4)
        assert len(layers) == 1 and layers[0](8)(x).shape == x.shape
    store.close()


def test_stopped_then_killed_server_resumes_after_restart(tmp_path: Path) -> None:
    """The serving process, stopped (SIGINT, with a dashboard's event stream open), then SIGKILLed
    mid-search: each time a new process resumes the search, and it ends with every candidate once."""
    db = str(tmp_path / "crash.db")
    port = api_fakes_port()
    budget = 80
    cmd = [sys.executable, str(HERE / "api_fakes.py"), db, str(port), "slow"]
    base = f"http://127.0.0.1:{port}"
    store = Store(db)

    def up() -> bool:
        try:
            return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def evaluated(n: int) -> bool:
        return store.get_search(sid).num_evaluated >= n

    proc = subprocess.Popen(cmd, start_new_session=True)
    try:
        api_fakes.wait_for(up, 60, 0.2, what="the server")
        sid = httpx.post(f"{base}/api/searches", json={**api_fakes.TINY_SEARCH, "budget": budget}).json()["id"]
        api_fakes.wait_for(lambda: evaluated(5), 60, what="some evaluations")
        # graceful: SIGINT with an event stream open; the stream must not hold the shutdown up
        with httpx.Client(base_url=base, timeout=30) as http, http.stream("GET", "/api/events") as stream:
            next(stream.iter_text())
            os.killpg(proc.pid, signal.SIGINT)
            assert proc.wait(20) == 0
        stopped = store.get_search(sid)
        assert stopped.status is SearchStatus.QUEUED and stopped.error is None   # handed back, not failed

        proc = subprocess.Popen(cmd, start_new_session=True)
        api_fakes.wait_for(up, 60, 0.2, what="the restarted server")
        api_fakes.wait_for(lambda: evaluated(stopped.num_evaluated + 5), 60, what="progress after restart")
        os.killpg(proc.pid, signal.SIGKILL)   # a crash: no chance to clean up
        proc.wait(10)
        crashed = store.get_search(sid)
        assert crashed.status is SearchStatus.RUNNING and crashed.num_candidates < budget

        proc = subprocess.Popen(cmd, start_new_session=True)
        api_fakes.wait_for(up, 60, 0.2, what="the server after the crash")
        api_fakes.wait_for(lambda: store.get_search(sid).status is SearchStatus.FINISHED, 120, what="finish")
        assert_complete(store, sid, budget)
        assert store.count_by_status(sid)[CandidateStatus.EVALUATING] == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        store.close()


def api_fakes_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_one_fingerprint_is_trained_once_even_within_one_batch(tmp_path: Path) -> None:
    """An evaluation and a screening of the same fingerprint returned together by the executor (the
    in-process executor returns everything queued at once): the screening must wait for that result,
    not train the fingerprint again."""
    from evonorm_search.runner import SearchRunner
    from workers.evaluation import Screening
    from workers.executors import InProcessExecutor

    trained: list[str] = []

    def same_screen(graph: str, spec: Any) -> Screening:
        return Screening("one-function", None, ())

    def evaluate(graph: str, spec: Any, cache: Any, screening: Screening) -> Any:
        trained.append(graph)
        return api_fakes.fake_evaluate(graph, spec, cache, screening)

    store = Store(str(tmp_path / "once.db"))
    cfg = load_config(None, {**api_fakes.TINY_SEARCH, "budget": 12, "in_flight": 2, "seed_with_zoo": [],
                             "baselines": []})
    sid = store.create_search(cfg.name, cfg.model_dump(mode="json"), seed=0).id
    SearchRunner(store, sid, InProcessExecutor(), screen_fn=same_screen,
                 rung_fn=api_fakes.rung_fn(evaluate)).run()
    rows = store.list_candidates(sid, limit=None)
    assert len(trained) == 1
    assert sum(c.reused_from is None for c in rows) == 1 and len(rows) == 12
    store.close()

"""The runner end to end with the in-process executor (real store, real screening, fake training)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import search_fakes

from db import CandidateStatus, SearchStatus, Store
from evonorm_search.config import load_config
from evonorm_search.runner import SearchRunner
from workers.executors import InProcessExecutor

HERE = Path(__file__).parent


def new_search(store: Store, **overrides: object) -> int:
    cfg = load_config("quick", {"budget": 60, "population_size": 8, "tournament_size": 3, "in_flight": 4,
                                **overrides})
    return store.create_search(cfg.name, cfg.model_dump(mode="json"), seed=cfg.seed).id


def all_candidates(store: Store, search_id: int) -> list:
    return store.list_candidates(search_id, limit=None)


def assert_each_finished_once(store: Store, search_id: int, budget: int, tasks: int) -> None:
    rows = all_candidates(store, search_id)
    assert len(rows) == budget
    assert all(c.status in (CandidateStatus.EVALUATED, CandidateStatus.REJECTED) for c in rows)
    evals = store.evaluations_for_candidates([c.id for c in rows])
    for c in rows:
        n = len(evals.get(c.id, []))
        if c.status is CandidateStatus.EVALUATED and c.reused_from is None:
            assert n == tasks, f"candidate {c.id} has {n} evaluations"
        else:
            assert n == 0, f"candidate {c.id} ({c.status}, reused_from={c.reused_from}) has evaluations"
    # no fingerprint was trained twice: originals have distinct fingerprints
    originals = [c.fingerprint for c in rows if c.fingerprint and c.reused_from is None]
    assert len(originals) == len(set(originals))


# `store` (conftest.py) is parametrized over SQLite and PostgreSQL.


def test_search_runs_to_budget_and_reuses_duplicates(store: Store) -> None:
    search_fakes.TRAINED.clear()
    sid = new_search(store)
    result = SearchRunner(store, sid, InProcessExecutor(), evaluate_fn=search_fakes.fake_evaluate).run()
    assert result.status is SearchStatus.FINISHED
    assert result.num_candidates == 60
    assert result.num_evaluated + result.num_rejected == 60
    assert_each_finished_once(store, sid, 60, tasks=2)
    # the fake trained each fingerprint at most once
    assert len(search_fakes.TRAINED) == len(set(search_fakes.TRAINED))
    rows = all_candidates(store, sid)
    by_id = {c.id: c for c in rows}
    dups = [c for c in rows if c.reused_from is not None]
    assert dups, "a 60-candidate evolutionary search should meet functional duplicates"
    for d in dups:
        original = by_id[d.reused_from]
        assert original.fingerprint == d.fingerprint and original.reused_from is None
        assert d.objectives == original.objectives and d.status == original.status
    # seeds first, then random, then mutations of evaluated parents
    assert [c.mutation for c in rows[:2]] == ["seed:bn_relu", "seed:evonorm_s0"]
    children = [c for c in rows if c.parent_ids]
    assert children
    assert all(by_id[p].status is CandidateStatus.EVALUATED for c in children for p in c.parent_ids)
    assert all(c.generation == 1 + max(by_id[p].generation for p in c.parent_ids) for c in children)


def test_same_seed_same_search(tmp_path: Path) -> None:
    def run(path: Path) -> list[tuple[str, str | None]]:
        s = Store(str(path))
        sid = new_search(s, in_flight=1)
        SearchRunner(s, sid, InProcessExecutor(), evaluate_fn=search_fakes.fake_evaluate).run()
        return [(c.structural_hash, c.mutation) for c in all_candidates(s, sid)]

    assert run(tmp_path / "a.db") == run(tmp_path / "b.db")


def test_random_strategy_never_mutates(store: Store) -> None:
    sid = new_search(store, strategy="random", seed_with_zoo=[])
    SearchRunner(store, sid, InProcessExecutor(), evaluate_fn=search_fakes.fake_evaluate).run()
    assert all(not c.parent_ids and c.mutation == "random" for c in all_candidates(store, sid))


def run_in_thread(runner: SearchRunner) -> threading.Thread:
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    return thread


def wait_for(predicate, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


def test_pause_resume_cancel(store: Store) -> None:
    sid = new_search(store, budget=200)
    runner = SearchRunner(store, sid, InProcessExecutor(), evaluate_fn=search_fakes.slow_evaluate,
                          status_poll_s=0.02)
    thread = run_in_thread(runner)
    wait_for(lambda: store.get_search(sid).num_evaluated >= 3)
    store.set_search_status(sid, SearchStatus.PAUSED)
    thread.join(30)
    assert not thread.is_alive()
    paused = store.get_search(sid)
    assert paused.status is SearchStatus.PAUSED
    counts = store.count_by_status(sid)
    assert counts.get(CandidateStatus.EVALUATING, 0) == 0  # in-flight work was finished, not dropped
    time.sleep(0.2)
    assert store.get_search(sid).num_candidates == paused.num_candidates  # nothing happens while paused

    # resume: a new runner picks up where it stopped
    runner = SearchRunner(store, sid, InProcessExecutor(), evaluate_fn=search_fakes.slow_evaluate,
                          status_poll_s=0.02)
    thread = run_in_thread(runner)
    wait_for(lambda: store.get_search(sid).num_candidates > paused.num_candidates + 3)
    store.set_search_status(sid, SearchStatus.CANCELLED)
    thread.join(30)
    assert not thread.is_alive()
    final = store.get_search(sid)
    assert final.status is SearchStatus.CANCELLED
    assert final.num_candidates < 200
    rows = all_candidates(store, sid)
    assert all(c.status in (CandidateStatus.EVALUATED, CandidateStatus.REJECTED) for c in rows)
    stages = Counter(c.rejection_stage for c in rows)
    assert stages["cancelled"] <= 4  # only what was in flight


RUNNER_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {here!r})
    import search_fakes
    from db import Store
    from evonorm_search.runner import SearchRunner
    from workers.executors import InProcessExecutor
    store = Store({db!r})
    SearchRunner(store, {sid}, InProcessExecutor(), evaluate_fn=search_fakes.slow_evaluate).run()
""")


def test_killed_runner_resumes_and_nothing_is_lost_or_doubled(database: Any) -> None:
    db = database.url  # SQLite file or PostgreSQL schema (tests/conftest.py)
    store = Store(db)
    budget = 80
    sid = new_search(store, budget=budget)
    script = RUNNER_SCRIPT.format(here=str(HERE), db=db, sid=sid)
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    try:
        wait_for(lambda: store.get_search(sid).num_evaluated >= 10, timeout=120)
        os.killpg(proc.pid, signal.SIGKILL)  # no chance to clean up
        proc.wait(10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    crashed = store.get_search(sid)
    assert crashed.status is SearchStatus.RUNNING and crashed.num_candidates < budget
    assert store.count_by_status(sid).get(CandidateStatus.EVALUATING, 0) > 0  # caught mid-flight

    restarted = subprocess.run([sys.executable, "-c", script], timeout=300)
    assert restarted.returncode == 0
    final = store.get_search(sid)
    assert final.status is SearchStatus.FINISHED
    assert_each_finished_once(store, sid, budget, tasks=2)

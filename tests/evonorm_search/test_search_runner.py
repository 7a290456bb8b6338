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
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import search_fakes

from db import CandidateOutcome, CandidateStatus, NewCandidate, SearchStatus, Store
from evonorm_search.config import SearchConfig, load_config
from evonorm_search.funnel import Funnel
from evonorm_search.pareto import nondominated
from evonorm_search.runner import Progress, SearchRunner
from evonorm_search.summary import evaluated, front_report, pareto_front
from primitives import Graph, structural_hash
from primitives.zoo import ZOO
from workers.evaluation import EvalSpec, EvaluationResult, Screening
from workers.executors import InProcessExecutor, JobFailure
from workers.rejection import Rejection, Stage

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
    cfg = SearchConfig.model_validate(store.get_search(search_id).config)
    funnel = Funnel(cfg.eval_spec(), [(r.steps_frac, r.seeds, r.promote) for r in cfg.rungs], cfg.seed,
                    cfg.maximise)
    assert len(cfg.tasks) == tasks
    for c in rows:
        n = len(evals.get(c.id, []))
        if c.status is CandidateStatus.EVALUATED and c.reused_from is None:
            # every run of every rung it reached, each recorded once, at its rung's seeds and steps
            assert c.rung is not None and c.estimates is not None and len(c.estimates) == len(c.objectives)
            keys = [(f"{e.backbone}:{e.task}", e.steps, e.seed) for e in evals[c.id]]
            assert len(keys) == len(set(keys)), f"candidate {c.id} has a run twice"
            wanted = {k for r in range(c.rung + 1) for k in funnel.keys(r)}
            wanted |= set(funnel.keys(funnel.top, heldout=True)) if c.rung == funnel.top else set()
            assert set(keys) == wanted, f"candidate {c.id} at rung {c.rung} has runs {sorted(keys)}"
            assert c.verified == (c.rung == funnel.top)
        else:
            assert n == 0, f"candidate {c.id} ({c.status}, reused_from={c.reused_from}) has evaluations"
    # no fingerprint got two real results: originals have distinct fingerprints (a worker-stage
    # rejection is not a result of the layer; its fingerprint may be evaluated again)
    originals = [c.fingerprint for c in rows
                 if c.fingerprint and c.reused_from is None and c.rejection_stage != "worker"]
    assert len(originals) == len(set(originals))


# `store` (conftest.py) is parametrized over SQLite and PostgreSQL.


def test_search_runs_to_budget_and_reuses_duplicates(store: Store) -> None:
    search_fakes.TRAINED.clear()
    sid = new_search(store)
    result = SearchRunner(store, sid, InProcessExecutor(), rung_fn=search_fakes.FAKE_RUNG).run()
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
    # The report (CLI front, summary JSON): BN-ReLU climbed every rung, so like any verified member it
    # shows its held-out score, whether or not it is on the front.
    report = front_report(store, sid)
    bn = next(b for b in report["baselines"] if b["name"] == "bn_relu")
    assert bn["verified"] and [h["objective"] for h in bn["heldout"]] == ["resnet:digits"]
    assert all(bool(m["heldout"]) == m["verified"] for m in report["members"])


def test_tasks_differing_only_in_micro_batch_are_objectives_whose_runs_never_mix(store: Store) -> None:
    """The same backbone and data set at the full batch and at micro-batches of 4 in one search: two
    objectives, each candidate's rows labelled with their own task, and the funnel rebuilt from the
    store (as a resumed runner and every reader do) gives each objective its own runs back."""
    from evonorm_search.funnel import funnel_for, runs_of

    tasks = [{"backbone": "mobilenet", "task": "shapes32"},
             {"backbone": "mobilenet", "task": "shapes32", "micro_batch": 4}]
    sid = new_search(store, budget=24, tasks=tasks)
    result = SearchRunner(store, sid, InProcessExecutor(), rung_fn=search_fakes.FAKE_RUNG).run()
    assert result.status is SearchStatus.FINISHED
    assert_each_finished_once(store, sid, 24, tasks=2)
    cfg = SearchConfig.model_validate(store.get_search(sid).config)
    assert cfg.objectives == ["mobilenet:shapes32", "mobilenet:shapes32@mb4"]
    rows = [c for c in all_candidates(store, sid)
            if c.status is CandidateStatus.EVALUATED and c.reused_from is None]
    evals = store.evaluations_for_candidates([c.id for c in rows])
    assert {e.task for es in evals.values() for e in es} == {"shapes32", "shapes32@mb4", "digits"}
    funnel = funnel_for(cfg)
    for c in rows:
        funnel.add(c.id, runs_of(evals[c.id]).items())
        assert c.rung is not None and c.objectives is not None
        assert [e.mean for e in funnel.estimates(c.id, c.rung)] == pytest.approx(c.objectives)
    # the fake scores the two objectives independently; runs under one key would make them equal
    assert sum(abs(c.objectives[0] - c.objectives[1]) > 0.05 for c in rows) >= len(rows) // 2 > 0


def test_same_seed_same_search(tmp_path: Path) -> None:
    def run(path: Path) -> list[tuple[str, str | None]]:
        s = Store(str(path))
        sid = new_search(s, in_flight=1)
        SearchRunner(s, sid, InProcessExecutor(), rung_fn=search_fakes.FAKE_RUNG).run()
        return [(c.structural_hash, c.mutation) for c in all_candidates(s, sid)]

    assert run(tmp_path / "a.db") == run(tmp_path / "b.db")


def test_random_strategy_never_mutates(store: Store) -> None:
    sid = new_search(store, strategy="random", seed_with_zoo=[])
    SearchRunner(store, sid, InProcessExecutor(), rung_fn=search_fakes.FAKE_RUNG).run()
    rows = all_candidates(store, sid)
    # BN-ReLU is measured beside the proposals as the search's baseline, never bred from
    assert [c.mutation for c in rows if c.mutation == "baseline:bn_relu"] == ["baseline:bn_relu"]
    assert all(not c.parent_ids and c.mutation == "random" for c in rows if c.mutation != "baseline:bn_relu")
    assert not any(set(c.parent_ids) & {r.id for r in rows if r.mutation == "baseline:bn_relu"} for c in rows)


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
    runner = SearchRunner(store, sid, InProcessExecutor(), rung_fn=search_fakes.SLOW_RUNG,
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
    runner = SearchRunner(store, sid, InProcessExecutor(), rung_fn=search_fakes.SLOW_RUNG,
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


def test_cancel_finishes_pending_candidates_too(store: Store) -> None:
    """Candidates left pending by a restart and not yet resubmitted are cancelled with the search."""
    from db import NewCandidate
    from primitives import structural_hash
    from primitives.zoo import ZOO

    sid = new_search(store, budget=20, in_flight=1)
    graphs = [ZOO[n].graph for n in ("bn_relu", "gn_relu", "layernorm", "rmsnorm", "evonorm_b0", "evonorm_s0")]
    store.add_candidates(sid, [NewCandidate(g.dumps(), structural_hash(g)) for g in graphs if g])
    store.set_search_status(sid, SearchStatus.RUNNING)
    runner = SearchRunner(store, sid, InProcessExecutor(), rung_fn=search_fakes.SLOW_RUNG,
                          status_poll_s=0.02)
    thread = run_in_thread(runner)
    wait_for(lambda: store.get_search(sid).num_evaluated + store.get_search(sid).num_rejected >= 1)
    store.set_search_status(sid, SearchStatus.CANCELLED)
    thread.join(30)
    assert not thread.is_alive()
    rows = all_candidates(store, sid)
    assert all(c.finished for c in rows), Counter(c.status for c in rows)
    assert Counter(c.rejection_stage for c in rows)["cancelled"] >= 1


RUNNER_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {here!r})
    import search_fakes
    from db import Store
    from evonorm_search.runner import SearchRunner
    from workers.executors import InProcessExecutor
    store = Store({db!r})
    SearchRunner(store, {sid}, InProcessExecutor(), rung_fn=search_fakes.SLOW_RUNG).run()
""")


def test_killed_runner_resumes_and_nothing_is_lost_or_doubled(database: Any) -> None:
    db = database.url  # SQLite file or PostgreSQL schema (tests/conftest.py)
    store = Store(db)
    budget = 80
    sid = new_search(store, budget=budget)
    script = RUNNER_SCRIPT.format(here=str(HERE), db=db, sid=sid)
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    try:
        # mid-flight: a candidate evaluating and (the fake's climbs take as long) most likely a climb too
        wait_for(lambda: store.get_search(sid).num_evaluated >= 10
                 and store.count_by_status(sid).get(CandidateStatus.EVALUATING, 0) > 0, timeout=120)
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
    # the funnel went on after the restart: candidates climbed to the top, BN-ReLU (the baseline) too
    rows = all_candidates(store, sid)
    assert any(c.verified for c in rows if c.mutation != "seed:bn_relu")
    assert [c.verified for c in rows if c.mutation == "seed:bn_relu"] == [True]


# -- the cost objective ----------------------------------------------------------------------


def evaluate_with_cost(graph: Any, spec: EvalSpec, cache: Any = None, screening: Screening | None = None
                       ) -> EvaluationResult:
    """The fake training plus a cost (minimised) larger than the accuracies that falls as the
    first accuracy rises (with noise): a "best" or an order that counted the cost as something
    to maximise would prefer the layers least accurate on the first task."""
    r = search_fakes.fake_evaluate(graph, spec, cache, screening)
    if r.status != "evaluated" or not spec.measure_cost:
        return r
    assert r.fingerprint is not None
    return replace(r, cost=10.0 - 4.0 * r.scores[0].accuracy + 4.0 * search_fakes.score(r.fingerprint, 77))


def test_cost_objective_is_minimised_in_progress_and_front(store: Store) -> None:
    sid = new_search(store, cost_objective=True, seed=1)
    cfg = SearchConfig.model_validate(store.get_search(sid).config)
    assert cfg.maximise == [True, True, False]
    seen: list[tuple[float, ...] | None] = []

    def on_progress(p: Progress) -> None:
        seen.append(p.best)

    runner = SearchRunner(store, sid, InProcessExecutor(), rung_fn=search_fakes.rung_fn(evaluate_with_cost),
                          on_progress=on_progress)
    assert runner.run().status is SearchStatus.FINISHED
    rows = evaluated(store, sid)
    assert rows and all(len(c.objectives or ()) == 3 for c in rows)

    def accuracy(objectives: Any) -> float:
        return (objectives[0] + objectives[1]) / 2

    # progress: the best mean accuracy; the cost neither helps nor hurts
    best = max(rows, key=lambda c: accuracy(c.objectives))
    assert runner.progress.best is not None
    assert accuracy(runner.progress.best) == pytest.approx(accuracy(best.objectives))
    by_all = max(rows, key=lambda c: sum(c.objectives or ()))
    assert accuracy(by_all.objectives) < accuracy(best.objectives)  # the test can tell them apart
    shown = [accuracy(b) for b in seen if b is not None]
    assert shown == sorted(shown)  # "best so far" never gets worse in accuracy

    # the front: non-dominated with the cost minimised, best accuracy first
    front = pareto_front(rows, cfg.maximise)
    on_front = {m.candidate_id for m in front}
    points = [tuple(c.objectives or ()) for c in rows]
    expected = {rows[i].id for i in nondominated(points, cfg.maximise)}
    assert on_front <= expected
    assert {tuple(rows[i].objectives or ()) for i in nondominated(points, cfg.maximise)} == \
        {m.objectives for m in front}
    cheapest = min(rows, key=lambda c: ((c.objectives or ())[2], -accuracy(c.objectives)))
    front_points = {m.objectives for m in front}
    assert tuple(cheapest.objectives or ()) in front_points, "the cheapest layer is on the front"
    assert tuple(best.objectives or ()) in front_points, "so is the most accurate"
    # some member is there for its low cost alone: another member beats it on every accuracy
    assert any(o[0] >= p[0] and o[1] >= p[1] and o[2] > p[2] for p in front_points for o in front_points)
    sums = [m.objectives[0] + m.objectives[1] for m in front]
    assert sums == sorted(sums, reverse=True)


# -- worker-stage failures are not cached -------------------------------------------------------


def _gn_relu_variants() -> list[Graph]:
    """Three structurally different graphs of one function (GN-ReLU): one fingerprint."""
    plain = ZOO["gn_relu"].graph
    assert plain is not None
    double_neg = Graph.build(("mean_group", ["x"]), ("neg", [4]), ("add", ["x", 5]), ("std_group", ["x"]),
                             ("div", [6, 7]), ("mul", ["v1", 8]), ("add", [9, "v0"]), ("neg", [10]),
                             ("neg", [11]), ("max", [12, "zero"]))
    negated_diff = Graph.build(("mean_group", ["x"]), ("neg", ["x"]), ("add", [5, 4]), ("neg", [6]),
                               ("std_group", ["x"]), ("div", [7, 8]), ("mul", ["v1", 9]), ("add", [10, "v0"]),
                               ("max", [11, "zero"]))
    graphs = [plain, double_neg, negated_diff]
    assert len({structural_hash(g) for g in graphs}) == 3
    return graphs


class FailsFirstTry:
    """Fake training whose first evaluation of each fingerprint fails at the worker stage."""

    def __init__(self, how: str) -> None:
        self.how = how
        self.trained: list[str] = []

    def __call__(self, graph: Any, spec: EvalSpec, cache: Any = None, screening: Screening | None = None
                 ) -> EvaluationResult | JobFailure:
        assert screening is not None and screening.fingerprint is not None
        fp = screening.fingerprint
        first = fp not in self.trained
        self.trained.append(fp)
        if first and self.how == "timeout":
            return JobFailure("timeout", "job exceeded its 1800 s limit")
        if first:
            return EvaluationResult("rejected", fp, rejection=Rejection(Stage.WORKER, "time limit exceeded"))
        return search_fakes.fake_evaluate(graph, spec, cache, screening)


def search_of(store: Store, graphs: list[Graph], **overrides: object) -> tuple[int, list[int]]:
    """A search whose whole budget is these graphs, pending in this order."""
    sid = new_search(store, budget=len(graphs), seed_with_zoo=[], baselines=[], **overrides)
    added = store.add_candidates(sid, [NewCandidate(graph=g.dumps(), structural_hash=structural_hash(g),
                                                    mutation="random") for g in graphs])
    assert len(added) == len(graphs)
    return sid, [c.id for c in added]


@pytest.mark.parametrize("how", ["timeout", "worker_rejection"])
@pytest.mark.parametrize("in_flight", [1, 3])  # 1: later duplicates; 3: duplicates parked on the failing one
def test_worker_failure_is_not_inherited_by_duplicates(store: Store, how: str, in_flight: int) -> None:
    graphs = _gn_relu_variants()
    sid, (first, second, third) = search_of(store, graphs, in_flight=in_flight)
    fake = FailsFirstTry(how)
    runner = SearchRunner(store, sid, InProcessExecutor(), rung_fn=search_fakes.rung_fn(fake))
    assert runner.run().status is SearchStatus.FINISHED
    by_id = {c.id: c for c in all_candidates(store, sid)}
    fp = by_id[first].fingerprint
    assert fp and all(c.fingerprint == fp for c in by_id.values())
    assert by_id[first].rejection_stage == "worker"
    # the second was trained afresh (not a duplicate of the failure) ...
    assert fake.trained == [fp, fp]
    assert by_id[second].reused_from is None
    assert by_id[second].rejection_stage != "worker"
    # ... and the third reuses the second's real result: nothing trained twice
    assert by_id[third].reused_from == second
    assert by_id[third].status == by_id[second].status
    assert by_id[third].objectives == by_id[second].objectives
    assert_each_finished_once(store, sid, 3, tasks=2)
    assert runner.progress.rejected >= 1 and runner.progress.duplicates == 1


@pytest.mark.parametrize("stage", ["worker", "quality"])
def test_recovery_rebuilds_the_cache_without_worker_failures(store: Store, stage: str) -> None:
    graphs = _gn_relu_variants()[:2]
    sid, (first, second) = search_of(store, graphs)
    spec = SearchConfig.model_validate(store.get_search(sid).config).eval_spec()
    fp = search_fakes.screen(graphs[0], spec).fingerprint
    # a runner died after finishing the first candidate
    store.finish_candidates([CandidateOutcome(first, CandidateStatus.REJECTED, rejection_stage=stage,
                                              rejection_reason="from an earlier run", fingerprint=fp)])
    fake = FailsFirstTry("timeout")
    fake.trained.append(fp)  # the next try succeeds
    runner = SearchRunner(store, sid, InProcessExecutor(), rung_fn=search_fakes.rung_fn(fake))
    assert runner.run().status is SearchStatus.FINISHED
    c = store.get_candidate(second)
    assert c.fingerprint == fp
    if stage == "worker":  # evaluated afresh
        assert c.reused_from is None and fake.trained == [fp, fp]
    else:  # the layer's own rejection stands for its duplicates: nothing trained
        assert c.reused_from == first and c.rejection_stage == "quality" and fake.trained == [fp]


def _timed_rung(rung0_s: float, climb_s: float) -> Any:
    """FAKE_RUNG whose jobs report `rung0_s` / `climb_s` worker seconds (nothing sleeps)."""
    def run(*args: Any, **kw: Any) -> Any:
        r = search_fakes.FAKE_RUNG(*args, **kw)
        return replace(r, wall_s=rung0_s if r.rung == 0 else climb_s) if hasattr(r, "rung") else r

    return run


def test_max_core_hours_stops_proposals_and_the_spend_is_stored_with_every_result(store: Store) -> None:
    """Each result adds its job's worker seconds to the search in the same transaction (the events
    carry each share); proposing stops once max_core_hours is spent, and what is due still finishes."""
    limit_s = 200.0
    sid = new_search(store, budget=1000, in_flight=2, max_core_hours=limit_s / 3600)
    result = SearchRunner(store, sid, InProcessExecutor(), rung_fn=_timed_rung(10.0, 30.0)).run()
    assert result.status is SearchStatus.FINISHED
    rows = all_candidates(store, sid)
    assert 10 < len(rows) < 100, len(rows)        # far under the candidate budget: the core-hours ran out
    events = store.events_after(0, search_id=sid, limit=10_000)
    shares = [e.payload["core_s"] for e in events if "core_s" in e.payload]
    assert result.core_s == pytest.approx(sum(shares)) and result.core_s >= limit_s
    trained = [c for c in rows if c.status is CandidateStatus.EVALUATED and c.reused_from is None]
    climbs = sum(c.rung or 0 for c in trained)
    too_poor = sum(c.rejection_stage == "quality" and c.reused_from is None for c in rows)   # a rung-0 job each
    # + the screenings' milliseconds
    assert result.core_s == pytest.approx(10.0 * (len(trained) + too_poor) + 30.0 * climbs, abs=5.0)
    # what was due still finished: the funnel verified its best after the budget ran out
    assert any(c.verified for c in trained)
    # a resumed runner knows the spend: it proposes nothing more
    again = SearchRunner(store, sid, InProcessExecutor(), rung_fn=_timed_rung(10.0, 30.0))
    again._recover()
    assert again.progress.core_s == pytest.approx(result.core_s) and again._propose(4) == []


def test_a_failed_climb_still_counts_its_worker_time(store: Store) -> None:
    def failing_climbs(*args: Any, **kw: Any) -> Any:
        rung = args[2]
        if rung.index > 0:
            time.sleep(0.05)
            return JobFailure("error", "boom")
        return search_fakes.FAKE_RUNG(*args, **kw)

    sid = new_search(store, budget=6, in_flight=1)
    result = SearchRunner(store, sid, InProcessExecutor(), rung_fn=failing_climbs).run()
    failed = [e for e in store.events_after(0, search_id=sid, limit=10_000) if e.kind == "climb_failed"]
    assert failed and all(e.payload["core_s"] >= 0.05 for e in failed)
    assert result.core_s >= 0.05 * len(failed)

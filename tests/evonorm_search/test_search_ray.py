"""A short real search on Ray: the runner, the real RayExecutor and the real evaluate, on a tiny budget.

The runner tests elsewhere fake the training for speed; this one trains for
real (a narrow ResNet on digits, 20 steps) in Ray worker processes, so
pickling, the executor's bookkeeping and the screen -> evaluate hand-off are
exercised as in production. Store on SQLite: the runner on PostgreSQL is in
test_search_runner.py.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from db import CandidateStatus, EventKind, SearchStatus, Store
from evonorm_search.config import load_config
from evonorm_search.runner import SearchRunner
from evonorm_search.summary import evaluated, pareto_front
from workers.executors import RayExecutor

BUDGET = 6


@pytest.fixture
def ray_executor() -> Iterator[RayExecutor]:
    pytest.importorskip("ray")
    ex = RayExecutor(local_cpus=2, num_cpus=1)
    try:
        yield ex
    finally:
        ex.close()


def test_short_real_search_on_ray(tmp_path: Path, ray_executor: RayExecutor) -> None:
    store = Store(str(tmp_path / "ray.db"))
    cfg = load_config(None, {
        "name": "ray-smoke", "budget": BUDGET, "population_size": 3, "tournament_size": 2, "in_flight": 2,
        # BN-ReLU seeds the population, so the front cannot come out empty by bad luck
        "seed_with_zoo": ["bn_relu"],
        "tasks": [{"backbone": "resnet", "task": "digits", "steps": 20,
                   "backbone_kwargs": {"widths": [8, 8, 8]}}],
        # the quality stage's short run would be as long as the training here; stability stays on
        "rejection": {"stability_steps": 5, "quality": False},
        # one rung: one 20-step run per candidate (the funnel's climbs are tested on fakes)
        "rungs": [{"steps_frac": 1, "seeds": 1}],
        "timeout_s": 300,
    })
    sid = store.create_search(cfg.name, cfg.model_dump(mode="json"), seed=cfg.seed).id
    result = SearchRunner(store, sid, ray_executor).run()

    assert result.status is SearchStatus.FINISHED, result.error
    rows = store.list_candidates(sid, limit=None)
    assert len(rows) == BUDGET == result.num_candidates
    assert all(c.status in (CandidateStatus.EVALUATED, CandidateStatus.REJECTED) for c in rows)
    assert result.num_evaluated + result.num_rejected == BUDGET
    # exactly once: one finish event per candidate, and training evaluations only on originals
    finished = Counter(e.candidate_id for e in store.events_after(0, search_id=sid, limit=1000)
                       if e.kind == EventKind.CANDIDATE_FINISHED)
    assert finished == Counter({c.id: 1 for c in rows})
    evals = store.evaluations_for_candidates([c.id for c in rows])
    for c in rows:
        trained = c.status is CandidateStatus.EVALUATED and c.reused_from is None
        assert len(evals.get(c.id, [])) == (1 if trained else 0), c
        if trained:
            [ev] = evals[c.id]
            assert ev.backbone == "resnet" and ev.task == "digits" and ev.metrics["steps"] == 20
            assert ev.worker  # set by the Ray worker that trained it
            assert (ev.rung, ev.seed, c.rung, c.verified) == (0, cfg.seed, 0, True)
    originals = [c.fingerprint for c in rows if c.fingerprint and c.reused_from is None]
    assert len(originals) == len(set(originals))
    # no executor failure (a job that raised, timed out, or lost its worker): the runner records
    # those as worker-stage rejections whose reason starts with the failure kind
    failures = ("timeout:", "worker_died:", "oom:", "error:")
    assert not [c for c in rows
                if c.rejection_stage == "worker" and (c.rejection_reason or "").startswith(failures)]
    front = pareto_front(evaluated(store, sid), cfg.maximise)
    assert front, "the front is empty"
    assert all(0.0 < m.objectives[0] <= 1.0 for m in front)
    store.close()

"""The funnel's columns: runs with rung/seed/steps, estimates, rungs climbed with record_rung."""

from __future__ import annotations

import json

import pytest

from db import (
    CandidateOutcome,
    CandidateStatus,
    Estimate,
    EventKind,
    NewCandidate,
    NewEvaluation,
    RungOutcome,
    StoreError,
)

GRAPH = json.dumps({"schema": "evonorm-graph/1", "nodes": [{"op": "neg", "inputs": [0]}]})


def _search(store, n: int = 2) -> tuple[int, list[int]]:
    search = store.create_search("funnel", {})
    added = store.add_candidates(search.id, [NewCandidate(GRAPH, f"h{i}") for i in range(n)])
    return search.id, [c.id for c in added]


def _run(seed: int, rung: int, acc: float, steps: int = 100) -> NewEvaluation:
    return NewEvaluation("mobilenet", "shapes32", {"accuracy": acc}, wall_s=1.0, worker="w", rung=rung,
                         seed=seed, steps=steps)


def test_rung0_result_keeps_runs_estimates_and_rung(store):
    _, (cid, _) = _search(store)
    est = Estimate(0.5, 0.1, 2)
    rec = store.finish_candidates([CandidateOutcome(
        cid, CandidateStatus.EVALUATED, objectives=[0.5], evaluations=[_run(0, 0, 0.4), _run(1, 0, 0.6)],
        rung=0, estimates=[est])])[0]
    assert (rec.rung, rec.estimates, rec.verified) == (0, (est,), False)
    again = store.get_candidate(cid)
    assert (again.rung, again.estimates, again.verified) == (0, (est,), False)
    runs = store.evaluations_for(cid)
    assert [(r.rung, r.seed, r.steps, r.metrics["accuracy"]) for r in runs] == [(0, 0, 100, 0.4),
                                                                                 (0, 1, 100, 0.6)]


def test_record_rung_climbs_once_and_logs_an_event(store):
    sid, (cid, _) = _search(store)
    store.finish_candidates([CandidateOutcome(cid, CandidateStatus.EVALUATED, objectives=[0.5], rung=0,
                                              estimates=[Estimate(0.5, None, 1)],
                                              evaluations=[_run(0, 0, 0.5)])])
    up = RungOutcome(cid, 1, objectives=[0.7], estimates=[Estimate(0.7, 0.05, 3)],
                     evaluations=[_run(s, 1, 0.7, 300) for s in range(3)], verified=True)
    rec = store.record_rung(up)
    assert (rec.rung, rec.objectives, rec.verified) == (1, (0.7,), True)
    # a repeat (after a lost COMMIT, say) changes nothing and adds no runs
    assert store.record_rung(up).rung == 1
    assert len(store.evaluations_for(cid)) == 4
    promoted = [e for e in store.events_after(0, search_id=sid) if e.kind == EventKind.CANDIDATE_PROMOTED]
    assert len(promoted) == 1 and promoted[0].payload["rung"] == 1 and promoted[0].payload["verified"]
    assert promoted[0].payload["estimates"] == [{"mean": 0.7, "stderr": 0.05, "n": 3}]


def test_only_an_evaluated_original_climbs(store):
    _, (pending, rejected) = _search(store)
    store.finish_candidates([CandidateOutcome(rejected, CandidateStatus.REJECTED, rejection_stage="quality")])
    for cid in (pending, rejected):
        with pytest.raises(StoreError, match="only an evaluated original"):
            store.record_rung(RungOutcome(cid, 1, [0.5], [Estimate(0.5, None, 1)]))
    assert store.evaluations_for(rejected) == []


@pytest.mark.parametrize("bad", [
    dict(objectives=[0.5, 0.6], estimates=[Estimate(0.5, None, 1)]),
    dict(objectives=[0.5], estimates=[Estimate(float("nan"), None, 1)]),
    dict(objectives=[0.5], estimates=[Estimate(0.5, None, 0)]),
])
def test_estimates_are_validated_at_the_caller(bad):
    with pytest.raises(ValueError, match="estimate"):
        CandidateOutcome(1, CandidateStatus.EVALUATED, **bad)
    with pytest.raises(ValueError, match="estimate"):
        RungOutcome(1, 1, **bad)

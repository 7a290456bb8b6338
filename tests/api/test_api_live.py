"""The incremental front (`evonorm_search.live`): equal to a full recomputation, independent of reads."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from db import CandidateOutcome, CandidateStatus, NewCandidate, Store
from evonorm_search import live
from evonorm_search.live import FrontTracker, LiveFronts
from evonorm_search.pareto import hypervolume, nondominated

Points = dict[int, tuple[float, ...]]


def seed_store(path: Path, n: int, maximise: list[bool], rng: random.Random) -> tuple[Store, int, Points]:
    store = Store(str(path))
    sid = store.create_search("live", {"tasks": []}).id
    rows = store.add_candidates(sid, [NewCandidate('{"nodes": []}', f"h{i}") for i in range(n)])
    points: Points = {}
    outcomes = []
    order = list(rows)
    rng.shuffle(order)                     # candidates finish in any order, not by id
    for c in order:
        if rng.random() < 0.25:
            stage = rng.choice(["a", "b"])
            outcomes.append(CandidateOutcome(c.id, CandidateStatus.REJECTED, rejection_stage=stage))
            continue
        p = tuple(round(rng.random(), 2) if m else round(rng.uniform(0.5, 3), 2) for m in maximise)
        points[c.id] = p
        outcomes.append(CandidateOutcome(c.id, CandidateStatus.EVALUATED, objectives=p))
    for k in range(0, len(outcomes), 37):
        store.finish_candidates(outcomes[k:k + 37])
    return store, sid, points


@pytest.mark.parametrize("maximise", [[True, True], [True, True, False]])
def test_front_equals_full_recomputation_and_ignores_read_timing(tmp_path: Path, maximise: list[bool]) -> None:
    rng = random.Random(3)
    store, sid, points = seed_store(tmp_path / "live.db", 600, maximise, rng)
    once = FrontTracker(sid, maximise).update(store)
    ids = list(points)
    expected = {ids[i] for i in nondominated([points[i] for i in ids], maximise)}
    assert {m.candidate_id for m in once.members} == expected
    assert once.hypervolume == pytest.approx(hypervolume([points[i] for i in expected], maximise))
    assert once.evaluated == len(points) and once.finished == 600
    assert sum(once.by_stage.values()) == once.rejected == 600 - len(points)
    hv = [h.hypervolume for h in once.history]
    assert hv == sorted(hv) and once.history[-1].finished == 600

    # the same events read in small pieces (as a dashboard polling a live search would) give the same history
    old = live.EVENT_BATCH
    live.EVENT_BATCH = 7
    try:
        piecewise = FrontTracker(sid, maximise)
        snap = piecewise.update(store)
    finally:
        live.EVENT_BATCH = old
    assert snap.history == once.history and snap.members == once.members

    cache = LiveFronts(store, max_searches=1)
    assert cache.snapshot(sid, maximise).members == once.members
    store.close()

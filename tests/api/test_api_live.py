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


def test_a_climb_moves_a_point_and_the_front_is_rebuilt(tmp_path: Path) -> None:
    """A member re-estimated lower at a higher rung leaves the front, and what it dominated comes back;
    the verified front is the verified points alone."""
    from db import Estimate, RungOutcome

    maximise = [True, True]
    store = Store(str(tmp_path / "climb.db"))
    sid = store.create_search("live", {"tasks": []}).id
    a, b, c = store.add_candidates(sid, [NewCandidate('{"nodes": []}', f"h{i}") for i in range(3)])
    one = (Estimate(0.9, None, 1), Estimate(0.9, None, 1))
    store.finish_candidates([
        CandidateOutcome(a.id, CandidateStatus.EVALUATED, objectives=(0.9, 0.9), rung=0, estimates=one),
        CandidateOutcome(b.id, CandidateStatus.EVALUATED, objectives=(0.5, 0.6), rung=0,
                         estimates=(Estimate(0.5, None, 1), Estimate(0.6, None, 1))),
        CandidateOutcome(c.id, CandidateStatus.EVALUATED, objectives=(0.4, 0.7), rung=0,
                         estimates=(Estimate(0.4, None, 1), Estimate(0.7, None, 1)))])
    tracker = FrontTracker(sid, maximise)
    first = tracker.update(store)
    assert [m.candidate_id for m in first.members] == [a.id] and first.verified_members == ()
    # a's estimate at the top rung (3 seeds) is much lower: b and c are back; a is verified
    store.record_rung(RungOutcome(a.id, 2, (0.45, 0.5), (Estimate(0.45, 0.01, 3), Estimate(0.5, 0.02, 3)),
                                  verified=True))
    after = tracker.update(store)
    assert {m.candidate_id for m in after.members} == {b.id, c.id}
    assert [(m.candidate_id, m.objectives) for m in after.verified_members] == [(a.id, (0.45, 0.5))]
    assert after.hypervolume == pytest.approx(hypervolume([(0.5, 0.6), (0.4, 0.7)], maximise))
    # a tracker that reads everything at once agrees
    assert FrontTracker(sid, maximise).update(store).members == after.members
    store.close()

"""Candidates: adding, structural duplicates, finishing, lookups, listing and counts."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from db import (
    CandidateOutcome,
    CandidateStatus,
    EventKind,
    NewCandidate,
    NewEvaluation,
    NotFoundError,
)

C = CandidateStatus
HYPOTHESIS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Text PostgreSQL can store: no NUL, no lone surrogates.
safe_text = st.text(alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=40)


def new(h: str, **kw) -> NewCandidate:
    graph = json.dumps({"schema": "evonorm-graph/1", "nodes": [{"op": "neg", "inputs": [0]}]})
    return NewCandidate(graph=graph, structural_hash=h, **kw)


def seeded(store, n: int, name: str = "s", **kw) -> tuple[int, list[int]]:
    search = store.create_search(name, {})
    added = store.add_candidates(search.id, [new(f"{name}-h{i}", **kw) for i in range(n)])
    return search.id, [c.id for c in added]


def evaluated(cid: int, *objectives: float, **kw) -> CandidateOutcome:
    return CandidateOutcome(cid, C.EVALUATED, objectives=objectives or (0.5,), **kw)


def rejected(cid: int, stage: str = "static", reason: str | None = "no x", **kw):
    return CandidateOutcome(cid, C.REJECTED, rejection_stage=stage, rejection_reason=reason, **kw)


# -- adding --------------------------------------------------------------------


def test_add_round_trip(store):
    search = store.create_search("s", {})
    [rec] = store.add_candidates(
        search.id,
        [new("abc", parent_ids=[3, 1], mutation="insert sigmoid at 5", generation=4, fingerprint="fp")],
    )
    assert rec.search_id == search.id
    assert rec.structural_hash == "abc"
    assert rec.parent_ids == (3, 1)
    assert rec.mutation == "insert sigmoid at 5"
    assert rec.generation == 4
    assert rec.fingerprint == "fp"
    assert rec.status is C.PENDING and not rec.finished
    assert rec.objectives is None and rec.reused_from is None
    assert rec.rejection_stage is None and rec.rejection_reason is None
    assert rec.created_at == rec.updated_at
    assert store.get_candidate(rec.id) == rec
    assert store.get_search(search.id).num_candidates == 1


@HYPOTHESIS
@given(
    graph=safe_text,
    mutation=st.none() | safe_text,
    generation=st.integers(0, 2**31 - 1),
    parents=st.lists(st.integers(1, 2**53), max_size=5),
)
def test_add_round_trips_arbitrary_values(store, graph, mutation, generation, parents):
    search = store.create_search("s", {})
    [rec] = store.add_candidates(
        search.id,
        [NewCandidate(graph, "h", parent_ids=parents, mutation=mutation, generation=generation)],
    )
    assert (rec.graph, rec.mutation, rec.generation, rec.parent_ids) == (
        graph,
        mutation,
        generation,
        tuple(parents),
    )
    assert store.get_candidate(rec.id) == rec


def test_structural_duplicates_are_skipped(store):
    search = store.create_search("s", {})
    first = store.add_candidates(search.id, [new("a"), new("b"), new("a")])
    assert [c.structural_hash for c in first] == ["a", "b"]  # in-batch duplicate skipped
    second = store.add_candidates(search.id, [new("b"), new("c"), new("a"), new("d")])
    assert [c.structural_hash for c in second] == ["c", "d"]  # stored ones skipped
    assert store.add_candidates(search.id, [new("a")]) == []
    assert store.get_search(search.id).num_candidates == 4
    existing = store.find_by_hashes(search.id, ["a", "b", "zzz"])
    assert {h: c.id for h, c in existing.items()} == {"a": first[0].id, "b": first[1].id}
    assert store.find_by_hash(search.id, "c") == second[0]
    assert store.find_by_hash(search.id, "zzz") is None
    added = [
        e.payload for e in store.events_after(0, search_id=search.id) if e.kind == EventKind.CANDIDATES_ADDED
    ]
    assert added == [
        {"ids": [c.id for c in first], "skipped": 1},
        {"ids": [c.id for c in second], "skipped": 2},
    ]


def test_same_hash_in_another_search_is_a_new_candidate(store):
    a = store.create_search("a", {})
    b = store.create_search("b", {})
    [ca] = store.add_candidates(a.id, [new("same")])
    [cb] = store.add_candidates(b.id, [new("same")])
    assert ca.id != cb.id


def test_add_to_unknown_search(store):
    with pytest.raises(NotFoundError):
        store.add_candidates(999, [new("a")])


def test_large_batches_cross_the_in_chunk_size(store):
    search_id, ids = seeded(store, 1200)
    assert len(ids) == 1200 == len(set(ids))
    again = store.add_candidates(search_id, [new(f"s-h{i}") for i in range(1300)])
    assert len(again) == 100
    assert len(store.find_by_hashes(search_id, [f"s-h{i}" for i in range(1300)])) == 1300
    assert store.mark_evaluating(ids) == sorted(ids)


# -- evaluating and finishing ----------------------------------------------------


def test_mark_evaluating_moves_only_pending(store):
    search_id, ids = seeded(store, 4)
    assert store.mark_evaluating([ids[0], ids[1], 10**9]) == [ids[0], ids[1]]
    assert store.mark_evaluating([ids[0], ids[2]]) == [ids[2]]
    store.finish_candidates([rejected(ids[3])])
    assert store.mark_evaluating([ids[3]]) == []
    assert store.get_candidate(ids[0]).status is C.EVALUATING
    assert store.reset_evaluating(search_id) == [ids[0], ids[1], ids[2]]
    assert store.count_by_status(search_id)[C.PENDING] == 3


def test_finish_writes_candidate_evaluations_counters_and_event(store):
    search_id, ids = seeded(store, 2)
    store.mark_evaluating(ids)
    evals = [
        NewEvaluation(
            "resnet20", "cifar10", {"accuracy": 0.91, "loss": 0.3, "params": 12}, wall_s=1.5, worker="w1"
        ),
        NewEvaluation("mobilenet", "cifar10", {"accuracy": 0.88}, wall_s=2.0),
    ]
    done = store.finish_candidate(
        ids[0], status="evaluated", objectives=[0.91, 0.88], evaluations=evals, fingerprint="fp-1"
    )
    assert done.status is C.EVALUATED and done.finished
    assert done.objectives == (0.91, 0.88)
    assert done.fingerprint == "fp-1"
    assert done.updated_at > done.created_at
    assert store.get_candidate(ids[0]) == done

    got = store.evaluations_for(ids[0])
    assert [(e.backbone, e.task, e.metrics, e.wall_s, e.worker) for e in got] == [
        ("resnet20", "cifar10", {"accuracy": 0.91, "loss": 0.3, "params": 12}, 1.5, "w1"),
        ("mobilenet", "cifar10", {"accuracy": 0.88}, 2.0, None),
    ]
    assert all(e.candidate_id == ids[0] for e in got)

    bad = store.finish_candidate(
        ids[1], status=C.REJECTED, rejection_stage="nan-check", rejection_reason="output has NaN"
    )
    assert (bad.rejection_stage, bad.rejection_reason, bad.objectives) == ("nan-check", "output has NaN", None)
    search = store.get_search(search_id)
    assert (search.num_candidates, search.num_evaluated, search.num_rejected) == (2, 1, 1)
    finished = [e for e in store.events_after(0, search_id=search_id) if e.kind == EventKind.CANDIDATE_FINISHED]
    assert [(e.candidate_id, e.payload["status"]) for e in finished] == [
        (ids[0], "evaluated"),
        (ids[1], "rejected"),
    ]
    assert finished[0].payload["objectives"] == [0.91, 0.88]


def test_finish_is_idempotent_first_result_wins(store):
    search_id, ids = seeded(store, 1)
    evals = [NewEvaluation("resnet20", "cifar10", {"accuracy": 0.9})]
    first = store.finish_candidate(ids[0], status="evaluated", objectives=[0.9], evaluations=evals)
    again = store.finish_candidate(ids[0], status="evaluated", objectives=[0.9], evaluations=evals)
    other = store.finish_candidate(ids[0], status="rejected", rejection_stage="late", evaluations=evals)
    assert first == again == other == store.get_candidate(ids[0])
    assert len(store.evaluations_for(ids[0])) == 1
    search = store.get_search(search_id)
    assert (search.num_evaluated, search.num_rejected) == (1, 0)
    kinds = [e.kind for e in store.events_after(0, search_id=search_id)]
    assert kinds.count(EventKind.CANDIDATE_FINISHED) == 1


def test_finish_batch_with_repeated_id_applies_the_first(store):
    _, ids = seeded(store, 2)
    ev = [NewEvaluation("b", "t", {"accuracy": 1.0})]
    out = store.finish_candidates(
        [evaluated(ids[0], 0.1, evaluations=ev), rejected(ids[1]), evaluated(ids[0], 0.2, evaluations=ev)]
    )
    assert [o.id for o in out] == [ids[0], ids[1], ids[0]]
    assert out[0] == out[2] and out[0].objectives == (0.1,)
    assert len(store.evaluations_for(ids[0])) == 1


def test_finish_with_an_unknown_id_writes_nothing(store):
    search_id, ids = seeded(store, 1)
    with pytest.raises(NotFoundError, match="999999"):
        store.finish_candidates([evaluated(ids[0]), evaluated(999999)])
    assert store.get_candidate(ids[0]).status is C.PENDING
    assert store.get_search(search_id).num_evaluated == 0


def test_outcome_validation():
    with pytest.raises(ValueError, match="needs objectives"):
        CandidateOutcome(1, C.EVALUATED)
    with pytest.raises(ValueError, match="no rejection"):
        CandidateOutcome(1, C.EVALUATED, objectives=[1.0], rejection_stage="x")
    with pytest.raises(ValueError, match="rejection_stage"):
        CandidateOutcome(1, C.REJECTED)
    with pytest.raises(ValueError, match="finite"):
        CandidateOutcome(1, C.EVALUATED, objectives=[float("nan")])
    with pytest.raises(ValueError, match="evaluated or rejected"):
        CandidateOutcome(1, C.EVALUATING)
    with pytest.raises(ValueError):
        CandidateOutcome(1, "done")  # type: ignore[arg-type]
    # A rejection after measuring may keep its objectives.
    assert CandidateOutcome(1, "rejected", objectives=[1], rejection_stage="proxy").objectives == (1.0,)


def test_non_finite_metrics_are_stored_as_null(store):
    _, ids = seeded(store, 1)
    store.finish_candidate(
        ids[0],
        status="evaluated",
        objectives=[0.0],
        evaluations=[NewEvaluation("b", "t", {"loss": float("nan"), "curve": [1.0, float("-inf")]})],
    )
    [ev] = store.evaluations_for(ids[0])
    assert ev.metrics == {"loss": None, "curve": [1.0, None]}


def test_reuse_and_fingerprint_lookup(store):
    a_id, a = seeded(store, 3, name="a")
    b_id, b = seeded(store, 2, name="b")
    assert store.find_by_fingerprint("fp") is None
    # a[0] is only pending with fp: not a reusable result yet.
    store.finish_candidates([rejected(a[1], fingerprint="fp")])
    store.finish_candidates([evaluated(b[0], 0.7, fingerprint="fp")])
    store.finish_candidates([evaluated(a[2], 0.7, fingerprint="fp")])
    store.finish_candidates([evaluated(b[1], 0.7, fingerprint="fp", reused_from=b[0])])

    assert a[2] < b[0]
    assert store.find_by_fingerprint("fp").id == a[2]  # lowest evaluated id, any search
    assert store.find_by_fingerprint("fp", search_id=a_id).id == a[2]
    assert store.find_by_fingerprint("fp", search_id=b_id).id == b[0]
    assert store.find_by_fingerprint("fp", status=C.REJECTED).id == a[1]
    assert store.find_by_fingerprint("fp", status=[C.REJECTED, C.EVALUATED]).id == a[1]
    assert store.find_by_fingerprint("other") is None
    reused = store.get_candidate(b[1])
    assert reused.reused_from == b[0] and reused.fingerprint == "fp"
    assert store.evaluations_for(b[1]) == []


# -- listing, cursors, counts ----------------------------------------------------------


def test_list_filters_and_orders(store):
    search = store.create_search("s", {})
    recs = store.add_candidates(search.id, [new(f"h{i}", generation=i % 3) for i in range(9)])
    ids = [r.id for r in recs]
    store.finish_candidates(
        [
            evaluated(ids[0]),
            rejected(ids[1], "static"),
            rejected(ids[2], "nan"),
            rejected(ids[3], "static"),
        ]
    )
    store.mark_evaluating([ids[4]])

    def listed(**kw) -> list[int]:
        return [c.id for c in store.list_candidates(search.id, limit=None, **kw)]

    assert listed() == ids
    assert listed(status="rejected") == [ids[1], ids[2], ids[3]]
    assert listed(status=[C.EVALUATED, C.EVALUATING]) == [ids[0], ids[4]]
    assert listed(status=C.REJECTED, rejection_stage="static") == [ids[1], ids[3]]
    assert listed(after_id=ids[6]) == ids[7:]
    assert listed(descending=True) == ids[::-1]
    by_gen = sorted(ids, key=lambda i: (ids.index(i) % 3, i))
    assert listed(order_by="generation") == by_gen
    assert listed(order_by="generation", descending=True) == by_gen[::-1]
    assert [c.id for c in store.list_candidates(search.id, limit=2, offset=3)] == ids[3:5]
    assert [c.id for c in store.candidates_by_status(search.id, ["pending"])] == ids[5:]
    assert [c.id for c in store.candidates_by_status(search.id, "pending", limit=2)] == ids[5:7]
    with pytest.raises(ValueError):
        store.list_candidates(search.id, order_by="objectives")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        store.list_candidates(search.id, offset=-1)


@HYPOTHESIS
@given(
    n=st.integers(0, 40),
    page=st.integers(1, 15),
    order_by=st.sampled_from(["id", "generation", "created_at", "updated_at"]),
    descending=st.booleans(),
    generations=st.lists(st.integers(0, 3), min_size=40, max_size=40),
)
def test_paging_covers_every_row_exactly_once(store, n, page, order_by, descending, generations):
    search = store.create_search("page", {})
    # Several batches so created_at has ties and distinct values.
    for start in range(0, n, 7):
        store.add_candidates(
            search.id, [new(f"h{i}", generation=generations[i]) for i in range(start, min(n, start + 7))]
        )
    expected = [c.id for c in store.list_candidates(search.id, limit=None)]
    seen: list[int] = []
    offset = 0
    while True:
        rows = store.list_candidates(
            search.id, order_by=order_by, descending=descending, limit=page, offset=offset
        )
        seen.extend(r.id for r in rows)
        if len(rows) < page:
            break
        offset += page
    assert sorted(seen) == sorted(expected) and len(seen) == n
    # and the concatenation is the unpaged order
    whole = store.list_candidates(search.id, order_by=order_by, descending=descending, limit=None)
    assert seen == [r.id for r in whole]


@HYPOTHESIS
@given(batches=st.lists(st.integers(0, 12), min_size=1, max_size=8), page=st.integers(1, 10))
def test_after_id_cursor_returns_only_new_rows_in_order(store, batches, page):
    search = store.create_search("cursor", {})
    cursor = 0
    seen: list[int] = []
    inserted: list[int] = []
    for b, size in enumerate(batches):
        added = store.add_candidates(search.id, [new(f"{b}-{i}") for i in range(size)])
        inserted.extend(c.id for c in added)
        while rows := store.list_candidates(search.id, after_id=cursor, limit=page):
            assert all(r.id > cursor for r in rows)
            seen.extend(r.id for r in rows)
            cursor = rows[-1].id
    assert seen == inserted == sorted(inserted)


def test_counts(store):
    search_id, ids = seeded(store, 8)
    _, other = seeded(store, 2, name="other")  # must not leak into the counts
    store.finish_candidates([rejected(other[0], "static")])
    assert store.count_by_status(search_id) == {C.PENDING: 8, C.EVALUATING: 0, C.REJECTED: 0, C.EVALUATED: 0}
    assert store.count_by_rejection_stage(search_id) == {}
    store.mark_evaluating(ids[:6])
    store.finish_candidates(
        [
            evaluated(ids[0]),
            evaluated(ids[1]),
            rejected(ids[2], "static"),
            rejected(ids[3], "nan"),
            rejected(ids[4], "static"),
        ]
    )
    assert store.count_by_status(search_id) == {C.PENDING: 2, C.EVALUATING: 1, C.REJECTED: 3, C.EVALUATED: 2}
    assert store.count_by_rejection_stage(search_id) == {"nan": 1, "static": 2}
    search = store.get_search(search_id)
    assert (search.num_candidates, search.num_evaluated, search.num_rejected) == (8, 2, 3)


def test_evaluations_for_many_candidates(store):
    _, ids = seeded(store, 3)
    store.finish_candidates(
        [
            evaluated(
                ids[0], evaluations=[NewEvaluation("a", "t", {"i": 0}), NewEvaluation("b", "t", {"i": 1})]
            ),
            evaluated(ids[2], evaluations=[NewEvaluation("a", "t", {"i": 2})]),
        ]
    )
    found = store.evaluations_for_candidates([*ids, 424242])
    assert sorted(found) == [ids[0], ids[2]]
    assert [e.metrics["i"] for e in found[ids[0]]] == [0, 1]
    assert store.evaluations_for(ids[1]) == []

"""Rerank results: the final re-training table."""

from __future__ import annotations

import pytest

from db import EventKind, NewCandidate, NewRerankResult, NewRerankTrial, NotFoundError


def test_add_and_list(store):
    search = store.create_search("s", {})
    [cand] = store.add_candidates(search.id, [NewCandidate("{}", "h")])
    added = store.add_rerank_results(
        search.id,
        [
            NewRerankResult("resnet56", {"accuracy": 0.94, "epochs": 200}, candidate_id=cand.id),
            NewRerankResult("resnet56", {"accuracy": 0.93}, zoo_layer="bn_relu"),
        ],
    )
    assert [(r.candidate_id, r.zoo_layer) for r in added] == [(cand.id, None), (None, "bn_relu")]
    assert added[0].metrics == {"accuracy": 0.94, "epochs": 200}
    assert store.rerank_results(search.id) == added
    assert store.rerank_results(search.id + 1) == []
    assert store.add_rerank_results(search.id, []) == []
    events = store.events_after(0, search_id=search.id)
    assert events[-1].kind == EventKind.RERANK_ADDED
    assert events[-1].payload == {"ids": [r.id for r in added]}


def test_candidate_must_belong_to_the_search(store):
    a = store.create_search("a", {})
    b = store.create_search("b", {})
    [cand] = store.add_candidates(a.id, [NewCandidate("{}", "h")])
    with pytest.raises(NotFoundError):
        store.add_rerank_results(b.id, [NewRerankResult("r", {}, candidate_id=cand.id)])
    with pytest.raises(NotFoundError):
        store.add_rerank_results(999, [NewRerankResult("r", {}, zoo_layer="bn")])
    assert store.rerank_results(b.id) == []


def test_exactly_one_of_candidate_and_zoo_layer():
    with pytest.raises(ValueError):
        NewRerankResult("r", {})
    with pytest.raises(ValueError):
        NewRerankResult("r", {}, candidate_id=1, zoo_layer="bn")


def test_records_are_frozen_and_metrics_round_trip(store):
    """The rows `evonorm_search.rerank` writes: nested JSON with nulls, read back equal, in id order."""
    search = store.create_search("s", {})
    [cand] = store.add_candidates(search.id, [NewCandidate("{}", "h")])
    metrics = {
        "run": "abc", "accuracy": None, "accuracy_std": None, "accuracies": [], "lr": None,
        "complete": False, "sweep": {"0.05": {"mean": 0.5, "finished": 1, "trials": 2}, "0.1": {"mean": None}},
        "seeds": [0, 1], "errors": [], "search_accuracy": 0.875, "formula": "max(x, 0) / std_batch(x)",
    }
    first = store.add_rerank_results(
        search.id, [NewRerankResult("resnet:digits", metrics, candidate_id=cand.id)]
    )
    second = store.add_rerank_results(
        search.id, [NewRerankResult("transformer:pydoc_chars", {"accuracy": 0.5}, zoo_layer="layernorm")]
    )
    rows = store.rerank_results(search.id)
    assert rows == first + second and [r.id for r in rows] == sorted(r.id for r in rows)
    assert rows[0].metrics == metrics and rows[0].backbone == "resnet:digits"
    with pytest.raises(AttributeError):
        rows[0].backbone = "x"


def test_results_stay_with_their_search(store):
    a = store.create_search("a", {})
    b = store.create_search("b", {})
    store.add_rerank_results(a.id, [NewRerankResult("r", {"accuracy": 0.1}, zoo_layer="bn_relu")])
    store.add_rerank_results(b.id, [NewRerankResult("r", {"accuracy": 0.2}, zoo_layer="bn_relu")])
    assert [r.metrics["accuracy"] for r in store.rerank_results(a.id)] == [0.1]
    assert [r.metrics["accuracy"] for r in store.rerank_results(b.id)] == [0.2]


def test_trials_are_put_one_by_one_and_a_key_is_replaced(store):
    """What an interrupted re-ranking keeps: each finished trial is its own row, written as it ends."""
    search = store.create_search("s", {})
    other = store.create_search("o", {})
    [cand] = store.add_candidates(search.id, [NewCandidate("{}", "h")])
    done = {"accuracy": 0.5, "final": True}
    first = store.put_rerank_trial(search.id, NewRerankTrial("k1", "resnet:digits", done, candidate_id=cand.id))
    second = store.put_rerank_trial(search.id, NewRerankTrial("k2", "resnet:digits", {"accuracy": None},
                                                              zoo_layer="bn_relu"))
    assert first.key == "k1" and first.candidate_id == cand.id and first.metrics["final"] is True
    assert store.rerank_trials(search.id) == [first, second]
    # the same key again (a trial that errored, run again): one row, the new one
    again = store.put_rerank_trial(search.id, NewRerankTrial("k2", "resnet:digits", {"accuracy": 0.7},
                                                             zoo_layer="bn_relu"))
    assert store.rerank_trials(search.id) == [first, again] and again.metrics == {"accuracy": 0.7}
    # keys are per search; a candidate of another search is refused
    store.put_rerank_trial(other.id, NewRerankTrial("k1", "resnet:digits", {}, zoo_layer="bn_relu"))
    assert len(store.rerank_trials(search.id)) == 2 and len(store.rerank_trials(other.id)) == 1
    with pytest.raises(NotFoundError):
        store.put_rerank_trial(other.id, NewRerankTrial("k9", "resnet:digits", {}, candidate_id=cand.id))
    with pytest.raises(NotFoundError):
        store.put_rerank_trial(999, NewRerankTrial("k9", "resnet:digits", {}, zoo_layer="bn_relu"))
    with pytest.raises(ValueError):
        NewRerankTrial("k", "o", {})
    with pytest.raises(ValueError):
        NewRerankTrial("", "o", {}, zoo_layer="bn_relu")

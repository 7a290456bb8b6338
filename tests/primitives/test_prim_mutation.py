"""Random graphs and mutations: seeded, valid, always a change, and batch-independent on request."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from primitives import MAX_NODES, Graph, structural_hash
from primitives.mutation import mutate, random_graph
from primitives.ops import INPUT_NAMES, NUM_INPUTS, get_op
from primitives.zoo import ZOO

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SEEDS = st.integers(0, 2**32 - 1)


def _lineage(seed: int, steps: int = 8, *, batch_independent: bool = False) -> list[tuple[str, str, str]]:
    """(graph json, mutation kind, description) of a seeded chain of mutations."""
    rng = random.Random(seed)
    g = random_graph(rng, batch_independent=batch_independent)
    out = [(g.dumps(), "", "")]
    for _ in range(steps):
        g, m = mutate(g, rng, batch_independent=batch_independent)
        out.append((g.dumps(), m.kind, m.description))
    return out


def _has_batch_node(g: Graph) -> bool:
    return any(get_op(n.op).batch_dependent for n in g.nodes)


@settings(max_examples=15, deadline=None)
@given(seed=SEEDS)
def test_the_seed_fixes_graphs_children_and_descriptions(seed: int) -> None:
    first = _lineage(seed)
    assert _lineage(seed) == first
    assert _lineage(seed + 1) != first


@SETTINGS
@given(seed=SEEDS)
def test_a_child_is_valid_and_differs_structurally_from_its_parent(seed: int) -> None:
    rng = random.Random(seed)
    parent = random_graph(rng)
    for _ in range(5):
        child, m = mutate(parent, rng)
        assert Graph.loads(child.dumps()) == child
        assert len(child.nodes) == len(parent.nodes) <= MAX_NODES
        assert structural_hash(child) != structural_hash(parent)
        assert m.kind in ("op", "rewire")
        assert NUM_INPUTS <= m.node <= parent.output
        assert m.description.startswith(m.kind) or "; " in m.description
        parent = child


def test_a_mutation_changes_one_node_unless_it_reports_neutral_steps() -> None:
    rng = random.Random(3)
    for _ in range(200):
        parent = random_graph(rng)
        child, m = mutate(parent, rng)
        changed = [k for k, (a, b) in enumerate(zip(parent.nodes, child.nodes, strict=True)) if a != b]
        if "; " not in m.description:
            assert changed == [m.node - NUM_INPUTS], m.description
            node = child.node(m.node)
            assert m.description.endswith(f"{node.op}({', '.join(_ref(i) for i in node.inputs)})")
        else:
            assert len(changed) >= 1


def _ref(i: int) -> str:
    return INPUT_NAMES[i] if i < NUM_INPUTS else f"n{i}"


def test_both_mutation_kinds_occur_and_rewire_keeps_the_op() -> None:
    rng = random.Random(0)
    kinds: Counter[str] = Counter()
    for _ in range(300):
        parent = random_graph(rng)
        child, m = mutate(parent, rng)
        kinds[m.kind] += 1
        if m.kind == "rewire" and "; " not in m.description:
            assert child.node(m.node).op == parent.node(m.node).op
    assert kinds["op"] > 50 and kinds["rewire"] > 50, kinds


def test_random_graphs_cover_every_size_and_many_ops() -> None:
    rng = random.Random(1)
    graphs = [random_graph(rng) for _ in range(400)]
    assert {len(g.nodes) for g in graphs} == set(range(1, MAX_NODES + 1))
    assert len({n.op for g in graphs for n in g.nodes}) == 28
    assert all(len(random_graph(rng, num_nodes=k).nodes) == k for k in (1, 5, MAX_NODES))


@SETTINGS
@given(seed=SEEDS)
def test_a_batch_independent_search_never_draws_a_batch_statistic(seed: int) -> None:
    rng = random.Random(seed)
    g = random_graph(rng, batch_independent=True)
    assert not _has_batch_node(g)
    for _ in range(10):
        g, _ = mutate(g, rng, batch_independent=True)
        assert not _has_batch_node(g)
        assert not g.batch_dependent


@SETTINGS
@given(seed=SEEDS)
def test_a_batch_independent_mutation_never_makes_a_dead_batch_node_live(seed: int) -> None:
    # a parent from elsewhere (an imported graph, a batch-dependent run) may carry dead batch nodes
    parent = Graph.build(("std_batch", ["x"]), ("mean_batch", ["x"]), ("sigmoid", ["x"]), ("mul", ["x", 6]),
                         ("std_group", ["x"]), ("div", [7, 8]))
    assert not parent.batch_dependent
    rng = random.Random(seed)
    g = parent
    for _ in range(5):
        g, _ = mutate(g, rng, batch_independent=True)
        assert not g.batch_dependent, g.live_ops()


def test_zoo_s_layers_mutate_batch_independently() -> None:
    rng = random.Random(5)
    for name in ("evonorm_s0", "evonorm_s1", "evonorm_s2", "gn_relu", "layernorm"):
        g = ZOO[name].graph
        assert g is not None and not g.batch_dependent
        for _ in range(20):
            assert not mutate(g, rng, batch_independent=True)[0].batch_dependent


def test_normalizer_moves_build_statistics_of_live_values() -> None:
    """normalize_prob=1: every child divides a live value (or x) by a statistic of it, standardizes
    it, or moves a statistic to other axes; in the paper's ops, within MAX_NODES."""
    from primitives import formula
    from primitives.ops import Kind, get_op

    rng = random.Random(7)
    kinds: Counter[str] = Counter()
    for _ in range(300):
        parent = random_graph(rng, num_nodes=rng.randint(1, 5))
        child, m = mutate(parent, rng, normalize_prob=1.0)
        kinds[m.kind] += 1
        assert Graph.loads(child.dumps()) == child and len(child.nodes) <= MAX_NODES
        assert structural_hash(child) != structural_hash(parent)
        if m.kind in ("normalize", "standardize"):
            added = len(child.nodes) - len(parent.nodes)
            assert added == (2 if m.kind == "normalize" else 5), m.description
            # the new division is live: the child uses a statistic of something
            live_stats = [i for i in child.live_ids() if i >= NUM_INPUTS
                          and get_op(child.node(i).op).kind is Kind.AGGREGATE]
            assert live_stats, (formula(parent), formula(child))
    assert kinds["normalize"] > 50 and kinds["standardize"] > 50 and kinds["axes"] > 20, kinds


def test_normalizing_x_in_the_identity_gives_a_normalizer() -> None:
    from primitives import formula

    identity = Graph.build(("add", ["x", "zero"]))
    seen = set()
    rng = random.Random(1)
    for _ in range(60):
        child, _ = mutate(identity, rng, normalize_prob=1.0)
        seen.add(formula(child))
    assert any("std_group(x)" in f and "mean_group(x)" in f for f in seen), seen   # GroupNorm's core
    assert any(f.startswith("x / rms_layer(x)") or "/ rms_layer(x)" in f for f in seen), seen   # RMSNorm's


def test_a_batch_independent_normalizer_move_never_uses_batch_axes() -> None:
    rng = random.Random(3)
    for _ in range(200):
        parent = random_graph(rng, num_nodes=3, batch_independent=True)
        child, _ = mutate(parent, rng, batch_independent=True, normalize_prob=1.0)
        assert not child.batch_dependent


def _uses_a_statistic(g: Graph) -> bool:
    from primitives.ops import Kind

    return any(i >= NUM_INPUTS and get_op(g.node(i).op).kind is Kind.AGGREGATE for i in g.live_ids())


def test_random_graphs_with_normalize_prob_use_statistics_and_stay_seeded() -> None:
    """normalize_prob=1: every draw carries a live statistic (a uniform draw often does not), fits
    MAX_NODES, and the seed still fixes the graph; normalize_prob=0 draws exactly what it drew before."""
    plain = [random_graph(random.Random(s)) for s in range(300)]
    assert plain == [random_graph(random.Random(s), normalize_prob=0.0) for s in range(300)]
    drawn = [random_graph(random.Random(s), normalize_prob=1.0) for s in range(300)]
    assert drawn == [random_graph(random.Random(s), normalize_prob=1.0) for s in range(300)]
    assert all(len(g.nodes) <= MAX_NODES and _uses_a_statistic(g) for g in drawn)
    share_plain = sum(map(_uses_a_statistic, plain)) / len(plain)
    assert share_plain < 0.9, share_plain
    half = [random_graph(random.Random(s), normalize_prob=0.5) for s in range(300)]
    assert 0.9 * share_plain < sum(map(_uses_a_statistic, half)) / 300 < 1.0


def test_batch_independent_random_graphs_with_normalize_prob_never_use_batch_axes() -> None:
    for s in range(200):
        assert not random_graph(random.Random(s), batch_independent=True, normalize_prob=1.0).batch_dependent

"""Structural identity: the canonical form and its hash (property tests over seeded random graphs)."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from primitives import MAX_NODES, Graph, Node, canonicalize, structural_hash
from primitives.canonical import subexpression_keys
from primitives.mutation import mutate, random_graph
from primitives.ops import NUM_INPUTS, OPS, get_op, op_names
from primitives.zoo import ZOO

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SEEDS = st.integers(min_value=0, max_value=2**32 - 1)


def insert_dead_node(graph: Graph, position: int, op: str, inputs: tuple[int, ...]) -> Graph:
    """`graph` with a node nobody reads inserted at index `position` (id 4 + position).

    `position` must leave the output last; later ids shift up by one and every
    reference to them is renumbered, so the live graph is unchanged.
    """
    new_id = NUM_INPUTS + position
    assert 0 <= position < len(graph.nodes), "the output must stay the last node"
    assert all(i < new_id for i in inputs) and len(inputs) == get_op(op).arity

    def shift(i: int) -> int:
        return i + 1 if i >= new_id else i

    nodes = [Node(n.op, tuple(shift(i) for i in n.inputs)) for n in graph.nodes]
    nodes.insert(position, Node(op, inputs))
    return Graph(tuple(nodes))


def swap_commutative_inputs(graph: Graph) -> Graph:
    """Every add / mul / max with its two inputs swapped."""
    return Graph(tuple(Node(n.op, n.inputs[::-1]) if get_op(n.op).commutative else n for n in graph.nodes))


def _graph_and_child(seed: int) -> tuple[Graph, Graph]:
    rng = random.Random(seed)
    parent = random_graph(rng)
    child, _ = mutate(parent, rng)
    return parent, child


# -- the helper itself ---------------------------------------------------------


def test_insert_dead_node_renumbers_later_references() -> None:
    g = Graph.build(("sigmoid", ["x"]), ("mul", ["x", 4]), ("std_group", ["x"]), ("div", [5, 6]))
    h = insert_dead_node(g, 1, "exp", (4,))
    assert h.nodes == (Node("sigmoid", (0,)), Node("exp", (4,)), Node("mul", (0, 4)),
                       Node("std_group", (0,)), Node("div", (6, 7)))
    assert 5 not in h.live_ids()
    assert h != g


# -- properties ------------------------------------------------------------------


@SETTINGS
@given(seed=SEEDS)
def test_random_and_mutated_graphs_validate_and_round_trip_with_the_same_hash(seed: int) -> None:
    for g in _graph_and_child(seed):
        assert 1 <= len(g.nodes) <= MAX_NODES
        assert Graph(g.nodes) == g  # validates again
        back = Graph.loads(g.dumps())
        assert back == g
        assert structural_hash(back) == structural_hash(g)
        assert Graph.from_json(g.to_json()) == g


@SETTINGS
@given(seed=SEEDS)
def test_hash_ignores_the_order_of_commutative_inputs(seed: int) -> None:
    for g in _graph_and_child(seed):
        swapped = swap_commutative_inputs(g)
        assert structural_hash(swapped) == structural_hash(g)
        assert canonicalize(swapped) == canonicalize(g)


@SETTINGS
@given(seed=SEEDS, data=st.data())
def test_hash_ignores_dead_nodes(seed: int, data: st.DataObject) -> None:
    rng = random.Random(seed)
    g = random_graph(rng, num_nodes=rng.randint(1, MAX_NODES - 1))
    position = data.draw(st.integers(0, len(g.nodes) - 1), label="position")
    op = data.draw(st.sampled_from(op_names()), label="op")
    new_id = NUM_INPUTS + position
    inputs = tuple(data.draw(st.integers(0, new_id - 1)) for _ in range(get_op(op).arity))
    dead = insert_dead_node(g, position, op, inputs)
    assert len(dead.nodes) == len(g.nodes) + 1
    assert structural_hash(dead) == structural_hash(g)
    assert canonicalize(dead) == canonicalize(g)


@SETTINGS
@given(seed=SEEDS)
def test_hash_sees_the_order_of_div_inputs(seed: int) -> None:
    g = random_graph(random.Random(seed))
    keys = subexpression_keys(g)
    live = g.live_ids()
    divs = [k for k, n in enumerate(g.nodes) if n.op == "div" and NUM_INPUTS + k in live
            and keys[n.inputs[0]] != keys[n.inputs[1]]]
    for k in divs:
        nodes = list(g.nodes)
        nodes[k] = Node("div", nodes[k].inputs[::-1])
        swapped = Graph(tuple(nodes))
        assert structural_hash(swapped) != structural_hash(g)


@SETTINGS
@given(seed=SEEDS)
def test_canonical_form_is_idempotent_live_and_no_larger(seed: int) -> None:
    for g in _graph_and_child(seed):
        c = canonicalize(g)
        assert canonicalize(c) == c
        assert len(c.nodes) <= len(g.live_ids() - set(range(NUM_INPUTS)))
        assert c.live_ids() >= set(range(NUM_INPUTS, NUM_INPUTS + len(c.nodes)))  # no dead node left
        assert structural_hash(c) == structural_hash(g)
        assert not Counter(c.live_ops()) - Counter(g.live_ops())  # only merges and drops, never adds


# -- examples ----------------------------------------------------------------------


def test_div_swap_changes_the_hash_and_max_swap_does_not() -> None:
    a = Graph.build(("sigmoid", ["x"]), ("div", ["x", 4]))
    b = Graph.build(("sigmoid", ["x"]), ("div", [4, "x"]))
    assert structural_hash(a) != structural_hash(b)
    c = Graph.build(("sigmoid", ["x"]), ("max", ["x", 4]))
    d = Graph.build(("sigmoid", ["x"]), ("max", [4, "x"]))
    assert structural_hash(c) == structural_hash(d)


def test_renumbering_and_repeated_subexpressions_do_not_change_the_hash() -> None:
    s0 = Graph.build(("mul", ["v1", "x"]), ("sigmoid", [4]), ("mul", ["x", 5]), ("std_group", ["x"]),
                     ("div", [6, 7]))
    reordered = Graph.build(("std_group", ["x"]), ("mul", ["x", "v1"]), ("sigmoid", [5]), ("mul", [6, "x"]),
                            ("div", [7, 4]))
    duplicated = Graph.build(("std_group", ["x"]), ("mul", ["x", "v1"]), ("std_group", ["x"]), ("sigmoid", [5]),
                             ("mul", [7, "x"]), ("div", [8, 6]))
    assert structural_hash(reordered) == structural_hash(s0)
    assert structural_hash(duplicated) == structural_hash(s0)
    assert len(canonicalize(duplicated).nodes) == 5
    # but a different statistic is a different layer
    s2 = Graph.build(("mul", ["v1", "x"]), ("sigmoid", [4]), ("mul", ["x", 5]), ("rms_group", ["x"]),
                     ("div", [6, 7]))
    assert structural_hash(s2) != structural_hash(s0)


def test_zoo_graphs_have_distinct_hashes() -> None:
    hashes = {name: structural_hash(layer.graph) for name, layer in ZOO.items() if layer.graph is not None}
    assert len(set(hashes.values())) == len(hashes)
    assert all(len(h) == 64 and int(h, 16) >= 0 for h in hashes.values())


@pytest.mark.parametrize("op", [n for n, o in OPS.items() if o.commutative])
def test_subexpression_keys_of_commutative_ops_ignore_order(op: str) -> None:
    a = Graph.build(("exp", ["x"]), (op, ["x", 4]))
    b = Graph.build(("exp", ["x"]), (op, [4, "x"]))
    assert subexpression_keys(a) == subexpression_keys(b)

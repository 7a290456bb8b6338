"""Random graphs and mutations (seeded; every graph returned validates).

Random graphs follow the paper: add nodes one at a time, each a uniformly
random op with inputs drawn uniformly from the nodes before it. Mutation is
the paper's (pick an intermediate node, give it a random op, re-draw its
inputs), plus rewiring a single input of a node. A mutation that leaves the
live graph unchanged (e.g. it hit a dead node) is kept and mutated again, so
dead nodes drift neutrally as in AutoML-Zero, until the result differs from
the parent.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from primitives.canonical import structural_hash
from primitives.graph import MAX_NODES, Graph, GraphError, Node
from primitives.ops import INPUT_NAMES, NUM_INPUTS, get_op, op_names

MAX_TRIES = 10_000


@dataclass(frozen=True)
class Mutation:
    kind: str          # "op" or "rewire"
    node: int          # id of the node changed (last one, if several neutral steps)
    description: str


def _ref(i: int) -> str:
    return INPUT_NAMES[i] if i < NUM_INPUTS else f"n{i}"


def _node_text(node: Node) -> str:
    return f"{node.op}({', '.join(_ref(i) for i in node.inputs)})"


def _random_node(rng: random.Random, node_id: int, ops: list[str]) -> Node:
    op = rng.choice(ops)
    return Node(op, tuple(rng.randrange(node_id) for _ in range(get_op(op).arity)))


def random_graph(rng: random.Random, *, num_nodes: int | None = None,
                 batch_independent: bool = False) -> Graph:
    """A uniformly random valid graph with `num_nodes` (default: 1..MAX_NODES at random)."""
    ops = op_names(batch_independent=batch_independent)
    for _ in range(MAX_TRIES):
        n = num_nodes if num_nodes is not None else rng.randint(1, MAX_NODES)
        nodes = tuple(_random_node(rng, NUM_INPUTS + k, ops) for k in range(n))
        try:
            return Graph(nodes)
        except GraphError:
            continue
    raise RuntimeError("could not draw a valid random graph")  # pragma: no cover


def _mutate_once(graph: Graph, rng: random.Random, ops: list[str],
                 rewire_prob: float) -> tuple[tuple[Node, ...], Mutation]:
    nodes = list(graph.nodes)
    k = rng.randrange(len(nodes))
    node_id = NUM_INPUTS + k
    old = nodes[k]
    if rng.random() < rewire_prob:
        slot = rng.randrange(len(old.inputs))
        inputs = list(old.inputs)
        inputs[slot] = rng.randrange(node_id)
        nodes[k] = Node(old.op, tuple(inputs))
        kind = "rewire"
    else:
        nodes[k] = _random_node(rng, node_id, ops)
        kind = "op"
    text = f"{kind} n{node_id}: {_node_text(old)} -> {_node_text(nodes[k])}"
    return tuple(nodes), Mutation(kind, node_id, text)


def mutate(graph: Graph, rng: random.Random, *, batch_independent: bool = False,
           rewire_prob: float = 0.3) -> tuple[Graph, Mutation]:
    """A valid child whose live graph differs from the parent's.

    With `batch_independent`, new nodes never use a batch statistic and a
    batch-independent parent never gets a batch-dependent child (rewiring
    could otherwise make a dead batch node live).
    """
    ops = op_names(batch_independent=batch_independent)
    parent_hash = structural_hash(graph)
    current = graph
    neutral: list[str] = []
    for _ in range(MAX_TRIES):
        nodes, mutation = _mutate_once(current, rng, ops, rewire_prob)
        try:
            child = Graph(nodes)
        except GraphError:
            continue  # the output lost x: draw again from the same graph
        if batch_independent and child.batch_dependent and not graph.batch_dependent:
            continue  # a rewire made a dead batch statistic live: draw again
        if structural_hash(child) != parent_hash:
            if neutral:
                mutation = Mutation(mutation.kind, mutation.node,
                                    "; ".join([*neutral, mutation.description]))
            return child, mutation
        neutral.append(mutation.description)
        current = child
    raise RuntimeError("could not find a mutation that changes the graph")  # pragma: no cover

"""Random graphs and mutations (seeded; every graph returned validates).

Random graphs follow the paper: add nodes one at a time, each a uniformly
random op with inputs drawn uniformly from the nodes before it. Mutation is
the paper's (pick an intermediate node, give it a random op, re-draw its
inputs), plus rewiring a single input of a node. A mutation that leaves the
live graph unchanged (e.g. it hit a dead node) is kept and mutated again, so
dead nodes drift neutrally as in AutoML-Zero, until the result differs from
the parent.

A normalizer is several nodes ("statistic of a, subtract or divide, then an
activation"), which single-node mutations rarely assemble in a small
budget. With `normalize_prob`, a mutation is instead one of three moves
that stay inside the same search space (the same ops, at most MAX_NODES
nodes; no hand-written layer enters): divide a node by a statistic of
itself (`a / std_A(a)`, `a / rms_A(a)`), standardize it
(`(a - mean_A(a)) / std_A(a)`), or move a statistic to another axis set.
The new nodes go right after `a`, and every later use of `a` reads the
normalized value instead. The same knob lets `random_graph` draw graphs that
already normalize something (one move applied to a uniformly random graph),
for an initial population, or a random search, that starts with statistics
of what it computes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from primitives.canonical import structural_hash
from primitives.graph import MAX_NODES, Graph, GraphError, Node
from primitives.ops import INPUT_NAMES, NUM_INPUTS, Axes, Kind, Stat, get_op, op_names

MAX_TRIES = 10_000


@dataclass(frozen=True)
class Mutation:
    kind: str          # "op", "rewire", "normalize", "standardize" or "axes"
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
                 batch_independent: bool = False, normalize_prob: float = 0.0) -> Graph:
    """A uniformly random valid graph with `num_nodes` (default: 1..MAX_NODES at random).

    With probability `normalize_prob` the drawn graph then gets one normalizer
    move (normalize or standardize a random live value or x; the module doc),
    redrawing until the move fits in MAX_NODES: a random graph that already
    uses a statistic of what it computes, built from the same ops.
    """
    ops = op_names(batch_independent=batch_independent)
    normalize = normalize_prob > 0 and rng.random() < normalize_prob   # 0: the paper's draw, unchanged
    for _ in range(MAX_TRIES):
        n = num_nodes if num_nodes is not None else rng.randint(1, MAX_NODES)
        nodes = tuple(_random_node(rng, NUM_INPUTS + k, ops) for k in range(n))
        try:
            graph = Graph(nodes)
            if not normalize:
                return graph
            step = _structural_once(graph, rng, batch_independent, axes_move=False)
            if step is not None:
                return Graph(step[0])
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


def _axes(batch_independent: bool) -> list[Axes]:
    return [a for a in Axes if not (batch_independent and a is Axes.BATCH)]


def _insert_after(nodes: list[Node], a: int, new: list[Node]) -> tuple[Node, ...]:
    """`new` (whose references use ids as if placed right after node id `a`) goes after `a`; later
    nodes' references shift past it, and their uses of `a` read the last new node instead."""
    pos = max(a - NUM_INPUTS + 1, 0)          # x and the other inputs: at the front
    shift = len(new)
    out_id = NUM_INPUTS + pos + shift - 1

    def moved(i: int) -> int:
        if i == a:
            return out_id
        return i + shift if i >= NUM_INPUTS + pos else i

    later = [Node(n.op, tuple(moved(i) for i in n.inputs)) for n in nodes[pos:]]
    return (*nodes[:pos], *new, *later)


def _structural_once(graph: Graph, rng: random.Random, batch_independent: bool,
                     axes_move: bool = True) -> tuple[tuple[Node, ...], Mutation] | None:
    """One of the normalizer moves (see the module doc), or None when none fits."""
    nodes = list(graph.nodes)
    stats = [k for k, n in enumerate(nodes) if get_op(n.op).kind is Kind.AGGREGATE]
    room = MAX_NODES - len(nodes)
    moves = [m for m, need in (("normalize", 2), ("standardize", 5)) if room >= need]
    if stats and axes_move:
        moves.append("axes")
    if not moves:
        return None
    move = rng.choice(moves)
    axes = _axes(batch_independent)
    if move == "axes":
        k = rng.choice(stats)
        op = get_op(nodes[k].op)
        others = [a for a in axes if a is not op.axes]
        new_op = f"{op.stat}_{rng.choice(others)}"
        old = nodes[k]
        nodes[k] = Node(new_op, old.inputs)
        return tuple(nodes), Mutation("axes", NUM_INPUTS + k,
                                      f"axes n{NUM_INPUTS + k}: {_node_text(old)} -> {_node_text(nodes[k])}")
    # a: the input x or a live intermediate node
    a = rng.choice([0, *sorted(i for i in graph.live_ids() if i >= NUM_INPUTS)])
    base = NUM_INPUTS + max(a - NUM_INPUTS + 1, 0)      # the first new node's id
    axis = rng.choice(axes)
    if move == "normalize":
        stat = rng.choice([Stat.STD, Stat.RMS])
        new = [Node(f"{stat}_{axis}", (a,)), Node("div", (a, base))]
        text = f"normalize {_ref(a)}: {_ref(a)} / {stat}_{axis}({_ref(a)})"
    else:
        new = [Node(f"mean_{axis}", (a,)), Node("neg", (base,)), Node("add", (a, base + 1)),
               Node(f"std_{axis}", (a,)), Node("div", (base + 2, base + 3))]
        text = f"standardize {_ref(a)}: ({_ref(a)} - mean_{axis}({_ref(a)})) / std_{axis}({_ref(a)})"
    return _insert_after(nodes, a, new), Mutation(move, base + len(new) - 1, text)


def mutate(graph: Graph, rng: random.Random, *, batch_independent: bool = False,
           rewire_prob: float = 0.3, normalize_prob: float = 0.0) -> tuple[Graph, Mutation]:
    """A valid child whose live graph differs from the parent's.

    With probability `normalize_prob` the step is a normalizer move (the
    module doc); otherwise the paper's op mutation, or a rewire with
    probability `rewire_prob`.

    With `batch_independent`, new nodes never use a batch statistic and a
    batch-independent parent never gets a batch-dependent child (rewiring
    could otherwise make a dead batch node live).
    """
    ops = op_names(batch_independent=batch_independent)
    parent_hash = structural_hash(graph)
    current = graph
    neutral: list[str] = []
    for _ in range(MAX_TRIES):
        step = _structural_once(current, rng, batch_independent) if rng.random() < normalize_prob else None
        nodes, mutation = step or _mutate_once(current, rng, ops, rewire_prob)
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

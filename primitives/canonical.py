"""Structural identity: a canonical form and a hash over it.

Two graphs are canonically equal when they compute the same expression DAG
up to (a) dead nodes, (b) the order of the inputs of commutative ops, (c) node
numbering and (d) repeated identical sub-expressions. The canonical form drops
dead nodes, merges identical sub-expressions, orders commutative inputs by the
content hash of their sub-expression, and renumbers nodes in post-order from
the output. Its hash is the structural hash.

Functionally equal but structurally different graphs (x*x vs square(x)) are
the job of `primitives.fingerprint`.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

from primitives.graph import Graph, Node
from primitives.ops import INPUT_NAMES, NUM_INPUTS, get_op


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def subexpression_keys(graph: Graph) -> list[str]:
    """A content hash per node id: equal iff the sub-expressions are canonically equal."""
    keys = [_digest(name) for name in INPUT_NAMES]
    for node in graph.nodes:
        child = [keys[i] for i in node.inputs]
        if get_op(node.op).commutative:
            child.sort()
        keys.append(_digest(node.op + "(" + ",".join(child) + ")"))
    return keys


@lru_cache(maxsize=65536)  # graphs are immutable; the runner hashes parents often
def canonicalize(graph: Graph) -> Graph:
    keys = subexpression_keys(graph)
    new_id: dict[str, int] = {_digest(n): i for i, n in enumerate(INPUT_NAMES)}
    out: list[Node] = []

    def visit(old: int) -> int:
        key = keys[old]
        if key in new_id:
            return new_id[key]
        node = graph.node(old)
        children = list(node.inputs)
        if get_op(node.op).commutative:
            children.sort(key=lambda i: keys[i])
        ids = tuple(visit(c) for c in children)
        out.append(Node(node.op, ids))
        new_id[key] = NUM_INPUTS + len(out) - 1
        return new_id[key]

    visit(graph.output)
    return Graph(tuple(out))


@lru_cache(maxsize=65536)
def structural_hash(graph: Graph) -> str:
    """sha256 of the canonical JSON; equal exactly for canonically equal graphs."""
    return hashlib.sha256(canonicalize(graph).dumps().encode()).hexdigest()

"""A graph as a readable one-line formula, e.g. `x * sigmoid(v1 * x) / std_group(x)`.

Shared sub-expressions are written out each time they are used, so the
formula reads as math; `add(a, neg(b))` reads `a - b` and `max(a, 0)` as
`max(a, 0)`.
"""

from __future__ import annotations

from primitives.graph import Graph
from primitives.ops import (
    INPUT_NAMES,
    NUM_INPUTS,
    PREC_ADD,
    PREC_ATOM,
    PREC_MUL,
    PREC_UNARY,
    get_op,
)

_ATOMS = {"x": "x", "zero": "0", "v0": "v0", "v1": "v1"}


def formula(graph: Graph) -> str:
    text, _ = _render(graph, graph.output)
    return text


def _render(graph: Graph, node_id: int) -> tuple[str, int]:
    if node_id < NUM_INPUTS:
        return _ATOMS[INPUT_NAMES[node_id]], PREC_ATOM
    node = graph.node(node_id)
    op = get_op(node.op)
    args = [_render(graph, i) for i in node.inputs]
    if node.op == "add":
        (a, pa), (b, pb) = args
        b_node = node.inputs[1]
        a_node = node.inputs[0]
        # a + (-b) reads a - b
        if b_node >= NUM_INPUTS and graph.node(b_node).op == "neg":
            inner, pi = _render(graph, graph.node(b_node).inputs[0])
            return f"{a} - {_wrap(inner, pi, PREC_ADD + 1)}", PREC_ADD
        if a_node >= NUM_INPUTS and graph.node(a_node).op == "neg":
            inner, pi = _render(graph, graph.node(a_node).inputs[0])
            return f"{b} - {_wrap(inner, pi, PREC_ADD + 1)}", PREC_ADD
        return f"{a} + {b}", PREC_ADD
    if node.op in ("mul", "div"):
        (a, pa), (b, pb) = args
        right = PREC_MUL + 1  # a / (b * c) needs its parentheses
        return op.formula.format(_wrap(a, pa, PREC_MUL), _wrap(b, pb, right)), PREC_MUL
    if node.op == "neg":
        a, pa = args[0]
        return f"-{_wrap(a, pa, PREC_UNARY + 1)}", PREC_UNARY
    return op.formula.format(*(a for a, _ in args)), PREC_ATOM


def _wrap(text: str, prec: int, need: int) -> str:
    return f"({text})" if prec < need else text

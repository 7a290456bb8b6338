"""A layer as an immutable computation graph, and its JSON form.

Node ids 0..3 are the initial nodes (x, zero, v0, v1); intermediate node k of
`Graph.nodes` has id 4 + k and may only read nodes with smaller ids. The
output is the last intermediate node. After the graph, every compiled layer
applies a per-channel affine `y * weight + bias`.

JSON schema (version 1), documented in docs/graph-schema.md:

    {"schema": "evonorm-graph/1",
     "nodes": [{"op": "mul", "inputs": [3, 0]},      # id 4: v1 * x
               {"op": "sigmoid", "inputs": [4]},     # id 5
               ...]}

An input may also be written as the name of an initial node ("x", "zero",
"v0", "v1"); it is stored as its id.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from primitives.ops import INPUT_NAMES, NUM_INPUTS, OPS, X, get_op

SCHEMA = "evonorm-graph/1"
MAX_NODES = 10


class GraphError(ValueError):
    """A graph that is not a valid layer. `field` names where, e.g. `nodes[2].inputs[0]`."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Node:
    op: str
    inputs: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "inputs": list(self.inputs)}


@dataclass(frozen=True)
class Graph:
    """The intermediate nodes of a layer graph; validated on construction."""

    nodes: tuple[Node, ...]

    def __post_init__(self) -> None:
        # Built in code rather than parsed: hold it to the JSON path's types (hashable, integer ids).
        if not isinstance(self.nodes, tuple) or not all(isinstance(n, Node) for n in self.nodes):
            raise GraphError("nodes", "expected a tuple of Node")
        for k, node in enumerate(self.nodes):
            if not isinstance(node.inputs, tuple) or not all(
                    isinstance(i, int) and not isinstance(i, bool) for i in node.inputs):
                raise GraphError(f"nodes[{k}].inputs", f"expected a tuple of int node ids, got {node.inputs!r}")
        _validate(self.nodes)

    # -- structure ---------------------------------------------------------
    @property
    def output(self) -> int:
        return NUM_INPUTS + len(self.nodes) - 1

    def node(self, node_id: int) -> Node:
        return self.nodes[node_id - NUM_INPUTS]

    def live_ids(self) -> set[int]:
        """Ids (initial and intermediate) that the output depends on."""
        return _reachable(self.nodes, self.output)

    def uses(self, node_id: int) -> bool:
        return node_id in self.live_ids()

    def live_ops(self) -> list[str]:
        live = self.live_ids()
        return [n.op for i, n in enumerate(self.nodes, NUM_INPUTS) if i in live]

    @property
    def batch_dependent(self) -> bool:
        return any(get_op(op).batch_dependent for op in self.live_ops())

    # -- JSON ----------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "nodes": [n.to_json() for n in self.nodes]}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"))

    @classmethod
    def from_json(cls, data: Any) -> Graph:
        return cls(tuple(_parse_nodes(data)))

    @classmethod
    def loads(cls, text: str) -> Graph:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise GraphError("$", f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
        return cls.from_json(data)

    @classmethod
    def build(cls, *nodes: tuple[str, Sequence[int | str]]) -> Graph:
        """Shorthand: `Graph.build(("mul", ["v1", "x"]), ("sigmoid", [4]))`."""
        return cls.from_json({"schema": SCHEMA, "nodes": [{"op": o, "inputs": list(i)} for o, i in nodes]})


def _parse_nodes(data: Any) -> Iterable[Node]:
    if not isinstance(data, dict):
        raise GraphError("$", f"expected a JSON object, got {type(data).__name__}")
    schema = data.get("schema", SCHEMA)
    if schema != SCHEMA:
        raise GraphError("schema", f"unsupported schema {schema!r}; this version reads {SCHEMA!r}")
    unknown = sorted(set(data) - {"schema", "nodes"})
    if unknown:
        raise GraphError(unknown[0], "unknown field (allowed: schema, nodes)")
    if "nodes" not in data:
        raise GraphError("nodes", "missing")
    raw = data["nodes"]
    if not isinstance(raw, list):
        raise GraphError("nodes", f"expected a list, got {type(raw).__name__}")
    for k, item in enumerate(raw):
        where = f"nodes[{k}]"
        if not isinstance(item, dict):
            raise GraphError(where, f"expected an object with op and inputs, got {type(item).__name__}")
        extra = sorted(set(item) - {"op", "inputs"})
        if extra:
            raise GraphError(f"{where}.{extra[0]}", "unknown field (allowed: op, inputs)")
        op, inputs = item.get("op"), item.get("inputs")
        if not isinstance(op, str):
            raise GraphError(f"{where}.op", "missing or not a string")
        if not isinstance(inputs, list):
            raise GraphError(f"{where}.inputs", "missing or not a list")
        ids = []
        for j, ref in enumerate(inputs):
            if isinstance(ref, str) and ref in INPUT_NAMES:
                ids.append(INPUT_NAMES.index(ref))
            elif isinstance(ref, int) and not isinstance(ref, bool):
                ids.append(ref)
            else:
                raise GraphError(f"{where}.inputs[{j}]",
                                 f"expected a node id or one of {list(INPUT_NAMES)}, got {ref!r}")
        yield Node(op, tuple(ids))


def _validate(nodes: tuple[Node, ...]) -> None:
    if not nodes:
        raise GraphError("nodes", "a graph needs at least one intermediate node (the output)")
    if len(nodes) > MAX_NODES:
        raise GraphError("nodes", f"too many nodes: {len(nodes)} > {MAX_NODES}")
    for k, node in enumerate(nodes):
        where = f"nodes[{k}]"
        if node.op not in OPS:
            raise GraphError(f"{where}.op", f"unknown op {node.op!r}")
        arity = OPS[node.op].arity
        if len(node.inputs) != arity:
            raise GraphError(f"{where}.inputs", f"{node.op} takes {arity} input(s), got {len(node.inputs)}")
        own_id = NUM_INPUTS + k
        for j, ref in enumerate(node.inputs):
            if ref < 0:
                raise GraphError(f"{where}.inputs[{j}]", f"negative node id {ref}")
            if ref >= own_id:
                raise GraphError(f"{where}.inputs[{j}]",
                                 f"node id {own_id} may only read earlier nodes (< {own_id}), got {ref}")
    if X not in _reachable(nodes, NUM_INPUTS + len(nodes) - 1):
        raise GraphError("nodes", "the output does not depend on the input x")


def _reachable(nodes: Sequence[Node], output: int) -> set[int]:
    seen: set[int] = set()
    stack = [output]
    while stack:
        i = stack.pop()
        if i in seen:
            continue
        seen.add(i)
        if i >= NUM_INPUTS:
            stack.extend(nodes[i - NUM_INPUTS].inputs)
    return seen

"""Graph validation, its JSON form and its error messages."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from primitives import MAX_NODES, SCHEMA, Graph, GraphError, Node
from primitives.zoo import ZOO

S0 = {"schema": SCHEMA, "nodes": [
    {"op": "mul", "inputs": [3, 0]},
    {"op": "sigmoid", "inputs": [4]},
    {"op": "mul", "inputs": [0, 5]},
    {"op": "std_group", "inputs": [0]},
    {"op": "div", "inputs": [6, 7]},
]}


def _chain(k: int) -> int:
    """The input of node k in a chain x -> n4 -> n5 -> ...: x, then the node before."""
    return 0 if k == 0 else 3 + k


def _with_nodes(*nodes: Any) -> dict[str, Any]:
    return {"schema": SCHEMA, "nodes": list(nodes)}


def test_json_round_trip_keeps_the_graph() -> None:
    g = Graph.from_json(S0)
    assert g.to_json() == S0
    assert Graph.loads(g.dumps()) == g
    assert Graph.loads(json.dumps(S0)) == g
    assert g.output == 8 and len(g.nodes) == 5


@pytest.mark.parametrize("name", [n for n, layer in ZOO.items() if layer.graph is not None])
def test_every_zoo_graph_round_trips(name: str) -> None:
    g = ZOO[name].graph
    assert g is not None
    assert Graph.loads(g.dumps()) == g
    assert Graph.from_json(json.loads(json.dumps(g.to_json()))) == g


def test_initial_nodes_may_be_named() -> None:
    named = Graph.build(("mul", ["v1", "x"]), ("add", [4, "v0"]), ("max", [5, "zero"]))
    numbered = Graph.from_json(_with_nodes({"op": "mul", "inputs": [3, 0]}, {"op": "add", "inputs": [4, 2]},
                                           {"op": "max", "inputs": [5, 1]}))
    assert named == numbered
    assert named.nodes[0].inputs == (3, 0)


def test_missing_schema_is_read_as_the_current_one() -> None:
    assert Graph.from_json({"nodes": S0["nodes"]}) == Graph.from_json(S0)


def _error(data: Any) -> GraphError:
    with pytest.raises(GraphError) as info:
        Graph.loads(data) if isinstance(data, str) else Graph.from_json(data)
    return info.value


BAD_GRAPHS = {
    "unknown op": (_with_nodes({"op": "softplus", "inputs": [0]}), "nodes[0].op", "unknown op 'softplus'"),
    "unknown op later": (_with_nodes({"op": "neg", "inputs": [0]}, {"op": "frobnicate", "inputs": [4]}),
                         "nodes[1].op", "frobnicate"),
    "missing op": (_with_nodes({"inputs": [0]}), "nodes[0].op", "missing"),
    "op not a string": (_with_nodes({"op": 3, "inputs": [0]}), "nodes[0].op", "not a string"),
    "too few inputs": (_with_nodes({"op": "add", "inputs": [0]}), "nodes[0].inputs",
                       "add takes 2 input(s), got 1"),
    "too many inputs": (_with_nodes({"op": "neg", "inputs": [0, 1]}), "nodes[0].inputs",
                        "neg takes 1 input(s), got 2"),
    "later node": (_with_nodes({"op": "add", "inputs": [0, 5]}, {"op": "neg", "inputs": [0]}),
                   "nodes[0].inputs[1]", "may only read earlier nodes (< 4), got 5"),
    "itself": (_with_nodes({"op": "neg", "inputs": [0]}, {"op": "add", "inputs": [4, 5]}),
               "nodes[1].inputs[1]", "may only read earlier nodes (< 5), got 5"),
    "negative id": (_with_nodes({"op": "mul", "inputs": [0, -1]}), "nodes[0].inputs[1]", "negative node id -1"),
    "too many nodes": (_with_nodes(*[{"op": "neg", "inputs": [_chain(k)]} for k in range(MAX_NODES + 1)]),
                       "nodes", f"too many nodes: {MAX_NODES + 1} > {MAX_NODES}"),
    "independent of x": (_with_nodes({"op": "neg", "inputs": [0]}, {"op": "mul", "inputs": ["v0", "v1"]}),
                         "nodes", "does not depend on the input x"),
    "wrong schema": ({"schema": "evonorm-graph/2", "nodes": S0["nodes"]}, "schema",
                     "unsupported schema 'evonorm-graph/2'"),
    "unknown top-level field": ({**S0, "output": 8}, "output", "unknown field"),
    "unknown node field": (_with_nodes({"op": "neg", "inputs": [0], "name": "n"}), "nodes[0].name",
                           "unknown field"),
    "missing nodes": ({"schema": SCHEMA}, "nodes", "missing"),
    "empty nodes": (_with_nodes(), "nodes", "at least one intermediate node"),
    "nodes not a list": ({"schema": SCHEMA, "nodes": {"op": "neg"}}, "nodes", "expected a list"),
    "node not an object": (_with_nodes(["neg", [0]]), "nodes[0]", "expected an object"),
    "inputs not a list": (_with_nodes({"op": "neg", "inputs": 0}), "nodes[0].inputs", "not a list"),
    "float input": (_with_nodes({"op": "neg", "inputs": [0.0]}), "nodes[0].inputs[0]",
                    "expected a node id or one of"),
    "bool input": (_with_nodes({"op": "neg", "inputs": [True]}), "nodes[0].inputs[0]", "got True"),
    "unknown name": (_with_nodes({"op": "add", "inputs": ["x", "v2"]}), "nodes[0].inputs[1]", "got 'v2'"),
    "null input": (_with_nodes({"op": "neg", "inputs": [None]}), "nodes[0].inputs[0]", "got None"),
    "not an object": ([{"op": "neg", "inputs": [0]}], "$", "expected a JSON object, got list"),
    "malformed JSON": ('{"nodes": [}', "$", "malformed JSON"),
}


@pytest.mark.parametrize("case", list(BAD_GRAPHS))
def test_invalid_graphs_name_the_field_and_the_problem(case: str) -> None:
    data, field, message = BAD_GRAPHS[case]
    err = _error(data)
    assert err.field == field
    assert message in err.message
    assert str(err).startswith(f"{field}: ")
    # the same error through the text form
    if not isinstance(data, str):
        again = _error(json.dumps(data))
        assert (again.field, again.message) == (err.field, err.message)


def test_graph_error_is_a_value_error() -> None:
    assert issubclass(GraphError, ValueError)


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(GraphError, match=r"nodes\[0\]\.inputs\[0\]: node id 4"):
        Graph((Node("neg", (4,)),))
    with pytest.raises(GraphError, match="does not depend on the input x"):
        Graph((Node("exp", (1,)),))


def test_exactly_max_nodes_is_allowed() -> None:
    g = Graph(tuple(Node("neg", (_chain(k),)) for k in range(MAX_NODES)))
    assert len(g.nodes) == MAX_NODES == 10


def test_graphs_are_frozen_and_hashable() -> None:
    g = Graph.from_json(S0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.nodes = ()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.nodes[0].op = "add"  # type: ignore[misc]
    assert isinstance(g.nodes, tuple) and all(isinstance(n.inputs, tuple) for n in g.nodes)
    same = Graph.loads(g.dumps())
    assert same is not g and same == g and hash(same) == hash(g)
    assert len({g, same, Graph.build(("neg", ["x"]))}) == 2


def test_liveness_and_batch_dependence_look_at_the_output_only() -> None:
    # node 4 (std_batch) is dead: the output reads x only
    g = Graph.build(("std_batch", ["x"]), ("sigmoid", ["x"]))
    assert g.live_ids() == {0, 5}
    assert g.live_ops() == ["sigmoid"]
    assert not g.uses(4) and g.uses(0)
    assert not g.batch_dependent
    assert Graph.build(("std_batch", ["x"]), ("div", ["x", 4])).batch_dependent


@pytest.mark.parametrize("nodes, field", [
    ([Node("neg", (0,))], "nodes"),                         # a list: unhashable, so no structural hash
    ((Node("neg", [0]),), "nodes[0].inputs"),
    ((Node("neg", (0.0,)),), "nodes[0].inputs"),
    ((Node("neg", ("x",)),), "nodes[0].inputs"),
    ((Node("neg", (True,)),), "nodes[0].inputs"),
])
def test_a_graph_built_in_code_is_held_to_the_json_types(nodes: Any, field: str) -> None:
    with pytest.raises(GraphError) as e:
        Graph(nodes)
    assert e.value.field == field

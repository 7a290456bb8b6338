"""A user's own graph: validate it, turn it into a module; clear 4xx on a bad one."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

S0 = {"schema": "evonorm-graph/1", "nodes": [
    {"op": "mul", "inputs": ["v1", "x"]}, {"op": "sigmoid", "inputs": [4]}, {"op": "mul", "inputs": ["x", 5]},
    {"op": "std_group", "inputs": ["x"]}, {"op": "div", "inputs": [6, 7]}]}


def test_validate_a_good_graph(client: TestClient) -> None:
    r = client.post("/api/graphs/validate", json=S0)
    assert r.status_code == 200
    info = r.json()
    assert info["valid"] is True and info["formula"] == "x * sigmoid(v1 * x) / std_group(x)"
    assert info["batch_dependent"] is False and info["graph"]["nodes"][0] == {"op": "mul", "inputs": [3, 0]}
    assert len(info["structural_hash"]) >= 16 and info["canonical"]["schema"] == "evonorm-graph/1"


@pytest.mark.parametrize("graph, field", [
    ({"nodes": [{"op": "sigmoid", "inputs": [4]}]}, "nodes[0].inputs[0]"),
    ({"nodes": [{"op": "frobnicate", "inputs": ["x"]}]}, "nodes[0].op"),
    ({"nodes": [{"op": "add", "inputs": ["x"]}]}, "nodes[0].inputs"),
    ({"nodes": [{"op": "exp", "inputs": ["v0"]}]}, "nodes"),
    ({"nodes": []}, "nodes"),
    ({"schema": "evonorm-graph/2", "nodes": [{"op": "exp", "inputs": ["x"]}]}, "schema"),
    ({"nodes": [{"op": "exp", "inputs": ["y"]}]}, "nodes[0].inputs[0]"),
    ({"nodes": [{"op": "exp", "inputs": [1.5]}]}, "nodes.0.inputs.0.int"),
    ({"nodes": [{"op": "exp"}]}, "nodes.0.inputs"),
    ({"nodes": [{"op": "exp", "inputs": ["x"], "extra": 1}]}, "nodes.0.extra"),
])
def test_bad_graphs_are_422_naming_the_field(client: TestClient, graph: dict[str, Any], field: str) -> None:
    r = client.post("/api/graphs/validate", json=graph)
    assert r.status_code == 422, r.text
    assert field in {e["field"] for e in r.json()["detail"]}
    r = client.post("/api/graphs/module", json={"graph": graph})
    assert r.status_code == 422
    assert any(e["field"].startswith("graph") for e in r.json()["detail"])


def test_module_from_a_graph(client: TestClient) -> None:
    r = client.post("/api/graphs/module", json={"graph": S0, "name": "my_s0"})
    assert r.status_code == 200 and r.headers["content-disposition"] == 'attachment; filename="my_s0.py"'
    assert "class MyS0(nn.Module)" in r.text
    r = client.post("/api/graphs/module", json={"graph": S0, "format": "torchscript", "num_features": 4})
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-disposition"].startswith('attachment; filename="layer_')
    bad = client.post("/api/graphs/module", json={"graph": S0, "name": "../../etc/passwd"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "name"
    bad = client.post("/api/graphs/module", json={"graph": S0, "layout": "nhwc"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "layout"

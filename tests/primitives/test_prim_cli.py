"""The `zoo` and `export` commands of the CLI, driven through typer's test runner."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from evonorm_search.cli import app
from primitives import Graph, structural_hash
from primitives.zoo import ZOO

runner = CliRunner()


def _text(output: str) -> str:
    """Output with rich's line wrapping undone."""
    return " ".join(output.split())


def test_zoo_json_lists_every_layer_with_its_formula() -> None:
    result = runner.invoke(app, ["zoo", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["name"] for r in rows] == list(ZOO)
    for row in rows:
        layer = ZOO[row["name"]]
        assert row["formula"] == layer.formula and row["formula"]
        assert row["in_search_space"] == layer.in_search_space
        assert row["batch_dependent"] == layer.batch_dependent
        assert row["eps"] == layer.eps
        if layer.graph is not None:
            assert Graph.from_json(row["graph"]) == layer.graph
            assert row["hash"] == structural_hash(layer.graph)
        else:
            assert row["graph"] is None and row["hash"] is None


def test_zoo_table_names_every_layer() -> None:
    result = runner.invoke(app, ["zoo"])
    assert result.exit_code == 0, result.output
    assert all(name in result.output for name in ZOO)


def test_export_py_writes_an_importable_layer(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "EvoNormS0.py"
    result = runner.invoke(app, ["export", "evonorm_s0", "--format", "py", "-o", str(path)])
    assert result.exit_code == 0, result.output
    assert "x * sigmoid(v1 * x) / std_group(x)" in _text(result.output)
    spec = importlib.util.spec_from_file_location("cli_exported_s0", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
        layer = mod.EvoNormS0(16)
        x = torch.randn(2, 16, 4, 4)
        torch.testing.assert_close(layer(x), ZOO["evonorm_s0"].factory()(16)(x))
    finally:
        sys.modules.pop("cli_exported_s0", None)


def test_export_defaults_to_the_class_name_in_the_working_directory(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["export", "evonorm_b0", "--format", "export", "--channels", "8"])
    assert result.exit_code == 0, result.output
    program = torch.export.load(str(tmp_path / "EvoNormB0.pt2")).module()
    x = torch.randn(3, 8, 5, 5)
    torch.testing.assert_close(program(x), ZOO["evonorm_b0"].factory()(8).eval()(x))


def test_export_reads_a_graph_file(tmp_path: Path) -> None:
    graph = Graph.build(("sigmoid", ["x"]), ("mul", ["x", 4]))
    source = tmp_path / "graph.json"
    source.write_text(graph.dumps())
    out = tmp_path / "swish.py"
    result = runner.invoke(app, ["export", str(source), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "y = x * torch.sigmoid(x)" in out.read_text()


@pytest.mark.parametrize("bad,field,message", [
    ('{"nodes": [{"op": "softplus", "inputs": [0]}]}', "nodes[0].op", "unknown op 'softplus'"),
    ('{"nodes": [{"op": "neg", "inputs": [0]}, {"op": "add", "inputs": [4]}]}', "nodes[1].inputs",
     "add takes 2 input(s), got 1"),
    ('{"nodes": [{"op": "neg", "inputs": [7]}]}', "nodes[0].inputs[0]", "may only read earlier nodes"),
    ('{"nodes": [{"op": "neg", "inputs": ["y"]}]}', "nodes[0].inputs[0]", "got 'y'"),
    ('{"nodes": [{"op": "neg", "inputs": [0]}], "extra": 1}', "extra", "unknown field"),
    ('{"schema": "evonorm-graph/9", "nodes": []}', "schema", "unsupported schema"),
    ('{"nodes": [', "$", "malformed JSON"),
])
def test_export_of_a_bad_graph_exits_2_naming_the_field(bad: str, field: str, message: str,
                                                         tmp_path: Path) -> None:
    out = tmp_path / "never.py"
    result = runner.invoke(app, ["export", bad, "-o", str(out)])
    assert result.exit_code == 2
    text = _text(result.output)
    assert f"invalid graph: {field}: " in text and message in text, text
    assert not out.exists()
    # the same through a file
    source = tmp_path / "bad.json"
    source.write_text(bad)
    result = runner.invoke(app, ["export", str(source), "-o", str(out)])
    assert result.exit_code == 2 and f"{field}: " in _text(result.output)


def test_export_of_an_unknown_name_fails_clearly() -> None:
    result = runner.invoke(app, ["export", "evonorm_z9"])
    assert result.exit_code == 2
    text = _text(result.output)
    assert "'evonorm_z9' is neither a zoo layer" in text and "evonorm_s0" in text


def test_export_of_a_hand_written_layer_says_it_has_no_graph() -> None:
    result = runner.invoke(app, ["export", "powernorm_relu"])
    assert result.exit_code == 2
    assert "outside the search space" in _text(result.output)


def test_export_rejects_an_unknown_format() -> None:
    result = runner.invoke(app, ["export", "evonorm_s0", "--format", "onnx"])
    assert result.exit_code == 2
    assert "onnx" in _text(result.output)

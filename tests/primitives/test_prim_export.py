"""Exported files (a standalone `.py`, TorchScript `.pt`, torch.export `.pt2`), loaded back as a user would."""

from __future__ import annotations

import ast
import importlib.util
import io
import random
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import nn

from primitives import Graph, compile_graph
from primitives.compile import class_name_for
from primitives.export import ExportFormat, export_bytes
from primitives.mutation import random_graph
from primitives.zoo import get_layer

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.[a-z_]*` is deprecated:DeprecationWarning")

C = 8


def _case(spec: str) -> tuple[Graph, str | None, float, str]:
    """'zoo:<name>[:tokens]' or 'random:<seed>' -> (graph, name, eps, layout)."""
    kind, value, *rest = spec.split(":")
    layout = rest[0] if rest else "nchw"
    if kind == "zoo":
        layer = get_layer(value)
        assert layer.graph is not None
        return layer.graph, layer.class_name, layer.eps, layout
    return random_graph(random.Random(int(value))), None, 1e-5, layout


CASES = ["zoo:evonorm_b0", "zoo:evonorm_s0", "zoo:bn_relu", "zoo:layernorm:tokens", "zoo:evonorm_b2:tokens",
         "random:1", "random:2", "random:3:tokens"]


def _shape(layout: str, batch: int) -> tuple[int, ...]:
    return (batch, C, 6, 7) if layout == "nchw" else (batch, 9, C)


def _trained(graph: Graph, name: str | None, eps: float, layout: str,
             randomize: Callable[..., nn.Module]) -> nn.Module:
    """A compiled layer with non-default weights and running statistics; left in train mode."""
    module = randomize(compile_graph(graph, C, layout=layout, eps=eps, groups=4, name=name))
    gen = torch.Generator().manual_seed(4)
    for _ in range(2):
        module.train()(torch.randn(_shape(layout, 4), generator=gen) * 2 + 1)
    return module


def _import_file(path: Path, module_name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _imports(source: str) -> list[str]:
    """Every module an `import` / `from ... import` statement in the source names."""
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import"
            names.append(str(node.module))
    return names


@pytest.mark.parametrize("spec", CASES)
def test_exported_py_is_standalone_and_computes_the_same_layer(
        spec: str, tmp_path: Path, randomize: Callable[..., nn.Module]) -> None:
    graph, name, eps, layout = _case(spec)
    trained = _trained(graph, name, eps, layout, randomize)
    source = export_bytes(graph, "py", layout=layout, name=name, eps=eps).decode()
    assert _imports(source) and {name.split(".")[0] for name in _imports(source)} == {"torch"}
    assert "primitives" not in source and "exec(" not in source
    path = tmp_path / "exported_layer.py"
    path.write_text(source)
    module_name = f"exported_layer_{abs(hash(spec))}"
    mod = _import_file(path, module_name)
    try:
        cls = getattr(mod, class_name_for(name, graph))
        fresh = cls(C, groups=4)
        assert fresh.eps == eps
        fresh.load_state_dict(trained.state_dict())
        x = torch.randn(_shape(layout, 3))
        torch.testing.assert_close(fresh.eval()(x), trained.eval()(x))
        # it is the full layer, training mode and running updates included
        twin = compile_graph(graph, C, layout=layout, eps=eps, groups=4, name=name)
        twin.load_state_dict(trained.state_dict())
        torch.testing.assert_close(fresh.train()(x), twin.train()(x))
        for key, value in twin.state_dict().items():
            torch.testing.assert_close(fresh.state_dict()[key], value)
        assert Graph.loads(mod.GRAPH) is not None
    finally:
        sys.modules.pop(module_name, None)


@pytest.mark.parametrize("spec", CASES)
def test_torchscript_file_loads_with_jit_load(spec: str, tmp_path: Path,
                                              randomize: Callable[..., nn.Module]) -> None:
    graph, name, eps, layout = _case(spec)
    trained = _trained(graph, name, eps, layout, randomize).eval()
    path = tmp_path / f"layer{ExportFormat.TORCHSCRIPT.suffix}"
    path.write_bytes(export_bytes(graph, "torchscript", num_features=C, layout=layout, name=name, eps=eps,
                                  module=trained))
    loaded = torch.jit.load(str(path))
    assert not loaded.training
    for batch in (1, 5):
        x = torch.randn(_shape(layout, batch))
        torch.testing.assert_close(loaded(x), trained(x))


@pytest.mark.parametrize("spec", CASES)
def test_exported_program_loads_and_takes_another_batch_size(spec: str, tmp_path: Path,
                                                             randomize: Callable[..., nn.Module]) -> None:
    graph, name, eps, layout = _case(spec)
    trained = _trained(graph, name, eps, layout, randomize)
    assert trained.training
    data = export_bytes(graph, "export", num_features=C, layout=layout, name=name, eps=eps, module=trained)
    assert trained.training  # exporting does not switch the caller's layer to eval mode
    path = tmp_path / f"layer{ExportFormat.EXPORT.suffix}"
    path.write_bytes(data)
    program = torch.export.load(str(path)).module()
    trained.eval()
    for batch in (1, 3, 9):  # the example input had batch 4
        x = torch.randn(_shape(layout, batch))
        torch.testing.assert_close(program(x), trained(x))


def test_export_without_a_module_uses_default_weights() -> None:
    layer = get_layer("evonorm_s0")
    assert layer.graph is not None
    data = export_bytes(layer.graph, ExportFormat.TORCHSCRIPT, num_features=C, name=layer.class_name)
    loaded = torch.jit.load(io.BytesIO(data))
    fresh = layer.factory()(C)
    x = torch.randn(2, C, 4, 4)
    torch.testing.assert_close(loaded(x), fresh(x))
    assert list(loaded.state_dict()) == list(fresh.state_dict()) == ["weight", "bias", "v1"]


def test_formats_and_suffixes() -> None:
    assert [(f.value, f.suffix) for f in ExportFormat] == [("py", ".py"), ("torchscript", ".pt"),
                                                           ("export", ".pt2")]
    with pytest.raises(ValueError):
        export_bytes(Graph.build(("neg", ["x"])), "onnx")
    source = export_bytes(Graph.build(("neg", ["x"])), "py").decode()
    assert "y = -x" in source and "class Layer_" in source


def test_a_fresh_torchscript_export_is_saved_for_inference() -> None:
    """Like the .pt2: a downloaded B-layer uses its running statistics until `.train()` is called."""
    layer = get_layer("evonorm_b0")
    assert layer.graph is not None
    loaded = torch.jit.load(io.BytesIO(export_bytes(layer.graph, ExportFormat.TORCHSCRIPT, num_features=C)))
    assert not loaded.training
    x = torch.randn(4, C, 4, 4) * 3 + 1
    before = loaded.state_dict()["running_var"].clone()
    one, two = loaded(x), loaded(x[:1])
    torch.testing.assert_close(one[:1], two)   # running statistics: a sample's output ignores the batch
    torch.testing.assert_close(loaded.state_dict()["running_var"], before)
    loaded.train()
    loaded(x)
    assert not torch.equal(loaded.state_dict()["running_var"], before)

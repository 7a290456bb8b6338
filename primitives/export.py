"""Graph -> files a user can load: readable `.py`, TorchScript `.pt`, `torch.export` `.pt2`.

Functions return bytes; the caller (CLI, API) decides where they go, so the
search space stays free of I/O.

- py: the generated standalone source (imports only torch); `Layer(C)`.
- torchscript: `torch.jit.load(f)`, the scripted module; a fresh one is saved in
  eval mode (as the `.pt2` is), a module passed in keeps its mode. `.train()`
  on the loaded module switches it back to batch statistics.
- export: `torch.export.load(f).module()`, an inference program traced in
  eval mode (running statistics, not batch statistics) with a dynamic batch
  size and, for images, dynamic height and width.
"""

from __future__ import annotations

import io
import warnings
from enum import StrEnum

import torch
from torch import nn

from primitives.codegen import module_source
from primitives.compile import class_name_for, layer_class
from primitives.graph import Graph


class ExportFormat(StrEnum):
    PY = "py"
    TORCHSCRIPT = "torchscript"
    EXPORT = "export"

    @property
    def suffix(self) -> str:
        return {"py": ".py", "torchscript": ".pt", "export": ".pt2"}[self.value]


def example_input(num_features: int, layout: str, batch: int = 2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    shape = (batch, num_features, 8, 8) if layout == "nchw" else (batch, 16, num_features)
    return torch.randn(shape, generator=gen)


def torchscript_bytes(module: nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buf)
    return buf.getvalue()


def exported_program(module: nn.Module, num_features: int, layout: str) -> torch.export.ExportedProgram:
    """The module traced in eval mode; the caller's module is left in the mode it was in."""
    x = example_input(num_features, layout, batch=4)
    batch = torch.export.Dim("batch", min=1, max=65536)
    if layout == "nchw":
        dims = {0: batch, 2: torch.export.Dim("height", min=1, max=65536),
                3: torch.export.Dim("width", min=1, max=65536)}
    else:
        dims = {0: batch, 1: torch.export.Dim("tokens", min=2, max=65536)}
    was_training = module.training
    module.eval()
    try:
        try:
            return torch.export.export(module, (x,), dynamic_shapes={"x": dims})
        except Exception as e:
            # A graph whose shapes torch cannot keep symbolic still exports, with static shapes; say so,
            # since the program then only accepts the example's shape.
            warnings.warn(f"dynamic shapes failed ({type(e).__name__}: {str(e)[:200]}); exported with the "
                          f"static shape {tuple(x.shape)}", RuntimeWarning, stacklevel=2)
            return torch.export.export(module, (x,))
    finally:
        module.train(was_training)


def program_bytes(module: nn.Module, num_features: int, layout: str) -> bytes:
    buf = io.BytesIO()
    torch.export.save(exported_program(module, num_features, layout), buf)
    return buf.getvalue()


def export_bytes(graph: Graph, fmt: ExportFormat | str, *, num_features: int = 64,
                 layout: str = "nchw", name: str | None = None, eps: float = 1e-5,
                 module: nn.Module | None = None) -> bytes:
    """The file contents of `graph` in `fmt`. Pass `module` to export trained weights."""
    fmt = ExportFormat(fmt)
    if fmt is ExportFormat.PY:
        return module_source(graph, class_name=class_name_for(name, graph), layout=layout,
                             eps=eps, title=None).encode()
    if module is None:
        module = layer_class(graph, layout, name, eps)(num_features, eps=eps).eval()
    if fmt is ExportFormat.TORCHSCRIPT:
        return torchscript_bytes(module)
    return program_bytes(module, num_features, layout)

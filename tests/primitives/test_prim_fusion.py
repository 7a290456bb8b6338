"""Fused standardizations: (s - mean_A(s)) / std_A(s) as one torch kernel call.

Every fused layer is checked against the same graph compiled with fuse=False
(the statistics spelled out op by op): outputs over training steps and then
eval mode, the running estimates, and the gradients of x and of every
parameter.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from primitives import Graph, layer_class
from primitives.codegen import module_source

C, GROUPS = 8, 2
SHAPES = {"nchw": (4, C, 5, 5), "tokens": (3, 6, C)}


def standardize(axes: str, source: int | str = "x", first: int = 4) -> list[tuple[str, list[int | str]]]:
    """Nodes first..first+4: (source - mean) / std over `axes`; the last is the result."""
    return [(f"mean_{axes}", [source]), ("neg", [first]), ("add", [source, first + 1]),
            (f"std_{axes}", [source]), ("div", [first + 2, first + 3])]


S = standardize("{axes}")  # nodes 4..8, the standardization's result is node 8
# name -> (nodes, whether the standardization is fused)
GRAPHS: dict[str, tuple[list[tuple[str, list[int | str]]], bool]] = {
    "bare": (S, True),
    "v1_v0_then_relu": ([*S, ("mul", ["v1", 8]), ("add", [9, "v0"]), ("max", [10, "zero"])], True),
    "v1_only": ([*S, ("mul", [8, "v1"]), ("tanh", [9])], True),
    "v0_only": ([*S, ("add", ["v0", 8]), ("sigmoid", [9])], True),
    # the standardized node is an expression, not x
    "of_tanh_x": ([("tanh", ["x"]), *standardize("{axes}", 4, first=5)], True),
    # the mean is used twice: not fused, spelled out
    "mean_reused": ([*S, ("add", [8, 4])], False),
}
AXES = {"nchw": ("batch", "group", "layer", "instance"), "tokens": ("group", "layer", "batch")}
CASES = [(layout, axes, name) for layout, axes_list in AXES.items() for axes in axes_list for name in GRAPHS]


def graph_for(name: str, axes: str) -> Graph:
    nodes, _ = GRAPHS[name]
    return Graph.build(*[(op.format(axes=axes), ins) for op, ins in nodes])


def randomized(module: nn.Module) -> nn.Module:
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(1.0 + 0.5 * torch.randn(p.shape, generator=gen))
    return module


def run(module: nn.Module, xs: list[Tensor], target: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """Outputs of two training steps then eval; gradients of the first step's loss."""
    outs, grads = [], []
    for k, x in enumerate(xs):
        module.train(k < len(xs) - 1)
        x = x.clone().requires_grad_()
        y = module(x)
        outs.append(y.detach())
        if k == 0:
            (y * target).sum().backward()
            grads = [x.grad] + [p.grad for p in module.parameters()]
    return outs, grads


@pytest.mark.parametrize(("layout", "axes", "name"), CASES)
def test_fused_layer_matches_the_ops_spelled_out(layout: str, axes: str, name: str) -> None:
    g = graph_for(name, axes)
    fused_cls, plain_cls = layer_class(g, layout), layer_class(g, layout, fuse=False)
    fused = randomized(fused_cls(C, groups=GROUPS))
    plain = copy.deepcopy(fused)
    plain.__class__ = plain_cls  # the same parameters and buffers in the op-by-op class
    gen = torch.Generator().manual_seed(2)
    xs = [2 * torch.randn(SHAPES[layout], generator=gen) + k for k in range(3)]
    target = torch.randn(SHAPES[layout], generator=gen)
    (out_f, grad_f), (out_p, grad_p) = run(fused, xs, target), run(plain, xs, target)
    for a, b in zip(out_f + grad_f, out_p + grad_p, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for (key, a), (_, b) in zip(fused.state_dict().items(), plain.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=key)

    source = module_source(g, layout=layout)
    kernel = {("nchw", "batch"): "F.batch_norm(", ("tokens", "batch"): None,
              ("tokens", "group"): "standardize_group("}.get((layout, axes))
    kernel = kernel or ("F.group_norm(" if layout == "nchw" else "F.layer_norm(")
    expect_fused = GRAPHS[name][1] and (layout, axes) != ("tokens", "batch")
    assert (kernel in source) == expect_fused, source
    assert ("import torch.nn.functional as F" in source) == expect_fused


def test_the_kernel_takes_v1_v0_or_the_output_affine_and_forward_names_nothing_else() -> None:
    body: Callable[[str, str], str] = lambda name, layout: module_source(  # noqa: E731
        graph_for(name, "batch" if layout == "nchw" else "layer"), layout=layout).split("def forward")[1]
    bn = body("v1_v0_then_relu", "nchw")
    assert "F.batch_norm(x, self.running_mean, self.running_var, self.v1, self.v0," in bn
    assert "v1 = " not in bn and "v0 = " not in bn and "y * self.weight" in bn
    ln = body("bare", "tokens")
    assert "return F.layer_norm(x, [self.num_features], self.weight, self.bias, self.eps)" in ln
    assert "y * self.weight" not in ln
    # on tokens, group statistics' kernel weight would be per slot of a group, not per channel
    gn = module_source(graph_for("v1_only", "group"), layout="tokens").split("def forward")[1]
    assert "standardize_group(x, self.groups, self.eps) * v1" in gn

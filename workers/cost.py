"""A layer's cost: its forward+backward time relative to BN-ReLU, measured on the worker.

Both layers run eagerly on the same activation in the same process,
interleaved, and the ratio of medians is reported, so the worker's speed and
load cancel out. It is an objective to minimise: the Pareto front then shows
what a layer's accuracy costs.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from primitives import Graph, layer_class
from primitives.zoo import ZOO

SHAPE = (8, 32, 16, 16)


def _step(layer: nn.Module, x: torch.Tensor, n: int = 2) -> float:
    start = time.perf_counter()
    for _ in range(n):
        layer(x).sum().backward()
    return time.perf_counter() - start


def relative_cost(graph: Graph, *, repeats: int = 15, eps: float = 1e-5, groups: int = 32) -> float:
    """Median over rounds of (layer's fwd+bwd time / BN-ReLU's in the same round).

    Pairing within a round cancels load that changes between rounds. `eps` and
    `groups` are the search's (`EvalSpec.eps`, `EvalSpec.groups`), so group
    statistics are timed at the group count the layer is trained with.
    """
    reference_graph = ZOO["bn_relu"].graph
    assert reference_graph is not None
    channels = SHAPE[1]
    layer = layer_class(graph, "nchw")(channels, eps=eps, groups=groups)
    reference = layer_class(reference_graph, "nchw")(channels)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0), requires_grad=True)
    _step(layer, x), _step(reference, x)  # warm up allocator and kernels
    ratios = [_step(layer, x) / _step(reference, x) for _ in range(repeats)]
    return statistics.median(ratios)

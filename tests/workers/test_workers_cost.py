"""workers.cost.relative_cost: a layer's fwd+bwd time relative to BN-ReLU.

Timings on a busy machine are noisy, so the bounds are loose and every
comparison is between layers timed in the same test, never absolute.
"""

from __future__ import annotations

import statistics
from typing import Any

import pytest

import workers.cost
from primitives import Graph
from primitives.zoo import ZOO
from workers.cost import relative_cost


def bn_relu() -> Graph:
    g = ZOO["bn_relu"].graph
    assert g is not None
    return g


def stacked_statistics() -> Graph:
    """Five statistics stacked, each over the previous normalized tensor (BN-ReLU has two)."""
    nodes: list[tuple[str, list[int | str]]] = []
    prev: int | str = "x"
    for stat in ("std_group", "std_instance", "std_layer", "std_batch", "std_group"):
        nid = 4 + len(nodes)
        nodes += [(stat, [prev]), ("div", [prev, nid])]  # prev / stat(prev)
        prev = nid + 1
    return Graph.build(*nodes)


def test_bn_relu_against_itself_costs_about_one(one_thread: None) -> None:
    cost = relative_cost(bn_relu(), repeats=9)
    assert 0.5 < cost < 2.0, cost


def test_heavier_graph_costs_more_than_bn_relu(one_thread: None) -> None:
    heavy, reference = stacked_statistics(), bn_relu()
    # Interleave the two measurements and compare medians, so a burst of load hits both.
    heavy_costs, reference_costs = [], []
    for _ in range(3):
        heavy_costs.append(relative_cost(heavy, repeats=7))
        reference_costs.append(relative_cost(reference, repeats=7))
    assert statistics.median(heavy_costs) > 1.2 * statistics.median(reference_costs), (heavy_costs,
                                                                                      reference_costs)


@pytest.mark.parametrize("groups", [2, 16])
def test_layer_is_timed_with_the_given_groups(monkeypatch: pytest.MonkeyPatch, groups: int) -> None:
    seen: list[Any] = []
    real = workers.cost.layer_class

    def spy(graph: Graph, layout: str) -> Any:
        cls = real(graph, layout)

        def build(*args: Any, **kwargs: Any) -> Any:
            seen.append((graph, kwargs.get("groups")))
            return cls(*args, **kwargs)

        return build

    monkeypatch.setattr(workers.cost, "layer_class", spy)
    heavy = stacked_statistics()
    relative_cost(heavy, repeats=1, groups=groups, eps=1e-3)
    assert (heavy, groups) in seen
    layer = real(heavy, "nchw")(32, groups=groups)
    assert layer.groups == groups  # 32 channels: both counts divide them, nothing is rounded

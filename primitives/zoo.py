"""The layer zoo: known normalization-activation layers, written as graphs.

Each entry is the graph of the layer before its per-channel affine (which
every compiled layer adds). Layers the primitives cannot express are
hand-written modules marked `in_search_space = False`. BN-ReLU and GN-ReLU
put their own affine inside the ReLU through v1 (scale) and v0 (shift); their
final affine then starts as the identity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from primitives.compile import layer_class
from primitives.formula import formula
from primitives.graph import Graph
from primitives.handwritten import SELU, PowerNormReLU


@dataclass(frozen=True)
class ZooLayer:
    name: str
    class_name: str
    title: str
    source: str
    graph: Graph | None = None
    eps: float = 1e-5
    reference: Callable[..., nn.Module] | None = None
    batch_dependent: bool = False

    @property
    def in_search_space(self) -> bool:
        return self.graph is not None

    @property
    def formula(self) -> str:
        return formula(self.graph) if self.graph is not None else (self.reference.__doc__ or "").split("\n")[0]

    def factory(self, layout: str = "nchw") -> Callable[..., nn.Module]:
        """A `norm_layer(num_features)` constructor for this layer."""
        if self.graph is None:
            assert self.reference is not None
            return self.reference
        return layer_class(self.graph, layout, self.class_name, self.eps)


def _norm_then(stat_axes: str) -> Graph:
    """relu(v1 * (x - mean(x)) / std(x) + v0) over one axis set."""
    return Graph.build(
        (f"mean_{stat_axes}", ["x"]),      # 4
        ("neg", [4]),                      # 5
        ("add", ["x", 5]),                 # 6  x - mean
        (f"std_{stat_axes}", ["x"]),       # 7
        ("div", [6, 7]),                   # 8
        ("mul", ["v1", 8]),                # 9
        ("add", [9, "v0"]),                # 10
        ("max", [10, "zero"]),             # 11 relu
    )


def _evonorm_b(right: list[tuple[str, list[int | str]]]) -> Graph:
    """x / max(std_batch(x), <right>), the right-hand side's nodes starting at id 5."""
    n = 5 + len(right)
    return Graph.build(("std_batch", ["x"]), *right, ("max", [4, n - 1]), ("div", ["x", n]))


_LAYERS = [
    ZooLayer("bn_relu", "BatchNormReLU", "BatchNorm + ReLU", "Ioffe & Szegedy 2015",
             _norm_then("batch"), batch_dependent=True),
    ZooLayer("gn_relu", "GroupNormReLU", "GroupNorm + ReLU", "Wu & He 2018", _norm_then("group")),
    ZooLayer("layernorm", "LayerNorm", "LayerNorm (no activation)", "Ba et al. 2016",
             Graph.build(("mean_layer", ["x"]), ("neg", [4]), ("add", ["x", 5]),
                         ("std_layer", ["x"]), ("div", [6, 7]))),
    ZooLayer("rmsnorm", "RMSNorm", "RMSNorm (no activation)", "Zhang & Sennrich 2019",
             Graph.build(("rms_layer", ["x"]), ("div", ["x", 4]))),
    ZooLayer("evonorm_b0", "EvoNormB0", "EvoNorm-B0", "Liu et al. 2020 (timm numerics, eps 1e-3)",
             _evonorm_b([("mul", ["v1", "x"]), ("std_instance", ["x"]), ("add", [5, 6])]),
             eps=1e-3, batch_dependent=True),
    ZooLayer("evonorm_b1", "EvoNormB1", "EvoNorm-B1", "Liu et al. 2020",
             _evonorm_b([("exp", ["zero"]), ("add", ["x", 5]), ("rms_instance", ["x"]),
                         ("mul", [6, 7])]), batch_dependent=True),
    ZooLayer("evonorm_b2", "EvoNormB2", "EvoNorm-B2", "Liu et al. 2020",
             _evonorm_b([("rms_instance", ["x"]), ("neg", ["x"]), ("add", [5, 6])]),
             batch_dependent=True),
    ZooLayer("evonorm_s0", "EvoNormS0", "EvoNorm-S0", "Liu et al. 2020 (timm numerics)",
             Graph.build(("mul", ["v1", "x"]), ("sigmoid", [4]), ("mul", ["x", 5]),
                         ("std_group", ["x"]), ("div", [6, 7]))),
    ZooLayer("evonorm_s1", "EvoNormS1", "EvoNorm-S1", "Liu et al. 2020",
             Graph.build(("sigmoid", ["x"]), ("mul", ["x", 4]), ("std_group", ["x"]), ("div", [5, 6]))),
    ZooLayer("evonorm_s2", "EvoNormS2", "EvoNorm-S2", "Liu et al. 2020",
             Graph.build(("sigmoid", ["x"]), ("mul", ["x", 4]), ("rms_group", ["x"]), ("div", [5, 6]))),
    ZooLayer("batch_rms", "BatchRMS", "Batch RMS (PowerNorm's core)", "Shen et al. 2020",
             Graph.build(("rms_batch", ["x"]), ("div", ["x", 4])), batch_dependent=True),
    ZooLayer("batch_channel", "BatchChannelNorm", "Batch-Channel Norm (BN, then GN)",
             "Khaled et al. 2023",
             Graph.build(("mean_batch", ["x"]), ("neg", [4]), ("add", ["x", 5]), ("std_batch", ["x"]),
                         ("div", [6, 7]), ("mean_group", [8]), ("neg", [9]), ("add", [8, 10]),
                         ("std_group", [8]), ("div", [11, 12])), batch_dependent=True),
    ZooLayer("dyt", "DynamicTanh", "DyT-style tanh (per-channel alpha = v1, init 1)",
             "Zhu et al. 2025", Graph.build(("mul", ["v1", "x"]), ("tanh", [4]))),
    ZooLayer("swish", "Swish", "Swish / SiLU only", "Ramachandran et al. 2017",
             Graph.build(("sigmoid", ["x"]), ("mul", ["x", 4]))),
    ZooLayer("relu", "ReLU", "ReLU only", "Nair & Hinton 2010", Graph.build(("max", ["x", "zero"]))),
    ZooLayer("identity", "Identity", "Identity (no normalization)", "normalization-free baseline",
             Graph.build(("add", ["x", "zero"]))),
    ZooLayer("powernorm_relu", "PowerNormReLU", "PowerNorm + ReLU (outside the search space)",
             "Shen et al. 2020", reference=PowerNormReLU, batch_dependent=True),
    ZooLayer("selu", "SELU", "SELU (outside the search space)", "Klambauer et al. 2017",
             reference=SELU),
]

ZOO: dict[str, ZooLayer] = {layer.name: layer for layer in _LAYERS}


def get_layer(name: str) -> ZooLayer:
    try:
        return ZOO[name]
    except KeyError:
        raise KeyError(f"unknown zoo layer {name!r}; known: {', '.join(ZOO)}") from None

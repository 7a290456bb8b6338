"""Norm-act factories for the worker tests: plain torch layers and a compiled EvoNorm-S0."""

from __future__ import annotations

from torch import Tensor, nn

from primitives import Graph, layer_class
from workers.backbones import NormActFactory

EVONORM_S0 = Graph.build(("mul", ["v1", "x"]), ("sigmoid", [4]), ("mul", ["x", 5]),
                         ("std_group", ["x"]), ("div", [6, 7]))


class TokenBatchNorm(nn.Module):
    """BatchNorm1d over (B, T, C) tokens (normalizes over B and T per channel)."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(num_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(x.transpose(1, 2)).transpose(1, 2)


class Explode(nn.Module):
    """Multiplies by 1e30: activations overflow after two sites, a stand-in for a bad layer."""

    def __init__(self, num_features: int) -> None:
        super().__init__()

    def forward(self, x: Tensor) -> Tensor:
        return x * 1e30


def bn_relu(c: int) -> nn.Module:
    return nn.Sequential(nn.BatchNorm2d(c), nn.ReLU())


def token_bn_relu(c: int) -> nn.Module:
    return nn.Sequential(TokenBatchNorm(c), nn.ReLU())


def ln_relu(c: int) -> nn.Module:
    return nn.Sequential(nn.LayerNorm(c), nn.ReLU())


def identity(c: int) -> nn.Module:
    return nn.Identity()


# factory name -> (factory for "nchw", factory for "tokens")
FACTORIES: dict[str, tuple[NormActFactory, NormActFactory]] = {
    "bn_relu": (bn_relu, token_bn_relu),
    "evonorm_s0": (layer_class(EVONORM_S0, "nchw"), layer_class(EVONORM_S0, "tokens")),
    "identity": (identity, identity),
}


def factory_for(name: str, layout: str) -> NormActFactory:
    nchw, tokens = FACTORIES[name]
    return nchw if layout == "nchw" else tokens

"""Pieces shared by the backbones: the norm-act factory type and the affine-only norm."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

# A candidate layer: `norm_act(num_features)` returns a module that replaces a
# whole "norm + activation" pair and keeps the input shape.
NormActFactory = Callable[[int], nn.Module]


class Affine(nn.Module):
    """A per-channel scale and shift with no normalization.

    The reference EvoNorm ResNets use this after the last convolution of a
    block and on the projection shortcut: the candidate is applied only where
    the network needs a nonlinearity. `zero_init` starts the scale at 0 so a
    residual block begins as the identity (as in the reference code).
    """

    def __init__(self, num_features: int, zero_init: bool = False, layout: str = "nchw") -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num_features) if zero_init
                                   else torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.layout = layout

    def forward(self, x: Tensor) -> Tensor:
        if self.layout == "nchw":
            return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return x * self.weight + self.bias

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, layout={self.layout}"


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a scaled width to a multiple of `divisor`, never dropping below 90% of it.

    The MobileNet rule; multiples of 8 keep tensor cores busy on GPUs and keep
    group counts (GroupNorm-like candidates) easy to divide.
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded

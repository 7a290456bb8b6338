"""Hand-written layers: those outside the search space, and eager EvoNorms.

PowerNorm and SELU cannot be written as graphs over the primitives (PowerNorm
divides by a running statistic *during training*; SELU needs constants and a
branch), so the zoo carries them as plain modules marked outside the search
space. `EvoNormB0` and `EvoNormS0` are written directly from the public code
(timm), as the eager baseline the compiled graphs are benchmarked against.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _affine(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    return x * weight.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)


class EvoNormB0(nn.Module):
    """x / max(sqrt(var_batch + eps), v1 * x + std_instance(x)), timm's EvoNorm2dB0."""

    def __init__(self, num_features: int, eps: float = 1e-3, momentum: float = 0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.v1 = nn.Parameter(torch.ones(num_features))
        self.running_var: Tensor
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: Tensor) -> Tensor:
        var: Tensor
        if self.training:
            var = x.var(dim=(0, 2, 3), unbiased=False)
            n = x.numel() / x.shape[1]
            with torch.no_grad():
                self.running_var.mul_(1 - self.momentum).add_(var.detach() * self.momentum * n / (n - 1))
        else:
            var = self.running_var
        left = (var + self.eps).sqrt().view(1, -1, 1, 1)
        right = x * self.v1.view(1, -1, 1, 1) + (x.var(dim=(2, 3), unbiased=False, keepdim=True)
                                                 + self.eps).sqrt()
        return _affine(x / torch.maximum(left, right), self.weight, self.bias)


class EvoNormS0(nn.Module):
    """x * sigmoid(v1 * x) / std_group(x), timm's EvoNorm2dS0."""

    def __init__(self, num_features: int, groups: int = 32, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        # the compiled layers' rule (codegen's num_groups): the largest divisor of C that is <= groups
        self.groups = max(1, min(groups, num_features))
        while num_features % self.groups:
            self.groups -= 1
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.v1 = nn.Parameter(torch.ones(num_features))

    def forward(self, x: Tensor) -> Tensor:
        n, c = x.shape[0], x.shape[1]
        xg = x.reshape(n, self.groups, -1)
        std = (xg.var(dim=-1, unbiased=False, keepdim=True) + self.eps).sqrt()
        std = std.expand(n, self.groups, c // self.groups).reshape(n, c, 1, 1)
        return _affine(x * torch.sigmoid(self.v1.view(1, -1, 1, 1) * x) / std, self.weight, self.bias)


class PowerNormReLU(nn.Module):
    """PowerNorm (Shen et al., 2020), then ReLU: x / sqrt(psi + eps), psi a running quadratic mean.

    In training the forward divides by the running quadratic mean from the
    previous steps (not the batch's), then updates it with the batch's second
    moment. The paper's approximate backward pass is not reproduced: the
    gradient flows through x only, psi being a buffer.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.running_phi: Tensor
        self.register_buffer("running_phi", torch.ones(num_features))

    def forward(self, x: Tensor) -> Tensor:
        channel_dims = (0, 2, 3) if x.dim() == 4 else tuple(range(x.dim() - 1))
        shape = (1, -1, 1, 1) if x.dim() == 4 else (-1,)
        y = x / (self.running_phi.view(shape) + self.eps).sqrt()
        if self.training:
            with torch.no_grad():
                self.running_phi.lerp_(x.detach().square().mean(dim=channel_dims), self.momentum)
        w = self.weight.view(shape)
        b = self.bias.view(shape)
        return torch.relu(y * w + b)


class SELU(nn.Module):
    """Self-normalizing activation (Klambauer et al., 2017): no statistics at all."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, x: Tensor) -> Tensor:
        return torch.selu(x)

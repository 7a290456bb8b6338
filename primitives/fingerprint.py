"""Functional identity: a hash of what a graph computes.

The layer runs in float64 on a fixed seeded input with fixed seeded
non-trivial v0/v1, once in training mode and then, after that step has
updated any running statistics, in eval mode on a second input. The outputs
are rounded to `DIGITS` significant digits and hashed. Graphs that compute the
same function with different structure (x*x vs square(x), neg(neg(x)) vs x)
get the same fingerprint; the search reuses one's result for the other
(AutoML-Zero's functional-equivalence cache).

C = 8 with 2 groups, so group, instance and layer statistics all differ.

The outputs are divided by the root mean square of the training output
before rounding: a layer's output is always followed by the per-channel
affine `gamma * y + beta`, so graphs whose outputs differ by a positive
constant factor (`x` and `x + x`, `f` and `f + f`) are the same layer up to
gamma's initial value. They share a fingerprint, so the search trains one of
them and a pure change of scale never decides a rejection on its own (a short
quality run can fail `x + x` where `x` passes). The sign is kept: `-x` is
another layer at initialization.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from primitives.canonical import canonicalize
from primitives.compile import layer_class
from primitives.graph import Graph

DIGITS = 6
# Values this close to 0 are rounding noise of a computation that is 0.
ZERO_TOL = 1e-9
CHANNELS, GROUPS = 8, 2
SHAPE = (4, CHANNELS, 4, 4)


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(20200407)
    shift = torch.randn(1, CHANNELS, 1, 1, generator=gen, dtype=torch.float64)
    x_train = 2.0 * torch.randn(SHAPE, generator=gen, dtype=torch.float64) + shift
    x_eval = 1.5 * torch.randn(SHAPE, generator=gen, dtype=torch.float64) - shift
    v0 = 0.5 * torch.randn(CHANNELS, generator=gen, dtype=torch.float64)
    v1 = 1.0 + 0.5 * torch.randn(CHANNELS, generator=gen, dtype=torch.float64)
    return x_train, x_eval, v0, v1


_INPUTS = _inputs()


def _round(t: torch.Tensor) -> str:
    a = t.detach().cpu().numpy().astype(np.float64).ravel()
    a = np.where(np.abs(a) < ZERO_TOL, 0.0, a) + 0.0  # + 0.0 turns -0.0 into 0.0
    return ",".join(np.format_float_scientific(v, precision=DIGITS - 1, unique=False) for v in a)


def fingerprint(graph: Graph) -> str:
    x_train, x_eval, v0, v1 = _INPUTS
    # Op by op (fuse=False): a fingerprint must not move when the code generator's
    # kernel choices do, and equivalent graphs round most alike computed the same way.
    module = layer_class(canonicalize(graph), fuse=False)(CHANNELS, groups=GROUPS).double()
    with torch.no_grad():
        for name, value in (("v0", v0), ("v1", v1)):
            if hasattr(module, name):
                getattr(module, name).copy_(value)
        y_train = module.train()(x_train)
        y_eval = module.eval()(x_eval)
        scale = y_train.square().mean().sqrt()
        if torch.isfinite(scale) and scale > ZERO_TOL:
            y_train, y_eval = y_train / scale, y_eval / scale
    text = _round(y_train) + "|" + _round(y_eval)
    return hashlib.sha256(text.encode()).hexdigest()

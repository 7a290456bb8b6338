"""Rejection protocols: cheap filters that stop a poor candidate before full training.

Cheapest first (reference section 4); each reports its stage and reason, and
`workers.evaluate` records its cost in seconds:

1. static     the graph does not parse or validate (unknown op, output
              independent of x, ...): microseconds.
2. numeric    non-finite or constant output on random inputs, an output
              constant over the positions of every sample and channel (it
              keeps no per-position information), or non-finite gradients,
              in each layout the tasks need: milliseconds.
3. duplicate  the functional fingerprint matches a candidate already
              evaluated: its result is reused, nothing is trained.
4. stability  the paper's adversarial stress test: gradient ascent on the
              network parameters to maximise the norm of the loss gradient,
              a bounded number of steps on a small batch; rejected when the
              norm passes the threshold (1e8) or stops being finite.
5. quality    accuracy after a short training below chance + margin x
              (1 - chance) on any task (paper: 20% after 100 steps on
              CIFAR-10, i.e. margin 1/9; on text, chance is the most
              frequent character).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import torch
from torch import Tensor, nn

from primitives import Graph, layer_class


class Stage(StrEnum):
    STATIC = "static"
    NUMERIC = "numeric"
    DUPLICATE = "duplicate"
    STABILITY = "stability"
    QUALITY = "quality"
    TRAINING = "training"   # diverged during the full proxy training
    ERROR = "error"         # raised during training: the layer's fault, a result like any other
    WORKER = "worker"       # timed out, ran out of memory or lost its worker: not the layer's fault,
                            # so never reused for a functional duplicate
    CANCELLED = "cancelled"  # unfinished when its search was cancelled (set by the runner): not the
                             # layer's fault either

    @property
    def layers_fault(self) -> bool:
        """Whether a rejection here is the layer's own result (reused for a functional duplicate)."""
        return self not in (Stage.WORKER, Stage.CANCELLED)


@dataclass(frozen=True)
class Rejection:
    stage: Stage
    reason: str


def _probe_input(layout: str, gen: torch.Generator) -> Tensor:
    shape = (4, 8, 6, 6) if layout == "nchw" else (4, 6, 8)
    # Mixed scales and offsets per channel, as activations have.
    channel = (1, 8, 1, 1) if layout == "nchw" else (1, 1, 8)
    scale = torch.rand(channel, generator=gen) * 3 + 0.1
    shift = torch.randn(channel, generator=gen)
    return torch.randn(shape, generator=gen) * scale + shift


def _positional_spread(y: Tensor, layout: str) -> float:
    """The largest range of y over the positions (H, W or the tokens) of one sample and channel.

    Zero means the layer's output is a statistic broadcast back (`moment2_instance(x)`,
    `std_batch(std_layer(x))`): every position of the next layer sees the same value, so the
    network keeps no spatial information. (On tokens every statistic varies over positions: the
    instance axis is a causal prefix.) In the random stream of
    benchmarks/funnel.py such layers were most of what reached the quality check, each costing a
    short training, and none scored above chance on any task.
    """
    dims = (2, 3) if layout == "nchw" else (1,)
    return (y.amax(dim=dims) - y.amin(dim=dims)).max().item()


def numeric_check(graph: Graph, layouts: tuple[str, ...] = ("nchw",), *, groups: int = 2,
                  eps: float = 1e-5) -> Rejection | None:
    """Forward and backward on random inputs: finite, not constant, finite gradients."""
    gen = torch.Generator().manual_seed(0)
    for layout in layouts:
        module = layer_class(graph, layout)(8, groups=groups, eps=eps)
        with torch.no_grad():
            # Move v0/v1 off their init (v1 * x == x at init); weight/bias stay
            # the identity so the output checked is the graph's own.
            for name in ("v0", "v1"):
                if hasattr(module, name):
                    getattr(module, name).add_(0.1 * torch.randn(8, generator=gen))
        for trial in range(2):
            x = _probe_input(layout, gen).requires_grad_(True)
            y = module.train()(x)
            if not torch.isfinite(y).all():
                return Rejection(Stage.NUMERIC, f"non-finite output ({layout}, input {trial})")
            scale = 1e-6 * max(1.0, y.abs().max().item())
            spread = (y.max() - y.min()).item()
            if spread <= scale:
                return Rejection(Stage.NUMERIC, f"constant output {y.flatten()[0].item():.4g} ({layout})")
            if _positional_spread(y, layout) <= scale:
                return Rejection(Stage.NUMERIC, f"output constant over positions ({layout}): the layer "
                                                "keeps only per-sample, per-channel statistics")
            (y * torch.randn(y.shape, generator=gen)).sum().backward()
            grads = [x.grad] + [p.grad for p in module.parameters() if p.grad is not None]
            if not all(torch.isfinite(g).all() for g in grads if g is not None):
                return Rejection(Stage.NUMERIC, f"non-finite gradient ({layout})")
            module.zero_grad()
        with torch.no_grad():
            if not torch.isfinite(module.eval()(_probe_input(layout, gen))).all():
                return Rejection(Stage.NUMERIC, f"non-finite output in eval mode ({layout})")
    return None


@dataclass(frozen=True)
class StressResult:
    max_grad_norm: float
    steps: int
    rejection: Rejection | None


def stress_test(model: nn.Module, x: Tensor, y: Tensor, loss_fn: Callable[[Tensor, Tensor], Tensor], *,
                steps: int = 20, lr: float = 0.01, threshold: float = 1e8) -> StressResult:
    """Adversarial gradient-explosion test (Liu et al. 2020, section 4).

    Adam ascends log ||dL/dtheta|| (scale-free, so the step size means the
    same for every layer) with the network in training mode on one small
    batch. A stable layer keeps the norm bounded; an unstable one passes the
    threshold, often within a few steps.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr, maximize=True)
    model.train()
    worst = 0.0
    for step in range(1, steps + 1):
        loss = loss_fn(model(x), y)
        grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
        norm = torch.sqrt(sum((g * g).sum() for g in grads if g is not None))  # type: ignore[arg-type]
        value = norm.item()
        if not torch.isfinite(norm):
            return StressResult(worst, step,
                                Rejection(Stage.STABILITY, f"gradient norm non-finite at step {step}"))
        worst = max(worst, value)
        if value > threshold:
            return StressResult(worst, step, Rejection(
                Stage.STABILITY, f"gradient norm {value:.3g} > {threshold:.3g} at step {step}"))
        opt.zero_grad(set_to_none=True)
        torch.log(norm).backward()
        if not all(torch.isfinite(p.grad).all() for p in params if p.grad is not None):
            return StressResult(worst, step,
                                Rejection(Stage.STABILITY, f"ascent gradient non-finite at step {step}"))
        opt.step()
    return StressResult(worst, steps, None)


def quality_check(accuracy: float, chance: float, margin: float, task: str) -> Rejection | None:
    """Reject below chance + margin * (1 - chance); margin 1/9 is 20% on 10 classes."""
    threshold = chance + margin * (1.0 - chance)
    if accuracy < threshold:
        return Rejection(Stage.QUALITY, f"{task}: accuracy {accuracy:.3f} < {threshold:.3f} "
                                        f"(chance {chance:.3f} + {margin:.3g} of the headroom) "
                                        "after the short training")
    return None

"""Zoo layers against references: PyTorch's own layers, and the reference doc's formulas written by hand.

Every comparison runs several training steps (different inputs, so running
statistics move), compares outputs and running buffers at each step, then
eval mode, with random non-default parameters copied across. The renderings
below are written from the reference (section 5 and 6) without any
generated code.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from primitives import Graph
from primitives.compile import compile_graph
from primitives.handwritten import EvoNormB0, EvoNormS0
from primitives.ops import OPS, Kind
from primitives.zoo import ZOO, get_layer

N, C, H, W = 8, 16, 6, 6
MOMENTUM = 0.1
TOL = {"rtol": 1e-5, "atol": 1e-5}


def _batches(steps: int, shape: tuple[int, ...] = (N, C, H, W), seed: int = 0) -> list[Tensor]:
    """Inputs with a per-channel shift and scale that change from step to step."""
    gen = torch.Generator().manual_seed(seed)
    channel = (1, -1, 1, 1) if len(shape) == 4 else (1, 1, -1)
    out = []
    for _ in range(steps):
        scale = (0.5 + 2 * torch.rand(shape[1] if len(shape) == 4 else shape[-1], generator=gen)).view(channel)
        shift = torch.randn(scale.numel(), generator=gen).view(channel)
        out.append(torch.randn(shape, generator=gen) * scale + shift)
    return out


def _zoo(name: str, channels: int = C, layout: str = "nchw", **kwargs: int) -> nn.Module:
    return get_layer(name).factory(layout)(channels, **kwargs)


def _copy_params(dst: nn.Module, **values: Tensor) -> None:
    with torch.no_grad():
        for name, value in values.items():
            dst.get_parameter(name).copy_(value)


def _forward_and_grad(module: Callable[[Tensor], Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
    x = x.clone().requires_grad_(True)
    y = module(x)
    w = torch.linspace(-1, 1, y.numel()).view_as(y)
    (y * w).sum().backward()
    assert x.grad is not None
    return y.detach(), x.grad


# -- against PyTorch's layers -----------------------------------------------------


def test_bn_relu_matches_batchnorm2d_then_relu(randomize: Callable[..., nn.Module]) -> None:
    bn = randomize(nn.BatchNorm2d(C))
    zoo = _zoo("bn_relu")
    _copy_params(zoo, v1=bn.weight, v0=bn.bias)
    assert torch.equal(zoo.get_parameter("weight"), torch.ones(C))  # the final affine stays the identity

    def native(x: Tensor) -> Tensor:
        return torch.relu(bn(x))

    for x in _batches(4):
        bn.train(), zoo.train()
        y_ref, g_ref = _forward_and_grad(native, x)
        y, g = _forward_and_grad(zoo, x)
        torch.testing.assert_close(y, y_ref, **TOL)
        torch.testing.assert_close(g, g_ref, **TOL)
        torch.testing.assert_close(zoo.get_buffer("running_mean"), bn.running_mean, **TOL)
        torch.testing.assert_close(zoo.get_buffer("running_var"), bn.running_var, **TOL)
    # parameter gradients: v1, v0 play BN's weight and bias
    torch.testing.assert_close(zoo.get_parameter("v1").grad, bn.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(zoo.get_parameter("v0").grad, bn.bias.grad, rtol=1e-4, atol=1e-4)
    bn.eval(), zoo.eval()
    x = _batches(1, seed=9)[0]
    y_ref, g_ref = _forward_and_grad(native, x)
    y, g = _forward_and_grad(zoo, x)
    torch.testing.assert_close(y, y_ref, **TOL)
    torch.testing.assert_close(g, g_ref, **TOL)


@pytest.mark.parametrize("groups", [4, 32])
def test_gn_relu_matches_groupnorm_then_relu(groups: int, randomize: Callable[..., nn.Module]) -> None:
    zoo = _zoo("gn_relu", groups=groups)
    assert zoo.groups == min(groups, C)  # 32 groups do not divide 16 channels: the largest divisor
    gn = randomize(nn.GroupNorm(zoo.groups, C))
    _copy_params(zoo, v1=gn.weight, v0=gn.bias)
    for train, x in zip((True, True, False), _batches(3), strict=True):
        gn.train(train), zoo.train(train)
        y_ref, g_ref = _forward_and_grad(lambda t: torch.relu(gn(t)), x)
        y, g = _forward_and_grad(zoo, x)
        torch.testing.assert_close(y, y_ref, **TOL)
        torch.testing.assert_close(g, g_ref, **TOL)


def test_layernorm_matches_groupnorm_with_one_group_on_images(randomize: Callable[..., nn.Module]) -> None:
    gn = randomize(nn.GroupNorm(1, C))
    zoo = _zoo("layernorm")
    _copy_params(zoo, weight=gn.weight, bias=gn.bias)
    for train, x in zip((True, False), _batches(2), strict=True):
        zoo.train(train)
        y_ref, g_ref = _forward_and_grad(gn, x)
        y, g = _forward_and_grad(zoo, x)
        torch.testing.assert_close(y, y_ref, **TOL)
        torch.testing.assert_close(g, g_ref, **TOL)


def test_layernorm_matches_nn_layernorm_on_tokens(randomize: Callable[..., nn.Module]) -> None:
    ln = randomize(nn.LayerNorm(C))
    zoo = _zoo("layernorm", layout="tokens")
    _copy_params(zoo, weight=ln.weight, bias=ln.bias)
    for train, x in zip((True, False), _batches(2, (4, 10, C)), strict=True):
        zoo.train(train)
        y_ref, g_ref = _forward_and_grad(ln, x)
        y, g = _forward_and_grad(zoo, x)
        torch.testing.assert_close(y, y_ref, **TOL)
        torch.testing.assert_close(g, g_ref, **TOL)


def test_rmsnorm_matches_nn_rmsnorm_on_tokens(randomize: Callable[..., nn.Module]) -> None:
    eps = get_layer("rmsnorm").eps
    rms = randomize(nn.RMSNorm(C, eps=eps))
    zoo = _zoo("rmsnorm", layout="tokens")
    _copy_params(zoo, weight=rms.weight)
    for x in _batches(2, (4, 10, C)):
        y_ref, g_ref = _forward_and_grad(rms, x)
        y, g = _forward_and_grad(zoo, x)
        torch.testing.assert_close(y, y_ref, **TOL)
        torch.testing.assert_close(g, g_ref, **TOL)


def test_rmsnorm_on_images_divides_by_the_rms_over_c_h_w(randomize: Callable[..., nn.Module]) -> None:
    zoo = randomize(_zoo("rmsnorm"))
    w, b = zoo.get_parameter("weight").detach(), zoo.get_parameter("bias").detach()
    for x in _batches(2):
        ref = x / (x.pow(2).mean(dim=(1, 2, 3), keepdim=True) + 1e-5).sqrt()
        torch.testing.assert_close(zoo(x), ref * w.view(1, -1, 1, 1) + b.view(1, -1, 1, 1), **TOL)


# -- against the reference doc's formulas, written by hand ---------------------------


class Rendering:
    """One zoo layer from the reference doc (sections 5 and 6), with timm's running statistics."""

    def __init__(self, name: str, eps: float, groups: int) -> None:
        self.name, self.eps, self.groups = name, eps, groups
        self.running_var = torch.ones(C)
        self.running_mean = torch.zeros(C)
        self.running_moment2 = torch.ones(C)

    # statistics, NCHW
    def batch_std(self, x: Tensor, training: bool) -> Tensor:
        if training:
            var = x.var(dim=(0, 2, 3), unbiased=False)
            n = x.numel() / x.shape[1]
            self.running_var = (1 - MOMENTUM) * self.running_var + MOMENTUM * var.detach() * n / (n - 1)
        else:
            var = self.running_var
        return (var + self.eps).sqrt().view(1, -1, 1, 1)

    def batch_rms(self, x: Tensor, training: bool) -> Tensor:
        if training:
            second = x.pow(2).mean(dim=(0, 2, 3))
            self.running_moment2 = (1 - MOMENTUM) * self.running_moment2 + MOMENTUM * second.detach()
        else:
            second = self.running_moment2
        return (second + self.eps).sqrt().view(1, -1, 1, 1)

    def instance_std(self, x: Tensor) -> Tensor:
        return (x.var(dim=(2, 3), unbiased=False, keepdim=True) + self.eps).sqrt()

    def instance_rms(self, x: Tensor) -> Tensor:
        return (x.pow(2).mean(dim=(2, 3), keepdim=True) + self.eps).sqrt()

    def group_stat(self, x: Tensor, rms: bool) -> Tensor:
        n, c = x.shape[:2]
        xg = x.reshape(n, self.groups, -1)
        s = xg.pow(2).mean(-1, keepdim=True) if rms else xg.var(-1, unbiased=False, keepdim=True)
        s = (s + self.eps).sqrt()
        return s.repeat_interleave(c // self.groups, dim=1).view(n, c, 1, 1)

    def __call__(self, x: Tensor, v0: Tensor, v1: Tensor, training: bool) -> Tensor:
        v0, v1 = v0.view(1, -1, 1, 1), v1.view(1, -1, 1, 1)
        name = self.name
        if name == "evonorm_b0":
            return x / torch.maximum(self.batch_std(x, training), v1 * x + self.instance_std(x))
        if name == "evonorm_b1":
            return x / torch.maximum(self.batch_std(x, training), (x + 1) * self.instance_rms(x))
        if name == "evonorm_b2":
            return x / torch.maximum(self.batch_std(x, training), self.instance_rms(x) - x)
        if name == "evonorm_s0":
            return x * torch.sigmoid(v1 * x) / self.group_stat(x, rms=False)
        if name == "evonorm_s1":
            return x * torch.sigmoid(x) / self.group_stat(x, rms=False)
        if name == "evonorm_s2":
            return x * torch.sigmoid(x) / self.group_stat(x, rms=True)
        if name == "batch_rms":
            return x / self.batch_rms(x, training)
        if name == "batch_channel":
            # BatchNorm without affine, then GroupNorm without affine (the native ops, not ours)
            y = F.batch_norm(x, self.running_mean, self.running_var, training=training, momentum=MOMENTUM,
                             eps=self.eps)
            return F.group_norm(y, self.groups, eps=self.eps)
        if name == "dyt":
            return torch.tanh(v1 * x)
        if name == "swish":
            return x * torch.sigmoid(x)
        if name == "relu":
            return torch.relu(x)
        if name == "identity":
            return x
        raise AssertionError(name)


RENDERED = ["evonorm_b0", "evonorm_b1", "evonorm_b2", "evonorm_s0", "evonorm_s1", "evonorm_s2", "batch_rms",
            "batch_channel", "dyt", "swish", "relu", "identity"]


@pytest.mark.parametrize("name", RENDERED)
def test_zoo_layer_matches_the_reference_formula_in_train_and_eval(
        name: str, randomize: Callable[..., nn.Module]) -> None:
    layer = get_layer(name)
    zoo = randomize(_zoo(name, groups=4))
    params = dict(zoo.named_parameters())
    v0 = params.get("v0", torch.zeros(C)).detach()
    v1 = params.get("v1", torch.ones(C)).detach()
    w, b = params["weight"].detach().view(1, -1, 1, 1), params["bias"].detach().view(1, -1, 1, 1)
    ref = Rendering(name, layer.eps, groups=4)

    def rendered(x: Tensor, training: bool) -> Tensor:
        return ref(x, v0, v1, training) * w + b

    for x in _batches(3):
        y_ref, g_ref = _forward_and_grad(lambda t: rendered(t, True), x)
        y, g = _forward_and_grad(zoo.train(), x)
        torch.testing.assert_close(y, y_ref, **TOL)
        torch.testing.assert_close(g, g_ref, **TOL)
        for buffer in ("running_var", "running_mean", "running_moment2"):
            if hasattr(zoo, buffer):
                torch.testing.assert_close(zoo.get_buffer(buffer), getattr(ref, buffer), **TOL)
    assert {b for b, _ in zoo.named_buffers()} <= {"running_var", "running_mean", "running_moment2"}
    x = _batches(1, seed=5)[0]
    y_ref, g_ref = _forward_and_grad(lambda t: rendered(t, False), x)
    y, g = _forward_and_grad(zoo.eval(), x)
    torch.testing.assert_close(y, y_ref, **TOL)
    torch.testing.assert_close(g, g_ref, **TOL)


def test_evonorm_b_layers_keep_a_running_variance_starting_at_one() -> None:
    for name in ("evonorm_b0", "evonorm_b1", "evonorm_b2"):
        zoo = _zoo(name)
        assert [n for n, _ in zoo.named_buffers()] == ["running_var"]
        assert torch.equal(zoo.get_buffer("running_var"), torch.ones(C))
        assert "running_var" not in dict(zoo.named_parameters())
    assert get_layer("evonorm_b0").eps == 1e-3  # timm's
    assert _zoo("evonorm_b0").eps == 1e-3


def test_evonorm_b0_matches_the_handwritten_timm_port(randomize: Callable[..., nn.Module]) -> None:
    hand = randomize(EvoNormB0(C))
    zoo = _zoo("evonorm_b0")
    zoo.load_state_dict(hand.state_dict())
    assert hand.eps == zoo.eps == 1e-3
    for train, x in zip((True, True, True, False), _batches(4), strict=True):
        hand.train(train), zoo.train(train)
        y_ref, g_ref = _forward_and_grad(hand, x)
        y, g = _forward_and_grad(zoo, x)
        torch.testing.assert_close(y, y_ref, **TOL)
        torch.testing.assert_close(g, g_ref, **TOL)
        torch.testing.assert_close(zoo.get_buffer("running_var"), hand.running_var, **TOL)


@pytest.mark.parametrize("channels,groups", [(16, 4), (16, 32), (24, 32), (12, 8)])
def test_evonorm_s0_matches_the_handwritten_timm_port(channels: int, groups: int,
                                                      randomize: Callable[..., nn.Module]) -> None:
    hand = randomize(EvoNormS0(channels, groups=groups))
    zoo = _zoo("evonorm_s0", channels=channels, groups=groups)
    zoo.load_state_dict(hand.state_dict())
    assert zoo.groups == hand.groups  # same rule when `groups` does not divide the channels
    x = torch.randn(4, channels, 5, 5) * 2 + 0.5
    torch.testing.assert_close(zoo(x), hand(x), **TOL)


# -- tokens: no statistic mixes positions of a sequence ----------------------------

B_, T, D = 4, 7, 8
AGGREGATIONS = [name for name, op in OPS.items() if op.kind is Kind.AGGREGATE]


def _tokens_layers() -> list[tuple[str, Graph]]:
    zoo = [(name, layer.graph) for name, layer in ZOO.items() if layer.graph is not None]
    ops = [(f"{op} alone", Graph.build((op, ["x"]))) for op in AGGREGATIONS]
    ops += [(f"x / {op}", Graph.build((op, ["x"]), ("div", ["x", 4]))) for op in AGGREGATIONS]
    return zoo + ops


@pytest.mark.parametrize("t0", [1, 4])
@pytest.mark.parametrize("case", _tokens_layers(), ids=lambda c: c[0] if isinstance(c, tuple) else str(c))
def test_changing_future_tokens_leaves_earlier_positions_unchanged(
        case: tuple[str, Graph], t0: int, randomize: Callable[..., nn.Module]) -> None:
    _, graph = case
    layer = randomize(compile_graph(graph, D, layout="tokens", groups=2))
    gen = torch.Generator().manual_seed(t0)
    x = torch.randn(B_, T, D, generator=gen) + 0.5
    layer.train()(torch.randn(B_, T, D, generator=gen))  # move the running statistics away from their start
    future = x.clone()
    future[:, t0:] = 10 * torch.randn(B_, T - t0, D, generator=gen) - 3
    for training in (True, False):
        a, b = copy.deepcopy(layer).train(training), copy.deepcopy(layer).train(training)
        ya, yb = a(x), b(future)
        torch.testing.assert_close(yb[:, :t0], ya[:, :t0], rtol=0, atol=1e-6)


def test_token_statistics_are_per_token_or_causal_prefix_and_batch_over_b() -> None:
    x = torch.randn(3, 5, D, dtype=torch.float64) * 2 + 1
    eps = 1e-5

    def run(op: str, training: bool = True) -> Tensor:
        m = compile_graph(Graph.build((op, ["x"])), D, layout="tokens", groups=2, eps=eps).double()
        return m.train(training)(x)

    # layer: over the C channels of one token; group: over C/g channels of one token
    torch.testing.assert_close(run("std_layer"), (x.var(-1, unbiased=False, keepdim=True) + eps).sqrt()
                               .expand_as(x))
    xg = x.view(3, 5, 2, D // 2)
    torch.testing.assert_close(run("rms_group"), (xg.pow(2).mean(-1, keepdim=True) + eps).sqrt()
                               .expand_as(xg).reshape_as(x))
    # instance: positions 1..t of the same sequence
    for t in range(5):
        prefix = x[:, : t + 1]
        torch.testing.assert_close(run("mean_instance")[:, t], prefix.mean(1))
        torch.testing.assert_close(run("std_instance")[:, t], (prefix.var(1, unbiased=False) + eps).sqrt())
        torch.testing.assert_close(run("moment2_instance")[:, t], prefix.pow(2).mean(1))
    # batch: over B at each position in training; the per-channel running value in eval
    torch.testing.assert_close(run("mean_batch"), x.mean(0, keepdim=True).expand_as(x))
    torch.testing.assert_close(run("std_batch"), (x.var(0, unbiased=False, keepdim=True) + eps).sqrt()
                               .expand_as(x))
    m = compile_graph(Graph.build(("std_batch", ["x"])), D, layout="tokens", eps=eps).double()
    m.train()(x)
    expected = 0.9 + 0.1 * x.var(0, unbiased=True).mean(0)
    torch.testing.assert_close(m.get_buffer("running_var"), expected)
    torch.testing.assert_close(m.eval()(x), (expected + eps).sqrt().expand_as(x))


def test_causal_instance_std_stays_accurate_in_float32_when_the_mean_dwarfs_the_spread() -> None:
    # residual streams carry channels with |mean| >> std; E[x^2] - E[x]^2 cancels catastrophically there
    gen = torch.Generator().manual_seed(2)
    x = 60.0 + torch.randn(2, 512, D, generator=gen)
    m = compile_graph(Graph.build(("std_instance", ["x"])), D, layout="tokens")
    xd = x.double()
    count = torch.arange(1, 513, dtype=torch.float64).view(1, -1, 1)
    mean = xd.cumsum(1) / count
    var = torch.stack([(xd[:, : t + 1] - mean[:, t: t + 1]).pow(2).mean(1) for t in range(512)], dim=1)
    torch.testing.assert_close(m(x).double(), (var + 1e-5).sqrt(), rtol=1e-4, atol=1e-5)


# -- outside the search space -------------------------------------------------------


@pytest.mark.parametrize("name", ["powernorm_relu", "selu"])
def test_out_of_space_layers_are_marked_build_and_run(name: str) -> None:
    layer = ZOO[name]
    assert not layer.in_search_space and layer.graph is None
    assert layer.formula  # the first line of the module's docstring
    module = layer.factory()(C)
    for training in (True, False, True):
        x = _batches(1, seed=int(training))[0].requires_grad_(True)
        y = module.train(training)(x)
        assert y.shape == x.shape and torch.isfinite(y).all()
        y.sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()
    torch.testing.assert_close(ZOO["selu"].factory()(C)(x), torch.selu(x))


def test_powernorm_divides_by_the_running_quadratic_mean_of_earlier_steps() -> None:
    module = ZOO["powernorm_relu"].factory()(C)
    x1, x2 = _batches(2)
    torch.testing.assert_close(module.train()(x1), torch.relu(x1 / (1 + 1e-5) ** 0.5))  # starts at 1
    phi = 0.9 + 0.1 * x1.pow(2).mean(dim=(0, 2, 3))
    torch.testing.assert_close(module.get_buffer("running_phi"), phi)
    torch.testing.assert_close(module(x2), torch.relu(x2 / (phi.view(1, -1, 1, 1) + 1e-5).sqrt()))


def test_get_layer_names_the_known_layers() -> None:
    with pytest.raises(KeyError, match="unknown zoo layer 'bn'; known: bn_relu, gn_relu"):
        get_layer("bn")
    assert all(get_layer(n).name == n for n in ZOO)

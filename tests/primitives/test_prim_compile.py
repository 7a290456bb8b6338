"""Compiled layers: modes, dtypes, memory formats, torch.compile / jit.script / export, state, drop-in use."""

from __future__ import annotations

import copy
import inspect
import io
import os
import pickle
import random
import shutil
import sys
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from primitives import Graph, canonicalize, compile_graph, layer_class
from primitives.export import exported_program
from primitives.mutation import random_graph
from primitives.ops import V0, V1, get_op
from primitives.zoo import ZOO, get_layer

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.[a-z_]*` is deprecated:DeprecationWarning")

C = 16
SHAPE = (4, C, 5, 5)

STATE_KEYS = {
    "bn_relu": ["weight", "bias", "v0", "v1", "running_mean", "running_var"],
    "gn_relu": ["weight", "bias", "v0", "v1"],
    "layernorm": ["weight", "bias"],
    "rmsnorm": ["weight", "bias"],
    "evonorm_b0": ["weight", "bias", "v1", "running_var"],
    "evonorm_b1": ["weight", "bias", "running_var"],
    "evonorm_b2": ["weight", "bias", "running_var"],
    "evonorm_s0": ["weight", "bias", "v1"],
    "evonorm_s1": ["weight", "bias"],
    "evonorm_s2": ["weight", "bias"],
    "batch_rms": ["weight", "bias", "running_moment2"],
    "batch_channel": ["weight", "bias", "running_mean", "running_var"],
    "dyt": ["weight", "bias", "v1"],
    "swish": ["weight", "bias"],
    "relu": ["weight", "bias"],
    "identity": ["weight", "bias"],
}


def _layer(name: str, randomize: Callable[..., nn.Module] | None = None, **kwargs: int) -> nn.Module:
    module = get_layer(name).factory()(C, **kwargs)
    return randomize(module) if randomize else module


def _inputs(steps: int = 3, shape: tuple[int, ...] = SHAPE) -> list[Tensor]:
    gen = torch.Generator().manual_seed(3)
    return [torch.randn(shape, generator=gen) * (1 + k) + 0.3 * k for k in range(steps)]


def _train_then_eval(module: nn.Module, xs: list[Tensor], transform: Callable[[Tensor], Tensor] = lambda t: t,
                     ) -> list[Tensor]:
    """Outputs of training steps on xs[:-1], then eval on xs[-1]."""
    out = [module.train()(transform(x)) for x in xs[:-1]]
    out.append(module.eval()(transform(xs[-1])))
    return [y.detach() for y in out]


# -- modes and dtypes ------------------------------------------------------------------


def test_train_and_eval_in_float32_and_bfloat16(in_space_layer: str,
                                                randomize: Callable[..., nn.Module]) -> None:
    f32 = _layer(in_space_layer, randomize, groups=4)
    bf16 = copy.deepcopy(f32).to(torch.bfloat16)
    xs = _inputs()
    ys = _train_then_eval(f32, xs)
    ys_bf16 = _train_then_eval(bf16, xs, lambda t: t.to(torch.bfloat16))
    for y, y16 in zip(ys, ys_bf16, strict=True):
        assert y.dtype == torch.float32 and y16.dtype == torch.bfloat16
        assert y.shape == y16.shape == SHAPE
        assert torch.isfinite(y).all()
        torch.testing.assert_close(y16.float(), y, rtol=0.05, atol=0.1)
    for name, buf in f32.named_buffers():
        torch.testing.assert_close(bf16.get_buffer(name).float(), buf, rtol=0.05, atol=0.05)


def test_train_and_eval_differ_exactly_for_batch_dependent_layers(in_space_layer: str) -> None:
    layer = get_layer(in_space_layer)
    module = _layer(in_space_layer, groups=4)  # with 16 groups of 1 channel, batch_channel's GN undoes its BN
    x = _inputs(1)[0]
    same = torch.allclose(module.train()(x), module.eval()(x))
    assert layer.graph is not None and layer.batch_dependent == layer.graph.batch_dependent
    assert same != layer.batch_dependent


def test_channels_last_gives_the_contiguous_result(in_space_layer: str,
                                                   randomize: Callable[..., nn.Module]) -> None:
    a = _layer(in_space_layer, randomize, groups=4)
    b = copy.deepcopy(a)
    xs = _inputs()
    ys = _train_then_eval(a, xs)
    ys_cl = _train_then_eval(b, xs, lambda t: t.contiguous(memory_format=torch.channels_last))
    for y, y_cl in zip(ys, ys_cl, strict=True):
        torch.testing.assert_close(y_cl, y, rtol=1e-5, atol=1e-6)
    for name, buf in a.named_buffers():
        torch.testing.assert_close(b.get_buffer(name), buf)
    # and the gradient
    x = xs[0].clone().requires_grad_(True)
    x_cl = xs[0].contiguous(memory_format=torch.channels_last).requires_grad_(True)
    a.train()(x).square().sum().backward()
    b.train()(x_cl).square().sum().backward()
    assert x.grad is not None and x_cl.grad is not None
    torch.testing.assert_close(x_cl.grad, x.grad, rtol=1e-4, atol=1e-5)


def test_momentum_and_eps_are_constructor_arguments() -> None:
    g = get_layer("evonorm_b0").graph
    assert g is not None
    m = compile_graph(g, C, eps=0.5, momentum=0.5)
    assert (m.eps, m.momentum) == (0.5, 0.5)
    x = _inputs(1)[0]
    m.train()(x)
    n = x.numel() / C
    torch.testing.assert_close(m.get_buffer("running_var"),
                               0.5 + 0.5 * x.var(dim=(0, 2, 3), unbiased=False) * n / (n - 1))
    torch.testing.assert_close(m.eval()(x), x / torch.maximum(
        (m.get_buffer("running_var") + 0.5).sqrt().view(1, -1, 1, 1),
        x + (x.var(dim=(2, 3), unbiased=False, keepdim=True) + 0.5).sqrt()))


# -- torch.jit.script, torch.export, torch.compile ---------------------------------------


def test_torchscript_matches_eager(in_space_layer: str, randomize: Callable[..., nn.Module]) -> None:
    eager = _layer(in_space_layer, randomize, groups=4)
    scripted = torch.jit.script(copy.deepcopy(eager))
    xs = _inputs()
    for y_s, y_e in zip(_train_then_eval(scripted, xs), _train_then_eval(eager, xs), strict=True):
        torch.testing.assert_close(y_s, y_e)
    for name, buf in eager.named_buffers():
        torch.testing.assert_close(getattr(scripted, name), buf)


def test_torchscript_on_tokens() -> None:
    for name in ("evonorm_b0", "evonorm_s0", "rmsnorm"):
        eager = get_layer(name).factory("tokens")(8, groups=2)
        scripted = torch.jit.script(copy.deepcopy(eager))
        xs = _inputs(shape=(3, 6, 8))
        for y_s, y_e in zip(_train_then_eval(scripted, xs), _train_then_eval(eager, xs), strict=True):
            torch.testing.assert_close(y_s, y_e)


def test_torch_export_in_eval_mode_with_dynamic_batch_and_size(in_space_layer: str,
                                                               randomize: Callable[..., nn.Module]) -> None:
    eager = _layer(in_space_layer, randomize)
    for x in _inputs(2):
        eager.train()(x)  # running statistics away from their start
    program = exported_program(eager, C, "nchw").module()
    assert eager.training  # the caller's module keeps its mode; the program is the eval-mode layer
    eager.eval()
    for shape in ((4, C, 8, 8), (1, C, 8, 8), (7, C, 3, 5)):
        x = torch.randn(shape)
        torch.testing.assert_close(program(x), eager(x))


def test_torch_export_on_tokens_with_dynamic_batch_and_length() -> None:
    eager = get_layer("evonorm_b0").factory("tokens")(8)
    eager.train()(torch.randn(4, 5, 8))
    program = exported_program(eager, 8, "tokens").module()
    for shape in ((2, 16, 8), (5, 3, 8)):
        x = torch.randn(shape)
        torch.testing.assert_close(program(x), eager.eval()(x))


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++") or os.environ.get("CXX")),
                    reason="torch.compile (Inductor on CPU) needs a C++ compiler")
@pytest.mark.parametrize("name", ["evonorm_b0", "evonorm_s0"])
def test_torch_compile_matches_eager_in_train_and_eval(name: str, randomize: Callable[..., nn.Module]) -> None:
    eager = _layer(name, randomize, groups=4)
    twin = copy.deepcopy(eager)
    compiled = torch.compile(twin, dynamic=False)
    for x in _inputs(2):
        xe, xc = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        ye, yc = eager.train()(xe), compiled.train()(xc)
        torch.testing.assert_close(yc, ye, rtol=1e-5, atol=1e-5)
        ye.square().sum().backward()
        yc.square().sum().backward()
        assert xe.grad is not None and xc.grad is not None
        torch.testing.assert_close(xc.grad, xe.grad, rtol=1e-4, atol=1e-4)
    for buf_name, buf in eager.named_buffers():
        torch.testing.assert_close(twin.get_buffer(buf_name), buf)
    with torch.no_grad():
        x = _inputs(1)[0]
        torch.testing.assert_close(compiled.eval()(x), eager.eval()(x), rtol=1e-5, atol=1e-5)


# -- parameters and state -------------------------------------------------------------------


def test_state_dict_holds_the_affine_the_used_vectors_and_running_buffers(in_space_layer: str) -> None:
    module = _layer(in_space_layer)
    assert list(module.state_dict()) == STATE_KEYS[in_space_layer]
    params = dict(module.named_parameters())
    assert set(params) == {k for k in STATE_KEYS[in_space_layer] if not k.startswith("running_")}
    assert all(p.requires_grad and p.shape == (C,) for p in params.values())
    assert all(b.shape == (C,) and not b.requires_grad for b in module.buffers())
    inits = {"weight": 1.0, "bias": 0.0, "v0": 0.0, "v1": 1.0, "running_mean": 0.0, "running_var": 1.0,
             "running_moment2": 1.0}
    for key, value in module.state_dict().items():
        assert torch.equal(value, torch.full((C,), inits[key])), key


def test_random_graphs_have_a_parameter_per_live_vector_and_a_buffer_per_batch_statistic() -> None:
    rng = random.Random(11)
    for _ in range(60):
        g = random_graph(rng)
        module = compile_graph(g, C)
        live = g.live_ids()
        expected = {"weight", "bias"} | {v for v, i in (("v0", V0), ("v1", V1)) if i in live}
        assert {n for n, _ in module.named_parameters()} == expected, g.dumps()
        canon = canonicalize(g)
        n_batch = sum(get_op(n.op).batch_dependent for n in canon.nodes)
        assert len(list(module.buffers())) == n_batch, g.dumps()


def test_dead_nodes_cost_no_parameters_or_buffers() -> None:
    g = Graph.build(("std_batch", ["x"]), ("mul", ["v0", "x"]), ("sigmoid", ["x"]), ("mul", ["x", 6]))
    module = compile_graph(g, C)
    assert list(module.state_dict()) == ["weight", "bias"]


# -- the class and drop-in use ------------------------------------------------------------


def test_layer_class_is_cached_named_and_importable_by_inspect_and_pickle() -> None:
    layer = get_layer("evonorm_s0")
    assert layer.graph is not None
    cls = layer.factory()
    assert cls is layer.factory() and cls.__name__ == "EvoNormS0"
    assert layer_class(layer.graph).__name__.startswith("Layer_")
    assert cls.__module__ in sys.modules
    assert "def forward" in inspect.getsource(cls)
    module = cls(C, groups=4)
    with torch.no_grad():
        module.get_parameter("v1").mul_(-2)
    clone = pickle.loads(pickle.dumps(module))
    x = _inputs(1)[0]
    torch.testing.assert_close(clone(x), module(x))


def test_instances_stay_picklable_when_the_same_graph_is_compiled_again_another_way() -> None:
    # the fingerprint compiles the canonical form; the zoo and a worker may use another eps or name
    from primitives.fingerprint import fingerprint

    graph = Graph.build(("sigmoid", ["x"]), ("mul", [4, "x"]))  # not in canonical input order
    first = compile_graph(graph, C)
    fingerprint(graph)
    b0_layer = get_layer("evonorm_b0")
    assert b0_layer.graph is not None
    b0 = b0_layer.factory()(C)  # eps 1e-3
    compile_graph(b0_layer.graph, C, name=b0_layer.class_name)  # the same class name, eps 1e-5
    for module in (first, b0):
        buf = io.BytesIO()
        torch.save(module, buf)
        buf.seek(0)
        again = torch.load(buf, weights_only=False)
        x = _inputs(1)[0]
        torch.testing.assert_close(again(x), module(x))
        assert type(again) is type(module)


class BasicBlock(nn.Module):
    """A ResNet basic block taking `norm_layer`, as torchvision's builders do."""

    def __init__(self, cin: int, cout: int, stride: int, norm_layer: Callable[[int], nn.Module]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = norm_layer(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = norm_layer(cout)
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), norm_layer(cout))

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn2(self.conv2(self.bn1(self.conv1(x))))
        return torch.relu(y + self.shortcut(x))


@pytest.mark.parametrize("name", list(ZOO))
def test_every_zoo_constructor_is_a_norm_layer_drop_in(name: str) -> None:
    norm_layer = ZOO[name].factory()
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), BasicBlock(8, 16, 2, norm_layer),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x, target = torch.randn(4, 3, 12, 12), torch.randint(0, 10, (4,))
    for _ in range(2):
        loss = nn.functional.cross_entropy(net.train()(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
    if ZOO[name].in_search_space:
        norms = [m for m in net.modules() if type(m) is norm_layer]
        assert len(norms) == 3
        assert all(any(p.grad is not None for p in m.parameters()) for m in norms)
    out = net.eval()(x)
    assert out.shape == (4, 10) and torch.isfinite(out).all()

"""Formulas: exact text for the zoo, only the parentheses the math needs, and the text *is* the math.

The last property parses a formula with `ast` and evaluates it with an
independent rendering of the ops (documented guards, statistics written from
the reference), then compares with the compiled layer: a missing parenthesis
(`x - a + b` for `x - (a + b)`) computes something else and fails.
"""

from __future__ import annotations

import ast
import random
from collections.abc import Callable

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor

from primitives import Graph, formula
from primitives.compile import compile_graph
from primitives.mutation import random_graph
from primitives.ops import DIV_EPS, EXP_MAX, LOG_EPS, SQRT_EPS
from primitives.zoo import ZOO

ZOO_FORMULAS = {
    "bn_relu": "max(v1 * ((x - mean_batch(x)) / std_batch(x)) + v0, 0)",
    "gn_relu": "max(v1 * ((x - mean_group(x)) / std_group(x)) + v0, 0)",
    "layernorm": "(x - mean_layer(x)) / std_layer(x)",
    "rmsnorm": "x / rms_layer(x)",
    "evonorm_b0": "x / max(std_batch(x), v1 * x + std_instance(x))",
    "evonorm_b1": "x / max(std_batch(x), (x + exp(0)) * rms_instance(x))",
    "evonorm_b2": "x / max(std_batch(x), rms_instance(x) - x)",
    "evonorm_s0": "x * sigmoid(v1 * x) / std_group(x)",
    "evonorm_s1": "x * sigmoid(x) / std_group(x)",
    "evonorm_s2": "x * sigmoid(x) / rms_group(x)",
    "batch_rms": "x / rms_batch(x)",
    "batch_channel": "((x - mean_batch(x)) / std_batch(x) - mean_group((x - mean_batch(x)) / std_batch(x)))"
                     " / std_group((x - mean_batch(x)) / std_batch(x))",
    "dyt": "tanh(v1 * x)",
    "swish": "x * sigmoid(x)",
    "relu": "max(x, 0)",
    "identity": "x + 0",
}


def test_every_in_space_zoo_layer_has_its_exact_formula() -> None:
    in_space = {name: layer for name, layer in ZOO.items() if layer.graph is not None}
    assert set(ZOO_FORMULAS) == set(in_space)
    for name, layer in in_space.items():
        assert layer.graph is not None
        assert formula(layer.graph) == ZOO_FORMULAS[name], name
        assert layer.formula == ZOO_FORMULAS[name]


B = Graph.build
CASES = {
    "x / (a * b)": B(("sigmoid", ["x"]), ("tanh", ["x"]), ("mul", [4, 5]), ("div", ["x", 6])),
    "a * b / x": B(("sigmoid", ["x"]), ("tanh", ["x"]), ("mul", [4, 5]), ("div", [6, "x"])),
    "x / (a / b)": B(("sigmoid", ["x"]), ("tanh", ["x"]), ("div", [4, 5]), ("div", ["x", 6])),
    "x / a / b": B(("sigmoid", ["x"]), ("div", ["x", 4]), ("tanh", ["x"]), ("div", [5, 6])),
    "x - (a + b)": B(("sigmoid", ["x"]), ("tanh", ["x"]), ("add", [4, 5]), ("neg", [6]), ("add", ["x", 7])),
    "x - a + b": B(("sigmoid", ["x"]), ("neg", [4]), ("add", ["x", 5]), ("tanh", ["x"]), ("add", [6, 7])),
    "x - (a - b)": B(("sigmoid", ["x"]), ("tanh", ["x"]), ("neg", [5]), ("add", [4, 6]), ("neg", [7]),
                     ("add", ["x", 8])),
    "a - b - x": B(("sigmoid", ["x"]), ("tanh", ["x"]), ("neg", [5]), ("add", [4, 6]), ("neg", ["x"]),
                   ("add", [7, 8])),
    "(a + b) * x": B(("sigmoid", ["x"]), ("tanh", ["x"]), ("add", [4, 5]), ("mul", [6, "x"])),
    "x * (a - b)": B(("sigmoid", ["x"]), ("tanh", ["x"]), ("neg", [5]), ("add", [4, 6]), ("mul", ["x", 7])),
    "-(a + b)": B(("sigmoid", ["x"]), ("tanh", ["x"]), ("add", [4, 5]), ("neg", [6])),
    "-(-x)": B(("neg", ["x"]), ("neg", [4])),
    "-x - a (neg on the left)": B(("neg", ["x"]), ("sigmoid", ["x"]), ("neg", [5]), ("add", [4, 6])),
    "a - x (neg first)": B(("neg", ["x"]), ("sigmoid", ["x"]), ("add", [4, 5])),
    "sigmoid(a + b)": B(("abs", ["x"]), ("add", [4, "v0"]), ("sigmoid", [5])),
    "max(a - b, 0)": B(("mean_instance", ["x"]), ("neg", [4]), ("add", ["x", 5]), ("max", [6, "zero"])),
}
EXPECTED = {
    "x / (a * b)": "x / (sigmoid(x) * tanh(x))",
    "a * b / x": "sigmoid(x) * tanh(x) / x",
    "x / (a / b)": "x / (sigmoid(x) / tanh(x))",
    "x / a / b": "x / sigmoid(x) / tanh(x)",
    "x - (a + b)": "x - (sigmoid(x) + tanh(x))",
    "x - a + b": "x - sigmoid(x) + tanh(x)",
    "x - (a - b)": "x - (sigmoid(x) - tanh(x))",
    "a - b - x": "sigmoid(x) - tanh(x) - x",
    "(a + b) * x": "(sigmoid(x) + tanh(x)) * x",
    "x * (a - b)": "x * (sigmoid(x) - tanh(x))",
    "-(a + b)": "-(sigmoid(x) + tanh(x))",
    "-(-x)": "-(-x)",
    "-x - a (neg on the left)": "-x - sigmoid(x)",
    "a - x (neg first)": "sigmoid(x) - x",
    "sigmoid(a + b)": "sigmoid(abs(x) + v0)",
    "max(a - b, 0)": "max(x - mean_instance(x), 0)",
}


@pytest.mark.parametrize("case", list(CASES))
def test_parentheses_only_where_the_math_needs_them(case: str) -> None:
    text = formula(CASES[case])
    assert text == EXPECTED[case]
    _check_against_layer(CASES[case])


# -- the formula evaluates to what the layer computes ------------------------------

C, GROUPS, EPS = 6, 3, 1e-5


def _stat(kind: str, x: Tensor, dims: tuple[int, ...]) -> Tensor:
    mean = x.mean(dim=dims, keepdim=True)
    second = (x * x).mean(dim=dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
    return {"mean": mean, "moment2": second, "std": (var + EPS) ** 0.5, "rms": (second + EPS) ** 0.5}[kind]


def _aggregate(kind: str, axes: str) -> Callable[[Tensor], Tensor]:
    def f(x: Tensor) -> Tensor:
        x = x.expand(4, C, 3, 5)
        if axes == "group":
            n, c, h, w = x.shape
            return _stat(kind, x.reshape(n, GROUPS, c // GROUPS, h, w), (2, 3, 4)).repeat_interleave(
                c // GROUPS, dim=1).reshape(n, c, 1, 1)
        return _stat(kind, x, {"batch": (0, 2, 3), "instance": (2, 3), "layer": (1, 2, 3)}[axes])
    return f


def _guarded_div(a: Tensor, b: Tensor) -> Tensor:
    sign = torch.where(b < 0, -1.0, 1.0).to(b.dtype)
    return a / (sign * torch.maximum(b.abs(), torch.tensor(DIV_EPS, dtype=b.dtype)))


FUNCS: dict[str, Callable[..., Tensor]] = {
    "max": torch.maximum,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "exp": lambda a: torch.exp(torch.minimum(a, torch.tensor(EXP_MAX, dtype=a.dtype))),
    "log": lambda a: torch.sign(a) * torch.log(torch.maximum(a.abs(), torch.tensor(LOG_EPS, dtype=a.dtype))),
    "sqrt": lambda a: torch.sign(a) * torch.maximum(a.abs(), torch.tensor(SQRT_EPS, dtype=a.dtype)) ** 0.5,
    "abs": torch.abs,
    "square": lambda a: a * a,
    **{f"{k}_{a}": _aggregate(k, a) for k in ("mean", "std", "moment2", "rms")
       for a in ("batch", "instance", "group", "layer")},
}


def evaluate(text: str, x: Tensor, v0: Tensor, v1: Tensor) -> Tensor:
    """The value of a formula string over NCHW tensors (training-mode statistics)."""
    atoms = {"x": x, "v0": v0.view(1, -1, 1, 1), "v1": v1.view(1, -1, 1, 1)}

    def ev(node: ast.expr) -> Tensor:
        match node:
            case ast.BinOp(left=left, op=op, right=right):
                a, b = ev(left), ev(right)
                if isinstance(op, ast.Add):
                    return a + b
                if isinstance(op, ast.Sub):
                    return a - b
                if isinstance(op, ast.Mult):
                    return a * b
                assert isinstance(op, ast.Div), ast.dump(node)
                return _guarded_div(a, b)
            case ast.UnaryOp(op=ast.USub(), operand=operand):
                return -ev(operand)
            case ast.Call(func=ast.Name(id=name), args=args):
                return FUNCS[name](*(ev(a) for a in args))
            case ast.Name(id=name):
                return atoms[name]
            case ast.Constant(value=0):
                return torch.zeros_like(x)
        raise AssertionError(f"unexpected syntax in a formula: {ast.dump(node)}")

    return ev(ast.parse(text, mode="eval").body)


def _check_against_layer(graph: Graph) -> None:
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(4, C, 3, 5, generator=gen, dtype=torch.float64)
    v0 = 0.5 * torch.randn(C, generator=gen, dtype=torch.float64)
    v1 = 1 + 0.5 * torch.randn(C, generator=gen, dtype=torch.float64)
    layer = compile_graph(graph, C, groups=GROUPS, eps=EPS).double().train()
    with torch.no_grad():
        for name, value in (("v0", v0), ("v1", v1)):
            if hasattr(layer, name):
                getattr(layer, name).copy_(value)
        expected = layer(x)
    got = evaluate(formula(graph), x, v0, v1).expand_as(x)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9, equal_nan=True)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_the_formula_of_a_random_graph_computes_the_layer(seed: int) -> None:
    _check_against_layer(random_graph(random.Random(seed)))


@pytest.mark.parametrize("name", list(ZOO_FORMULAS))
def test_the_formula_of_a_zoo_layer_computes_the_layer(name: str) -> None:
    graph = ZOO[name].graph
    assert graph is not None
    _check_against_layer(graph)

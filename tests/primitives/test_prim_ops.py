"""The op registry and the numeric guards of the element-wise ops and aggregations.

Guards are checked through compiled one-op graphs, so what is tested is the
code a layer actually runs (the generated helpers), not a re-implementation.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from primitives import Graph
from primitives.codegen import module_source
from primitives.compile import compile_graph
from primitives.ops import (
    DIV_EPS,
    EXP_MAX,
    OPS,
    Axes,
    Kind,
    Stat,
    get_op,
    op_names,
)

ELEMENTWISE = [name for name, op in OPS.items() if op.kind is Kind.ELEMENTWISE]
UNARY = [name for name in ELEMENTWISE if OPS[name].arity == 1]
BINARY = [name for name in ELEMENTWISE if OPS[name].arity == 2]
AGGREGATIONS = [name for name, op in OPS.items() if op.kind is Kind.AGGREGATE]

C = 3
NCHW = (2, C, 2, 2)
TOKENS = (2, 4, C)
NUMEL = 24  # both shapes

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- registry ----------------------------------------------------------------


def test_the_papers_elementwise_ops_and_all_statistics_over_all_axis_sets_are_registered() -> None:
    assert set(ELEMENTWISE) == {"add", "mul", "div", "max", "neg", "sigmoid", "tanh", "exp", "log",
                                "abs", "square", "sqrt"}
    assert set(AGGREGATIONS) == {f"{s}_{a}" for s in Stat for a in Axes}
    assert len(OPS) == 12 + 16


@pytest.mark.parametrize("name", list(OPS))
def test_every_op_declares_arity_formula_and_code(name: str) -> None:
    op = OPS[name]
    assert op.name == name
    assert op.arity in (1, 2)
    args = ["AAA", "BBB"][: op.arity]
    text = op.formula.format(*args)
    assert all(a in text for a in args), text
    assert op.code.strip()
    assert op.description.strip()
    if op.kind is Kind.AGGREGATE:
        assert op.arity == 1
        assert op.stat is not None and op.axes is not None
        assert op.name == f"{op.stat}_{op.axes}"
        assert op.uses_eps == (op.stat in (Stat.STD, Stat.RMS))
    else:
        assert op.stat is None and op.axes is None
        assert not op.uses_eps
        assert "AAA" in op.code.format(*args)


@pytest.mark.parametrize("name", list(OPS))
def test_an_op_is_batch_dependent_exactly_when_it_aggregates_over_the_batch(name: str) -> None:
    op = OPS[name]
    assert op.batch_dependent == (op.kind is Kind.AGGREGATE and op.axes is Axes.BATCH)
    assert op.batch_dependent == name.endswith("_batch")


def test_a_batch_independent_search_draws_from_every_op_but_the_batch_statistics() -> None:
    assert op_names() == list(OPS)
    independent = op_names(batch_independent=True)
    assert set(OPS) - set(independent) == {f"{s}_batch" for s in Stat}
    assert not any(OPS[n].batch_dependent for n in independent)


def test_only_add_mul_and_max_are_commutative() -> None:
    assert {n for n, op in OPS.items() if op.commutative} == {"add", "mul", "max"}


def test_unknown_op_names_the_op() -> None:
    with pytest.raises(KeyError, match="'softplus'"):
        get_op("softplus")


# -- numeric guards: exact documented values ------------------------------------


def _one_op(op: str, *inputs: str) -> Graph:
    return Graph.build((op, list(inputs)))


def _run(graph: Graph, x: torch.Tensor, *, v1: torch.Tensor | None = None, layout: str = "nchw",
         train: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Output, d(sum y*w)/dx and d/dv1 of a compiled graph (weight 1, bias 0)."""
    channels = x.shape[1] if layout == "nchw" else x.shape[-1]
    m = compile_graph(graph, channels, layout=layout, groups=3).train(train)
    if v1 is not None:
        with torch.no_grad():
            m.get_parameter("v1").copy_(v1)
    x = x.clone().requires_grad_(True)
    y = m(x)
    w = torch.linspace(-1.0, 1.0, y.numel()).view_as(y)
    (y * w).sum().backward()
    v1_grad = m.get_parameter("v1").grad if v1 is not None else None
    # no gradient: y does not depend on x (a batch statistic in eval mode reads its running value)
    x_grad = x.grad if x.grad is not None else torch.zeros_like(x)
    return y.detach(), x_grad, v1_grad


def test_div_raises_small_denominators_to_div_eps_keeping_their_sign() -> None:
    x = torch.full(NCHW, 2.0)
    v1 = torch.tensor([0.0, -1e-9, 1e-9])
    y, gx, gv = _run(_one_op("div", "x", "v1"), x, v1=v1)
    expected = torch.tensor([2.0 / DIV_EPS, -2.0 / DIV_EPS, 2.0 / DIV_EPS]).view(1, C, 1, 1).expand(NCHW)
    torch.testing.assert_close(y, expected)
    assert torch.isfinite(gx).all() and gv is not None and torch.isfinite(gv).all()
    # away from the guard it is a plain division
    y, _, _ = _run(_one_op("div", "x", "v1"), x, v1=torch.tensor([4.0, -0.5, 1e-3]))
    torch.testing.assert_close(y[0, :, 0, 0], torch.tensor([0.5, -4.0, 2000.0]))


def test_log_and_sqrt_are_signed_zero_at_zero_with_finite_gradients_there() -> None:
    x = torch.tensor([0.0, math.e, -math.e**2, 4.0, -4.0, 0.25]).repeat(4).view(NCHW)
    y, g, _ = _run(_one_op("log", "x"), x)
    torch.testing.assert_close(y.flatten()[:6], torch.tensor([0.0, 1.0, -2.0, math.log(4), -math.log(4),
                                                             math.log(0.25)]))
    assert torch.isfinite(g).all()
    y, g, _ = _run(_one_op("sqrt", "x"), x)
    torch.testing.assert_close(y.flatten()[:6], torch.tensor([0.0, math.e**0.5, -math.e, 2.0, -2.0, 0.5]))
    assert torch.isfinite(g).all()
    zero = torch.zeros(NCHW)
    for op in ("log", "sqrt"):
        _, g, _ = _run(_one_op(op, "x"), zero)
        assert torch.isfinite(g).all(), op


def test_exp_saturates_at_exp_max_instead_of_overflowing() -> None:
    x = torch.tensor([1e4, 200.0, EXP_MAX, 1.0, -1e4, 0.0]).repeat(4).view(NCHW)
    y, g, _ = _run(_one_op("exp", "x"), x)
    top = torch.tensor(math.exp(EXP_MAX))
    torch.testing.assert_close(y.flatten()[:6], torch.stack([top, top, top, torch.tensor(math.e),
                                                             torch.tensor(0.0), torch.tensor(1.0)]))
    assert torch.isfinite(y).all() and torch.isfinite(g).all()
    assert torch.isfinite(_run(_one_op("exp", "x"), x.bfloat16().float())[0]).all()


def test_statistic_denominators_skip_the_guard_and_others_keep_it() -> None:
    assert "safe_div" not in module_source(Graph.build(("std_group", ["x"]), ("div", ["x", 4])))
    assert "safe_div" not in module_source(Graph.build(("rms_instance", ["x"]), ("max", ["v1", 4]),
                                                       ("div", ["x", 5])))
    assert "safe_div" in module_source(Graph.build(("mean_group", ["x"]), ("div", ["x", 4])))
    assert "safe_div" in module_source(Graph.build(("moment2_layer", ["x"]), ("div", ["x", 4])))


# -- numeric guards: finite inputs never give NaN or inf -------------------------

FINITE = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=32)
TINY = st.floats(-1e-6, 1e-6, allow_nan=False)  # rounded to float32 by torch.tensor
SPECIAL = st.sampled_from([0.0, -0.0, 1e-45, -1e-45, 1e-38, 1e-12, -1e-12, 1e4, -1e4])
VALUES = st.one_of(
    st.lists(FINITE, min_size=NUMEL, max_size=NUMEL),
    st.lists(st.one_of(TINY, SPECIAL, FINITE), min_size=NUMEL, max_size=NUMEL),
    st.one_of(FINITE, SPECIAL).map(lambda c: [c] * NUMEL),  # constant (and all-zero) tensors
)
VECTORS = st.lists(st.one_of(FINITE, TINY, SPECIAL), min_size=C, max_size=C)


def _assert_finite(*tensors: torch.Tensor | None) -> None:
    for t in tensors:
        assert t is not None
        assert torch.isfinite(t).all(), t


@pytest.mark.parametrize("op", UNARY)
@SETTINGS
@given(values=VALUES)
@example(values=[0.0] * NUMEL)
def test_unary_ops_are_finite_with_finite_gradients(op: str, values: list[float]) -> None:
    x = torch.tensor(values).view(NCHW)
    _assert_finite(*_run(_one_op(op, "x"), x)[:2])


@pytest.mark.parametrize("op", BINARY)
@SETTINGS
@given(values=VALUES, v1=VECTORS)
@example(values=[0.0] * NUMEL, v1=[0.0] * C)
def test_binary_ops_are_finite_with_finite_gradients(op: str, values: list[float], v1: list[float]) -> None:
    x = torch.tensor(values).view(NCHW)
    v = torch.tensor(v1)
    for inputs in (("x", "v1"), ("v1", "x")):
        _assert_finite(*_run(_one_op(op, *inputs), x, v1=v))
    for inputs in (("x", "x"), ("x", "zero"), ("zero", "x")):
        _assert_finite(*_run(_one_op(op, *inputs), x)[:2])


@pytest.mark.parametrize("op", AGGREGATIONS)
@SETTINGS
@given(values=VALUES)
@example(values=[0.0] * NUMEL)
@example(values=[3.0] * NUMEL)
def test_aggregations_are_finite_with_finite_gradients_in_both_layouts_and_modes(
        op: str, values: list[float]) -> None:
    graph = _one_op(op, "x")
    for layout, shape in (("nchw", NCHW), ("tokens", TOKENS)):
        x = torch.tensor(values).view(shape)
        for train in (True, False):
            _assert_finite(*_run(graph, x, layout=layout, train=train)[:2])
    # eval mode after a training step on the same data uses finite running statistics
    m = compile_graph(graph, C, groups=3).train()
    x = torch.tensor(values).view(NCHW)
    m(x)
    _assert_finite(m.eval()(x), *m.buffers())

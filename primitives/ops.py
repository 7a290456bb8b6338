"""The primitive ops of the EvoNorm search space.

Every op a layer graph may use is declared once here: its name, arity, how it
reads in a formula, how it is written in generated PyTorch code, and whether
its value depends on other samples in the batch. An aggregation's torch code
is a call of a statistics helper that `primitives.codegen` writes per layout;
nothing else in the project hard-codes an op.

Element-wise ops follow the paper (Liu et al., 2020). Aggregations compute a
statistic over an *axis set* and broadcast it back to the input shape:

    mean_A(x)     mean over A
    std_A(x)      sqrt(var_A(x) + eps), biased variance
    moment2_A(x)  mean_A(x^2), the second moment
    rms_A(x)      sqrt(moment2_A(x) + eps)

`rms` is the eps-guarded square root of the second moment, exactly as `std`
is for the variance; without it the public numerics of EvoNorm-B1/B2/S2,
RMSNorm and PowerNorm's core could not be expressed (`sqrt(moment2(x))` has
no eps).

Axis sets, for images in NCHW (the token layout is in `primitives.codegen`):
    batch     (N, H, W) per channel       -- depends on the batch
    instance  (H, W) per sample, channel
    group     (C/g, H, W) per sample and channel group
    layer     (C, H, W) per sample        -- a group with g = 1

Numeric guards (the paper does not document any; these are ours, and
`tests/primitives/test_prim_ops.py` checks that finite inputs never give NaN):
    div    x / y with |y| raised to at least DIV_EPS, keeping y's sign
           (sign(0) taken as +). Denominators that are provably >= sqrt(eps)
           (std, rms, and max() with one of them) skip the guard, which then
           could not change the value anyway.
    log    sign(x) * ln(max(|x|, LOG_EPS)); log(0) = 0.
    sqrt   sign(x) * sqrt(max(|x|, SQRT_EPS)); sqrt(0) = 0, finite gradient.
    exp    exp(min(x, EXP_MAX)), so exp never overflows float32/bfloat16.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

DIV_EPS = 1e-6
LOG_EPS = 1e-12
SQRT_EPS = 1e-12
EXP_MAX = 80.0


class Kind(StrEnum):
    ELEMENTWISE = "elementwise"
    AGGREGATE = "aggregate"


class Axes(StrEnum):
    BATCH = "batch"
    INSTANCE = "instance"
    GROUP = "group"
    LAYER = "layer"


class Stat(StrEnum):
    MEAN = "mean"
    STD = "std"
    MOMENT2 = "moment2"
    RMS = "rms"


@dataclass(frozen=True)
class Op:
    """One primitive.

    `formula` and `code` are str.format templates over the rendered inputs
    `{0}`, `{1}`. `precedence` is the binding strength of the rendered
    expression (higher binds tighter) so renderers add only the parentheses
    that are needed.
    """

    name: str
    arity: int
    kind: Kind
    formula: str
    code: str
    precedence: int = 10
    commutative: bool = False
    stat: Stat | None = None
    axes: Axes | None = None
    description: str = ""

    @property
    def batch_dependent(self) -> bool:
        return self.axes is Axes.BATCH

    @property
    def uses_eps(self) -> bool:
        return self.stat in (Stat.STD, Stat.RMS)


# Precedence levels shared by the formula and the code renderers.
PREC_ADD = 1
PREC_MUL = 2
PREC_UNARY = 3
PREC_ATOM = 10


def _elementwise() -> list[Op]:
    e = Kind.ELEMENTWISE
    return [
        Op("add", 2, e, "{0} + {1}", "{0} + {1}", PREC_ADD, True, description="x + y"),
        Op("mul", 2, e, "{0} * {1}", "{0} * {1}", PREC_MUL, True, description="x * y"),
        Op("div", 2, e, "{0} / {1}", "safe_div({0}, {1})", PREC_MUL,
           description="x / y, |y| guarded to >= DIV_EPS"),
        Op("max", 2, e, "max({0}, {1})", "torch.maximum({0}, {1})", commutative=True,
           description="element-wise max(x, y)"),
        Op("neg", 1, e, "-{0}", "-{0}", PREC_UNARY, description="-x"),
        Op("sigmoid", 1, e, "sigmoid({0})", "torch.sigmoid({0})", description="1 / (1 + e^-x)"),
        Op("tanh", 1, e, "tanh({0})", "torch.tanh({0})", description="tanh(x)"),
        Op("exp", 1, e, "exp({0})", "safe_exp({0})", description="e^x, input clamped to EXP_MAX"),
        Op("log", 1, e, "log({0})", "signed_log({0})", description="sign(x) * ln|x|"),
        Op("abs", 1, e, "abs({0})", "torch.abs({0})", description="|x|"),
        Op("square", 1, e, "square({0})", "torch.square({0})", description="x^2"),
        Op("sqrt", 1, e, "sqrt({0})", "signed_sqrt({0})", description="sign(x) * sqrt|x|"),
    ]


_STAT_TEXT = {
    Stat.MEAN: "mean",
    Stat.STD: "sqrt(var + eps), biased variance",
    Stat.MOMENT2: "mean of x^2 (second moment)",
    Stat.RMS: "sqrt(mean of x^2 + eps)",
}


def _aggregations() -> list[Op]:
    ops = []
    for axes in Axes:
        for stat in Stat:
            name = f"{stat}_{axes}"
            ops.append(Op(name, 1, Kind.AGGREGATE, name + "({0})", name, stat=stat, axes=axes,
                          description=f"{_STAT_TEXT[stat]} over the {axes} axes"))
    return ops


OPS: dict[str, Op] = {op.name: op for op in _elementwise() + _aggregations()}

# The four initial nodes every graph starts from, in id order.
INPUT_NAMES: tuple[str, ...] = ("x", "zero", "v0", "v1")
X, ZERO, V0, V1 = range(4)
NUM_INPUTS = len(INPUT_NAMES)


def get_op(name: str) -> Op:
    try:
        return OPS[name]
    except KeyError:
        raise KeyError(f"unknown op {name!r}") from None


def op_names(*, batch_independent: bool = False) -> list[str]:
    """Names of the ops a search may draw from, in registry order."""
    return [n for n, op in OPS.items() if not (batch_independent and op.batch_dependent)]

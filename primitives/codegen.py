"""Graph -> the source of a standalone PyTorch module.

The same source is what `primitives.compile` executes and what
`primitives.export` writes to a `.py` file, so a compiled layer and its
exported file are one piece of code. The source imports only torch, defines
only the helpers the graph uses, and its `forward` reads like the formula:
nodes used once are inlined, nodes used more than once become local
variables. A standardization, (s - mean(s)) / std(s) over batch, group,
layer or instance axes, is emitted as torch's fused kernel for it
(F.batch_norm, F.group_norm, F.layer_norm), with a per-channel v1 / v0 or
the output affine as the kernel's weight and bias: a generated BN-ReLU,
GN-ReLU or LayerNorm then trains at the speed of torch's own module
(`module_source(..., fuse=False)` spells it out op by op).

Layouts (how each axis set maps onto a tensor):

nchw, images (N, C, H, W):
    batch     over (N, H, W) per channel; running estimates in eval mode
    instance  over (H, W) per sample and channel
    group     over (C/g, H, W) per sample and channel group
    layer     over (C, H, W) per sample

tokens, sequences (B, T, C), safe for causal models -- no statistic lets a
position see a later position of its own sequence:
    batch     over B only, per position and channel (samples at the same
              position); running per-channel estimates in eval mode
    instance  over positions 1..t of the same sequence (a causal prefix),
              per channel
    group     over C/g channels of one token
    layer     over the C channels of one token (LayerNorm / RMSNorm)

Running statistics of batch aggregations follow the public EvoNorm code
(timm): `running = (1 - m) * running + m * stat`, m = 0.1, variances with the
unbiased correction n / (n - 1), running variance and second moment start
at 1 and running mean at 0; eval mode uses the running value.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

from primitives.canonical import canonicalize, structural_hash
from primitives.formula import formula
from primitives.graph import Graph
from primitives.ops import (
    DIV_EPS,
    EXP_MAX,
    INPUT_NAMES,
    LOG_EPS,
    NUM_INPUTS,
    PREC_ADD,
    PREC_ATOM,
    PREC_MUL,
    PREC_UNARY,
    SQRT_EPS,
    V0,
    V1,
    ZERO,
    Axes,
    Stat,
    X,
    get_op,
)

LAYOUTS = ("nchw", "tokens")

_ELEMENTWISE_HELPERS = {
    "safe_div": f'''
def safe_div(a: Tensor, b: Tensor) -> Tensor:
    # |b| raised to at least {DIV_EPS} keeping its sign (0 counts as +).
    b = torch.where(b >= 0, b.clamp(min={DIV_EPS}), b.clamp(max=-{DIV_EPS}))
    return a / b
''',
    "safe_exp": f'''
def safe_exp(a: Tensor) -> Tensor:
    return torch.exp(a.clamp(max={EXP_MAX}))
''',
    "signed_log": f'''
def signed_log(a: Tensor) -> Tensor:
    # sign(a) * ln|a|, with log(0) = 0
    return torch.sign(a) * torch.log(a.abs().clamp(min={LOG_EPS}))
''',
    "signed_sqrt": f'''
def signed_sqrt(a: Tensor) -> Tensor:
    # sign(a) * sqrt|a|, with a finite gradient at 0
    return torch.sign(a) * torch.sqrt(a.abs().clamp(min={SQRT_EPS}))
''',
}

_NUM_GROUPS = '''
def num_groups(channels: int, groups: int) -> int:
    """The largest divisor of `channels` that is at most `groups`, so any width works."""
    g = max(1, min(groups, channels))
    while channels % g:
        g -= 1
    return g
'''

_PREFIX_COUNT = '''
def prefix_count(x: Tensor) -> Tensor:
    # 1, 2, ..., T shaped (1, T, 1): the number of positions seen so far
    return torch.arange(1, x.size(1) + 1, device=x.device, dtype=x.dtype).view(1, -1, 1)
'''

# How each statistic is computed from `x` over `dims` (a str of python code).
_STAT_EXPR = {
    Stat.MEAN: "x.mean(dim={dims}, keepdim=True)",
    Stat.STD: "torch.sqrt(x.var(dim={dims}, unbiased=False, keepdim=True) + eps)",
    Stat.MOMENT2: "torch.square(x).mean(dim={dims}, keepdim=True)",
    Stat.RMS: "torch.sqrt(torch.square(x).mean(dim={dims}, keepdim=True) + eps)",
}
_RUNNING_NAME = {Stat.MEAN: "running_mean", Stat.STD: "running_var",
                 Stat.MOMENT2: "running_moment2", Stat.RMS: "running_moment2"}
_RUNNING_INIT = {"running_mean": "zeros", "running_var": "ones", "running_moment2": "ones"}


def _eps_arg(stat: Stat) -> str:
    return ", eps: float" if stat in (Stat.STD, Stat.RMS) else ""


def _batch_helper(stat: Stat, layout: str) -> str:
    """A batch statistic with its running estimate (timm's EvoNorm-B update)."""
    name = f"{stat}_batch"
    raw = "x.mean" if stat is Stat.MEAN else ("x.var" if stat is Stat.STD else "torch.square(x).mean")
    unbiased = ", unbiased=False" if stat is Stat.STD else ""
    if layout == "nchw":
        dims, per_channel, shape, count = "[0, 2, 3]", "s.flatten()", ".view(1, -1, 1, 1)", \
            "x.numel() // x.size(1)"
    else:
        dims, per_channel, shape, count = "[0]", "s.mean(dim=[0, 1])", ".view(1, 1, -1)", "x.size(0)"
    correction = " * (n / max(n - 1, 1))" if stat is Stat.STD else ""
    n_line = f"        n = {count}\n" if stat is Stat.STD else ""
    finish = {Stat.MEAN: "{}", Stat.STD: "torch.sqrt({} + eps)", Stat.MOMENT2: "{}",
              Stat.RMS: "torch.sqrt({} + eps)"}[stat]
    return f'''
def {name}(x: Tensor, running: Tensor, training: bool, momentum: float{_eps_arg(stat)}) -> Tensor:
    if training:
        s = {raw}(dim={dims}{unbiased}, keepdim=True)
{n_line}        with torch.no_grad():
            running.lerp_(({per_channel}{correction}).to(running.dtype), momentum)
        return {finish.format("s")}
    return {finish.format("running" + shape)}.to(x.dtype)
'''


def _aggregate_helper(stat: Stat, axes: Axes, layout: str) -> str:
    name = f"{stat}_{axes}"
    if axes is Axes.BATCH:
        return _batch_helper(stat, layout)
    if axes is Axes.GROUP:
        lead, rest = ("n, c = x.shape[0], x.shape[1]", "(n, c, 1, 1)") if layout == "nchw" \
            else ("b, t, c = x.shape[0], x.shape[1], x.shape[2]", "(b, t, c)")
        grouped = "(n, groups, -1)" if layout == "nchw" else "(b, t, groups, -1)"
        expand = "(n, groups, c // groups)" if layout == "nchw" else "(b, t, groups, c // groups)"
        body = _STAT_EXPR[stat].format(dims="-1").replace("x.", "xg.").replace("(x)", "(xg)")
        return f'''
def {name}(x: Tensor, groups: int{_eps_arg(stat)}) -> Tensor:
    {lead}
    xg = x.reshape{grouped}
    s = {body}
    return s.expand{expand}.reshape{rest}
'''
    if axes is Axes.INSTANCE and layout == "tokens":
        # causal prefix statistics over positions 1..t
        m = "x.cumsum(1) / count"
        m2 = "torch.square(x).cumsum(1) / count"
        value = {
            Stat.MEAN: m,
            Stat.STD: f"torch.sqrt((({m2}) - torch.square({m})).clamp(min=0.0) + eps)",
            Stat.MOMENT2: m2,
            Stat.RMS: f"torch.sqrt({m2} + eps)",
        }[stat]
        # The variance is shift-invariant: centring on position 1, which every prefix holds,
        # avoids the cancellation of E[x^2] - E[x]^2 when |mean| >> std (float32, bfloat16).
        centre = "    x = x - x[:, :1]\n" if stat is Stat.STD else ""
        return f'''
def {name}(x: Tensor{_eps_arg(stat)}) -> Tensor:
    count = prefix_count(x)
{centre}    return {value}
'''
    dims = {("nchw", Axes.INSTANCE): "[2, 3]", ("nchw", Axes.LAYER): "[1, 2, 3]",
            ("tokens", Axes.LAYER): "[-1]"}[(layout, axes)]
    return f'''
def {name}(x: Tensor{_eps_arg(stat)}) -> Tensor:
    return {_STAT_EXPR[stat].format(dims=dims)}
'''


# (s - mean_A(s)) / std_A(s) is the standardization torch has one fused kernel
# for (F.batch_norm, F.group_norm, F.layer_norm: one pass forward and one
# backward, against about six ops each way composed). It is most of a
# generated BN/GN/LN layer's cost, so such a subgraph is emitted as one call,
# with a per-channel v1 * (.) + v0 around it, or the layer's own output
# affine, folded in as the kernel's weight and bias. Same numbers up to float
# rounding: biased variance inside the square root with eps; F.batch_norm
# keeps the running estimates exactly as mean_batch and std_batch do
# (momentum lerp, unbiased variance) and uses them in eval mode. Not fused:
# batch and causal instance statistics on tokens (no kernel has their axes).
_FUSED_AXES = {"nchw": (Axes.BATCH, Axes.GROUP, Axes.LAYER, Axes.INSTANCE),
               "tokens": (Axes.GROUP, Axes.LAYER)}

def _takes_channel_affine(layout: str, axes: Axes) -> bool:
    """Whether the kernel for these axes takes a per-channel weight and bias (on tokens, group
    statistics are a layer_norm over each group, whose affine is per slot of a group)."""
    return (layout, axes) != ("tokens", Axes.GROUP)


_STANDARDIZE_GROUP_TOKENS = '''
def standardize_group(x: Tensor, groups: int, eps: float) -> Tensor:
    # (x - mean_group(x)) / std_group(x), in one fused kernel
    b, t, c = x.shape[0], x.shape[1], x.shape[2]
    return F.layer_norm(x.reshape(b, t, groups, c // groups), [c // groups], None, None, eps).reshape(b, t, c)
'''


@dataclass(frozen=True)
class _Standardization:
    source: int                  # the node standardized
    axes: Axes
    mean: int                    # its mean and std nodes (used nowhere else)
    std: int
    weight: int | None = None    # V1 folded in as the kernel's weight, V0 as its bias
    bias: int | None = None


@dataclass(frozen=True)
class _Plan:
    graph: Graph                 # canonical
    uses: Counter[int]
    buffers: dict[int, str]      # batch-aggregation node id -> buffer name
    names: dict[int, str]        # node id -> local variable, for nodes bound to one
    fused: dict[int, _Standardization]  # root node id -> the standardization under it


def _affine_around(g: Graph, uses: Counter[int], inner: int) -> tuple[int, int | None, int | None]:
    """(root, weight, bias) of v1 * inner + v0, v1 * inner or inner + v0 with inner used once."""
    root, weight, bias = inner, None, None

    def only_user(node_id: int) -> int | None:
        if uses[node_id] != 1:
            return None
        return next(i for i, n in enumerate(g.nodes, NUM_INPUTS) if node_id in n.inputs)

    user = only_user(inner)
    if user is not None and g.node(user).op == "mul" and set(g.node(user).inputs) == {V1, inner}:
        root, weight = user, V1
        user = only_user(root)
    if user is not None and g.node(user).op == "add" and set(g.node(user).inputs) == {V0, root}:
        root, bias = user, V0
    return root, weight, bias


def _standardizations(g: Graph, uses: Counter[int], layout: str) -> dict[int, _Standardization]:
    """Root node id -> the standardization (and affine) the subgraph under it computes."""
    found: dict[int, _Standardization] = {}
    for i, node in enumerate(g.nodes, NUM_INPUTS):
        if node.op != "div" or min(node.inputs) < NUM_INPUTS:
            continue
        centred, den = node.inputs
        std_op = get_op(g.node(den).op)
        source = g.node(den).inputs[0]
        if (std_op.stat is not Stat.STD or std_op.axes not in _FUSED_AXES[layout]
                or g.node(centred).op != "add" or uses[den] != 1 or uses[centred] != 1
                or not _full_shape(g, source)):
            continue
        a, b = g.node(centred).inputs
        neg = b if a == source else a if b == source else None
        if neg is None or neg < NUM_INPUTS or g.node(neg).op != "neg" or uses[neg] != 1:
            continue
        mean = g.node(neg).inputs[0]
        if mean < NUM_INPUTS or uses[mean] != 1:
            continue
        mean_op = get_op(g.node(mean).op)
        if mean_op.stat is not Stat.MEAN or mean_op.axes is not std_op.axes \
                or g.node(mean).inputs[0] != source:
            continue
        root, weight, bias = i, None, None
        if _takes_channel_affine(layout, std_op.axes):
            root, weight, bias = _affine_around(g, uses, i)
            if layout == "nchw" and std_op.axes is not Axes.BATCH and weight is None:
                # F.group_norm with a bias but no weight fails in backward (torch 2.13)
                root, bias = i, None
        found[root] = _Standardization(source, std_op.axes, mean, den, weight, bias)
    return found


def _plan(graph: Graph, layout: str, fuse: bool) -> _Plan:
    g = canonicalize(graph)
    uses: Counter[int] = Counter()
    for node in g.nodes:
        uses.update(node.inputs)
    fused = _standardizations(g, uses, layout) if fuse else {}
    inside = {j for f in fused.values() for j in (f.mean, f.std)}
    batch_nodes = [i for i, n in enumerate(g.nodes, NUM_INPUTS) if get_op(n.op).batch_dependent]
    base = {i: _RUNNING_NAME[get_op(g.node(i).op).stat] for i in batch_nodes}  # type: ignore[index]
    counts = Counter(base.values())
    seen: Counter[str] = Counter()
    buffers = {}
    for i in batch_nodes:
        b = base[i]
        buffers[i] = b if counts[b] == 1 else f"{b}_{seen[b]}"
        seen[b] += 1
    # Statistics and shared nodes get a local variable so forward reads like
    # the formula: `batch_std = std_batch(x, ...)`, then `x / batch_std`.
    names: dict[int, str] = {}
    taken: Counter[str] = Counter()
    for i, node in enumerate(g.nodes, NUM_INPUTS):
        op = get_op(node.op)
        if i == g.output or i in inside or (op.stat is None and uses[i] < 2):
            continue
        stem = f"{op.axes}_{op.stat}" if op.stat is not None else "t"
        taken[stem] += 1
        names[i] = stem if op.stat is not None and taken[stem] == 1 else f"{stem}{taken[stem]}"
    return _Plan(g, uses, buffers, names, fused)


def _full_shape(g: Graph, node_id: int) -> bool:
    """Whether the node's tensor surely has x's full shape (statistics and v0/v1 are reduced).

    `zero` does not count: the code drops it where it is a no-op (relu, + 0).
    """
    if node_id < NUM_INPUTS:
        return node_id == X
    node = g.node(node_id)
    if get_op(node.op).stat is not None:
        return False
    return any(_full_shape(g, i) for i in node.inputs)


def _safe_denominator(g: Graph, node_id: int) -> bool:
    """True when the node is provably >= sqrt(eps) > 0, so a / b needs no guard."""
    if node_id < NUM_INPUTS:
        return False
    node = g.node(node_id)
    op = get_op(node.op)
    if op.stat in (Stat.STD, Stat.RMS):
        return True
    return node.op == "max" and any(_safe_denominator(g, i) for i in node.inputs)


class _Emitter:
    def __init__(self, plan: _Plan, layout: str):
        self.plan = plan
        self.g = plan.graph
        self.layout = layout
        self.helpers: list[str] = []
        self.uses_zero = False
        self.referenced: set[int] = set()   # graph inputs forward refers to by name

    def need(self, helper: str) -> None:
        if helper not in self.helpers:
            self.helpers.append(helper)

    def name(self, node_id: int) -> str:
        return self.plan.names[node_id]

    def ref(self, node_id: int) -> tuple[str, int]:
        """An expression for node_id: a name if it is bound, else inlined."""
        if node_id < NUM_INPUTS:
            atom = INPUT_NAMES[node_id]
            self.referenced.add(node_id)
            if node_id == ZERO:
                self.uses_zero = True
            return atom, PREC_ATOM
        if node_id in self.plan.names:
            return self.name(node_id), PREC_ATOM
        return self.expr(node_id)

    def standardize(self, f: _Standardization, weight: str = "None", bias: str = "None") -> str:
        """The fused kernel call for f; weight and bias unless f folds in v1 / v0."""
        src = self.ref(f.source)[0]
        weight = f"self.{INPUT_NAMES[f.weight]}" if f.weight is not None else weight
        bias = f"self.{INPUT_NAMES[f.bias]}" if f.bias is not None else bias
        if self.layout == "tokens" and f.axes is Axes.GROUP:
            self.need("standardize_group")
            return f"standardize_group({src}, self.groups, self.eps)"
        if f.axes is Axes.BATCH:
            running = f"self.{self.plan.buffers[f.mean]}, self.{self.plan.buffers[f.std]}"
            return f"F.batch_norm({src}, {running}, {weight}, {bias}, self.training, self.momentum, self.eps)"
        if self.layout == "tokens":  # layer: over the channels of one token
            return f"F.layer_norm({src}, [self.num_features], {weight}, {bias}, self.eps)"
        groups = {Axes.GROUP: "self.groups", Axes.LAYER: "1", Axes.INSTANCE: "self.num_features"}[f.axes]
        return f"F.group_norm({src}, {groups}, {weight}, {bias}, self.eps)"

    def expr(self, node_id: int) -> tuple[str, int]:
        node = self.g.node(node_id)
        op = get_op(node.op)
        ins = node.inputs
        if node_id in self.plan.fused:
            return self.standardize(self.plan.fused[node_id]), PREC_ATOM
        if op.stat is not None:
            self.need(f"{op.stat}_{op.axes}")
            if op.axes is Axes.INSTANCE and self.layout == "tokens":
                self.need("prefix_count")
            arg, arg_prec = self.ref(ins[0])
            if not _full_shape(self.g, ins[0]):
                # a statistic or v0/v1 has a reduced shape: take the statistic over x's shape
                arg = f"{_wrap(arg, arg_prec, PREC_ATOM)}.expand_as(x)"
            extra = []
            if op.axes is Axes.BATCH:
                extra += [f"self.{self.plan.buffers[node_id]}", "self.training", "self.momentum"]
            if op.axes is Axes.GROUP:
                extra.append("self.groups")
            if op.uses_eps:
                extra.append("self.eps")
            return f"{op.name}({', '.join([arg, *extra])})", PREC_ATOM
        if node.op == "max" and ZERO in ins:
            other = ins[1] if ins[0] == ZERO else ins[0]
            if other != ZERO:
                return f"torch.relu({self.ref(other)[0]})", PREC_ATOM
        if node.op == "add":
            if ZERO in ins and ins != (ZERO, ZERO):
                return self.ref(ins[1] if ins[0] == ZERO else ins[0])
            a, b = ins
            for left, right in ((a, b), (b, a)):
                if (right >= NUM_INPUTS and self.g.node(right).op == "neg"
                        and right not in self.plan.names):
                    l_text, _ = self.ref(left)
                    r_text, rp = self.ref(self.g.node(right).inputs[0])
                    return f"{l_text} - {_wrap(r_text, rp, PREC_ADD + 1)}", PREC_ADD
            return f"{self.ref(a)[0]} + {self.ref(b)[0]}", PREC_ADD
        if node.op in ("mul", "div"):
            (lhs, lp), (rhs, rp) = self.ref(ins[0]), self.ref(ins[1])
            if node.op == "div" and not _safe_denominator(self.g, ins[1]):
                self.need("safe_div")
                return f"safe_div({lhs}, {rhs})", PREC_ATOM
            sym = "*" if node.op == "mul" else "/"
            return f"{_wrap(lhs, lp, PREC_MUL)} {sym} {_wrap(rhs, rp, PREC_MUL + 1)}", PREC_MUL
        if node.op == "neg":
            arg, ap = self.ref(ins[0])
            return f"-{_wrap(arg, ap, PREC_UNARY + 1)}", PREC_UNARY
        for helper in ("safe_exp", "signed_log", "signed_sqrt"):
            if op.code.startswith(helper):
                self.need(helper)
        return op.code.format(*(self.ref(i)[0] for i in ins)), PREC_ATOM


def _wrap(text: str, prec: int, need: int) -> str:
    return f"({text})" if prec < need else text


_DROP_AFTER = '''

def _drop_after(module: nn.Module, inputs: tuple[Tensor], output: Tensor) -> Tensor:
    return module.drop(output)
'''


def _input_check(layout: str, class_name: str) -> list[str]:
    """forward's first lines: a wrong input layout is named in the error, not left to a torch error inside."""
    if layout == "nchw":
        test, want = "x.dim() != 4 or x.shape[1] != self.num_features", "(N, C, H, W) images"
    else:
        test, want = "x.dim() != 3 or x.shape[2] != self.num_features", "(B, T, C) tokens"
    return [f"        if {test}:",
            f'            raise ValueError("{class_name} ({layout} layout) expects {want} with C = "',
            '                             "num_features = {}, got shape {}".format(self.num_features, '
            "list(x.shape)))"]


def module_source(graph: Graph, *, class_name: str = "EvoLayer", layout: str = "nchw",
                  eps: float = 1e-5, title: str | None = None, fuse: bool = True) -> str:
    """The complete text of a standalone `.py` file defining `class_name`.

    fuse=False spells standardizations out op by op instead of as one fused
    kernel call (the same function; the reference the fused code is tested against).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    plan = _plan(graph, layout, fuse)
    g = plan.graph
    em = _Emitter(plan, layout)

    body: list[str] = []
    for node_id in range(NUM_INPUTS, g.output):
        if node_id in plan.names:
            body.append(f"        {em.name(node_id)} = {em.expr(node_id)[0]}")
    channel = ".view(1, -1, 1, 1)" if layout == "nchw" else ""
    epilogue = [f"        return y * self.weight{channel} + self.bias{channel}"]
    last = plan.fused.get(g.output)
    if last is not None and (last.weight, last.bias) == (None, None) \
            and _takes_channel_affine(layout, last.axes):
        # the layer is a bare standardization: its output affine is the kernel's (LayerNorm)
        body.append(f"        return {em.standardize(last, 'self.weight', 'self.bias')}")
        epilogue = []
    else:
        out, out_prec = em.expr(g.output)
        if not _full_shape(g, g.output):
            out = f"{_wrap(out, out_prec, PREC_ATOM)}.expand_as(x)"
        body.append(f"        y = {out}")

    live = g.live_ids()
    # v0/v1 as broadcastable locals, where forward names them (not where a kernel takes them)
    prologue = [f"        {v} = self.{v}{channel}" for v in ("v0", "v1")
                if INPUT_NAMES.index(v) in em.referenced]
    if em.uses_zero:
        prologue.append("        zero = torch.zeros_like(x)")

    params = ["weight", "bias"] + [v for v in ("v0", "v1") if INPUT_NAMES.index(v) in live]
    init_value = {"weight": "ones", "bias": "zeros", "v0": "zeros", "v1": "ones"}
    init = [f"        self.{p} = nn.Parameter(torch.{init_value[p]}(num_features))" for p in params]
    for node_id, buffer in plan.buffers.items():
        start = _RUNNING_INIT[_RUNNING_NAME[get_op(g.node(node_id).op).stat]]  # type: ignore[index]
        init.append(f'        self.register_buffer("{buffer}", torch.{start}(num_features))')

    helper_src = []
    if "prefix_count" in em.helpers:
        helper_src.append(_PREFIX_COUNT)
    for h in em.helpers:
        if h in _ELEMENTWISE_HELPERS:
            helper_src.append(_ELEMENTWISE_HELPERS[h])
        elif h == "standardize_group":
            helper_src.append(_STANDARDIZE_GROUP_TOKENS)
        elif h != "prefix_count":
            stat, axes = h.split("_")
            helper_src.append(_aggregate_helper(Stat(stat), Axes(axes), layout))
    needs_groups = any(get_op(n.op).axes is Axes.GROUP for n in g.nodes)
    groups_line = ("        self.groups = num_groups(num_features, groups)" if needs_groups
                   else "        self.groups = groups")
    if needs_groups:
        helper_src.insert(0, _NUM_GROUPS)

    functional = "import torch.nn.functional as F\n" if plan.fused else ""
    text = formula(graph)
    shape = "(N, C, H, W)" if layout == "nchw" else "(B, T, C)"
    prologue = [*_input_check(layout, class_name), *prologue]
    head = title or "A normalization-activation layer found by evonorm-search."
    graph_json = json.dumps(g.to_json(), separators=(",", ":"))
    return f'''"""{head}

    y = {text}
    out = y * weight + bias          (per channel)

Layout: {layout}, input {shape}. Generated by evonorm-search from graph
{structural_hash(graph)[:16]} (canonical form in GRAPH below).
Needs only torch.
"""

import torch
{functional}from torch import Tensor, nn

GRAPH = {graph_json!r}
{"".join(helper_src)}{_DROP_AFTER}

class {class_name}(nn.Module):
    """y = {text}, then a per-channel affine; a drop-in `norm_layer(num_features)`."""

    def __init__(self, num_features: int, eps: float = {eps!r}, groups: int = 32,
                 momentum: float = 0.1, *, apply_act: bool = True, act_layer: object = None,
                 act_kwargs: object = None, inplace: bool = True, drop_layer: object = None,
                 device: object = None, dtype: object = None) -> None:
        # The keywords after * are timm's norm-act convention (its BatchNormAct2d, EvoNorm2dS0), so the
        # layer can be a timm `norm_layer`. The searched graph is the norm and its activation at once, with
        # no separable activation: act_layer, act_kwargs and inplace have nothing to choose, and
        # apply_act=False leaves the layer as it is (it computes the graph it was found as).
        super().__init__()
        self.num_features = num_features
        self.eps = eps
{groups_line}
        self.momentum = momentum
        self.apply_act = apply_act
{chr(10).join(init)}
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)
        if drop_layer is not None:  # timm's DropBlock, after the layer
            self.drop = drop_layer()
            self.register_forward_hook(_drop_after)

    def forward(self, x: Tensor) -> Tensor:
{chr(10).join(prologue + body + epilogue)}

    def extra_repr(self) -> str:
        return f"{{self.num_features}}, eps={{self.eps}}"
'''

"""Functional identity: equal fingerprints for equal functions, different for different ones."""

from __future__ import annotations

import itertools

import pytest
import torch

from primitives import Graph, structural_hash
from primitives.compile import compile_graph
from primitives.fingerprint import fingerprint
from primitives.zoo import ZOO

B = Graph.build

EQUAL = {
    "x*x = square(x)": (B(("mul", ["x", "x"])), B(("square", ["x"]))),
    "neg(neg(x)) = x + 0": (B(("neg", ["x"]), ("neg", [4])), B(("add", ["x", "zero"]))),
    "x + x = x * (exp(0) + exp(0))": (B(("add", ["x", "x"])),
                                     B(("exp", ["zero"]), ("add", [4, 4]), ("mul", ["x", 5]))),
    # a positive constant factor is the output affine's initial gain (the module doc)
    "x + x = x up to the output scale": (B(("add", ["x", "x"])), B(("add", ["x", "zero"]))),
    "(x + x) + (x + x) = x up to the output scale": (B(("add", ["x", "x"]), ("add", [4, 4])),
                                                     B(("add", ["x", "zero"]))),
    "BN-ReLU doubled = BN-ReLU": (B(("std_batch", ["x"]), ("div", ["x", 4]), ("max", [5, "zero"]),
                                    ("add", [6, 6])),
                                  B(("std_batch", ["x"]), ("div", ["x", 4]), ("max", [5, "zero"]))),
    "max(a, b) = max(b, a)": (B(("sigmoid", ["x"]), ("tanh", ["x"]), ("max", [4, 5])),
                              B(("tanh", ["x"]), ("sigmoid", ["x"]), ("max", [4, 5]))),
    "max(x, 0) = (x + abs(x)) / (exp(0) + exp(0))": (
        B(("max", ["x", "zero"])),
        B(("abs", ["x"]), ("add", ["x", 4]), ("exp", ["zero"]), ("add", [6, 6]), ("div", [5, 7]))),
    "x - mean = x + neg(mean)": (B(("mean_group", ["x"]), ("neg", [4]), ("add", ["x", 5])),
                                 B(("mean_group", ["x"]), ("neg", [4]), ("add", [5, "x"]))),
    "std = sqrt(moment2(x - mean) + eps) in training": (
        B(("std_instance", ["x"]), ("div", ["x", 4])),
        B(("mean_instance", ["x"]), ("neg", [4]), ("add", ["x", 5]), ("rms_instance", [6]), ("div", ["x", 7]))),
}

DIFFERENT = {
    "x vs square(x)": (B(("add", ["x", "zero"])), B(("square", ["x"]))),
    "x vs -x (the sign is kept)": (B(("add", ["x", "zero"])), B(("neg", ["x"]))),
    "x vs x * v1": (B(("add", ["x", "zero"])), B(("mul", ["x", "v1"]))),
    "x vs x + v0": (B(("add", ["x", "zero"])), B(("add", ["x", "v0"]))),
    "std_group vs std_instance": (B(("std_group", ["x"]), ("div", ["x", 4])),
                                  B(("std_instance", ["x"]), ("div", ["x", 4]))),
    "std_group vs std_layer": (B(("std_group", ["x"]), ("div", ["x", 4])),
                               B(("std_layer", ["x"]), ("div", ["x", 4]))),
    "std_instance vs std_layer": (B(("std_instance", ["x"]), ("div", ["x", 4])),
                                  B(("std_layer", ["x"]), ("div", ["x", 4]))),
    "std vs rms": (B(("std_layer", ["x"]), ("div", ["x", 4])), B(("rms_layer", ["x"]), ("div", ["x", 4]))),
    # equal in training (both the biased batch std); eval reads different running statistics
    "std_batch(x) vs rms_batch(x - mean_batch(x))": (
        B(("std_batch", ["x"]), ("div", ["x", 4])),
        B(("mean_batch", ["x"]), ("neg", [4]), ("add", ["x", 5]), ("rms_batch", [6]), ("div", ["x", 7]))),
    "div(a, b) vs div(b, a)": (B(("sigmoid", ["x"]), ("div", ["x", 4])),
                               B(("sigmoid", ["x"]), ("div", [4, "x"]))),
}


@pytest.mark.parametrize("case", list(EQUAL))
def test_equal_functions_share_a_fingerprint(case: str) -> None:
    a, b = EQUAL[case]
    assert fingerprint(a) == fingerprint(b)


@pytest.mark.parametrize("case", list(DIFFERENT))
def test_different_functions_have_different_fingerprints(case: str) -> None:
    a, b = DIFFERENT[case]
    assert structural_hash(a) != structural_hash(b)
    assert fingerprint(a) != fingerprint(b)


def test_batch_std_and_batch_rms_of_centred_x_agree_in_training_but_not_in_eval() -> None:
    a, b = (compile_graph(g, 8).double() for g in DIFFERENT["std_batch(x) vs rms_batch(x - mean_batch(x))"])
    x = torch.randn(4, 8, 3, 3, dtype=torch.float64) * 2 + 1
    torch.testing.assert_close(a.train()(x), b.train()(x))
    ya, yb = a.eval()(x), b.eval()(x)
    assert not torch.allclose(ya, yb, rtol=1e-4, atol=1e-6)
    # the running variance is corrected by n / (n - 1); the running second moment is not
    n = 4 * 3 * 3
    var = x.var(dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(a.get_buffer("running_var"), 0.9 + 0.1 * var * n / (n - 1))
    torch.testing.assert_close(b.get_buffer("running_moment2"), 0.9 + 0.1 * var)


def test_the_fingerprint_ignores_dead_nodes_and_the_global_rng() -> None:
    g = ZOO["evonorm_b0"].graph
    assert g is not None
    first = fingerprint(g)
    torch.manual_seed(1234)
    torch.randn(10)
    assert fingerprint(g) == first
    # the same graph behind a dead node (later ids shifted by one)
    with_dead = Graph.build(("exp", ["v0"]), *[(n.op, [i + 1 if i >= 4 else i for i in n.inputs])
                                               for n in g.nodes])
    assert structural_hash(with_dead) == structural_hash(g)
    assert fingerprint(with_dead) == first


def test_in_space_zoo_layers_are_pairwise_distinct() -> None:
    prints = {name: fingerprint(layer.graph) for name, layer in ZOO.items() if layer.graph is not None}
    clashes = [(a, b) for a, b in itertools.combinations(prints, 2) if prints[a] == prints[b]]
    assert clashes == []

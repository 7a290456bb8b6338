"""Rejection protocols: planted bad layers are stopped at the right stage, good layers are not.

Each bad layer is pushed through `workers.evaluation.screen` / `evaluate`
(not only the protocol functions) and the test asserts the Stage it stops
at, so a layer caught late (or early, by the wrong protocol) fails. The
image checks use ResNet on sklearn digits with a few steps: seconds on one
core.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
import torch
from stage_fakes import forbidding

from primitives import Graph, layer_class
from primitives.zoo import ZOO
from workers.evaluation import (
    EvalSpec,
    ProxyTask,
    chance_accuracy,
    evaluate,
    screen,
    stability_stage,
    with_steps,
)
from workers.rejection import Stage, numeric_check, quality_check

DIGITS = with_steps(EvalSpec(tasks=(ProxyTask("resnet", "digits"),), quality_steps=3), 3)
TEXT_TASK = ProxyTask("transformer", "pydoc_chars")

# x^3: finite and far from constant on the probe, so it passes the numeric
# stage; in a deep ResNet the cubes compound, and the stress test's ascent
# drives the loss gradient past 1e8 within a few steps.
CUBE = Graph.build(("mul", ["x", "x"]), ("mul", [4, "x"]))
# exp(exp(x)): exp is clamped to exp(80), so the probe's output stays finite;
# in a network it overflows at once.
EXP_EXP = Graph.build(("exp", ["x"]), ("exp", [4]))
# x * 0 and x - x: the output carries no information about x.
TIMES_ZERO = Graph.build(("mul", ["x", "zero"]),)
MINUS_ITSELF = Graph.build(("neg", ["x"]), ("add", ["x", 4]))
# A statistic broadcast back: varies over samples and channels, constant over positions.
STAT_ONLY = Graph.build(("moment2_instance", ["x"]),)
STD_OF_STD = Graph.build(("std_instance", ["x"]), ("std_batch", [4]))
# square(exp(exp(x))) overflows to inf; inf - inf is NaN.
NAN = Graph.build(("exp", ["x"]), ("exp", [4]), ("square", [5]), ("neg", [6]), ("add", [6, 7]))


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def no_training() -> dict[str, Any]:
    """`evaluate(..., **no_training)`: any training (short or full) fails the test."""
    return forbidding("train", "short_train")


def zoo_graph(name: str) -> Graph:
    graph = ZOO[name].graph
    assert graph is not None
    return graph


# -- static -----------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ('{"schema": "evonorm-graph/1", "nodes": [', "malformed JSON"),
    (json.dumps({"nodes": [{"op": "exp", "inputs": ["v1"]}]}), "does not depend on the input x"),
    (json.dumps({"nodes": [{"op": "cosh", "inputs": ["x"]}]}), "unknown op 'cosh'"),
    (json.dumps({"nodes": [{"op": "add", "inputs": ["x"]}]}), "add takes 2 input(s)"),
])
def test_static_rejection(text: str, expected: str, no_training: dict[str, Any]) -> None:
    screening = screen(text, DIGITS)
    assert screening.rejection is not None
    assert screening.rejection.stage is Stage.STATIC
    assert expected in screening.rejection.reason
    assert screening.fingerprint is None
    result = evaluate(text, DIGITS, **no_training)
    assert result.status == "rejected" and result.rejection == screening.rejection
    assert [stage for stage, _ in result.stage_seconds] == [Stage.STATIC]


# -- numeric ----------------------------------------------------------------

@pytest.mark.parametrize(("graph", "expected"), [
    (TIMES_ZERO, "constant output"),
    (MINUS_ITSELF, "constant output"),
    (NAN, "non-finite output"),
    (STAT_ONLY, "constant over positions (nchw)"),
    (STD_OF_STD, "constant over positions"),
])
def test_numeric_rejection(graph: Graph, expected: str, no_training: dict[str, Any]) -> None:
    result = evaluate(graph, DIGITS, **no_training)
    assert result.status == "rejected"
    assert result.rejection is not None
    assert result.rejection.stage is Stage.NUMERIC
    assert expected in result.rejection.reason
    assert [stage for stage, _ in result.stage_seconds] == [Stage.STATIC, Stage.NUMERIC]


@pytest.mark.parametrize("graph", [
    Graph.build(("moment2_instance", ["x"]), ("add", ["x", 4])),       # x + a statistic: positions kept
    Graph.build(("mean_batch", ["x"]), ("mul", [4, "x"])),             # x scaled by a statistic
])
def test_a_statistic_that_still_carries_x_passes(graph: Graph) -> None:
    assert numeric_check(graph, ("nchw", "tokens")) is None


def test_the_nan_layer_really_makes_nan() -> None:
    """The planted layer is what it claims: NaN on ordinary activations, not just large values."""
    y = layer_class(NAN)(8, groups=2)(torch.randn(2, 8, 4, 4, generator=torch.Generator().manual_seed(0)) * 3)
    assert torch.isnan(y).any()


@pytest.mark.parametrize("name", [n for n, z in ZOO.items() if z.in_search_space])
def test_zoo_layers_pass_numeric_in_both_layouts(name: str) -> None:
    assert numeric_check(zoo_graph(name), ("nchw", "tokens"), eps=ZOO[name].eps) is None


@pytest.mark.parametrize("name", ["bn_relu", "layernorm"])
def test_zoo_layers_pass_screening_on_the_default_tasks(name: str) -> None:
    screening = screen(zoo_graph(name), EvalSpec())  # both layouts: images and tokens
    assert screening.rejection is None
    assert screening.fingerprint
    assert [stage for stage, _ in screening.stage_seconds] == [Stage.STATIC, Stage.NUMERIC, Stage.DUPLICATE]


# -- stability --------------------------------------------------------------

@pytest.mark.parametrize(("graph", "expected"), [
    (CUBE, "> 1e+08"),
    (EXP_EXP, "non-finite"),
])
def test_exploding_layers_pass_numeric_and_are_caught_at_stability(graph: Graph, expected: str,
                                                                   no_training: dict[str, Any]) -> None:
    assert screen(graph, DIGITS).rejection is None  # the cheap probe cannot see it
    result = evaluate(graph, DIGITS, **no_training)
    assert result.status == "rejected"
    assert result.rejection is not None
    assert result.rejection.stage is Stage.STABILITY
    assert expected in result.rejection.reason
    assert [stage for stage, _ in result.stage_seconds][-1] == Stage.STABILITY


def test_the_stress_test_ascent_is_what_finds_the_cube() -> None:
    """At the initial parameters x^3 looks fine; gradient ascent on them exposes it."""
    first_step, _ = stability_stage(CUBE, replace(DIGITS, stability_steps=1))
    assert first_step is None
    rejection, worst = stability_stage(CUBE, DIGITS)
    assert rejection is not None and rejection.stage is Stage.STABILITY
    assert worst > DIGITS.stability_threshold


@pytest.mark.parametrize("name", ["bn_relu", "layernorm", "evonorm_s0"])
def test_zoo_layers_pass_the_stress_test(name: str) -> None:
    spec = replace(DIGITS, eps=ZOO[name].eps)
    rejection, worst = stability_stage(zoo_graph(name), spec)
    assert rejection is None
    assert 0 < worst < spec.stability_threshold


# -- quality ----------------------------------------------------------------

def test_quality_threshold_is_chance_plus_a_ninth_of_the_headroom() -> None:
    # The paper's 20% after 100 steps on 10 classes.
    assert quality_check(0.2001, 0.1, 1 / 9, "t") is None
    rejection = quality_check(0.1999, 0.1, 1 / 9, "t")
    assert rejection is not None and rejection.stage is Stage.QUALITY
    assert "accuracy 0.200 < 0.200" in rejection.reason


def test_text_chance_is_the_most_frequent_character() -> None:
    # Not 1 / vocabulary (about 0.01): a model that ignores its input already gets this.
    assert chance_accuracy("pydoc_chars") == pytest.approx(0.209, abs=0.002)
    assert chance_accuracy("digits") == pytest.approx(0.1)


def test_identity_is_rejected_at_quality_on_text() -> None:
    """No normalization in the Transformer: it only learns the character frequencies.

    It predicts the most frequent character (accuracy = chance, 0.209), under
    the threshold chance + (1 - chance) / 9 = 0.297. (Measured at the full
    100 steps: identity 0.209, layernorm 0.367.)
    """
    spec = EvalSpec(tasks=(TEXT_TASK,), stability=False, quality_steps=20)
    result = evaluate(zoo_graph("identity"), spec, **forbidding("train"))
    assert result.status == "rejected"
    assert result.rejection is not None
    assert result.rejection.stage is Stage.QUALITY
    reason = result.rejection.reason
    assert reason.startswith("transformer:pydoc_chars: accuracy 0.209 < 0.297 (chance 0.209"), reason
    # The short training's cost is part of the result even though it ended in a rejection.
    costs = dict(result.stage_seconds)
    assert list(costs)[-1] == Stage.QUALITY and costs[Stage.QUALITY] > 0

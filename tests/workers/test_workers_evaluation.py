"""evaluate(): a survivor gets one score per task; a functional duplicate reuses the cached
result without training; a time limit turns a candidate that runs too long into a worker
rejection, in process and on Ray; a candidate that raises or runs out of memory in any stage is
rejected with its reason and the next evaluation runs as usual.

ResNet on sklearn digits with a few steps keeps the whole file to seconds of CPU.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
import torch
from stage_fakes import forbidden, forbidding, stages
from torch import Tensor, nn

from primitives import Graph, structural_hash
from primitives.fingerprint import fingerprint
from primitives.zoo import ZOO
from workers.evaluation import (
    EVALUATE_STAGES,
    EvalSpec,
    EvaluationResult,
    ProxyTask,
    Trial,
    evaluate,
    screen,
    with_steps,
)
from workers.executors import InProcessExecutor, JobFailure, RayExecutor
from workers.rejection import Rejection, Stage
from workers.train import TrainResult

# with_steps caps the quality stage at 4 steps too, too few for the quality check: keep its 20.
DIGITS = replace(with_steps(EvalSpec(tasks=(ProxyTask("resnet", "digits"),), stability_steps=5), 4),
                 quality_steps=20)


def zoo_graph(name: str) -> Graph:
    graph = ZOO[name].graph
    assert graph is not None
    return graph


S0 = zoo_graph("evonorm_s0")
# EvoNorm-S0 written the other way round: (x / std_group(x)) * sigmoid(v1 * x). Another
# structure, the same function.
S0_REORDERED = Graph.build(("std_group", ["x"]), ("div", ["x", 4]), ("mul", ["v1", "x"]), ("sigmoid", [6]),
                           ("mul", [5, 7]))
X_TIMES_X = Graph.build(("mul", ["x", "x"]),)
SQUARE = Graph.build(("square", ["x"]),)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def s0_result() -> EvaluationResult:
    torch.set_num_threads(1)
    return evaluate(S0, DIGITS)


def test_a_survivor_is_scored_on_every_task(s0_result: EvaluationResult) -> None:
    r = s0_result
    assert r.status == "evaluated", r.rejection
    assert r.rejection is None and r.duplicate_of is None
    assert r.fingerprint == fingerprint(S0)
    assert [s.objective for s in r.scores] == ["resnet:digits"]
    score = r.scores[0]
    assert score.steps == 4 and 0.0 <= score.accuracy <= 1.0 and math.isfinite(score.loss)
    assert r.objectives == (score.accuracy,)
    assert [stage for stage, _ in r.stage_seconds] == [
        Stage.STATIC, Stage.NUMERIC, Stage.DUPLICATE, Stage.STABILITY, Stage.QUALITY, Stage.TRAINING]
    assert all(seconds >= 0 for _, seconds in r.stage_seconds)
    assert r.worker


def test_functional_duplicates_share_a_fingerprint_not_a_structure() -> None:
    for a, b in ((S0, S0_REORDERED), (X_TIMES_X, SQUARE)):
        assert structural_hash(a) != structural_hash(b)
        assert fingerprint(a) == fingerprint(b)
    assert fingerprint(S0) != fingerprint(zoo_graph("evonorm_s1"))


def test_a_functional_duplicate_reuses_the_cached_scores_without_training(
        s0_result: EvaluationResult) -> None:
    cache = {s0_result.fingerprint or "": s0_result}
    start = time.perf_counter()
    dup = evaluate(S0_REORDERED, DIGITS, cache=cache, **forbidding("train", "short_train", "stability_stage"))
    elapsed = time.perf_counter() - start
    assert dup.status == "duplicate"
    assert dup.duplicate_of == s0_result.fingerprint == dup.fingerprint
    assert dup.scores == s0_result.scores and dup.objectives == s0_result.objectives
    assert dup.rejection is None
    # Only the screening ran (milliseconds), not the seconds of training s0_result took.
    assert [stage for stage, _ in dup.stage_seconds] == [Stage.STATIC, Stage.NUMERIC, Stage.DUPLICATE]
    assert elapsed < s0_result.wall_s


def test_a_duplicate_of_a_rejected_candidate_is_rejected_for_the_same_reason() -> None:
    earlier = EvaluationResult("rejected", fingerprint(X_TIMES_X),
                               rejection=Rejection(Stage.STABILITY, "gradient norm 1e+12 > 1e+08 at step 2"))
    result = evaluate(SQUARE, DIGITS, cache={fingerprint(X_TIMES_X): earlier},
                      **forbidding("train", "short_train", "stability_stage"))
    assert result.status == "rejected"
    assert result.rejection == earlier.rejection
    assert result.duplicate_of == earlier.fingerprint
    assert result.objectives is None


def test_a_cache_miss_is_evaluated_and_screening_is_not_repeated() -> None:
    relu = zoo_graph("relu")
    screening = screen(relu, DIGITS)
    # A cache with other fingerprints: relu must not be taken for one of them. The full
    # training is forbidden, so the quality stage rejects to stop the test early.
    spec = replace(DIGITS, quality_margin=1.0)
    other = {"0" * 64: EvaluationResult("evaluated", "0" * 64)}
    result = evaluate(relu, spec, cache=other, screening=screening,
                      **forbidding("numeric_check", "fingerprint", "train"))
    assert result.status == "rejected" and result.duplicate_of is None
    assert result.rejection is not None and result.rejection.stage is Stage.QUALITY


def test_a_divergence_in_the_full_training_is_rejected_with_the_stage_cost_recorded() -> None:
    def diverging(*args: Any, **kwargs: Any) -> TrainResult:
        time.sleep(0.05)
        return TrainResult("digits", "resnet", 0, 0.0, math.inf, math.inf, 7, 1.0, 0.05, 1,
                           diverged=True, reason="non-finite loss at step 8")

    result = evaluate(zoo_graph("bn_relu"), replace(DIGITS, stability=False, quality=False),
                      **stages(train=diverging))
    assert result.status == "rejected"
    assert result.rejection == Rejection(Stage.TRAINING, "resnet:digits: diverged (non-finite loss at step 8)")
    costs = dict(result.stage_seconds)
    assert list(costs)[-1] == Stage.TRAINING and costs[Stage.TRAINING] >= 0.05


def test_a_time_limit_rejects_as_a_worker_failure() -> None:
    spec = replace(DIGITS, time_limit_s=1e-3)
    result = evaluate(zoo_graph("bn_relu"), spec, **forbidding("train", "short_train"))
    assert result.status == "rejected"
    assert result.rejection is not None
    assert result.rejection.stage is Stage.WORKER
    assert "time limit exceeded during stability" in result.rejection.reason


def test_with_steps_cuts_the_quality_training_too() -> None:
    spec = EvalSpec(tasks=(ProxyTask("resnet", "digits"), ProxyTask("transformer", "pydoc_chars")))
    assert spec.quality_steps == 100
    short = with_steps(spec, 3)
    assert [t.config.steps for t in short.tasks] == [3, 3] and short.quality_steps == 3
    assert with_steps(spec, 500).quality_steps == 100  # a cap: never more than the spec asked
    assert with_steps(replace(spec, quality_steps=2), 3).quality_steps == 2

    ran: list[int] = []

    def recording(factory: Any, backbone: str, task: str, steps: int, *args: Any) -> TrainResult:
        ran.append(steps)
        return TrainResult(task, backbone, 0, 0.0, math.inf, math.inf, 0, 1.0, 0.01, 1,
                           diverged=True, reason="stop here")

    result = evaluate(zoo_graph("bn_relu"), replace(short, stability=False),
                      **stages(train=forbidden, short_train=recording))
    assert ran == [3] and result.rejection is not None and result.rejection.stage is Stage.QUALITY


@dataclass(frozen=True)
class _Planted:
    """A stage the evaluation does not know: it rejects every candidate after a measurable while."""

    name: Stage = Stage.STABILITY
    seen: list[str] = field(default_factory=list)

    def enabled(self, spec: EvalSpec) -> bool:
        return True

    def check(self, trial: Trial) -> Rejection | None:
        self.seen.append(trial.fingerprint or "")
        time.sleep(0.02)
        return Rejection(self.name, "planted")


def test_evaluate_walks_an_injected_stage_list_in_order() -> None:
    planted = _Planted()
    after = stages(short_train=forbidden, train=forbidden)["stages"]
    result = evaluate(S0, DIGITS, stages=(planted, *after))
    assert result.rejection == Rejection(Stage.STABILITY, "planted")
    assert planted.seen == [fingerprint(S0)]         # it ran once, after the screening
    names = [stage for stage, _ in result.stage_seconds]
    assert names == [Stage.STATIC, Stage.NUMERIC, Stage.DUPLICATE, Stage.STABILITY]
    assert dict(result.stage_seconds)[Stage.STABILITY] >= 0.02
    assert [s.name for s in EVALUATE_STAGES] == [Stage.STABILITY, Stage.QUALITY, Stage.TRAINING]


NO_REJECTION = replace(DIGITS, stability=False, quality=False)  # straight to the 4-step training


def _cuda_oom() -> Exception:
    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def _runtime_oom() -> Exception:
    return RuntimeError("CUDA error: out of memory (while allocating the activations)")


@pytest.mark.parametrize("error", [_cuda_oom, _runtime_oom], ids=["OutOfMemoryError", "RuntimeError"])
def test_running_out_of_gpu_memory_is_a_rejection_and_the_next_evaluation_runs(
        monkeypatch: pytest.MonkeyPatch, error: Callable[[], Exception]) -> None:
    emptied: list[bool] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))

    def out_of_memory(*args: Any, **kwargs: Any) -> TrainResult:
        raise error()

    ex = InProcessExecutor()
    oom_stages = stages(train=out_of_memory)["stages"]
    job = ex.submit(evaluate, zoo_graph("bn_relu"), NO_REJECTION, None, None, oom_stages)
    result = dict(ex.wait())[job]
    assert isinstance(result, EvaluationResult) and result.status == "rejected"
    assert result.rejection is not None and result.rejection.stage is Stage.WORKER
    e = error()
    assert result.rejection.reason == f"out of memory: {type(e).__name__}: {e}"
    assert result.objectives is None
    assert emptied == [True]  # the CUDA cache was handed back once

    monkeypatch.undo()
    job = ex.submit(evaluate, zoo_graph("bn_relu"), NO_REJECTION)
    after = dict(ex.wait())[job]
    assert isinstance(after, EvaluationResult) and after.status == "evaluated", after.rejection


def test_a_host_memory_error_fails_the_job_as_oom_and_the_executor_carries_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    emptied: list[bool] = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))

    def out_of_memory(*args: Any, **kwargs: Any) -> TrainResult:
        raise MemoryError  # as Python raises it: no message

    oom_stages = stages(train=out_of_memory)["stages"]
    # evaluate itself lets it through (the worker's trouble, not the candidate's) ...
    with pytest.raises(MemoryError):
        evaluate(zoo_graph("bn_relu"), NO_REJECTION, stages=oom_stages)
    # ... and the executor turns it into an "oom" failure instead of going down
    ex = InProcessExecutor()
    job = ex.submit(evaluate, zoo_graph("bn_relu"), NO_REJECTION, None, None, oom_stages)
    failure = dict(ex.wait())[job]
    assert isinstance(failure, JobFailure) and failure.kind == "oom"
    assert "memory" in failure.message.lower()
    assert emptied == []  # host memory: nothing to hand back to CUDA

    monkeypatch.undo()
    job = ex.submit(evaluate, zoo_graph("bn_relu"), NO_REJECTION)
    after = dict(ex.wait())[job]
    assert isinstance(after, EvaluationResult) and after.status == "evaluated", after.rejection


def test_any_exception_in_training_is_a_rejection_at_stage_error() -> None:
    def broken(*args: Any, **kwargs: Any) -> TrainResult:
        raise KeyError("no such buffer")

    result = evaluate(zoo_graph("bn_relu"), NO_REJECTION, **stages(train=broken))
    assert result.status == "rejected"
    # The layer's fault (unlike a timeout or a lost worker), so a duplicate may reuse it.
    assert result.rejection == Rejection(Stage.ERROR, "KeyError: 'no such buffer'")
    assert list(dict(result.stage_seconds))[-1] == Stage.TRAINING


class _RaisesOnForward(nn.Module):
    """A planted layer whose op fails on any input, as a buggy generated layer would."""

    def __init__(self, num_features: int, **kwargs: Any) -> None:
        super().__init__()
        self.v1 = nn.Parameter(torch.ones(num_features))

    def forward(self, x: Tensor) -> Tensor:
        return x[:, :, :, :, 99]  # IndexError: too many indices


def test_an_exception_in_the_numeric_check_is_a_numeric_rejection() -> None:
    def probe_a_raising_layer(graph: Graph, layouts: tuple[str, ...], **kwargs: Any) -> Rejection | None:
        _RaisesOnForward(8)(torch.randn(2, 8, 4, 4))
        return None

    injected = stages(numeric_check=probe_a_raising_layer, train=forbidden, short_train=forbidden,
                      stability_stage=forbidden)
    screening = screen(S0, DIGITS, injected["screen_stages"])
    assert screening.fingerprint is None and screening.rejection is not None
    assert screening.rejection.stage is Stage.NUMERIC
    assert screening.rejection.reason.startswith("IndexError: too many indices")
    assert [stage for stage, _ in screening.stage_seconds] == [Stage.STATIC, Stage.NUMERIC]
    result = evaluate(S0, DIGITS, **injected)
    assert result.status == "rejected" and result.rejection == screening.rejection


def test_an_exception_in_the_fingerprint_is_a_rejection() -> None:
    def broken(graph: Graph) -> str:
        raise ZeroDivisionError("division by zero")

    result = evaluate(S0, DIGITS, **stages(fingerprint=broken))
    assert result.status == "rejected"
    assert result.rejection == Rejection(Stage.DUPLICATE, "ZeroDivisionError: division by zero")
    assert [stage for stage, _ in result.stage_seconds] == [Stage.STATIC, Stage.NUMERIC, Stage.DUPLICATE]


def test_a_base_exception_is_not_swallowed() -> None:
    def interrupted(*args: Any, **kwargs: Any) -> Rejection | None:
        raise KeyboardInterrupt

    injected = stages(numeric_check=interrupted)
    with pytest.raises(KeyboardInterrupt):
        screen(S0, DIGITS, injected["screen_stages"])
    with pytest.raises(KeyboardInterrupt):
        evaluate(S0, DIGITS, **injected)


@pytest.mark.slow  # a private Ray and a worker that imports torch: tens of seconds on a loaded machine
def test_a_hung_evaluation_on_ray_times_out_and_the_pool_carries_on() -> None:
    """A candidate whose training never ends (10**9 steps) is killed at its deadline."""
    endless = replace(with_steps(DIGITS, 10**9), stability=False, quality=False)
    ex = RayExecutor(local_cpus=1, max_retries=0)
    out: dict[int, Any] = {}

    def drain() -> None:
        start = time.monotonic()
        while ex.in_flight:
            assert time.monotonic() - start < 120, "the executor did not finish its jobs"
            out.update(ex.wait(timeout_s=5.0))

    try:
        # Warm the worker (torch, the data) with a real screening, so the deadline below
        # is spent in the evaluation, not in the worker's start-up.
        warm = ex.submit(screen, ZOO["bn_relu"].graph, DIGITS)
        drain()
        assert out[warm].rejection is None
        start = time.monotonic()
        hung = ex.submit(evaluate, ZOO["bn_relu"].graph, endless, timeout_s=3.0)
        drain()
        assert isinstance(out[hung], JobFailure) and out[hung].kind == "timeout"
        assert time.monotonic() - start < 30
        after = ex.submit(screen, ZOO["layernorm"].graph, DIGITS)
        drain()
        assert out[after].fingerprint == fingerprint(zoo_graph("layernorm"))
    finally:
        ex.close()

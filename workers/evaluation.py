"""evaluate(graph, spec) -> EvaluationResult: the whole life of one candidate on a worker.

A pure function of picklable inputs and outputs; it never touches a
database. The stages run cheapest first (see `workers.rejection`) and each
records its cost, so the search can show what rejection saves:

    static -> numeric -> fingerprint/duplicate -> stability -> quality -> proxy training

Every proxy task (backbone x data set) is one objective: its validation
accuracy, maximised.

For a cluster the runner splits this in two jobs: `screen` (static, numeric,
fingerprint: milliseconds) and, only for a fingerprint nobody has evaluated
or is evaluating, `evaluate(..., screening=...)`. That way the duplicate
check uses the coordinator's complete cache and no fingerprint is trained
twice, while the coordinator itself never runs torch.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F

from primitives import Graph, GraphError, layer_class
from primitives.fingerprint import fingerprint
from workers.backbones import backbone_layout, build_backbone
from workers.cost import relative_cost
from workers.data import ImageData, TextData, get_task
from workers.executors import worker_name
from workers.rejection import Rejection, Stage, numeric_check, quality_check, stress_test
from workers.train import TrainConfig, TrainResult, recipe_for, short_train, train


@dataclass(frozen=True)
class ProxyTask:
    """One objective: a backbone trained on a data set with a fixed recipe."""

    backbone: str
    task: str
    config: TrainConfig = field(default_factory=TrainConfig)

    @property
    def objective(self) -> str:
        return f"{self.backbone}:{self.task}"

    @property
    def layout(self) -> str:
        return backbone_layout(self.backbone)


DEFAULT_TASKS = (
    ProxyTask("resnet", "shapes32"),
    ProxyTask("mobilenet", "shapes32"),
    ProxyTask("transformer", "pydoc_chars"),
)


@dataclass(frozen=True)
class EvalSpec:
    """How candidates are judged; shared by every candidate of a search."""

    tasks: tuple[ProxyTask, ...] = DEFAULT_TASKS
    # Trained only at the funnel's top rung, never selected on (`workers.funnel`).
    heldout_tasks: tuple[ProxyTask, ...] = ()
    seed: int = 0
    eps: float = 1e-5
    groups: int = 32                # group statistics on images (as GroupNorm(32))
    # On tokens a group spans channels of one position only, so it needs
    # enough channels: 4 groups over the proxy Transformer's 64.
    token_groups: int = 4
    numeric: bool = True
    stability: bool = True
    stability_steps: int = 20
    stability_threshold: float = 1e8
    stability_batch: int = 8
    stability_lr: float = 0.01
    quality: bool = True
    quality_steps: int = 100
    # Short-training accuracy must pass chance + margin * (1 - chance). 1/9 is
    # the paper's 20% on 10 classes; on text, chance is the most frequent
    # character, which a model that ignores its input already reaches.
    quality_margin: float = 1 / 9
    time_limit_s: float | None = None
    measure_cost: bool = False      # add the layer's relative fwd+bwd time as an objective

    @property
    def objectives(self) -> tuple[str, ...]:
        return tuple(t.objective for t in self.tasks) + (("cost",) if self.measure_cost else ())

    @property
    def maximise(self) -> tuple[bool, ...]:
        return (True,) * len(self.tasks) + ((False,) if self.measure_cost else ())

    @property
    def layouts(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t.layout for t in self.tasks))


@dataclass(frozen=True)
class TaskScore:
    objective: str
    backbone: str
    task: str
    accuracy: float
    loss: float
    steps: int
    steps_per_s: float
    wall_s: float
    params: int

    @classmethod
    def of(cls, task: ProxyTask, r: TrainResult) -> TaskScore:
        return cls(task.objective, task.backbone, task.task, r.val_accuracy, r.val_loss, r.steps,
                   r.steps_per_s, r.wall_time_s, r.num_params)

    def metrics(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "loss": self.loss, "steps": self.steps,
                "steps_per_s": self.steps_per_s, "wall_s": self.wall_s, "params": self.params}


@dataclass(frozen=True)
class Screening:
    """The cheap stages' verdict: a rejection, or the fingerprint to check for duplicates."""

    fingerprint: str | None
    rejection: Rejection | None
    stage_seconds: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class EvaluationResult:
    status: str                                   # evaluated | rejected | duplicate
    fingerprint: str | None
    scores: tuple[TaskScore, ...] = ()
    rejection: Rejection | None = None
    stage_seconds: tuple[tuple[str, float], ...] = ()
    wall_s: float = 0.0
    worker: str = ""
    duplicate_of: str | None = None               # the fingerprint whose result was reused
    cost: float | None = None                     # fwd+bwd time relative to BN-ReLU, if measured

    @property
    def objectives(self) -> tuple[float, ...] | None:
        """Accuracy per task, then the cost if it was measured (the search's objective order)."""
        if self.status == "rejected":
            return None
        return tuple(s.accuracy for s in self.scores) + ((self.cost,) if self.cost is not None else ())


class _Deadline:
    def __init__(self, limit_s: float | None):
        self.end = time.monotonic() + limit_s if limit_s else None

    def check(self, stage: Stage) -> None:
        if self.end is not None and time.monotonic() > self.end:
            raise _Rejected(Rejection(Stage.WORKER, f"time limit exceeded during {stage}"))


class _Rejected(Exception):
    def __init__(self, rejection: Rejection):
        self.rejection = rejection


def _parse(graph: Graph | Mapping[str, Any] | str) -> Graph:
    if isinstance(graph, Graph):
        return graph
    if isinstance(graph, str):
        return Graph.loads(graph)
    return Graph.from_json(graph)


def _failed(stage: Stage, e: Exception) -> Rejection:
    """A stage that raised: the candidate's fault, with the exception's type and message."""
    return Rejection(stage, f"{type(e).__name__}: {e}"[:500])


def screen(graph: Graph | Mapping[str, Any] | str, spec: EvalSpec) -> Screening:
    """Stages 1-2 and the fingerprint: milliseconds per candidate.

    Total: a stage that raises any Exception (a broken graph, an op that fails
    on the probe) rejects the candidate at that stage with the exception's type
    and message. A MemoryError is the worker's trouble, not the candidate's: it
    propagates, and the executor reports it as "oom".
    """
    costs: list[tuple[str, float]] = []
    stage, t = Stage.STATIC, time.perf_counter()

    def rejected(rejection: Rejection) -> Screening:
        costs.append((stage, time.perf_counter() - t))
        return Screening(None, rejection, tuple(costs))

    try:
        g = _parse(graph)
        costs.append((stage, time.perf_counter() - t))
        if spec.numeric:
            stage, t = Stage.NUMERIC, time.perf_counter()
            rejection = numeric_check(g, spec.layouts, eps=spec.eps)
            if rejection:
                return rejected(rejection)
            costs.append((stage, time.perf_counter() - t))
        stage, t = Stage.DUPLICATE, time.perf_counter()
        fp = fingerprint(g)
    except MemoryError:
        raise
    except Exception as e:   # the stage that raised rejects the candidate
        invalid = stage is Stage.STATIC and isinstance(e, GraphError)
        return rejected(Rejection(stage, str(e)) if invalid else _failed(stage, e))
    costs.append((stage, time.perf_counter() - t))
    return Screening(fp, None, tuple(costs))


def _factory(g: Graph, spec: EvalSpec, layout: str) -> Any:
    cls = layer_class(g, layout, None, spec.eps)

    groups = spec.groups if layout == "nchw" else spec.token_groups

    def build(num_features: int) -> torch.nn.Module:
        return cls(num_features, eps=spec.eps, groups=groups)

    return build


def stability_stage(g: Graph, spec: EvalSpec) -> tuple[Rejection | None, float]:
    """The stress test on the first task's backbone and one small batch of its data."""
    task = spec.tasks[0]
    info = get_task(task.task)
    data = info.load(task.config.data_root)
    recipe = recipe_for(task.task, task.config, task.backbone)
    kwargs = {**recipe.backbones.get(task.backbone, {}), **task.config.backbone_kwargs}
    gen = torch.Generator().manual_seed(spec.seed)
    x: torch.Tensor
    if isinstance(data, ImageData):
        kwargs.setdefault("in_channels", info.input_shape[0])
        idx = torch.randperm(len(data.train_y), generator=gen)[: spec.stability_batch]
        x, y = data.normalize(data.train_x[idx]), data.train_y[idx]

        def loss_fn(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(out, target)
    else:
        assert isinstance(data, TextData)
        kwargs.setdefault("block_size", info.input_shape[0])
        x, y = data.batch("train", spec.stability_batch, kwargs["block_size"], gen)

        def loss_fn(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(out.flatten(0, 1), target.flatten())
    torch.manual_seed(spec.seed)
    model = build_backbone(task.backbone, _factory(g, spec, task.layout), info.num_classes, **kwargs)
    result = stress_test(model, x, y, loss_fn, steps=spec.stability_steps, lr=spec.stability_lr,
                         threshold=spec.stability_threshold)
    return result.rejection, result.max_grad_norm


def chance_accuracy(task_name: str, root: str | None = None) -> float:
    """Accuracy of a model that ignores its input: uniform for images, the most
    frequent character for text (what a bigram-blind model reaches at once)."""
    info = get_task(task_name)
    if info.kind == "image":
        return 1.0 / info.num_classes
    data = info.load(root)
    assert isinstance(data, TextData)
    counts = torch.bincount(data.val, minlength=data.vocab_size)
    return float(counts.max()) / float(counts.sum())


def evaluate(graph: Graph | Mapping[str, Any] | str, spec: EvalSpec,
             cache: Mapping[str, EvaluationResult] | None = None,
             screening: Screening | None = None) -> EvaluationResult:
    """Run the rejection protocols and, for survivors, the proxy training on every task.

    `cache` maps fingerprints to earlier results (the caller's); a hit is
    returned as a duplicate with that result's scores and nothing is trained.
    `screening` skips the cheap stages when the runner already ran them.

    Total for the candidate's faults: any Exception a stage raises comes back
    as a rejection with the exception's type and message (a GPU out-of-memory
    error at the worker stage, after which the CUDA cache is emptied). Only a
    host MemoryError propagates, for the executor to report as "oom".
    """
    start = time.perf_counter()
    deadline = _Deadline(spec.time_limit_s)
    screening = screening or screen(graph, spec)
    costs = list(screening.stage_seconds)

    def done(status: str, **kw: Any) -> EvaluationResult:
        return EvaluationResult(status, screening.fingerprint, stage_seconds=tuple(costs),
                                wall_s=time.perf_counter() - start, worker=worker_name(), **kw)

    if screening.rejection:
        return done("rejected", rejection=screening.rejection)
    fp = screening.fingerprint
    if cache is not None and fp is not None and fp in cache:
        hit = cache[fp]
        return done(hit.status if hit.status == "rejected" else "duplicate", scores=hit.scores,
                    rejection=hit.rejection, duplicate_of=fp, cost=hit.cost)

    out_of_memory = False
    try:
        g = _parse(graph)
        if spec.stability:
            t = time.perf_counter()
            rejection, _ = stability_stage(g, spec)
            costs.append((Stage.STABILITY, time.perf_counter() - t))
            if rejection:
                return done("rejected", rejection=rejection)
            deadline.check(Stage.STABILITY)

        # A rejection found inside a stage is returned only after the stage's cost is
        # recorded: `done` snapshots `costs`, so returning from inside the `try` would
        # run the `finally` too late and drop the stage's seconds from the result.
        if spec.quality:
            t = time.perf_counter()
            rejection = None
            try:
                for task in spec.tasks:
                    r = short_train(_factory(g, spec, task.layout), task.backbone, task.task,
                                    spec.quality_steps, task.config, spec.seed)
                    if r.diverged:
                        rejection = Rejection(
                            Stage.QUALITY, f"{task.objective}: diverged in the short training ({r.reason})")
                        break
                    rejection = quality_check(r.val_accuracy, chance_accuracy(task.task, task.config.data_root),
                                              spec.quality_margin, task.objective)
                    if rejection:
                        break
                    deadline.check(Stage.QUALITY)
            finally:
                costs.append((Stage.QUALITY, time.perf_counter() - t))
            if rejection:
                return done("rejected", rejection=rejection)

        t = time.perf_counter()
        scores = []
        rejection = None
        try:
            for task in spec.tasks:
                r = train(_factory(g, spec, task.layout), task.backbone, task.task, task.config, spec.seed)
                if r.diverged:
                    rejection = Rejection(Stage.TRAINING, f"{task.objective}: diverged ({r.reason})")
                    break
                scores.append(TaskScore.of(task, r))
                deadline.check(Stage.TRAINING)
        finally:
            costs.append((Stage.TRAINING, time.perf_counter() - t))
        if rejection:
            return done("rejected", rejection=rejection)
        cost = relative_cost(g, eps=spec.eps, groups=spec.groups) if spec.measure_cost else None
        return done("evaluated", scores=tuple(scores), cost=cost)
    except _Rejected as e:
        return done("rejected", rejection=e.rejection)
    except MemoryError:
        raise  # the worker's trouble (host memory): the executor reports it as "oom"
    except Exception as e:
        # Reject and carry on. A candidate that breaks a backbone (shapes torch
        # refuses, an op that raises) is at fault itself: stage `error`. Running
        # out of GPU memory depends on the device and the batch as much as on the
        # layer: stage `worker`, which a functional duplicate does not inherit.
        if _is_oom(e):
            out_of_memory = True
            reason = f"out of memory: {type(e).__name__}: {e}"[:500]
            return done("rejected", rejection=Rejection(Stage.WORKER, reason))
        return done("rejected", rejection=_failed(Stage.ERROR, e))
    finally:
        # After the except block, so the exception's frames (and the tensors they hold) are gone.
        if out_of_memory:
            _release_gpu_memory()


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or (
        isinstance(e, RuntimeError) and "out of memory" in str(e).lower())


def _release_gpu_memory() -> None:
    """Hand the cached blocks of a failed candidate back, so the next one starts clean."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def with_steps(spec: EvalSpec, steps: int) -> EvalSpec:
    """The same spec with every task's training cut to `steps` (tests, quick runs); the
    quality stage's short training is cut to at most `steps` too."""
    tasks = tuple(replace(t, config=replace(t.config, steps=steps)) for t in spec.tasks)
    return replace(spec, tasks=tasks, quality_steps=min(spec.quality_steps, steps))

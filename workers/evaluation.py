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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from primitives import Graph, GraphError, layer_class
from primitives.fingerprint import fingerprint
from workers.backbones import backbone_layout, build_backbone
from workers.cost import relative_cost
from workers.data import ImageData, TextData, get_task
from workers.executors import worker_name
from workers.objectives import Objectives, objectives_for, task_label, task_objective
from workers.rejection import Rejection, Stage, numeric_check, quality_check, stress_test
from workers.train import TrainConfig, TrainResult, recipe_for, short_train, train


@dataclass(frozen=True)
class ProxyTask:
    """One objective: a backbone trained on a data set with a fixed recipe."""

    backbone: str
    task: str                       # the data set
    config: TrainConfig = field(default_factory=TrainConfig)
    # The funnel never trains it for less than this fraction of its steps (`workers.funnel.rung_steps`).
    min_steps_frac: float = 0.0

    @property
    def label(self) -> str:
        """The task's name in objectives and records: the data set, marked when it trains at micro-batches."""
        return task_label(self.task, self.config.micro_batch)

    @property
    def objective(self) -> str:
        return task_objective(self.backbone, self.label)

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
    def objective_list(self) -> Objectives:
        return objectives_for(((t.backbone, t.label) for t in self.tasks), self.measure_cost)

    @property
    def objectives(self) -> tuple[str, ...]:
        return tuple(self.objective_list.names)

    @property
    def maximise(self) -> tuple[bool, ...]:
        return tuple(self.objective_list.maximise)

    @property
    def layouts(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t.layout for t in self.tasks))


@dataclass(frozen=True)
class TaskScore:
    objective: str
    backbone: str
    task: str           # the task's label (`ProxyTask.label`): the data set, marked at micro-batches
    accuracy: float
    loss: float
    steps: int
    steps_per_s: float
    wall_s: float
    params: int

    @classmethod
    def of(cls, task: ProxyTask, r: TrainResult) -> TaskScore:
        return cls(task.objective, task.backbone, task.label, r.val_accuracy, r.val_loss, r.steps,
                   r.steps_per_s, r.wall_time_s, r.num_params)

    def metrics(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "loss": self.loss, "steps": self.steps,
                "steps_per_s": self.steps_per_s, "wall_s": self.wall_s, "params": self.params}


class ResultStatus(StrEnum):
    EVALUATED = "evaluated"
    REJECTED = "rejected"
    DUPLICATE = "duplicate"     # a functional duplicate of an evaluated result: its scores, nothing trained


@dataclass(frozen=True)
class Screening:
    """The cheap stages' verdict: a rejection, or the fingerprint to check for duplicates."""

    fingerprint: str | None
    rejection: Rejection | None
    stage_seconds: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class EvaluationResult:
    status: ResultStatus
    fingerprint: str | None
    scores: tuple[TaskScore, ...] = ()
    rejection: Rejection | None = None
    stage_seconds: tuple[tuple[str, float], ...] = ()
    wall_s: float = 0.0
    worker: str = ""
    duplicate_of: str | None = None               # the fingerprint whose result was reused
    cost: float | None = None                     # fwd+bwd time relative to BN-ReLU, if measured

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", ResultStatus(self.status))   # a plain string names a member

    @property
    def objectives(self) -> tuple[float, ...] | None:
        """Accuracy per task, then the cost if it was measured (the search's objective order)."""
        if self.status is ResultStatus.REJECTED:
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


# -- the stages ------------------------------------------------------------------------------------
#
# A stage is an object with a `name` (its `Stage`, under which its cost in seconds is recorded and
# its rejections are filed), `enabled(spec)` and `check(trial)`, which returns a Rejection or None
# and may fill in the trial (the parsed graph, the fingerprint, the scores). `screen` and `evaluate`
# walk their lists in order; a new stage is one class and one entry in a list. The functions a
# stage calls are its fields, so a test builds a stage with its own instead of patching globals.


@dataclass
class Trial:
    """One candidate on its way through the stages."""

    source: Graph | Mapping[str, Any] | str
    spec: EvalSpec
    deadline: _Deadline
    graph: Graph | None = None
    fingerprint: str | None = None
    scores: list[TaskScore] = field(default_factory=list)

    @property
    def g(self) -> Graph:
        if self.graph is None:
            self.graph = _parse(self.source)
        return self.graph


class EvalStage(Protocol):
    @property
    def name(self) -> Stage: ...

    def enabled(self, spec: EvalSpec) -> bool: ...

    def check(self, trial: Trial) -> Rejection | None: ...


@dataclass(frozen=True)
class StaticStage:
    """The graph parses and validates (a GraphError names the field)."""

    name: Stage = Stage.STATIC

    def enabled(self, spec: EvalSpec) -> bool:
        return True

    def check(self, trial: Trial) -> Rejection | None:
        try:
            trial.graph = _parse(trial.source)
        except GraphError as e:
            return Rejection(self.name, str(e))
        return None


@dataclass(frozen=True)
class NumericStage:
    """Finite, non-constant outputs and finite gradients in every layout the tasks need."""

    check_fn: Callable[..., Rejection | None] = numeric_check
    name: Stage = Stage.NUMERIC

    def enabled(self, spec: EvalSpec) -> bool:
        return spec.numeric

    def check(self, trial: Trial) -> Rejection | None:
        return self.check_fn(trial.g, trial.spec.layouts, eps=trial.spec.eps)


@dataclass(frozen=True)
class FingerprintStage:
    """The functional fingerprint, which the runner checks against what was evaluated."""

    fingerprint_fn: Callable[[Graph], str] = fingerprint
    name: Stage = Stage.DUPLICATE

    def enabled(self, spec: EvalSpec) -> bool:
        return True

    def check(self, trial: Trial) -> Rejection | None:
        trial.fingerprint = self.fingerprint_fn(trial.g)
        return None


@dataclass(frozen=True)
class StabilityStage:
    """The adversarial stress test on the first task's backbone."""

    stress_fn: Callable[[Graph, EvalSpec], tuple[Rejection | None, float]] = stability_stage
    name: Stage = Stage.STABILITY

    def enabled(self, spec: EvalSpec) -> bool:
        return spec.stability

    def check(self, trial: Trial) -> Rejection | None:
        rejection, _ = self.stress_fn(trial.g, trial.spec)
        if rejection is None:
            trial.deadline.check(self.name)
        return rejection


def _train_each_task(trial: Trial, stage: Stage, train_one: Callable[[ProxyTask], TrainResult], diverged: str,
                     judge: Callable[[ProxyTask, TrainResult], Rejection | None]) -> Rejection | None:
    """Train on the tasks in turn until one diverges or `judge` rejects it; the time limit is checked
    after each task."""
    for task in trial.spec.tasks:
        r = train_one(task)
        if r.diverged:
            return Rejection(stage, f"{task.objective}: {diverged} ({r.reason})")
        rejection = judge(task, r)
        if rejection:
            return rejection
        trial.deadline.check(stage)
    return None


@dataclass(frozen=True)
class QualityStage:
    """A short training on every task must beat chance by the spec's margin."""

    short_train_fn: Callable[..., TrainResult] = short_train
    name: Stage = Stage.QUALITY

    def enabled(self, spec: EvalSpec) -> bool:
        return spec.quality

    def check(self, trial: Trial) -> Rejection | None:
        spec = trial.spec

        def train_one(task: ProxyTask) -> TrainResult:
            return self.short_train_fn(_factory(trial.g, spec, task.layout), task.backbone, task.task,
                                       spec.quality_steps, task.config, spec.seed)

        def judge(task: ProxyTask, r: TrainResult) -> Rejection | None:
            return quality_check(r.val_accuracy, chance_accuracy(task.task, task.config.data_root),
                                 spec.quality_margin, task.objective)

        return _train_each_task(trial, self.name, train_one, "diverged in the short training", judge)


@dataclass(frozen=True)
class TrainingStage:
    """The full proxy training on every task: one score (objective) per task."""

    train_fn: Callable[..., TrainResult] = train
    name: Stage = Stage.TRAINING

    def enabled(self, spec: EvalSpec) -> bool:
        return True

    def check(self, trial: Trial) -> Rejection | None:
        spec = trial.spec

        def train_one(task: ProxyTask) -> TrainResult:
            return self.train_fn(_factory(trial.g, spec, task.layout), task.backbone, task.task, task.config,
                                 spec.seed)

        def score(task: ProxyTask, r: TrainResult) -> None:
            trial.scores.append(TaskScore.of(task, r))

        return _train_each_task(trial, self.name, train_one, "diverged", score)


# Cheapest first. `screen` runs the first list (milliseconds), `evaluate` the second on what survives.
SCREEN_STAGES: tuple[EvalStage, ...] = (StaticStage(), NumericStage(), FingerprintStage())
EVALUATE_STAGES: tuple[EvalStage, ...] = (StabilityStage(), QualityStage(), TrainingStage())


def _walk(stages: Sequence[EvalStage], trial: Trial, costs: list[tuple[str, float]]) -> Rejection | None:
    """Run the enabled stages in order until one rejects; each one's seconds are recorded, whatever
    it ends with (a rejection, a passed time limit, an exception)."""
    for stage in stages:
        if not stage.enabled(trial.spec):
            continue
        t = time.perf_counter()
        try:
            rejection = stage.check(trial)
        except (_Rejected, MemoryError):
            raise
        except Exception as e:
            raise _StageFailed(stage.name, e) from e
        finally:
            costs.append((stage.name, time.perf_counter() - t))
        if rejection:
            return rejection
    return None


class _StageFailed(Exception):
    def __init__(self, stage: Stage, error: Exception):
        self.stage, self.error = stage, error


def screen(graph: Graph | Mapping[str, Any] | str, spec: EvalSpec,
           stages: Sequence[EvalStage] = SCREEN_STAGES) -> Screening:
    """The cheap stages and the fingerprint: milliseconds per candidate.

    Total: a stage that raises any Exception (a broken graph, an op that fails
    on the probe) rejects the candidate at that stage with the exception's type
    and message. A MemoryError is the worker's trouble, not the candidate's: it
    propagates, and the executor reports it as "oom".
    """
    costs: list[tuple[str, float]] = []
    trial = Trial(graph, spec, _Deadline(None))
    try:
        rejection = _walk(stages, trial, costs)
    except _StageFailed as e:
        rejection = _failed(e.stage, e.error)
    if rejection:
        return Screening(None, rejection, tuple(costs))
    return Screening(trial.fingerprint, None, tuple(costs))


def evaluate(graph: Graph | Mapping[str, Any] | str, spec: EvalSpec,
             cache: Mapping[str, EvaluationResult] | None = None,
             screening: Screening | None = None,
             stages: Sequence[EvalStage] = EVALUATE_STAGES,
             screen_stages: Sequence[EvalStage] = SCREEN_STAGES) -> EvaluationResult:
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
    screening = screening or screen(graph, spec, screen_stages)
    costs = list(screening.stage_seconds)

    def done(status: ResultStatus, **kw: Any) -> EvaluationResult:
        return EvaluationResult(status, screening.fingerprint, stage_seconds=tuple(costs),
                                wall_s=time.perf_counter() - start, worker=worker_name(), **kw)

    if screening.rejection:
        return done(ResultStatus.REJECTED, rejection=screening.rejection)
    fp = screening.fingerprint
    if cache is not None and fp is not None and fp in cache:
        hit = cache[fp]
        status = ResultStatus.REJECTED if hit.status is ResultStatus.REJECTED else ResultStatus.DUPLICATE
        return done(status, scores=hit.scores, rejection=hit.rejection, duplicate_of=fp, cost=hit.cost)

    trial = Trial(graph, spec, _Deadline(spec.time_limit_s), fingerprint=fp)
    try:
        rejection = _walk(stages, trial, costs)
        if rejection:
            return done(ResultStatus.REJECTED, rejection=rejection)
        cost = relative_cost(trial.g, eps=spec.eps, groups=spec.groups) if spec.measure_cost else None
        return done(ResultStatus.EVALUATED, scores=tuple(trial.scores), cost=cost)
    except _Rejected as e:
        return done(ResultStatus.REJECTED, rejection=e.rejection)
    except _StageFailed as failed:
        rejection = _stage_failure(failed.error)
    # Past the except block, so the exception's frames (and the tensors they hold) are gone.
    if rejection.stage is Stage.WORKER:
        _release_gpu_memory()
    return done(ResultStatus.REJECTED, rejection=rejection)


def _stage_failure(e: Exception) -> Rejection:
    """Reject and carry on. A candidate that breaks a backbone (shapes torch refuses, an op that
    raises) is at fault itself: stage `error`. Running out of GPU memory depends on the device and
    the batch as much as on the layer: stage `worker`, which a functional duplicate does not inherit."""
    if _is_oom(e):
        return Rejection(Stage.WORKER, f"out of memory: {type(e).__name__}: {e}"[:500])
    return _failed(Stage.ERROR, e)


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

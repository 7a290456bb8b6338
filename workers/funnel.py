"""train_rung(graph, spec, rung) -> RungResult: one candidate's training runs at one funnel rung.

The search's promotion funnel (see `evonorm_search.funnel`) judges a
candidate in rungs of rising fidelity. Rung 0 follows the zero-training
stages (static, numeric, duplicate: `workers.evaluation.screen`) and begins
with the stability stress test; every rung then trains the candidate on each
task at every one of the rung's seeds, for the rung's fraction of the task's
steps. The top rung also trains on the search's held-out tasks, which no
selection ever looks at: they verify that a layer's scores transfer.

Runs are paired: a seed fixes the initialization and the data order, and
every candidate (baselines included) at a rung runs at the same seeds, so two
layers' scores at one seed differ by the layer, not by the draw. A shorter
rung is a faithful small version of a longer one: the recipe's schedule
(warmup, cosine decay to about 0) is compressed to the rung's steps.

Quality at rung 0 (the paper's short-training check, made multi-objective):
a candidate is rejected only when its mean accuracy is below chance +
margin x (1 - chance) on *every* task. A layer that fails one task keeps
that low score as its estimate there, where it is dominated, and can still
stand on the front for the tasks it is good at (GroupNorm on a Transformer
task, say). A diverged run counts as accuracy 0 and is kept: instability at
some seeds is part of what a layer is.

Pure, like `evaluate`: picklable in and out, never touches a database.
`done` names the runs the caller already has (a higher rung reuses the runs
of a lower one at the same steps and seeds), which are not trained again.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from primitives import Graph
from workers.cost import relative_cost
from workers.evaluation import (
    EvalSpec,
    ProxyTask,
    Screening,
    _factory,
    _failed,
    _is_oom,
    _parse,
    _release_gpu_memory,
    chance_accuracy,
    stability_stage,
)
from workers.executors import worker_name
from workers.rejection import Rejection, Stage
from workers.train import TrainConfig, recipe_for, train

RunKey = tuple[str, int, int]    # (objective, steps, seed)


@dataclass(frozen=True)
class RungSpec:
    """What one rung trains: a fraction of each task's steps, at these seeds."""

    index: int
    steps_frac: float
    seeds: tuple[int, ...]
    top: bool = False                  # also train the held-out tasks (verification)
    stability: bool = True             # rung 0: the stress test first
    quality: bool = True               # rung 0: the quality check on the rung's runs


@dataclass(frozen=True)
class RunScore:
    """One training run."""

    objective: str
    backbone: str
    task: str                # the task's label (`ProxyTask.label`), as evaluation rows store it
    seed: int
    steps: int
    accuracy: float          # 0 for a diverged run
    loss: float
    diverged: bool
    reason: str | None
    wall_s: float
    steps_per_s: float
    params: int
    heldout: bool = False

    @property
    def key(self) -> RunKey:
        return (self.objective, self.steps, self.seed)

    def metrics(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "loss": self.loss, "steps": self.steps, "seed": self.seed,
                "diverged": self.diverged, "reason": self.reason, "steps_per_s": self.steps_per_s,
                "wall_s": self.wall_s, "params": self.params, "heldout": self.heldout}


@dataclass(frozen=True)
class RungResult:
    rung: int
    runs: tuple[RunScore, ...] = ()
    rejection: Rejection | None = None
    cost: float | None = None          # rung 0, when the search measures it
    stage_seconds: tuple[tuple[str, float], ...] = ()
    wall_s: float = 0.0
    worker: str = ""


def task_steps(task: ProxyTask) -> int:
    """The task's full training steps (its recipe, with the search's override)."""
    return recipe_for(task.task, task.config, task.backbone).steps


def rung_steps(task: ProxyTask, steps_frac: float) -> int:
    """A rung's steps on a task: its fraction of the task's steps, or the task's floor if higher."""
    return max(1, round(task_steps(task) * max(steps_frac, task.min_steps_frac)))


def planned_runs(spec: EvalSpec, rung: RungSpec) -> list[tuple[ProxyTask, int, int, bool]]:
    """(task, steps, seed, heldout) of every run the rung needs, in training order."""
    out = [(t, rung_steps(t, rung.steps_frac), s, False) for t in spec.tasks for s in rung.seeds]
    if rung.top:
        out += [(t, task_steps(t), s, True) for t in spec.heldout_tasks for s in rung.seeds]
    return out


def train_rung(graph: Graph | Mapping[str, Any] | str, spec: EvalSpec, rung: RungSpec,
               screening: Screening | None = None, done: frozenset[RunKey] = frozenset()) -> RungResult:
    """The rung's runs for one candidate (those not in `done`), and rung 0's stability and quality.

    Total for the candidate's faults, like `evaluate`: an exception is a
    rejection at `error` (a GPU out-of-memory error at `worker`); only a host
    MemoryError propagates, for the executor to report as "oom".
    """
    start = time.perf_counter()
    costs: list[tuple[str, float]] = list(screening.stage_seconds) if screening else []
    runs: list[RunScore] = []

    def result(**kw: Any) -> RungResult:
        return RungResult(rung.index, tuple(runs), stage_seconds=tuple(costs),
                          wall_s=time.perf_counter() - start, worker=worker_name(), **kw)

    out_of_memory = False
    try:
        g = _parse(graph)
        if rung.index == 0 and rung.stability and spec.stability:
            t = time.perf_counter()
            rejection, _ = stability_stage(g, spec)
            costs.append((Stage.STABILITY, time.perf_counter() - t))
            if rejection:
                return result(rejection=rejection)
        t = time.perf_counter()
        try:
            for task, steps, seed, heldout in planned_runs(spec, rung):
                if (task.objective, steps, seed) in done:
                    continue
                config: TrainConfig = replace(task.config, steps=steps)
                r = train(_factory(g, spec, task.layout), task.backbone, task.task, config, seed)
                runs.append(RunScore(task.objective, task.backbone, task.label, seed, steps, r.val_accuracy,
                                     r.val_loss, r.diverged, r.reason, r.wall_time_s, r.steps_per_s,
                                     r.num_params, heldout))
        finally:
            costs.append((Stage.QUALITY if rung.index == 0 else f"rung{rung.index}", time.perf_counter() - t))
        if rung.index == 0 and rung.quality and spec.quality:
            rejection = quality_verdict(runs, spec)
            if rejection:
                return result(rejection=rejection)
        cost = relative_cost(g, eps=spec.eps, groups=spec.groups) if rung.index == 0 and spec.measure_cost \
            else None
        return result(cost=cost)
    except MemoryError:
        raise
    except Exception as e:
        if _is_oom(e):
            out_of_memory = True
            return result(rejection=Rejection(Stage.WORKER, f"out of memory: {type(e).__name__}: {e}"[:500]))
        return result(rejection=_failed(Stage.ERROR, e))
    finally:
        if out_of_memory:
            _release_gpu_memory()


def quality_verdict(runs: list[RunScore], spec: EvalSpec) -> Rejection | None:
    """Rejected only when the mean accuracy is under the bar on every task (see the module doc)."""
    reasons = []
    for task in spec.tasks:
        accs = [r.accuracy for r in runs if r.objective == task.objective and not r.heldout]
        if not accs:
            return None         # a task with no run here (reused from elsewhere): no verdict
        chance = chance_accuracy(task.task, task.config.data_root)
        bar = chance + spec.quality_margin * (1.0 - chance)
        mean = sum(accs) / len(accs)
        if mean >= bar:
            return None
        diverged = sum(r.diverged for r in runs if r.objective == task.objective)
        note = f" ({diverged} diverged)" if diverged else ""
        reasons.append(f"{task.objective} {mean:.3f} < {bar:.3f}{note}")
    return Rejection(Stage.QUALITY, "below the bar on every task after the short training: "
                     + "; ".join(reasons))

"""Final re-ranking: retrain a search's best layers and the zoo longer, with a small lr sweep, on Ray Tune.

The paper re-ranked its top layers with longer training before choosing the
final ones, because a search's proxy training is short and each candidate
saw one seed: the front's order is noisy. Here:

1. The K best members of the search's Pareto front (by mean accuracy over
   the front's accuracy objectives) are taken, plus the zoo baselines
   (`BASELINES`); a front member that is a seeded zoo layer is retrained
   once, as the baseline.
2. For every objective (backbone x task) of the search, one Ray Tune run
   trains every layer at every learning rate and seed, for the search's
   steps times `steps_mult` (or `steps`). Trials report validation accuracy
   every 1/`evals` of the run and ASHA stops the hopeless ones early; one
   tuning run per objective, because ASHA compares trials by one metric and
   accuracies of different tasks are not comparable.
3. Each trial is written to the store's `rerank_trials` the moment it ends
   (trained to the end, stopped by ASHA, diverged, or failed), by the
   driver process (a Tune callback; the trials never touch the database).
   A trial's key hashes what decides its training (objective, task config
   and steps, layer, lr, seed), so running the same re-ranking again skips
   every trial already recorded (failed ones are run again): an interrupted
   re-ranking resumes. The resumed run's ASHA does not see the recorded
   trials, so which trials it stops early may differ from a single run's;
   a trial that trained to the end has the same result either way.
4. Per layer and objective, from the recorded trials: the learning rate
   whose runs all finished with the best mean accuracy over seeds, and that
   mean. One row of the store's rerank table each, written once every trial
   is recorded.

SIGINT and SIGTERM (`StopSignals`, installed by the CLI) stop the Tune run
at its next step: trials it cut short are not recorded, and `run_rerank`
raises `RerankInterrupted` without writing the table.

Trials of a layer that ASHA stopped at every learning rate still get a row:
`complete` is false and the accuracy is the best value any trial reported.
The lr is chosen and reported on the same validation split; that favours
every layer alike, candidates and baselines.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import signal
import statistics
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from db import NewRerankResult, NewRerankTrial, RerankRecord, RerankTrialRecord, Store
from evonorm_search.config import SearchConfig
from evonorm_search.domain import search_config
from evonorm_search.pareto import maximised_mean
from evonorm_search.summary import evaluated, pareto_front
from primitives import Graph, formula, layer_class
from primitives.zoo import ZOO
from workers.evaluation import ProxyTask
from workers.executors import private_ray_auth
from workers.train import recipe_for

log = logging.getLogger(__name__)

BASELINES = ("bn_relu", "gn_relu", "layernorm", "evonorm_b0", "evonorm_s0")
# The default sweep around each task's own learning rate: its recipe differs
# per task (SGD at 0.1 on images, AdamW at 3e-3 on text), so one absolute list
# cannot fit both.
LR_FACTORS = (0.5, 1.0, 2.0)


@dataclass(frozen=True)
class RerankSettings:
    top_k: int = 3
    steps: int | None = None                 # training steps per trial; None: search's steps x steps_mult
    steps_mult: float = 4.0
    lrs: tuple[float, ...] | None = None     # None: each task's recipe lr x LR_FACTORS
    seeds: tuple[int, ...] = (0, 1)
    evals: int = 5                           # validation reports per trial: ASHA's rungs
    reduction_factor: float = 2.0
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    baselines: tuple[str, ...] = BASELINES

    def __post_init__(self) -> None:
        if self.top_k < 0:
            raise ValueError("top_k must be >= 0")
        if self.steps is not None and self.steps < 1:
            raise ValueError("steps must be >= 1")
        if self.steps_mult <= 0:
            raise ValueError("steps_mult must be > 0")
        if self.lrs is not None and (not self.lrs or any(lr <= 0 for lr in self.lrs)):
            raise ValueError("lrs must be positive")
        if not self.seeds:
            raise ValueError("need at least one seed")
        if self.evals < 1:
            raise ValueError("evals must be >= 1")
        unknown = [n for n in self.baselines if n not in ZOO or ZOO[n].graph is None]
        if unknown:
            raise ValueError(f"baselines {unknown} are not zoo layers in the search space")


@dataclass(frozen=True)
class RerankLayer:
    """One layer to retrain: a search candidate or a zoo baseline."""

    label: str                                  # "candidate 17" | "zoo bn_relu"
    graph: str                                  # graph JSON
    eps: float
    formula: str
    candidate_id: int | None = None
    zoo_layer: str | None = None
    search_objectives: tuple[float, ...] | None = None


@dataclass(frozen=True)
class Trial:
    """What one Ray Tune trial reported last (accuracy None: it never reported)."""

    label: str
    lr: float
    seed: int
    accuracy: float | None
    loss: float | None
    step: int
    final: bool                                 # trained to the end (not stopped by ASHA, no error)
    best_accuracy: float | None = None          # best value reported at any rung
    error: str | None = None
    diverged: bool = False                      # ended early on a non-finite loss (accuracy 0)


def select_layers(store: Store, search_id: int, top_k: int,
                  baselines: Sequence[str] = BASELINES) -> list[RerankLayer]:
    """The front's `top_k` best by mean accuracy over objectives, then the zoo baselines."""
    config = search_config(store.get_search(search_id))
    n_acc = len(config.tasks)  # accuracies come first; a cost objective (minimised) is left out
    front = pareto_front(evaluated(store, search_id), config.maximise)
    front.sort(key=lambda m: (-maximised_mean(m.objectives, config.maximise), m.candidate_id))
    out: list[RerankLayer] = []
    for m in front:
        if len(out) == top_k:
            break
        if m.candidate.zoo_name in baselines:
            continue  # retrained once, as the baseline
        c = m.candidate
        out.append(RerankLayer(f"candidate {c.id}", c.graph.dumps(), config.eps, c.formula, candidate_id=c.id,
                               search_objectives=m.objectives[:n_acc]))
    for name in baselines:
        g = ZOO[name].graph
        assert g is not None
        # The zoo layer's own eps (EvoNorm-B0's is timm's 1e-3): the baseline as published.
        out.append(RerankLayer(f"zoo {name}", g.dumps(), ZOO[name].eps, formula(g), zoo_layer=name))
    return out


def task_plan(config: SearchConfig, settings: RerankSettings) -> list[tuple[ProxyTask, tuple[float, ...]]]:
    """Per objective: the proxy task with the longer budget, and its learning rates."""
    plan = []
    for task in config.eval_spec().tasks:
        recipe = recipe_for(task.task, task.config, task.backbone)
        steps = settings.steps or max(1, round(recipe.steps * settings.steps_mult))
        lrs = settings.lrs or tuple(recipe.lr * f for f in LR_FACTORS)
        plan.append((replace(task, config=replace(task.config, steps=steps)), lrs))
    return plan


def eval_every(steps: int, evals: int) -> int:
    return max(1, steps // evals)


def reports_per_trial(steps: int, evals: int) -> int:
    """Intermediate reports plus the final one, for a run that does not diverge."""
    every = eval_every(steps, evals)
    return len(range(every, steps, every)) + 1


@dataclass(frozen=True)
class PlannedTrial:
    """One Ray Tune trial of the plan: a layer at one lr and seed on one objective."""

    key: str                                    # what decides its training, hashed (the store's resume key)
    layer: RerankLayer
    objective: str
    lr: float
    seed: int
    steps: int


def trial_key(task: ProxyTask, layer: RerankLayer, lr: float, seed: int, groups: int) -> str:
    """A hash of everything that decides a trial's training: a recorded trial with this key is done."""
    ident = {"objective": task.objective, "config": asdict(task.config), "label": layer.label,
             "graph": layer.graph, "eps": layer.eps, "groups": groups, "lr": lr, "seed": seed}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=repr).encode()).hexdigest()


def plan_trials(layers: Sequence[RerankLayer], plan: Sequence[tuple[ProxyTask, tuple[float, ...]]],
                settings: RerankSettings, config: SearchConfig) -> list[list[PlannedTrial]]:
    """Per objective, its trials: every layer x lr x seed, in that order."""
    out = []
    for task, lrs in plan:
        steps = task.config.steps or recipe_for(task.task, task.config).steps
        groups = config.groups if task.layout == "nchw" else config.token_groups
        out.append([PlannedTrial(trial_key(task, layer, lr, seed, groups), layer, task.objective, lr, seed,
                                 steps) for layer in layers for lr in lrs for seed in settings.seeds])
    return out


class RerankProgress:
    """What a re-ranking tells its caller as it goes (the CLI prints it); these do nothing."""

    def planned(self, total: int, recorded: int) -> None:
        """`total` trials in the plan, `recorded` of them already in the store (from an earlier run)."""

    def ray_starting(self) -> None:
        """Ray is being started or joined (seconds)."""

    def objective(self, objective: str, todo: int, total: int) -> None:
        """A Tune run over `todo` of this objective's `total` trials begins (todo 0: all recorded)."""

    def started(self, trial: PlannedTrial) -> None:
        """A trial started training."""

    def reported(self, trial: PlannedTrial, step: int, accuracy: float) -> None:
        """A trial reported its validation accuracy at `step`."""

    def finished(self, trial: PlannedTrial, record: RerankTrialRecord) -> None:
        """A trial ended (trained to the end, stopped by ASHA, or failed) and is recorded."""


class ConsoleProgress(RerankProgress):
    """The CLI's view of a re-ranking: a line per trial as it ends (and, off a terminal, as it starts);
    on a terminal, a bar with the trials training now, their last step and accuracy."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.total = 0
        self.ended = 0
        self.running: dict[str, str] = {}
        self.idle = "starting"              # what the bar says while no trial is training
        self.bar: Progress | None = None
        self.task: TaskID | None = None
        if console.is_terminal:
            self.bar = Progress(SpinnerColumn(), BarColumn(bar_width=20), MofNCompleteColumn(),
                                TimeElapsedColumn(), TextColumn("{task.description}"), console=console,
                                transient=True)

    def __enter__(self) -> ConsoleProgress:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def _update(self) -> None:
        if self.bar is None:
            return
        description = escape("; ".join(self.running.values()) or self.idle)
        if self.task is None:
            self.task = self.bar.add_task(description, total=self.total, completed=self.ended)
        self.bar.update(self.task, description=description, completed=self.ended, total=self.total)

    @staticmethod
    def _name(t: PlannedTrial) -> str:
        return f"{t.objective} {t.layer.label} lr {t.lr:g} seed {t.seed}"

    def planned(self, total: int, recorded: int) -> None:
        self.total, self.ended = total, recorded
        earlier = f", {recorded} recorded by an earlier run" if recorded else ""
        self.console.print(f"re-ranking: {total} trials{earlier}, {total - recorded} to run")
        self._update()

    def ray_starting(self) -> None:
        self.console.print("starting Ray ...")
        self.idle = "starting Ray"
        self._update()

    def objective(self, objective: str, todo: int, total: int) -> None:
        self.idle = f"{objective}: starting trials"
        self._update()
        if todo:
            self.console.print(f"[bold]{escape(objective)}[/]: {todo} of {total} trials to run "
                               "(Ray Tune, ASHA)")
        else:
            self.console.print(f"[bold]{escape(objective)}[/]: all {total} trials recorded")

    def started(self, trial: PlannedTrial) -> None:
        self.running[trial.key] = f"{trial.layer.label} lr {trial.lr:g} seed {trial.seed}"
        if self.bar is None:
            self.console.print(f"[dim]  started {escape(self._name(trial))}[/]", soft_wrap=True)
        self._update()

    def reported(self, trial: PlannedTrial, step: int, accuracy: float) -> None:
        self.running[trial.key] = (f"{trial.layer.label} lr {trial.lr:g} seed {trial.seed} "
                                   f"step {step}/{trial.steps} acc {accuracy:.3f}")
        self._update()

    def finished(self, trial: PlannedTrial, record: RerankTrialRecord) -> None:
        self.running.pop(trial.key, None)
        self.ended += 1
        m = record.metrics
        if m["status"] == "finished":
            outcome = f"{m['accuracy']:.4f}"
        elif m["status"] == "stopped":
            best = "-" if m["best_accuracy"] is None else f"{m['best_accuracy']:.4f}"
            outcome = f"[dim]stopped by ASHA at step {m['step']}, best {best}[/]"
        elif m["status"] == "diverged":
            outcome = f"[yellow]diverged[/] at step {m['step']}"
        else:
            outcome = f"[red]failed[/] {escape(str(m['error']))[:120]}"
        self.console.print(f"[{self.ended}/{self.total}] {escape(self._name(trial))}: {outcome} "
                           f"[dim]({m['wall_s']:.1f} s)[/]", soft_wrap=True)
        self._update()


class RerankInterrupted(Exception):
    """The re-ranking stopped on request (a signal); the trials it finished are recorded."""

    def __init__(self, recorded: int, total: int, this_run: int) -> None:
        super().__init__(f"interrupted: {recorded} of {total} trials recorded ({this_run} in this run)")
        self.recorded = recorded
        self.total = total
        self.this_run = this_run


class StopSignals:
    """SIGINT and SIGTERM as a stop request, for a re-ranking in the main thread.

    The first signal sets `event`: the Tune run stops its trials at its next step (a tenth of a second)
    and `run_rerank` raises `RerankInterrupted` with what is recorded. A second signal raises
    KeyboardInterrupt at once. Ray's driver installs a native handler for SIGTERM when it starts (it
    dumps a stack trace and aborts), so `run_rerank` installs these again after `ray.init`.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.event.is_set():
            raise KeyboardInterrupt
        self.signum = signum
        self.event.set()

    def install(self) -> None:
        for s in self.SIGNALS:
            previous = signal.signal(s, self._handle)
            self._previous.setdefault(s, previous)

    def restore(self) -> None:
        for s, previous in self._previous.items():
            signal.signal(s, previous)
        self._previous.clear()

    def __enter__(self) -> StopSignals:
        self.install()
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()


def _trial(config: dict[str, Any], *, trials: Sequence[PlannedTrial], task: ProxyTask, groups: int,
           token_groups: int, threads: int, evals: int) -> None:
    """A Ray Tune function trainable: train one planned trial (layer, lr, seed) and report as it goes.

    A diverged run ends with a report of accuracy 0 (train's final callback),
    so it ranks last and ASHA treats it like any poor trial.
    """
    import torch
    from ray import tune

    from workers.train import train

    torch.set_num_threads(threads)
    planned = trials[config["trial"]]
    layer = planned.layer
    cls = layer_class(Graph.loads(layer.graph), task.layout, None, layer.eps)
    n_groups = groups if task.layout == "nchw" else token_groups

    def factory(num_features: int) -> torch.nn.Module:
        return cls(num_features, eps=layer.eps, groups=n_groups)

    steps = planned.steps

    def report(step: int, loss: float, accuracy: float) -> None:
        # JSON-safe: a diverged run's loss is inf (and its report, the last, comes before `steps`)
        tune.report({"accuracy": accuracy, "loss": loss if math.isfinite(loss) else None, "step": step,
                     "final": step >= steps, "diverged": step < steps and not math.isfinite(loss)})

    train(factory, task.backbone, task.task, replace(task.config, lr=planned.lr), planned.seed,
          on_eval=report, eval_every=eval_every(steps, evals))


def trial_from_record(record: RerankTrialRecord) -> Trial:
    m = record.metrics
    return Trial(label=m["label"], lr=float(m["lr"]), seed=int(m["seed"]), accuracy=m.get("accuracy"),
                 loss=m.get("loss"), step=int(m.get("step") or 0), final=bool(m.get("final")),
                 best_accuracy=m.get("best_accuracy"), error=m.get("error"),
                 diverged=m.get("status") == "diverged")


def _new_trial(planned: PlannedTrial, last: dict[str, Any], best: float | None, error: str | None,
               wall_s: float) -> NewRerankTrial:
    acc = last.get("accuracy")
    if acc is not None:
        best = max(float(acc), best if best is not None else 0.0)
    final = bool(last.get("final")) and error is None
    status = ("error" if error else "finished" if final else "diverged" if last.get("diverged")
              else "stopped")   # stopped: by ASHA
    layer = planned.layer
    metrics = {"label": layer.label, "formula": layer.formula, "objective": planned.objective, "lr": planned.lr,
               "seed": planned.seed, "steps": planned.steps, "status": status,
               "accuracy": None if acc is None else float(acc), "best_accuracy": best, "loss": last.get("loss"),
               "step": int(last.get("step") or 0), "final": final, "error": error, "wall_s": round(wall_s, 2)}
    return NewRerankTrial(planned.key, planned.objective, metrics, candidate_id=layer.candidate_id,
                          zoo_layer=layer.zoo_layer)


def _gone() -> None:
    return None


def _driver_only(self: object) -> tuple[Any, tuple[()]]:
    """`__reduce__` of the driver-side Tune callback and stopper: they hold the store, the progress and
    the stop event (locks), which do not pickle. The Tuner pickles its run config only to make it
    restorable from disk, which a re-ranking does not use (it resumes from the store)."""
    return (_gone, ())


def run_trials(store: Store, search_id: int, todo: Sequence[PlannedTrial], task: ProxyTask,
               settings: RerankSettings, config: SearchConfig, storage_path: str,
               progress: RerankProgress, stop: threading.Event) -> list[RerankTrialRecord]:
    """One Ray Tune run over `todo` (one objective's trials not yet recorded), with ASHA; Ray must be
    initialised. Each trial is recorded in the store the moment it ends, by this (the driver) process;
    a stop request ends the run at Tune's next step, and trials cut short by it are not recorded."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    steps = todo[0].steps
    max_t = reports_per_trial(steps, settings.evals)
    by_index = dict(enumerate(todo))
    recorded: list[RerankTrialRecord] = []

    class Record(tune.Callback):
        """Progress as trials start and report; each ended trial written to the store at once."""

        __reduce__ = _driver_only

        def __init__(self) -> None:
            self.best: dict[str, float] = {}
            self.started: dict[str, float] = {}

        def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            self.started.setdefault(trial.trial_id, time.monotonic())
            progress.started(by_index[trial.config["trial"]])

        def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                            **info: Any) -> None:
            acc = result.get("accuracy")
            if acc is not None:
                self.best[trial.trial_id] = max(float(acc), self.best.get(trial.trial_id, 0.0))
                progress.reported(by_index[trial.config["trial"]], int(result.get("step") or 0), float(acc))

        def _end(self, trial: Any, error: str | None) -> None:
            last = trial.last_result or {}
            if stop.is_set() and not (last.get("final") or last.get("diverged")):
                return  # cut short by the stop request, not by ASHA: run it again next time
            planned = by_index[trial.config["trial"]]
            wall = time.monotonic() - self.started.get(trial.trial_id, time.monotonic())
            record = store.put_rerank_trial(search_id, _new_trial(planned, last, self.best.get(trial.trial_id),
                                                                  error, wall))
            recorded.append(record)
            progress.finished(planned, record)

        def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            self._end(trial, None)

        def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            err = trial.get_error() if hasattr(trial, "get_error") else None
            self._end(trial, (f"{type(err).__name__}: {err}" if err else "trial failed")[:500])

    class StopRequested(tune.Stopper):
        __reduce__ = _driver_only

        def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
            return False

        def stop_all(self) -> bool:
            return stop.is_set()

    trainable = tune.with_resources(
        tune.with_parameters(_trial, trials=list(todo), task=task, groups=config.groups,
                             token_groups=config.token_groups, threads=int(max(1, settings.cpus_per_trial)),
                             evals=settings.evals),
        {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial})
    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=max_t,
                              grace_period=max(1, max_t // 2), reduction_factor=settings.reduction_factor)
    tuner = tune.Tuner(
        trainable,
        param_space={"trial": tune.grid_search(list(by_index))},
        # Reused actors keep torch, the data and the compiled layers warm: a fresh
        # worker spends seconds on imports and first-op setup, longer than a short trial.
        tune_config=tune.TuneConfig(metric="accuracy", mode="max", scheduler=scheduler, reuse_actors=True),
        run_config=tune.RunConfig(name=f"rerank-{task.objective.replace(':', '-')}", storage_path=storage_path,
                                  verbose=0, callbacks=[Record()], stop=StopRequested()),
    )
    # Tune's results come from the store here; after a stop it would warn about every trial that never
    # started ("Failed to fetch metrics").
    analysis_log = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = analysis_log.level
    analysis_log.setLevel(logging.ERROR)
    try:
        tuner.fit()
    finally:
        analysis_log.setLevel(level)
    return recorded


def summarise(layer: RerankLayer, objective: str, objective_index: int, trials: Sequence[Trial],
              lrs: Sequence[float], settings: RerankSettings, steps: int, run: str) -> NewRerankResult:
    """One row: the best lr whose runs all finished, its mean accuracy over seeds."""
    mine = [t for t in trials if t.label == layer.label]
    by_lr: dict[float, list[Trial]] = defaultdict(list)
    for t in mine:
        by_lr[t.lr].append(t)
    sweep: dict[str, Any] = {}
    complete: dict[float, list[float]] = {}
    for rate in lrs:
        runs = by_lr.get(rate, [])
        done = [t.accuracy for t in runs if t.final and t.accuracy is not None]
        sweep[repr(rate)] = {"mean": statistics.fmean(done) if done else None, "finished": len(done),
                           "trials": len(runs)}
        if len(done) == len(runs) == len(settings.seeds):
            ordered = sorted((t.seed, t.accuracy) for t in runs if t.accuracy is not None)
            complete[rate] = [a for _, a in ordered]
    best_any = max((t.best_accuracy for t in mine if t.best_accuracy is not None), default=None)
    lr: float | None = None
    accs: list[float] = []
    accuracy, std = best_any, None
    if complete:
        lr = max(complete, key=lambda k: (statistics.fmean(complete[k]), -k))
        accs = complete[lr]
        accuracy = statistics.fmean(accs)
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
    backbone, task = objective.split(":", 1)
    metrics: dict[str, Any] = {
        "run": run, "label": layer.label, "formula": layer.formula, "objective": objective,
        "backbone": backbone, "task": task, "accuracy": accuracy, "accuracy_std": std,
        "accuracies": accs, "lr": lr, "complete": bool(complete), "best_reported": best_any,
        "sweep": sweep, "steps": steps, "seeds": list(settings.seeds),
        "stopped_early": sum(1 for t in mine if not t.final and t.error is None and not t.diverged),
        "diverged": sum(1 for t in mine if t.diverged),
        "errors": [t.error for t in mine if t.error][:3],
        "search_accuracy": (None if layer.search_objectives is None
                            else layer.search_objectives[objective_index]),
    }
    return NewRerankResult(backbone=objective, metrics=metrics, candidate_id=layer.candidate_id,
                           zoo_layer=layer.zoo_layer)


def run_rerank(store: Store, search_id: int, settings: RerankSettings, *, ray_address: str | None = None,
               local_cpus: int | None = None, storage_path: str | None = None,
               progress: RerankProgress | None = None, stop: StopSignals | None = None) -> list[RerankRecord]:
    """Retrain, rank and record; returns the table's rows written (one per layer and objective).

    Every trial is recorded in the store as it ends; trials the store already holds (same key: an
    earlier, interrupted run of the same re-ranking) are not run again, and the table is built from the
    recorded trials. `stop` (the CLI's SIGINT/SIGTERM handlers) ends the run early with
    `RerankInterrupted`; then no table rows are written, and running it again resumes.
    """
    import ray

    progress = progress or RerankProgress()
    stop_event = stop.event if stop is not None else threading.Event()
    config = search_config(store.get_search(search_id))
    layers = select_layers(store, search_id, settings.top_k, settings.baselines)
    plan = task_plan(config, settings)
    per_objective = plan_trials(layers, plan, settings, config)
    keys = {t.key for trials in per_objective for t in trials}
    # an earlier run's trials, except failures (run again)
    done = {r.key: r for r in store.rerank_trials(search_id)
            if r.key in keys and r.metrics.get("status") != "error"}
    total = len(keys)
    progress.planned(total, len(done))
    this_run = 0

    def interrupted() -> RerankInterrupted:
        return RerankInterrupted(len(done), total, this_run)

    # Tune's newer console output prints a status box even at verbose=0 (the caller shows progress), and
    # its own SIGINT handler would end the run quietly as if it had finished: the caller's `stop` decides.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    owns_ray = False
    rows: list[NewRerankResult] = []
    try:
        if len(done) < total:
            if stop_event.is_set():
                raise interrupted()
            owns_ray = not ray.is_initialized()
            if owns_ray:
                progress.ray_starting()
                kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                          "logging_level": logging.WARNING}
                if ray_address is None and local_cpus is not None:
                    kwargs["num_cpus"] = local_cpus
                private_ray_auth(ray_address)
                ray.init(address=ray_address, **kwargs)
                if stop is not None:
                    stop.install()   # over the native SIGTERM handler the Ray driver has just installed
        run = uuid.uuid4().hex[:12]
        with tempfile.TemporaryDirectory(prefix="evonorm-rerank-") as tmp:
            for i, ((task, lrs), trials) in enumerate(zip(plan, per_objective, strict=True)):
                todo = [t for t in trials if t.key not in done]
                progress.objective(task.objective, len(todo), len(trials))
                if todo:
                    if stop_event.is_set():
                        raise interrupted()
                    for record in run_trials(store, search_id, todo, task, settings, config,
                                             storage_path or tmp, progress, stop_event):
                        done[record.key] = record
                        this_run += 1
                    if stop_event.is_set():
                        raise interrupted()
                ended = [trial_from_record(done[t.key]) for t in trials if t.key in done]
                rows += [summarise(layer, task.objective, i, ended, lrs, settings, trials[0].steps, run)
                         for layer in layers]
    finally:
        if owns_ray:
            ray.shutdown()
    return store.add_rerank_results(search_id, rows)


@dataclass
class _Line:
    label: str
    formula: str
    cells: dict[str, RerankRecord] = field(default_factory=dict)

    def score(self, objectives: Sequence[str]) -> float:
        """Mean complete accuracy over objectives; a missing or incomplete one counts 0."""
        values = [self.cells[o].metrics["accuracy"] if o in self.cells and self.cells[o].metrics["complete"]
                  else 0.0 for o in objectives]
        return statistics.fmean(values) if values else 0.0


def rerank_table(records: Sequence[RerankRecord], *, run: str | None = None) -> Table:
    """The final table (the latest run unless `run`): a row per layer, best mean first."""
    if records and run is None:
        run = max(records, key=lambda r: r.id).metrics.get("run")
    mine = [r for r in records if r.metrics.get("run") == run]
    objectives = list(dict.fromkeys(r.backbone for r in mine))
    lines: dict[str, _Line] = {}
    for r in mine:
        line = lines.setdefault(r.metrics["label"], _Line(r.metrics["label"], r.metrics["formula"]))
        line.cells[r.backbone] = r
    steps = {o: next(r.metrics["steps"] for r in mine if r.backbone == o) for o in objectives}
    seeds = mine[0].metrics["seeds"] if mine else []
    table = Table(title=f"Re-ranking (val accuracy, mean ± std over seeds {seeds} at the best lr)")
    table.add_column("#", justify="right")
    table.add_column("layer")
    table.add_column("formula", max_width=48)
    for o in objectives:
        table.add_column(f"{o}\n{steps[o]} steps", justify="right")
    table.add_column("mean", justify="right")
    ordered = sorted(lines.values(), key=lambda line: -line.score(objectives))
    for i, line in enumerate(ordered, 1):
        cells = []
        for o in objectives:
            cell = line.cells.get(o)
            if cell is None:
                cells.append("-")
                continue
            m = cell.metrics
            if m["complete"]:
                search = f" (search {m['search_accuracy']:.3f})" if m.get("search_accuracy") is not None else ""
                cells.append(f"{m['accuracy']:.4f} ± {m['accuracy_std']:.4f} @ lr {m['lr']:g}{search}")
            elif m.get("diverged") and m["diverged"] == sum(s["trials"] for s in m["sweep"].values()):
                cells.append("[dim]diverged at every lr and seed[/]")
            elif m["accuracy"] is not None:
                cells.append(f"[dim]stopped early, best {m['accuracy']:.4f}[/]")
            else:
                cells.append("[red]no result[/]")
        style = "dim" if line.label.startswith("zoo ") else ""
        table.add_row(str(i), escape(line.label), escape(line.formula), *cells, f"{line.score(objectives):.4f}",
                      style=style)
    return table

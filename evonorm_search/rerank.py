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
3. Per layer and objective: the learning rate whose runs all finished with
   the best mean accuracy over seeds, and that mean. One row of the store's
   rerank table each, written by the caller's process (the trials never
   touch the database).

Trials of a layer that ASHA stopped at every learning rate still get a row:
`complete` is false and the accuracy is the best value any trial reported.
The lr is chosen and reported on the same validation split; that favours
every layer alike, candidates and baselines.
"""

from __future__ import annotations

import logging
import math
import os
import statistics
import tempfile
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from rich.markup import escape
from rich.table import Table

from db import NewRerankResult, RerankRecord, Store
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


def _trial(config: dict[str, Any], *, layers: dict[str, RerankLayer], task: ProxyTask, groups: int,
           token_groups: int, threads: int, evals: int) -> None:
    """A Ray Tune function trainable: train one (layer, lr, seed) and report as it goes.

    A diverged run ends with a report of accuracy 0 (train's final callback),
    so it ranks last and ASHA treats it like any poor trial.
    """
    import torch
    from ray import tune

    from workers.train import train

    torch.set_num_threads(threads)
    layer = layers[config["layer"]]
    cls = layer_class(Graph.loads(layer.graph), task.layout, None, layer.eps)
    n_groups = groups if task.layout == "nchw" else token_groups

    def factory(num_features: int) -> torch.nn.Module:
        return cls(num_features, eps=layer.eps, groups=n_groups)

    steps = task.config.steps or recipe_for(task.task, task.config).steps

    def report(step: int, loss: float, accuracy: float) -> None:
        # JSON-safe: a diverged run's loss is inf
        tune.report({"accuracy": accuracy, "loss": loss if math.isfinite(loss) else None, "step": step,
                     "final": step >= steps})

    train(factory, task.backbone, task.task, replace(task.config, lr=config["lr"]), config["seed"],
          on_eval=report, eval_every=eval_every(steps, evals))


def run_trials(layers: Sequence[RerankLayer], task: ProxyTask, lrs: Sequence[float], settings: RerankSettings,
               config: SearchConfig, storage_path: str) -> list[Trial]:
    """One Ray Tune run over layers x lrs x seeds on one task, with ASHA; Ray must be initialised."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    steps = task.config.steps or recipe_for(task.task, task.config).steps
    max_t = reports_per_trial(steps, settings.evals)
    by_label = {layer.label: layer for layer in layers}
    trainable = tune.with_resources(
        tune.with_parameters(_trial, layers=by_label, task=task, groups=config.groups,
                             token_groups=config.token_groups, threads=int(max(1, settings.cpus_per_trial)),
                             evals=settings.evals),
        {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial})
    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=max_t,
                              grace_period=max(1, max_t // 2), reduction_factor=settings.reduction_factor)
    tuner = tune.Tuner(
        trainable,
        param_space={"layer": tune.grid_search(list(by_label)), "lr": tune.grid_search(list(lrs)),
                     "seed": tune.grid_search(list(settings.seeds))},
        # Reused actors keep torch, the data and the compiled layers warm: a fresh
        # worker spends seconds on imports and first-op setup, longer than a short trial.
        tune_config=tune.TuneConfig(metric="accuracy", mode="max", scheduler=scheduler, reuse_actors=True),
        run_config=tune.RunConfig(name=f"rerank-{task.objective.replace(':', '-')}", storage_path=storage_path,
                                  verbose=0),
    )
    grid = tuner.fit()
    trials = []
    for i in range(len(grid)):
        result = grid[i]
        cfg = result.config or {}
        m = result.metrics or {}
        history = result.metrics_dataframe
        best = None
        if history is not None and "accuracy" in history and len(history):
            best = float(history["accuracy"].max())
        acc = m.get("accuracy")
        if acc is not None:
            best = max(float(acc), best if best is not None else 0.0)
        trials.append(Trial(
            label=cfg["layer"], lr=float(cfg["lr"]), seed=int(cfg["seed"]),
            accuracy=None if acc is None else float(acc), loss=m.get("loss"), step=int(m.get("step", 0)),
            final=bool(m.get("final")) and result.error is None, best_accuracy=best,
            error=None if result.error is None else f"{type(result.error).__name__}: {result.error}"[:500]))
    return trials


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
        "stopped_early": sum(1 for t in mine if not t.final and t.error is None),
        "errors": [t.error for t in mine if t.error][:3],
        "search_accuracy": (None if layer.search_objectives is None
                            else layer.search_objectives[objective_index]),
    }
    return NewRerankResult(backbone=objective, metrics=metrics, candidate_id=layer.candidate_id,
                           zoo_layer=layer.zoo_layer)


def run_rerank(store: Store, search_id: int, settings: RerankSettings, *, ray_address: str | None = None,
               local_cpus: int | None = None, storage_path: str | None = None) -> list[RerankRecord]:
    """Retrain, rank and record; returns the rows written (one per layer and objective)."""
    import ray

    config = search_config(store.get_search(search_id))
    layers = select_layers(store, search_id, settings.top_k, settings.baselines)
    plan = task_plan(config, settings)
    # Tune's newer console output prints a status box even at verbose=0; the
    # caller prints the final table itself.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    owns_ray = not ray.is_initialized()
    if owns_ray:
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "logging_level": logging.WARNING}
        if ray_address is None and local_cpus is not None:
            kwargs["num_cpus"] = local_cpus
        private_ray_auth(ray_address)
        ray.init(address=ray_address, **kwargs)
    run = uuid.uuid4().hex[:12]
    rows: list[NewRerankResult] = []
    try:
        with tempfile.TemporaryDirectory(prefix="evonorm-rerank-") as tmp:
            for i, (task, lrs) in enumerate(plan):
                trials = run_trials(layers, task, lrs, settings, config, storage_path or tmp)
                steps = task.config.steps or recipe_for(task.task, task.config).steps
                rows += [summarise(layer, task.objective, i, trials, lrs, settings, steps, run)
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
            elif m["accuracy"] is not None:
                cells.append(f"[dim]stopped early, best {m['accuracy']:.4f}[/]")
            else:
                cells.append("[red]no result[/]")
        style = "dim" if line.label.startswith("zoo ") else ""
        table.add_row(str(i), escape(line.label), escape(line.formula), *cells, f"{line.score(objectives):.4f}",
                      style=style)
    return table

"""The rejection funnel: where a stream of random candidates stops, and what rejection saves.

    python -m benchmarks.rejection_funnel               # 48 candidates, a few minutes on one core
    python -m benchmarks.rejection_funnel --count 20

A seeded stream of candidates, half `primitives.mutation.random_graph`, half
a single `mutate` of a random zoo layer (what a search seeded with the zoo
proposes), goes through `workers.evaluation.evaluate` with every protocol
on and a functional-duplicate cache over the stream (as the runner keeps).
Then, for "rejection off", every candidate gets the full proxy training
alone, no filter at all; a survivor's full training is the one it already
had (same seed, deterministic on the CPU), the others are trained here.

The task is cut down so that this runs in minutes on one core: ResNet with
widths (16, 32) and one block per stage on sklearn digits, full training
150 steps, quality check after 50 steps, stress test 20 steps on 8 images:
the default setting's ratio (a 100-step quality check per 300-step task),
on one task instead of three. The shorter the quality run relative to the
full training, the more rejection saves. One-time costs (imports, loading
the data) are paid before the stream starts, so no candidate is charged.

Reported: the fraction of candidates stopped at each stage; each stage's
mean cost (over the candidates that reached it) as a fraction of one full
evaluation (the mean full training time of the survivors); and the
survivors (candidates with scores) per core-hour with rejection on vs off.
Also, as a check on the filters, how the rejected candidates did when
trained anyway. One torch thread. Results: benchmarks/results/rejection_funnel.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from primitives import Graph, formula
from primitives.mutation import mutate, random_graph
from primitives.zoo import ZOO
from workers.evaluation import EvalSpec, EvaluationResult, ProxyTask, _factory, evaluate
from workers.rejection import Stage
from workers.train import TrainConfig, train

RESULTS = Path(__file__).resolve().parent / "results" / "rejection_funnel.json"
TASK = ProxyTask("resnet", "digits", TrainConfig(steps=150, backbone_kwargs={"widths": (16, 32),
                                                                              "blocks": (1, 1)}))
SPEC = EvalSpec(tasks=(TASK,), quality_steps=50)
STAGES = (Stage.STATIC, Stage.NUMERIC, Stage.DUPLICATE, Stage.STABILITY, Stage.QUALITY, Stage.TRAINING,
          Stage.WORKER)


def stream(count: int, seed: int) -> list[tuple[str, Graph]]:
    rng = random.Random(seed)
    parents = [z for z in ZOO.values() if z.graph is not None]
    out: list[tuple[str, Graph]] = []
    for i in range(count):
        if i % 2 == 0:
            out.append(("random", random_graph(rng)))
        else:
            parent = rng.choice(parents)
            assert parent.graph is not None
            out.append((f"mutant of {parent.name}", mutate(parent.graph, rng)[0]))
    return out


def full_training(graph: Graph) -> tuple[float, float, str]:
    """(seconds, accuracy, outcome) of the full proxy training alone: rejection off."""
    start = time.perf_counter()
    try:
        r = train(_factory(graph, SPEC, TASK.layout), TASK.backbone, TASK.task, TASK.config, SPEC.seed)
    except (RuntimeError, ValueError, FloatingPointError) as e:
        return time.perf_counter() - start, 0.0, f"raised {type(e).__name__}"
    return time.perf_counter() - start, r.val_accuracy, "diverged" if r.diverged else "trained"


def run(count: int, seed: int) -> dict[str, Any]:
    # Warm up: data, imports and kernels, so the first candidate is not charged for them.
    bn_relu = ZOO["bn_relu"].graph
    assert bn_relu is not None
    evaluate(bn_relu, replace(SPEC, tasks=(replace(TASK, config=replace(TASK.config, steps=2)),),
                              quality_steps=2, stability_steps=2))
    cache: dict[str, EvaluationResult] = {}
    rows = []
    for i, (source, graph) in enumerate(stream(count, seed)):
        result = evaluate(graph, SPEC, cache=cache)
        if result.fingerprint is not None and result.status != "duplicate":
            cache.setdefault(result.fingerprint, result)
        # A cache hit stops at the duplicate stage, even when it reuses a rejection.
        stage = (Stage.DUPLICATE if result.duplicate_of
                 else result.rejection.stage if result.rejection else None)
        costs = dict(result.stage_seconds)
        if result.status == "evaluated":
            off_s, off_acc, outcome = costs[Stage.TRAINING], result.scores[0].accuracy, "trained"
        else:
            off_s, off_acc, outcome = full_training(graph)
        rows.append({
            "index": i, "source": source, "formula": formula(graph), "status": result.status,
            "stage": None if stage is None else str(stage),
            "reason": result.rejection.reason if result.rejection else None,
            "accuracy": result.scores[0].accuracy if result.scores else None,
            "on_s": round(result.wall_s, 4), "stage_s": {str(k): round(v, 4) for k, v in costs.items()},
            "off_s": round(off_s, 4), "off_accuracy": off_acc, "off_outcome": outcome,
        })
        print(f"{i:3d} {result.status:9s} {stage or '':10s} on {result.wall_s:6.2f}s off {off_s:6.2f}s "
              f"acc(off) {off_acc:.3f}  {formula(graph)[:70]}", flush=True)
    return summarise(rows, count, seed)


def summarise(rows: list[dict[str, Any]], count: int, seed: int) -> dict[str, Any]:
    survivors = [r for r in rows if r["status"] == "evaluated"]
    scored = [r for r in rows if r["accuracy"] is not None]   # evaluated + duplicates of evaluated
    unit = statistics.mean(r["stage_s"]["training"] for r in survivors) if survivors else float("nan")
    stages = []
    for stage in STAGES:
        reached = [r for r in rows if str(stage) in r["stage_s"]]
        stopped = [r for r in rows if r["stage"] == str(stage)]
        mean_s = statistics.mean(r["stage_s"][str(stage)] for r in reached) if reached else 0.0
        stages.append({"stage": str(stage), "reached": len(reached), "stopped": len(stopped),
                       "stopped_fraction": len(stopped) / len(rows),
                       "mean_cost_s": mean_s, "mean_cost_fraction_of_full": mean_s / unit})
    on_h = sum(r["on_s"] for r in rows) / 3600
    off_h = sum(r["off_s"] for r in rows) / 3600
    rejected = [r for r in rows if r["status"] == "rejected"]
    best_survivor = max((r["accuracy"] for r in survivors), default=0.0)
    median_survivor = statistics.median([r["accuracy"] for r in survivors]) if survivors else 0.0
    return {
        "meta": {
            "date": datetime.now(UTC).isoformat(timespec="seconds"), "torch": torch.__version__,
            "python": platform.python_version(), "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
            "load_average_1m": round(os.getloadavg()[0], 2), "count": count, "seed": seed,
            "task": f"{TASK.objective}, widths (16, 32), blocks (1, 1), {TASK.config.steps} steps",
            "quality_steps": SPEC.quality_steps, "stability_steps": SPEC.stability_steps,
            "stream": "even indices: random_graph; odd: one mutate() of a random zoo layer",
        },
        "full_evaluation_s": unit,
        "stages": stages,
        "survivors": len(survivors), "duplicates_with_scores": len(scored) - len(survivors),
        "on": {"core_hours": on_h, "survivors_per_core_hour": len(survivors) / on_h,
               "scored_per_core_hour": len(scored) / on_h},
        "off": {"core_hours": off_h, "survivors_per_core_hour": len(survivors) / off_h,
                "trained_per_core_hour": len(rows) / off_h},
        "speedup": off_h / on_h,
        "rejected_when_trained_anyway": {
            "count": len(rejected),
            "best_accuracy": max((r["off_accuracy"] for r in rejected), default=0.0),
            "above_median_survivor": sum(r["off_accuracy"] > median_survivor for r in rejected),
            "median_survivor_accuracy": median_survivor, "best_survivor_accuracy": best_survivor,
        },
        "candidates": rows,
    }


def report(s: dict[str, Any]) -> None:
    console = Console(width=140)
    meta = s["meta"]
    table = Table(title=f"Rejection funnel: {meta['count']} candidates on {meta['task']} "
                        f"(one full evaluation = {s['full_evaluation_s']:.2f} s)")
    for col in ("stage", "reached", "stopped", "stopped %", "mean cost s", "cost / full evaluation"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for st in s["stages"]:
        table.add_row(st["stage"], str(st["reached"]), str(st["stopped"]),
                      f"{100 * st['stopped_fraction']:.0f}%", f"{st['mean_cost_s']:.3f}",
                      f"{st['mean_cost_fraction_of_full']:.4f}")
    console.print(table)
    t2 = Table(title="Survivors per core-hour (one torch thread = one core)")
    for col in ("rejection", "core-hours", "survivors / core-hour", "trained or scored / core-hour"):
        t2.add_column(col, justify="left" if col == "rejection" else "right")
    t2.add_row("on", f"{s['on']['core_hours']:.4f}", f"{s['on']['survivors_per_core_hour']:.0f}",
               f"{s['on']['scored_per_core_hour']:.0f}")
    t2.add_row("off (full training of everything)", f"{s['off']['core_hours']:.4f}",
               f"{s['off']['survivors_per_core_hour']:.0f}", f"{s['off']['trained_per_core_hour']:.0f}")
    console.print(t2)
    rj = s["rejected_when_trained_anyway"]
    console.print(f"{s['survivors']} survivors of {meta['count']}; rejection on is {s['speedup']:.2f}x faster. "
                  f"Rejected candidates trained anyway: best accuracy {rj['best_accuracy']:.3f}, "
                  f"{rj['above_median_survivor']} above the median survivor "
                  f"({rj['median_survivor_accuracy']:.3f}).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    summary = run(args.count, args.seed)
    report(summary)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

"""Evaluation throughput on Ray with 1 and with 2 workers, on the same fixed batch.

    python -m benchmarks.ray_scaling [--repeat 2]

A private local Ray (`workers.executors.RayExecutor(local_cpus=N)`, one CPU
and so one torch thread per job) evaluates the same batch of 8 zoo layers
with `workers.evaluation.evaluate` on a small task: ResNet widths (16, 32),
one block per stage, on sklearn digits, 60 training steps, after the
screening and the stress test. The quality stage is off: on this cut-down
task a short run rejects even BN-ReLU, and the point is to time complete
evaluations. Before the clock starts, each worker process runs
one warm-up job, so start-up (Ray's worker processes, importing torch,
loading the data) is not timed. The batch is submitted up to the executor's
slots at a time, as the runner does, and timed until the last result.

The machine has 2 CPU cores, shared with other jobs, so 2 workers is the
most that can scale here, and any other load on the machine takes from the
2-worker run first. Results: benchmarks/results/ray_scaling.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from primitives import Graph
from primitives.zoo import ZOO
from workers.evaluation import EvalSpec, EvaluationResult, ProxyTask, evaluate, screen
from workers.executors import JobFailure, RayExecutor
from workers.train import TrainConfig

RESULTS = Path(__file__).resolve().parent / "results" / "ray_scaling.json"
TASK = ProxyTask("resnet", "digits", TrainConfig(steps=60, backbone_kwargs={"widths": (16, 32),
                                                                             "blocks": (1, 1)}))
SPEC = EvalSpec(tasks=(TASK,), quality=False)
BATCH = ("bn_relu", "gn_relu", "layernorm", "rmsnorm", "evonorm_s0", "dyt", "swish", "relu")


def _graph(name: str) -> Graph:
    graph = ZOO[name].graph
    assert graph is not None
    return graph


def run_batch(workers: int) -> dict[str, Any]:
    ex = RayExecutor(local_cpus=workers, num_cpus=1, max_retries=0)
    try:
        assert ex.slots == workers, (ex.slots, workers)
        # Warm up every worker process at once (each job holds its CPU while it runs).
        for _ in range(workers):
            ex.submit(screen, _graph("bn_relu"), SPEC)
        while ex.in_flight:
            ex.wait(timeout_s=10.0)
        queue = [(name, _graph(name)) for name in BATCH]
        names: dict[int, str] = {}
        results: dict[str, EvaluationResult | JobFailure] = {}
        start = time.perf_counter()
        load_before = os.getloadavg()[0]
        while queue or ex.in_flight:
            while queue and ex.in_flight < ex.slots:
                name, graph = queue.pop(0)
                names[ex.submit(evaluate, graph, SPEC)] = name
            for job_id, outcome in ex.wait(timeout_s=10.0):
                results[names[job_id]] = outcome
        elapsed = time.perf_counter() - start
    finally:
        ex.close()
    failures = [n for n, r in results.items() if isinstance(r, JobFailure)]
    return {
        "workers": workers, "evaluations": len(results), "seconds": elapsed,
        "evaluations_per_min": 60 * len(results) / elapsed,
        "load_average_1m_at_start": round(load_before, 2),
        "statuses": {n: (r.kind if isinstance(r, JobFailure) else r.status) for n, r in results.items()},
        "eval_wall_s": {n: round(r.wall_s, 2) for n, r in results.items() if isinstance(r, EvaluationResult)},
        "distinct_worker_processes": len({r.worker for r in results.values()
                                          if isinstance(r, EvaluationResult)}),
        "failures": failures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=1, help="alternate 1 and 2 workers this many times")
    args = parser.parse_args()
    runs = []
    for _ in range(args.repeat):
        for workers in (1, 2):
            r = run_batch(workers)
            print(f"{workers} worker(s): {r['evaluations']} evaluations in {r['seconds']:.1f} s "
                  f"= {r['evaluations_per_min']:.1f}/min", flush=True)
            runs.append(r)
    best = {w: max(r["evaluations_per_min"] for r in runs if r["workers"] == w) for w in (1, 2)}
    out = {
        "meta": {
            "date": datetime.now(UTC).isoformat(timespec="seconds"), "python": platform.python_version(),
            "machine": platform.machine(), "cpu_count": os.cpu_count(),
            "note": "the machine has 2 CPU cores, shared with other jobs; 2 workers is the ceiling here",
            "task": f"{TASK.objective}, widths (16, 32), blocks (1, 1), {TASK.config.steps} steps, "
                    f"no quality stage, stability {SPEC.stability_steps} steps",
            "batch": list(BATCH),
        },
        "runs": runs,
        "best_evaluations_per_min": {str(w): v for w, v in best.items()},
        "speedup_2_vs_1": best[2] / best[1],
    }
    table = Table(title=f"Ray throughput, same batch of {len(BATCH)} evaluations "
                        f"({os.cpu_count()} CPU cores on this machine, shared)")
    for col in ("workers", "seconds", "evaluations / min", "load at start", "statuses"):
        table.add_column(col, justify="left" if col == "statuses" else "right")
    for r in runs:
        statuses = ", ".join(f"{k} {sum(v == k for v in r['statuses'].values())}"
                             for k in sorted(set(r["statuses"].values())))
        table.add_row(str(r["workers"]), f"{r['seconds']:.1f}", f"{r['evaluations_per_min']:.1f}",
                      str(r["load_average_1m_at_start"]), statuses)
    console = Console(width=140)
    console.print(table)
    console.print(f"2 workers vs 1: {out['speedup_2_vs_1']:.2f}x (ideal 2.00x on 2 idle cores). "
                  "Note: this machine has 2 cores, shared with other processes.")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

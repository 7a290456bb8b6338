"""Small-batch training: where BN-ReLU degrades and batch-independent layers do not (issue 13).

    python -m benchmarks.small_batch run [--backbones resnet] [--micro full,8,4,2] [--layers ...]
                                         [--seeds 0,1,2] [--jobs 1]
    python -m benchmarks.small_batch report      # the markdown table from the saved runs

Trains zoo layers (compiled from their graphs, built as `workers.evaluation._factory` builds a
candidate) on shapes32 with the task's own recipe (300 steps of 64 images), at the full batch and
at micro-batches (`TrainConfig.micro_batch`: each forward pass sees `micro` images, their gradients
add up to one optimizer step, so the examples seen and the steps are the same). A layer without
batch statistics computes the same gradient either way (up to float rounding); BN-ReLU's batch
statistics, and the running averages it evaluates with, come from `micro` images.

One torch thread per process. Every finished run is appended to
benchmarks/results/small_batch.json at once, so an interrupted run resumes where it stopped
(runs are keyed by layer, backbone, micro-batch and seed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "small_batch.json"
TASK = "shapes32"
LAYERS = ("bn_relu", "gn_relu", "evonorm_s0", "layernorm")
MICRO: tuple[int | None, ...] = (None, 8, 4, 2)
SEEDS = (0, 1, 2)


def _micro_name(micro: int | None) -> str:
    return "full" if micro is None else f"mb{micro}"


def _key(r: dict[str, Any]) -> tuple[str, str, int | None, int]:
    return (r["layer"], r["backbone"], r["micro_batch"], r["seed"])


def _load() -> dict[str, Any]:
    if RESULTS.exists():
        data: dict[str, Any] = json.loads(RESULTS.read_text())
        return data
    return {"meta": {}, "runs": []}


def _save(data: dict[str, Any]) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(RESULTS)


def train_one(layer: str, backbone: str, micro: int | None, seed: int) -> dict[str, Any]:
    """One run in this process, on one torch thread."""
    import torch

    torch.set_num_threads(1)
    from primitives.zoo import get_layer
    from workers.evaluation import EvalSpec, ProxyTask, _factory
    from workers.train import TrainConfig, train

    zoo = get_layer(layer)
    assert zoo.graph is not None, layer
    task = ProxyTask(backbone, TASK, TrainConfig(micro_batch=micro))
    spec = EvalSpec(tasks=(task,), eps=zoo.eps)
    r = train(_factory(zoo.graph, spec, task.layout), backbone, TASK, task.config, seed)
    return {"layer": layer, "backbone": backbone, "task": TASK, "micro_batch": micro, "seed": seed,
            "objective": task.objective, "accuracy": r.val_accuracy, "loss": r.val_loss,
            "train_loss": r.train_loss, "diverged": r.diverged, "reason": r.reason, "steps": r.steps,
            "wall_s": round(r.wall_time_s, 2), "steps_per_s": round(r.steps_per_s, 3),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "load_avg_1m": round(os.getloadavg()[0], 2)}


def run(backbones: list[str], layers: list[str], micros: list[int | None], seeds: list[int],
        jobs: int) -> None:
    import torch

    data = _load()
    data["meta"].setdefault("started", datetime.now(UTC).isoformat(timespec="seconds"))
    data["meta"].update({"torch": torch.__version__, "python": platform.python_version(),
                         "machine": platform.machine(), "cpu_count": os.cpu_count(), "threads": 1,
                         "device": "cpu", "task": TASK})
    done = {_key(r) for r in data["runs"]}
    # Seed-major, so a partial run has whole comparisons at the first seeds.
    plan = [(layer, b, m, s) for s in seeds for b in backbones for m in micros for layer in layers
            if (layer, b, m, s) not in done]
    print(f"{len(plan)} runs to do ({len(done)} saved)", flush=True)
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(train_one, *p) for p in plan]
        for f in as_completed(futures):
            r = f.result()
            data["runs"].append(r)
            _save(data)
            print(f"{r['objective']:18s} {_micro_name(r['micro_batch']):5s} {r['layer']:11s} seed {r['seed']}: "
                  f"acc {r['accuracy']:.4f}{' DIVERGED' if r['diverged'] else ''} ({r['wall_s']:.1f} s, "
                  f"load {r['load_avg_1m']})", flush=True)
    data["meta"]["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    _save(data)


def _mean_se(xs: list[float]) -> str:
    if not xs:
        return ""
    if len(xs) == 1:
        return f"{xs[0]:.3f} (1)"
    return f"{statistics.fmean(xs):.3f} ± {statistics.stdev(xs) / len(xs) ** 0.5:.3f} ({len(xs)})"


def _paired(diffs: list[float]) -> str:
    if len(diffs) < 2:
        return f"{diffs[0]:+.3f} (1)" if diffs else ""
    from scipy.stats import ttest_1samp

    se = statistics.stdev(diffs) / len(diffs) ** 0.5
    p = float(ttest_1samp(diffs, 0.0, alternative="less").pvalue)
    return f"{statistics.fmean(diffs):+.3f} ± {se:.3f} ({len(diffs)}), p {p:.3f}"


def report(data: dict[str, Any]) -> str:
    """Per backbone: accuracy mean ± standard error (n seeds) per layer and micro-batch, the median
    wall time of a run per micro-batch and its slowdown over the same run at the full batch, then
    each layer's paired difference micro-batch minus full batch."""
    runs = data["runs"]
    out: list[str] = []
    for backbone in dict.fromkeys(r["backbone"] for r in runs):
        rs = [r for r in runs if r["backbone"] == backbone]
        micros = [m for m in MICRO if any(r["micro_batch"] == m for r in rs)]
        out += [f"`{backbone}:{TASK}`, validation accuracy, mean ± standard error (seeds):", "",
                "| layer | " + " | ".join(_micro_name(m) for m in micros) + " |",
                "|---|" + "---:|" * len(micros)]
        for layer in [x for x in LAYERS if any(r["layer"] == x for r in rs)]:
            cells = [_mean_se([r["accuracy"] for r in rs if r["layer"] == layer and r["micro_batch"] == m])
                     for m in micros]
            out.append(f"| {layer} | " + " | ".join(cells) + " |")
        wall = {(r["layer"], r["micro_batch"], r["seed"]): r["wall_s"] for r in rs}
        cells = []
        for m in micros:
            mine = [w for (_, mm, _), w in wall.items() if mm == m]
            # the slowdown: the same layer and seed at the full batch, ratio per pair, median
            ratios = [w / wall[(layer, None, seed)] for (layer, mm, seed), w in wall.items()
                      if mm == m and (layer, None, seed) in wall]
            cells.append(f"{statistics.median(mine):.0f}"
                         + (f" ({statistics.median(ratios):.1f}x)" if ratios and m is not None else ""))
        out.append("| wall s per run (median; x the same run at full batch) | " + " | ".join(cells) + " |")
        acc = {(r["layer"], r["micro_batch"], r["seed"]): r["accuracy"] for r in rs}
        paired = []
        for layer in [x for x in LAYERS if any(r["layer"] == x for r in rs)]:
            cells = []
            for m in micros[1:]:
                d = [a - acc[(layer, None, seed)] for (lay, mm, seed), a in acc.items()
                     if lay == layer and mm == m and (layer, None, seed) in acc]
                cells.append(_paired(d))
            if any(cells):
                paired.append(f"| {layer} | " + " | ".join(cells) + " |")
        if paired:
            out += ["", "Micro-batch minus full batch, paired by seed: mean ± standard error (pairs), "
                        "one-sided p of a paired t-test for a loss:", "",
                    "| layer | " + " | ".join(_micro_name(m) for m in micros[1:]) + " |",
                    "|---|" + "---:|" * len(micros[1:]), *paired, ""]
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--backbones", default="resnet")
    r.add_argument("--layers", default=",".join(LAYERS))
    r.add_argument("--micro", default="full,8,4,2", help="micro-batches; 'full' is the whole batch")
    r.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    r.add_argument("--jobs", type=int, default=1, help="processes (one torch thread each)")
    sub.add_parser("report")
    args = p.parse_args(argv)
    if args.cmd == "run":
        micros = [None if m == "full" else int(m) for m in args.micro.split(",")]
        run(args.backbones.split(","), args.layers.split(","), micros,
            [int(s) for s in args.seeds.split(",")], args.jobs)
    print(report(_load()))
    sys.stdout.flush()


if __name__ == "__main__":
    main()

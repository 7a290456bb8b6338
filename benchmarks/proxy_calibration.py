"""Calibrate a proxy recipe: does a variant of one task's recipe rank layers repeatably?

    python -m benchmarks.proxy_calibration resnet:shapes32 --name resnet20_clip1 \\
        --config '{"lr": 0.15, "grad_clip": 1.0, "backbone_kwargs": {"blocks": [3, 3, 3]}}'

Trains each layer with each seed on one proxy task, with `--config` as
`TrainConfig` overrides of the task's default recipe, and appends the variant
to benchmarks/results/proxy_calibration.json with the settings it ran under
spelled out (the defaults move; a record must not). It prints the two
criteria docs/proxy.md applies to the defaults: the Spearman correlation of
the layer ranking between the first and last seed, and whether identity is
clearly below BN-ReLU (its best seed at least CLEAR_MARGIN under BN-ReLU's
worst). The file holds the runs behind the shapes32 ResNet recipe.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict
from typing import Any

import torch
from scipy.stats import spearmanr

from benchmarks.proxy_table import CLEAR_MARGIN, ROOT
from primitives.zoo import get_layer
from workers.evaluation import EvalSpec, ProxyTask, _factory
from workers.train import TrainConfig, backbone_kwargs_for, recipe_for, train

RESULTS = ROOT / "benchmarks" / "results" / "proxy_calibration.json"
LAYERS = ("bn_relu", "gn_relu", "layernorm", "rmsnorm", "evonorm_b0", "evonorm_s0", "evonorm_s1",
          "relu", "identity")


def settings(task: ProxyTask, config: TrainConfig) -> dict[str, Any]:
    """The recipe and backbone arguments a run trains with, in full."""
    recipe = asdict(recipe_for(task.task, config, task.backbone))
    if recipe["grad_clip"] == math.inf:
        recipe["grad_clip"] = None  # no clipping, as the recipe spells it
    for per_backbone in ("backbones", "backbone_recipe"):
        recipe.pop(per_backbone)
    return {"recipe": recipe, "backbone": backbone_kwargs_for(task.task, task.backbone, config)}


def criteria(accuracy: dict[str, list[float]]) -> dict[str, Any]:
    first = [runs[0] for runs in accuracy.values()]
    last = [runs[-1] for runs in accuracy.values()]
    # a rank correlation of fewer than 3 layers says nothing
    rho = spearmanr(first, last).statistic if len(first) >= 3 else None
    out: dict[str, Any] = {"spearman": None if rho is None else round(float(rho), 3)}
    if "identity" in accuracy and "bn_relu" in accuracy:
        out["identity_max"] = max(accuracy["identity"])
        out["bn_relu_min"] = min(accuracy["bn_relu"])
        out["identity_clearly_below"] = out["identity_max"] + CLEAR_MARGIN <= out["bn_relu_min"]
    return out


def calibrate(objective: str, name: str, config: TrainConfig, layers: tuple[str, ...],
              seeds: tuple[int, ...]) -> dict[str, Any]:
    backbone, task_name = objective.split(":")
    task = ProxyTask(backbone, task_name)
    accuracy: dict[str, list[float]] = {}
    diverged: dict[str, list[bool]] = {}
    start = time.perf_counter()
    for layer in layers:
        zoo = get_layer(layer)
        assert zoo.graph is not None, layer
        factory = _factory(zoo.graph, EvalSpec(tasks=(task,), eps=zoo.eps), task.layout)
        for seed in seeds:
            r = train(factory, backbone, task_name, config, seed)
            accuracy.setdefault(layer, []).append(round(r.val_accuracy, 4))
            diverged.setdefault(layer, []).append(r.diverged)
            print(f"{name} {layer:11s} seed {seed}: {r.val_accuracy:.3f}"
                  f"{' diverged: ' + str(r.reason) if r.diverged else ''} ({r.wall_time_s:.0f} s)",
                  flush=True)
    return {"name": name, "objective": objective, "settings": settings(task, config),
            "seeds": list(seeds), "accuracy": accuracy, "diverged": diverged,
            **criteria(accuracy), "wall_s": round(time.perf_counter() - start)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("objective", help="backbone:task, e.g. resnet:shapes32")
    parser.add_argument("--name", required=True)
    parser.add_argument("--config", default="{}", help="TrainConfig overrides as JSON")
    parser.add_argument("--layers", default=",".join(LAYERS))
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    overrides = json.loads(args.config)
    kwargs = overrides.pop("backbone_kwargs", {})
    config = TrainConfig(backbone_kwargs=kwargs, **overrides)
    variant = calibrate(args.objective, args.name, config, tuple(args.layers.split(",")),
                        tuple(int(s) for s in args.seeds.split(",")))
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"variants": []}
    data["variants"].append(variant)
    RESULTS.write_text(json.dumps(data, indent=1) + "\n")
    print({k: v for k, v in variant.items() if k not in ("accuracy", "diverged", "settings")})


if __name__ == "__main__":
    main()

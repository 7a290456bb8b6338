"""Training-step time of the proxy backbones: compiled candidate layers against native torch layers.

    python -m benchmarks.train_step                 # eager, then torch.compile on two pairs
    python -m benchmarks.train_step --no-compile --repeats 10

One training step = forward, cross-entropy, backward, SGD (Nesterov
momentum) step, on the proxy backbones exactly as the search trains them
(`workers.train.backbone_kwargs_for`: ResNet with the shapes32 recipe's
stride-2 stem at batch 64 on 3x32x32; the character Transformer at batch 32,
block 64). The candidate is the zoo graph compiled by
`primitives.layer_class`, built as `workers.evaluation._factory` builds it
(groups 32 on images, 4 on tokens); its twin uses torch's own modules:

    ResNet       bn_relu    -> nn.BatchNorm2d + nn.ReLU
                 gn_relu    -> nn.GroupNorm(32) + nn.ReLU
                 layernorm  -> nn.GroupNorm(1)     (statistics over C, H, W)
                 evonorm_s0 -> primitives.handwritten.EvoNormS0 (eager, timm's formula)
    Transformer  layernorm  -> nn.LayerNorm
                 rmsnorm    -> nn.RMSNorm

Both models of a pair start from the same seed and run on the same batch;
all models are timed round-robin (one step each in turn) so load from other
processes hits every row alike. Reported per pair: medians, the ratio of
medians, and the paired ratio (median over rounds of candidate / native in
the same round). Target: within 1.3x. One torch thread, CPU, float32.
Results: benchmarks/results/train_step.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch import Tensor, nn

from primitives.handwritten import EvoNormS0
from primitives.zoo import get_layer
from workers.backbones import build_backbone
from workers.data import get_task
from workers.evaluation import EvalSpec, ProxyTask, _factory
from workers.train import backbone_kwargs_for, recipe_for

TARGET = 1.3
RESULTS = Path(__file__).resolve().parent / "results" / "train_step.json"

Factory = Callable[[int], nn.Module]


def _seq(*make: Callable[[int], nn.Module]) -> Factory:
    return lambda c: nn.Sequential(*(m(c) for m in make))


# (backbone, task) -> zoo layer -> (native label, native factory)
PAIRS: dict[tuple[str, str], dict[str, tuple[str, Factory]]] = {
    ("resnet", "shapes32"): {
        "bn_relu": ("nn.BatchNorm2d + ReLU", _seq(nn.BatchNorm2d, lambda c: nn.ReLU())),
        "gn_relu": ("nn.GroupNorm(32) + ReLU", _seq(lambda c: nn.GroupNorm(min(32, c), c),
                                                    lambda c: nn.ReLU())),
        "layernorm": ("nn.GroupNorm(1)", lambda c: nn.GroupNorm(1, c)),
        "evonorm_s0": ("handwritten EvoNormS0", lambda c: EvoNormS0(c, groups=32)),
    },
    ("transformer", "pydoc_chars"): {
        "layernorm": ("nn.LayerNorm", lambda c: nn.LayerNorm(c)),
        "rmsnorm": ("nn.RMSNorm", lambda c: nn.RMSNorm(c, eps=1e-5)),
    },
}
# torch.compile (Inductor, C++ on the CPU) takes a minute or more per model on a
# loaded 2-core machine, so only one pair per backbone is compiled.
COMPILE_PAIRS = {("resnet", "shapes32", "bn_relu"), ("transformer", "pydoc_chars", "layernorm")}


@dataclass
class Model:
    backbone: str
    task: str
    layer: str
    kind: str                       # "candidate" or "native"
    mode: str                       # "eager" or "compile"
    label: str
    module: nn.Module
    step_fn: Callable[[], None]
    times: list[float] = field(default_factory=list)
    compile_s: float | None = None


def _batch(task_name: str, batch_size: int, kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """A fixed batch shaped as the task's: normalized-like images, or character ids."""
    info = get_task(task_name)
    gen = torch.Generator().manual_seed(0)
    if info.kind == "image":
        x = torch.randn((batch_size, *info.input_shape), generator=gen)
        return x, torch.randint(0, info.num_classes, (batch_size,), generator=gen)
    block = kwargs["block_size"]
    ids = torch.randint(0, info.num_classes, (batch_size, block + 1), generator=gen)
    return ids[:, :-1], ids[:, 1:]


def _make(backbone: str, task: str, layer: str, kind: str, mode: str, label: str,
          factory: Factory) -> Model:
    info = get_task(task)
    recipe = recipe_for(task)
    kwargs = backbone_kwargs_for(task, backbone)
    torch.manual_seed(0)
    module = build_backbone(backbone, factory, info.num_classes, **kwargs).train()
    opt = torch.optim.SGD(module.parameters(), lr=1e-3, momentum=0.9, nesterov=True)
    x, y = _batch(task, recipe.batch_size, kwargs)
    forward = torch.compile(module) if mode == "compile" else module

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(forward(x).flatten(0, -2), y.flatten())
        loss.backward()
        opt.step()

    return Model(backbone, task, layer, kind, mode, label, module, step)


def build(compile_models: bool) -> list[Model]:
    models = []
    for (backbone, task), layers in PAIRS.items():
        layout = "nchw" if backbone != "transformer" else "tokens"
        for layer, (native_label, native) in layers.items():
            zoo = get_layer(layer)
            assert zoo.graph is not None
            spec = EvalSpec(tasks=(ProxyTask(backbone, task),), eps=zoo.eps)
            candidate = _factory(zoo.graph, spec, layout)
            modes = ["eager"] + (["compile"] if compile_models and (backbone, task, layer) in COMPILE_PAIRS
                                 else [])
            for mode in modes:
                models.append(_make(backbone, task, layer, "candidate", mode, f"{layer} (generated)",
                                    candidate))
                models.append(_make(backbone, task, layer, "native", mode, native_label, native))
    return models


def run(repeats: int, warmup: int, compile_models: bool) -> dict[str, Any]:
    models = build(compile_models)
    for m in models:
        if m.mode == "compile":
            start = time.perf_counter()
            m.step_fn()  # compiles forward and backward
            m.compile_s = time.perf_counter() - start
            print(f"compiled {m.backbone} {m.label} in {m.compile_s:.0f} s", flush=True)
    for _ in range(warmup):
        for m in models:
            m.step_fn()
    for r in range(repeats):
        for m in models:
            start = time.perf_counter()
            m.step_fn()
            m.times.append(time.perf_counter() - start)
        print(f"round {r + 1}/{repeats}", flush=True)

    rows = []
    for cand in (m for m in models if m.kind == "candidate"):
        native = next(m for m in models if m.kind == "native" and (m.backbone, m.layer, m.mode)
                      == (cand.backbone, cand.layer, cand.mode))
        c_ms, n_ms = statistics.median(cand.times) * 1e3, statistics.median(native.times) * 1e3
        paired = statistics.median(c / n for c, n in zip(cand.times, native.times, strict=True))
        rows.append({
            "backbone": cand.backbone, "task": cand.task, "layer": cand.layer, "mode": cand.mode,
            "native": native.label, "candidate_ms": round(c_ms, 2), "native_ms": round(n_ms, 2),
            "candidate_iqr_ms": [round(q * 1e3, 2) for q in _iqr(cand.times)],
            "native_iqr_ms": [round(q * 1e3, 2) for q in _iqr(native.times)],
            "ratio": round(c_ms / n_ms, 3), "paired_ratio": round(paired, 3),
            "within_target": c_ms / n_ms <= TARGET,
            "compile_s": None if cand.compile_s is None else round(cand.compile_s, 1),
            "native_compile_s": None if native.compile_s is None else round(native.compile_s, 1),
        })
    return {
        "meta": {
            "date": datetime.now(UTC).isoformat(timespec="seconds"), "torch": torch.__version__,
            "python": platform.python_version(), "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
            "load_average_1m": round(os.getloadavg()[0], 2), "device": "cpu", "dtype": "float32",
            "step": "forward + cross-entropy + backward + SGD(nesterov) step, train mode",
            "batch": {f"{b}:{t}": recipe_for(t).batch_size for b, t in PAIRS},
            "repeats": repeats, "warmup": warmup, "target_ratio": TARGET,
        },
        "results": rows,
    }


def _iqr(times: list[float]) -> tuple[float, float]:
    q1, _, q3 = statistics.quantiles(times, n=4)
    return q1, q3


def report(result: dict[str, Any]) -> None:
    meta = result["meta"]
    table = Table(title=f"Training step, {meta['threads']} thread, {meta['cpu_count']} CPUs, "
                        f"load {meta['load_average_1m']} (median of {meta['repeats']}, round-robin)")
    columns = ("backbone", "layer", "mode", "native", "candidate ms", "native ms", "ratio", "paired", "target")
    for col in columns:
        table.add_column(col, justify="right" if col.endswith(("ms", "ratio", "paired")) else "left")
    for r in result["results"]:
        table.add_row(r["backbone"], r["layer"], r["mode"], r["native"], f"{r['candidate_ms']:.1f}",
                      f"{r['native_ms']:.1f}", f"{r['ratio']:.2f}x", f"{r['paired_ratio']:.2f}x",
                      "ok" if r["within_target"] else f"> {TARGET}x")
    console = Console(width=160)
    console.print(table)
    missed = [r for r in result["results"] if not r["within_target"]]
    console.print(f"Within {TARGET}x: {len(result['results']) - len(missed)} of {len(result['results'])} rows."
                  + (" Over: " + ", ".join(f"{r['backbone']} {r['layer']} {r['mode']} {r['ratio']:.2f}x"
                                           for r in missed) if missed else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = run(args.repeats, args.warmup, not args.no_compile)
    report(result)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

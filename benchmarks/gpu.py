"""The GPU check: what `benchmarks/gpu_check` runs on a CUDA machine (under 8 minutes).

    benchmarks/gpu_check                       # on a CUDA machine; exits 0 with a message without one
    python -m benchmarks.gpu --device cpu --quick --out /tmp/gpu   # the same steps, tiny, on the CPU

Steps, each within its share of the time budget, each recorded even when it fails:

1. cuda_tests   `pytest -m cuda`: generated layers vs the CPU, bf16 autocast + channels_last, a training
2. layer_speed  forward+backward of one layer: generated (eager and torch.compile) vs native vs the
                eager EvoNorms (this repo's, and timm's where timm is installed), float32 and under
                bf16 autocast with channels_last; paired ratios against the native layer
3. train_step   one optimizer step of the shapes32 ResNet, generated vs native layers, bf16 autocast
                and channels_last as `workers.train` runs on a GPU
4. bf16_train   a real proxy training (`workers.train.train`, bf16 autocast) of BN-ReLU and EvoNorm-S0
5. search       a 10-candidate search on a local Ray with `num_gpus` per evaluation

Results: benchmarks/results/gpu_<step>.json and gpu_check.json (the summary). Ratios are measured
against a baseline in the same run, never against fixed times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
BUDGET_S = 450.0   # the whole check; the wrapper kills it at 480 s


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


class Clock:
    """Times round-robin steps on a device (CUDA: synchronized, so the kernels are counted)."""

    def __init__(self, device: str) -> None:
        import torch

        self.sync: Callable[[], None] = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def rounds(self, steps: dict[str, Callable[[], None]], repeats: int, warmup: int) -> dict[str, list[float]]:
        times: dict[str, list[float]] = {k: [] for k in steps}
        for i in range(warmup + repeats):
            for label, step in steps.items():
                self.sync()
                start = time.perf_counter()
                step()
                self.sync()
                if i >= warmup:
                    times[label].append(time.perf_counter() - start)
        return times


def summarize(times: dict[str, list[float]], baseline: str) -> dict[str, Any]:
    base = times[baseline]
    return {label: {"median_ms": round(1e3 * statistics.median(t), 4),
                    "paired_ratio": round(statistics.median(a / b for a, b in zip(t, base, strict=True)), 3)}
            for label, t in times.items()}


def _timm_evonorm() -> dict[str, Callable[[int], Any]]:
    """timm's eager EvoNorms, where timm is installed."""
    try:
        from timm.layers import EvoNorm2dB0, EvoNorm2dS0
    except ImportError:
        return {}
    return {"evonorm_b0": lambda c: EvoNorm2dB0(c), "evonorm_s0": lambda c: EvoNorm2dS0(c)}


def layer_speed(device: str, quick: bool) -> dict[str, Any]:
    import torch

    from benchmarks.layer_speed import BASELINES
    from primitives.zoo import get_layer

    shape = (8, 32, 8, 8) if quick else (64, 128, 32, 32)
    repeats, warmup = (3, 1) if quick else (50, 10)
    timm = _timm_evonorm()
    clock = Clock(device)
    out: dict[str, Any] = {"shape": list(shape), "timm": bool(timm), "layers": {}}
    for name, (native_label, make_native) in BASELINES.items():
        rows: dict[str, Any] = {}
        for precision in ("float32", "bf16_autocast_channels_last"):
            torch.manual_seed(0)
            channels_last = precision != "float32"
            x = torch.randn(shape, device=device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            x.requires_grad_(True)
            modules: dict[str, Any] = {native_label: make_native(shape[1]),
                                       "generated (eager)": get_layer(name).factory()(shape[1])}
            if not quick:
                modules["generated (torch.compile)"] = get_layer(name).factory()(shape[1])
            if name in timm:
                modules["timm (eager)"] = timm[name](shape[1])
            steps = {}
            for label, module in modules.items():
                module = module.to(device).train()
                fn = torch.compile(module, dynamic=False) if "compile" in label else module

                def step(fn: Any = fn, module: Any = module, x: Any = x, amp: bool = channels_last) -> None:
                    module.zero_grad(set_to_none=True)
                    x.grad = None
                    with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=amp):
                        y = fn(x)
                    y.float().sum().backward()

                steps[label] = step
            rows[precision] = summarize(clock.rounds(steps, repeats, warmup), native_label)
        out["layers"][name] = rows
    return out


def train_step(device: str, quick: bool) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    from benchmarks.train_step import PAIRS, _batch
    from primitives.zoo import get_layer
    from workers.backbones import build_backbone
    from workers.data import get_task
    from workers.evaluation import EvalSpec, ProxyTask, _factory
    from workers.train import backbone_kwargs_for, recipe_for

    backbone, task = "resnet", "shapes32"
    info = get_task(task)
    kwargs = backbone_kwargs_for(task, backbone)
    batch = 16 if quick else recipe_for(task).batch_size
    repeats, warmup = (2, 1) if quick else (30, 5)
    x, y = _batch(task, batch, kwargs)
    x = x.to(device).contiguous(memory_format=torch.channels_last)
    y = y.to(device)
    clock = Clock(device)
    out: dict[str, Any] = {"backbone": backbone, "task": task, "batch": batch, "amp": "bf16",
                           "channels_last": True, "pairs": {}}
    for layer, (native_label, native) in PAIRS[(backbone, task)].items():
        zoo = get_layer(layer)
        assert zoo.graph is not None
        candidate = _factory(zoo.graph, EvalSpec(tasks=(ProxyTask(backbone, task),), eps=zoo.eps), "nchw")
        steps = {}
        for label, factory in ((native_label, native), (f"{layer} (generated)", candidate)):
            torch.manual_seed(0)
            model = build_backbone(backbone, factory, info.num_classes, **kwargs).to(device).train()
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

            def step(model: Any = model, opt: Any = opt) -> None:
                opt.zero_grad(set_to_none=True)
                with torch.autocast(device.split(":")[0], dtype=torch.bfloat16):
                    loss = F.cross_entropy(model(x), y)
                loss.backward()
                opt.step()

            steps[label] = step
        out["pairs"][layer] = summarize(clock.rounds(steps, repeats, warmup), native_label)
    return out


def bf16_train(device: str, quick: bool) -> dict[str, Any]:
    from primitives.zoo import get_layer
    from workers.train import TrainConfig, train

    out: dict[str, Any] = {}
    for layer in ("bn_relu", "evonorm_s0"):
        config = TrainConfig(steps=5 if quick else 600, device=device, amp=True,
                             batch_size=16 if quick else None)
        r = train(get_layer(layer).factory(), "resnet", "shapes32", config, seed=0)
        out[layer] = {"val_accuracy": round(r.val_accuracy, 4), "val_loss": round(r.val_loss, 4),
                      "diverged": r.diverged, "reason": r.reason, "steps": r.steps,
                      "steps_per_s": round(r.steps_per_s, 1), "wall_s": round(r.wall_time_s, 1),
                      "device": r.device}
    return out


def search(device: str, quick: bool) -> dict[str, Any]:
    from db import Store
    from evonorm_search.config import load_config
    from evonorm_search.runner import SearchRunner
    from workers.executors import RayExecutor

    gpu = device.startswith("cuda")
    config = load_config(None, {
        "name": "gpu-check", "budget": 3 if quick else 10, "in_flight": 4, "population_size": 4,
        "tournament_size": 2, "seed_with_zoo": ["bn_relu"], "num_gpus": 0.25 if gpu else 0, "timeout_s": 300,
        "tasks": [{"backbone": "resnet", "task": "shapes32", "steps": 10 if quick else 300}],
        "rejection": {"stability_steps": 2 if quick else 20, "quality": False}})
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(str(Path(tmp) / "gpu.db"))
        sid = store.create_search(config.name, config.model_dump(mode="json"), seed=config.seed).id
        start = time.perf_counter()
        ex = RayExecutor(local_cpus=os.cpu_count() or 1, num_gpus=config.num_gpus,
                         init_kwargs={"num_gpus": 1} if gpu else None)
        try:
            slots = ex.slots
            result = SearchRunner(store, sid, ex).run()
        finally:
            ex.close()
        rows = store.list_candidates(sid, limit=None)
        evals = store.evaluations_for_candidates([c.id for c in rows])
        out = {"search_status": str(result.status), "error": result.error, "budget": config.budget,
               "num_gpus_per_evaluation": config.num_gpus, "slots": slots,
               "evaluated": result.num_evaluated, "rejected": result.num_rejected,
               "rejected_by_stage": store.count_by_rejection_stage(sid),
               "worker_failures": [c.rejection_reason for c in rows if c.rejection_stage == "worker"],
               # the evaluations do not record their device; their speed tells a GPU from a CPU run
               "steps_per_s": sorted(round(float(e.metrics["steps_per_s"]), 1) for es in evals.values()
                                     for e in es),
               "wall_s": round(time.perf_counter() - start, 1)}
        store.close()
    return out


def cuda_tests(device: str, quick: bool) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", "-rs",
           "tests/workers", "tests/primitives"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240)
    lines = done.stdout.strip().splitlines()
    return {"returncode": done.returncode, "summary": lines[-1] if lines else "",
            "tail": "\n".join(lines[-30:]), "passed": done.returncode == 0}


STEPS: dict[str, Callable[[str, bool], dict[str, Any]]] = {
    "cuda_tests": cuda_tests, "layer_speed": layer_speed, "train_step": train_step, "bf16_train": bf16_train,
    "search": search,
}
# Seconds each step needs at least on a GPU (a step is skipped, recorded as such, when less is left).
NEEDS_S = {"cuda_tests": 60, "layer_speed": 90, "train_step": 60, "bf16_train": 45, "search": 90}


def meta(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "torch": torch.__version__,
                            "python": platform.python_version(), "device": device}
    if device.startswith("cuda"):
        info.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda,
                    bf16_supported=torch.cuda.is_bf16_supported())
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (the check), or cpu to try the steps anywhere")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: the steps run, nothing is measured")
    parser.add_argument("--only", nargs="*", choices=sorted(STEPS), help="run only these steps")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where gpu_*.json go")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S)
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not cuda_available():
        print("GPU check skipped: no CUDA device here (torch.cuda.is_available() is False); nothing was run "
              "or written. Run benchmarks/gpu_check on a machine with an NVIDIA GPU.")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    end = time.monotonic() + args.budget_s
    summary: dict[str, Any] = {"meta": meta(args.device), "quick": args.quick, "steps": {}}
    failed = False
    for name, fn in STEPS.items():
        if args.only and name not in args.only:
            continue
        left = end - time.monotonic()
        if not args.quick and left < NEEDS_S[name]:
            summary["steps"][name] = {"status": "skipped", "reason": f"{left:.0f} s left of the budget"}
            continue
        print(f"[gpu_check] {name} ...", flush=True)
        start = time.monotonic()
        try:
            result: dict[str, Any] = {"status": "ok", **fn(args.device, args.quick)}
            if name == "cuda_tests" and not result["passed"]:
                result["status"] = "failed"
        except Exception as e:
            result = {"status": "error", "error": f"{type(e).__name__}: {e}",
                      "traceback": traceback.format_exc()}
        result["wall_s"] = round(time.monotonic() - start, 1)
        failed |= result["status"] != "ok"
        record = {"meta": summary["meta"], **result}
        (args.out / f"gpu_{name}.json").write_text(json.dumps(record, indent=2) + "\n")
        summary["steps"][name] = {"status": result["status"], "wall_s": result["wall_s"]}
        print(f"[gpu_check] {name}: {result['status']} in {result['wall_s']} s", flush=True)
    (args.out / "gpu_check.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary["steps"], indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Forward+backward speed of compiled zoo graphs against PyTorch's native layers and the eager EvoNorms.

    python -m benchmarks.layer_speed                        # (32, 64, 32, 32), 30 repeats
    python -m benchmarks.layer_speed --shape 8 64 16 16 --repeats 10 --no-compile
    python -m benchmarks.layer_speed --report-only          # print the report of the saved JSON

One training step of the layer alone (forward, then backward from a fixed
output gradient), in training mode, float32, contiguous NCHW, on the CPU with
torch's default thread count. All layers run in one process and are timed
round-robin (one step of each in turn, `repeats` rounds after `warmup`
rounds) so background load hits every layer alike; each row reports the
median and the interquartile range, the ratio of medians to the baseline's,
and the "paired" ratio (median over rounds of the step's time over the
baseline's step of the same round). Every compiled zoo graph is compared with
its matching baseline:

    bn_relu -> nn.BatchNorm2d + ReLU       evonorm_b0 -> primitives.handwritten.EvoNormB0
    gn_relu -> nn.GroupNorm(32) + ReLU     evonorm_s0 -> primitives.handwritten.EvoNormS0
    layernorm -> nn.GroupNorm(1)

both as the eager generated module and under `torch.compile`. The issue's
target is "compiled within 1.2x of native on CPU"; rows over it are listed
with the reason. Results go to benchmarks/results/layer_speed.json.
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
from torch import Tensor, nn

from primitives.handwritten import EvoNormB0, EvoNormS0
from primitives.zoo import get_layer

TARGET = 1.2
RESULTS = Path(__file__).resolve().parent / "results" / "layer_speed.json"

# zoo layer -> (its baseline's label, a constructor of the baseline)
BASELINES: dict[str, tuple[str, Callable[[int], nn.Module]]] = {
    "bn_relu": ("native BN-ReLU", lambda c: nn.Sequential(nn.BatchNorm2d(c), nn.ReLU())),
    "gn_relu": ("native GN-ReLU", lambda c: nn.Sequential(nn.GroupNorm(min(32, c), c), nn.ReLU())),
    "layernorm": ("native LayerNorm (GroupNorm(1, C))", lambda c: nn.GroupNorm(1, c)),
    "evonorm_b0": ("handwritten EvoNorm-B0 (eager)", lambda c: EvoNormB0(c)),
    "evonorm_s0": ("handwritten EvoNorm-S0 (eager)", lambda c: EvoNormS0(c)),
}

WHY = {
    "eager": (
        "the eager generated module computes the standardization with torch's fused kernel "
        "(F.batch_norm / F.group_norm, v1 and v0 as its weight and bias) but runs what follows as "
        "separate ops: the ReLU and the layer's own output affine (y * weight + bias), each a full pass "
        "over the activation forward and backward, where native BN-ReLU is one kernel and a ReLU. "
        "In a whole training step of a proxy backbone that costs 1.0-1.1x (benchmarks/train_step). "
        "Eager is the readable, exportable form; torch.compile is the fast one."
    ),
    "compile": (
        "Inductor decomposes F.group_norm, which the generated layer calls, into its mean / var / "
        "normalise graph: it fuses the forward into one kernel (a statistics loop, then the normalisation "
        "loop), but the backward it derives re-reads the activation and the incoming gradient in several "
        "loops, where ATen's dedicated GroupNorm backward (native_group_norm_backward) needs fewer passes. "
        "Eager, the same layer runs that ATen kernel and is at native speed; BatchNorm's CPU kernel has no "
        "such edge over Inductor's. Only "
        "torch.compile's default mode is measured (no max-autotune)."
    ),
}


@dataclass
class Case:
    label: str
    layer: str                          # the zoo layer this row belongs to
    kind: str                           # "baseline", "eager" or "compile"
    module: nn.Module
    fn: Callable[[Tensor], Tensor]      # the module, or its torch.compile wrapper
    times: list[float] = field(default_factory=list)
    compile_s: float | None = None

    def step(self, x: Tensor, grad: Tensor) -> None:
        """One training step of the layer alone: forward, backward from a fixed output gradient."""
        self.module.zero_grad(set_to_none=True)
        x.grad = None
        self.fn(x).backward(grad)


def build_cases(channels: int, compile_graphs: bool) -> list[Case]:
    cases: list[Case] = []
    for name, (label, make) in BASELINES.items():
        base = make(channels).train()
        cases.append(Case(label, name, "baseline", base, base))
        zoo = get_layer(name)
        eager = zoo.factory()(channels).train()
        cases.append(Case(f"{name} (generated, eager)", name, "eager", eager, eager))
        if compile_graphs:
            twin = zoo.factory()(channels).train()
            compiled = torch.compile(twin, dynamic=False)
            cases.append(Case(f"{name} (generated, torch.compile)", name, "compile", twin, compiled))
    return cases


def compile_and_check(cases: list[Case], x: Tensor) -> None:
    """Compile (forward and backward) and check the compiled module computes what the eager one does."""
    by_key = {(c.layer, c.kind): c for c in cases}
    for (layer, kind), case in by_key.items():
        if kind != "compile":
            continue
        eager = by_key[(layer, "eager")].module
        state = {k: v.clone() for k, v in eager.state_dict().items()}
        start = time.perf_counter()
        y_c = case.fn(x)
        y_c.backward(torch.ones_like(y_c))
        case.compile_s = time.perf_counter() - start
        y_e = eager(x)
        eager.load_state_dict(state)  # the check does not count as a training step
        torch.testing.assert_close(y_c.detach(), y_e.detach(), rtol=1e-4, atol=1e-4)
        print(f"  {case.label}: compiled in {case.compile_s:.1f} s, matches eager", flush=True)


def run(shape: tuple[int, int, int, int], repeats: int, warmup: int, compile_graphs: bool) -> dict[str, Any]:
    torch.manual_seed(0)
    x = torch.randn(shape).requires_grad_(True)
    grad = torch.randn(shape)
    cases = build_cases(shape[1], compile_graphs)
    if compile_graphs:
        print("compiling (forward + backward) ...", flush=True)
        compile_and_check(cases, x.detach())
    for _ in range(warmup):
        for case in cases:
            case.step(x, grad)
    for _ in range(repeats):
        for case in cases:
            start = time.perf_counter()
            case.step(x, grad)
            case.times.append(time.perf_counter() - start)

    baselines = {c.layer: c for c in cases if c.kind == "baseline"}
    rows = []
    for case in cases:
        q1, _, q3 = statistics.quantiles(case.times, n=4)
        median = statistics.median(case.times) * 1e3
        ratio = median / (statistics.median(baselines[case.layer].times) * 1e3)
        rows.append({
            "label": case.label, "layer": case.layer, "kind": case.kind,
            "baseline": BASELINES[case.layer][0],
            "median_ms": round(median, 3), "iqr_ms": [round(q1 * 1e3, 3), round(q3 * 1e3, 3)],
            "min_ms": round(min(case.times) * 1e3, 3),
            "ratio": round(ratio, 3),
            # the median over rounds of (this step / the baseline's step of the same round, a moment
            # earlier): robust to load that drifts while the benchmark runs
            "paired_ratio": round(statistics.median(
                t / b for t, b in zip(case.times, baselines[case.layer].times, strict=True)), 3),
            "within_target": None if case.kind == "baseline" else ratio <= TARGET,
            "compile_s": None if case.compile_s is None else round(case.compile_s, 1),
        })
    return {
        "meta": {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "torch": torch.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "shape": list(shape), "dtype": "float32", "mode": "train, forward+backward",
            "repeats": repeats, "warmup": warmup, "target_ratio": TARGET,
        },
        "results": rows,
    }


def report(result: dict[str, Any]) -> str:
    """A table and the honest verdict, as text."""
    rows: list[dict[str, Any]] = result["results"]
    meta: dict[str, Any] = result["meta"]
    lines = [
        f"Layer speed: forward+backward, train mode, {tuple(meta['shape'])} float32 NCHW, "
        f"torch {meta['torch']}, {meta['threads']} threads, {meta['cpu_count']} CPUs, "
        f"load average {meta['load_average_1m']}; median of {meta['repeats']} (round-robin)",
        "",
        f"{'layer':36s} {'median ms':>9s} {'IQR ms':>15s} {'ratio':>6s} {'paired':>6s}  vs",
    ]
    for r in rows:
        iqr = "{:.1f}-{:.1f}".format(*r["iqr_ms"])
        mark = "" if r["within_target"] is None else ("  ok" if r["within_target"] else f"  > {TARGET}x")
        vs = "" if r["kind"] == "baseline" else str(r["baseline"])
        lines.append(f"{r['label']:36s} {r['median_ms']:>9.1f} {iqr:>15s} "
                     f"{r['ratio']:>5.2f}x {r['paired_ratio']:>5.2f}x  {vs}{mark}")
    over = [r for r in rows if r["within_target"] is False]
    compiled = [r for r in rows if r["kind"] == "compile"]
    lines.append("")
    if compiled:
        met = [r for r in compiled if r["within_target"]]
        lines.append(f"Target: compiled within {TARGET}x of the baseline. Met by {len(met)} of {len(compiled)} "
                     f"compiled layers: {', '.join(str(r['layer']) for r in met) or 'none'}.")
    for kind in ("compile", "eager"):
        missed = [r for r in over if r["kind"] == kind]
        if missed:
            listed = ", ".join(f"{r['layer']} {r['ratio']:.2f}x" for r in missed)
            lines.append(f"Over {TARGET}x ({kind}): {listed}")
            lines.append("  why: " + WHY[kind])
    load, cpus = meta["load_average_1m"], meta["cpu_count"] or 1
    if load > 0.5 * cpus:
        lines.append(f"Caution: other processes kept the machine busy (load average {load} on {cpus} CPUs); "
                     f"single steps vary widely (see IQR). Ratios near {TARGET}x are not conclusive; "
                     "'paired' (median of per-round ratios) is the steadier estimate under drifting load.")
    lines.append("The EvoNorm baselines are the eager hand-written modules, so their compiled rows also show "
                 "what torch.compile buys over eager PyTorch.")
    evo = [r for r in compiled if str(r["baseline"]).startswith("handwritten")]
    if evo:
        def speedups(key: str) -> str:
            return ", ".join(f"{r['layer']} {1 / r[key]:.1f}x" for r in evo)

        lines.append("Compiled generated EvoNorms vs the eager hand-written ones, faster by: "
                     f"{speedups('paired_ratio')} (paired ratio); {speedups('ratio')} (ratio of medians).")
    eager = [r for r in rows if r["kind"] == "eager" and not str(r["baseline"]).startswith("handwritten")]
    if eager:
        def span(key: str) -> str:
            return f"{min(r[key] for r in eager):.1f}-{max(r[key] for r in eager):.1f}x"

        lines.append(f"Eager generated vs native: {span('paired_ratio')} (paired), {span('ratio')} "
                     "(ratio of medians).")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=4, default=(32, 64, 32, 32), metavar=("N", "C", "H", "W"))
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: left as torch sets it)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--report-only", action="store_true", help="no timing: print the report of --out")
    args = parser.parse_args()
    if args.report_only:
        print(report(json.loads(args.out.read_text())))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(tuple(args.shape), args.repeats, args.warmup, not args.no_compile)
    print(report(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()

"""The proxy discrimination table: do the proxy tasks tell known layers apart?

    python -m benchmarks.proxy_table                 # train everything missing, then write the doc
    python -m benchmarks.proxy_table --render-only   # rebuild docs/proxy.md from the saved runs

Trains each zoo layer (compiled from its graph, as a search would) on every
default proxy task (`workers.evaluation.DEFAULT_TASKS`) at the default
budget (each task's recipe, unchanged) with two seeds, on the CPU with one
torch thread. Layers are built exactly as `workers.evaluation._factory`
builds a candidate (groups=32 on images, token_groups=4 on tokens).

Every finished run is appended to benchmarks/results/proxy_table.json at
once, so an interrupted run resumes where it stopped. The report,
docs/proxy.md, has the accuracy table (mean and both seeds), whether
identity scores clearly below BN-ReLU on the image tasks, and per task the
rank correlation (Spearman, Kendall) of the layer ranking between the two
seeds: how repeatable the proxy's ordering is, against the bar
STABLE_SPEARMAN, and which of the zoo's graph layers the table leaves out.
The "Reading" section is hand-written and kept across re-renders.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from scipy.stats import kendalltau, spearmanr

from primitives.zoo import get_layer
from workers.evaluation import DEFAULT_TASKS, EvalSpec, _factory
from workers.train import recipe_for, train

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "proxy_table.json"
DOC = ROOT / "docs" / "proxy.md"
LAYERS = ("bn_relu", "gn_relu", "layernorm", "rmsnorm", "evonorm_b0", "evonorm_b1", "evonorm_b2",
          "evonorm_s0", "evonorm_s1", "evonorm_s2", "batch_rms", "batch_channel", "dyt", "swish", "relu",
          "identity")
SEEDS = (0, 1)
# "Clearly below": identity's best seed under BN-ReLU's worst seed by this much accuracy.
CLEAR_MARGIN = 0.05
# "Rankings stable across two seeds": this table's bar for the seed-0 vs seed-1 Spearman correlation.
STABLE_SPEARMAN = 0.9


def _load() -> dict[str, Any]:
    if RESULTS.exists():
        data: dict[str, Any] = json.loads(RESULTS.read_text())
        return data
    return {"meta": {}, "runs": []}


def _save(data: dict[str, Any]) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=2) + "\n")


def run_all(layers: tuple[str, ...], seeds: tuple[int, ...]) -> dict[str, Any]:
    data = _load()
    data["meta"] = {
        "started": data["meta"].get("started") or datetime.now(UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__, "python": platform.python_version(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "device": "cpu",
        "steps": {t.objective: recipe_for(t.task, t.config, t.backbone).steps for t in DEFAULT_TASKS},
    }
    done = {(r["layer"], r["objective"], r["seed"]) for r in data["runs"]}
    # Layers are compiled eagerly (no torch.compile): what a search worker trains.
    for task in DEFAULT_TASKS:           # task-major: a partial run still gives whole tasks
        for name in layers:
            zoo = get_layer(name)
            assert zoo.graph is not None, name
            spec = EvalSpec(tasks=(task,), eps=zoo.eps)
            for seed in seeds:
                if (name, task.objective, seed) in done:
                    continue
                r = train(_factory(zoo.graph, spec, task.layout), task.backbone, task.task,
                          task.config, seed)
                run = {"layer": name, "objective": task.objective, "seed": seed,
                       "accuracy": r.val_accuracy, "loss": r.val_loss, "train_loss": r.train_loss,
                       "diverged": r.diverged, "reason": r.reason, "steps": r.steps,
                       "wall_s": round(r.wall_time_s, 2), "params": r.num_params}
                data["runs"].append(run)
                _save(data)
                print(f"{task.objective:24s} {name:12s} seed {seed}: acc {r.val_accuracy:.4f} "
                      f"loss {r.val_loss:.3f} {'DIVERGED ' + str(r.reason) if r.diverged else ''}"
                      f"({r.wall_time_s:.1f} s)", flush=True)
    data["meta"]["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    _save(data)
    return data


def _table(data: dict[str, Any]) -> dict[str, dict[str, dict[int, float]]]:
    """objective -> layer -> seed -> accuracy."""
    out: dict[str, dict[str, dict[int, float]]] = {}
    for r in data["runs"]:
        out.setdefault(r["objective"], {}).setdefault(r["layer"], {})[r["seed"]] = r["accuracy"]
    return out


def analyse(data: dict[str, Any]) -> dict[str, Any]:
    table = _table(data)
    objectives = [t.objective for t in DEFAULT_TASKS if t.objective in table]
    per_task: dict[str, Any] = {}
    for obj in objectives:
        rows = {layer: seeds for layer, seeds in table[obj].items() if len(seeds) == len(SEEDS)}
        names = [n for n in LAYERS if n in rows]
        a = [rows[n][SEEDS[0]] for n in names]
        b = [rows[n][SEEDS[1]] for n in names]
        info: dict[str, Any] = {"layers": len(names)}
        if len(names) >= 3:
            info["spearman"] = float(spearmanr(a, b).statistic)
            info["kendall"] = float(kendalltau(a, b).statistic)
        if "identity" in rows and "bn_relu" in rows:
            ident, bn = rows["identity"], rows["bn_relu"]
            info["identity_mean"] = statistics.mean(ident.values())
            info["bn_relu_mean"] = statistics.mean(bn.values())
            info["gap"] = info["bn_relu_mean"] - info["identity_mean"]
            info["identity_clearly_below"] = max(ident.values()) + CLEAR_MARGIN <= min(bn.values())
        info["ranking"] = sorted(names, key=lambda n: -statistics.mean(rows[n].values()))
        per_task[obj] = info
    return per_task


def print_table(data: dict[str, Any]) -> None:
    table = _table(data)
    objectives = [t.objective for t in DEFAULT_TASKS if t.objective in table]
    t = Table(title="Proxy accuracy (mean [seed 0, seed 1])")
    t.add_column("layer")
    for obj in objectives:
        t.add_column(obj, justify="right")
    for name in LAYERS:
        cells = []
        for obj in objectives:
            seeds = table[obj].get(name, {})
            cells.append(_cell(seeds) if seeds else "-")
        t.add_row(name, *cells)
    Console(width=160).print(t)


def _cell(seeds: dict[int, float]) -> str:
    values = [seeds[s] for s in SEEDS if s in seeds]
    return f"{statistics.mean(values):.3f} [{', '.join(f'{v:.3f}' for v in values)}]"


def render(data: dict[str, Any]) -> str:
    meta = data["meta"]
    table = _table(data)
    objectives = [t.objective for t in DEFAULT_TASKS if t.objective in table]
    stats = analyse(data)
    diverged = [r for r in data["runs"] if r["diverged"]]
    wall = sum(r["wall_s"] for r in data["runs"])
    lines = [
        "# Proxy discrimination",
        "",
        "Do the default proxy tasks (`workers.evaluation.DEFAULT_TASKS`) tell known layers apart,",
        "and is the ranking they give repeatable? Generated by `python -m benchmarks.proxy_table`",
        "(raw runs: `benchmarks/results/proxy_table.json`).",
        "",
        "## What was measured",
        "",
        f"- Machine: {meta.get('machine')}, {meta.get('cpu_count')} CPU cores shared with other jobs, "
        f"CPU only, torch {meta.get('torch')}, {meta.get('threads')} torch thread; "
        f"{len(data['runs'])} runs, {wall / 60:.0f} min of training in all.",
        "- Each zoo layer compiled from its graph (eager generated module, as a search worker trains it),",
        "  built as `workers.evaluation._factory` builds a candidate: GroupNorm-style statistics with",
        "  32 groups on images, 4 groups over the Transformer's 64 channels.",
        _coverage(),
        "- Each task's default recipe, unchanged (steps: "
        + ", ".join(f"{k} {v}" for k, v in meta.get("steps", {}).items())
        + "); seeds " + " and ".join(str(s) for s in SEEDS)
        + " (initialisation and data order). Validation accuracy: top-1 on the 1,000 shapes32",
        "  validation images; next-character accuracy on pydoc_chars.",
        "",
        "## Accuracy",
        "",
        "Mean of the two seeds, then [seed 0, seed 1]. A diverged run scores 0.",
        "",
        "| layer | " + " | ".join(f"`{o}`" for o in objectives) + " |",
        "|---|" + "---:|" * len(objectives),
    ]
    for name in LAYERS:
        cells = [_cell(table[o][name]) if name in table[o] else "-" for o in objectives]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Ranking by mean accuracy, best first:", ""]
    for obj in objectives:
        lines.append(f"- `{obj}`: " + " > ".join(stats[obj]["ranking"]))
    lines += ["", "## Identity against BN-ReLU", ""]
    for obj in objectives:
        s = stats[obj]
        if "gap" not in s:
            continue
        verdict = "clearly below" if s["identity_clearly_below"] else "NOT clearly below"
        line = (f"- `{obj}`: identity {s['identity_mean']:.3f}, bn_relu {s['bn_relu_mean']:.3f} "
                f"(gap {s['gap']:+.3f}): identity is {verdict} "
                f"(criterion: identity's best seed at least {CLEAR_MARGIN:.2f} under bn_relu's worst).")
        ident_runs = [r for r in data["runs"] if r["objective"] == obj and r["layer"] == "identity"]
        if ident_runs and all(r["diverged"] for r in ident_runs):
            line += (f" Identity diverged at every seed ({len(ident_runs)} of {len(ident_runs)}), so the gap "
                     f"says the un-normalized network does not survive this recipe's learning rate "
                     f"({_lr(obj)}), not how well it trains.")
        lines.append(line)
    lines += ["", "## Repeatability: the ranking across seeds", "",
              "Rank correlation between the layers' seed-0 and seed-1 accuracies, per task "
              "(1 = the same order).", "",
              "| task | layers | Spearman | Kendall |", "|---|---:|---:|---:|"]
    for obj in objectives:
        s = stats[obj]
        if "spearman" in s:
            lines.append(f"| `{obj}` | {s['layers']} | {s['spearman']:.2f} | {s['kendall']:.2f} |")
    ranked = [o for o in objectives if "spearman" in stats[o]]
    if ranked:
        def listed(objs: list[str]) -> str:
            return ", ".join(f"`{o}` ({stats[o]['spearman']:.2f})" for o in objs)

        met = [o for o in ranked if stats[o]["spearman"] >= STABLE_SPEARMAN]
        missed = [o for o in ranked if o not in met]
        steps = meta.get("steps", {})
        verdict = f"met on {listed(met)}" if met else "met on none"
        if missed:
            verdict += f"; not met on {listed(missed)} at " + ", ".join(
                f"{steps.get(o, '?')}" for o in missed) + " steps"
        lines += ["", f"Criterion \"rankings stable across two seeds\" (Spearman at least {STABLE_SPEARMAN}): "
                  f"{verdict}."]
    if diverged:
        lines += ["", "Diverged runs: " + "; ".join(
            f"{r['layer']} on `{r['objective']}` seed {r['seed']} ({r['reason']})" for r in diverged) + "."]
    lines += ["", "## Reading", "", "NOTES_PLACEHOLDER", ""]
    return "\n".join(lines)


def _coverage() -> str:
    """Which of the zoo's graph layers the table covers."""
    from primitives.zoo import ZOO

    graphs = [n for n, z in ZOO.items() if z.graph is not None]
    missing = [n for n in graphs if n not in LAYERS]
    no_graph = [n for n, z in ZOO.items() if z.graph is None]
    return (f"- Layers: {sum(1 for n in LAYERS if n in graphs)} of the zoo's {len(graphs)} graph layers"
            + (f"; not in the table: {', '.join(missing)}" if missing else "")
            + (f" ({', '.join(no_graph)} have no graph)" if no_graph else "") + ".")


def _lr(objective: str) -> str:
    """The peak learning rate of a task's recipe for its backbone (with `Recipe.backbone_recipe`)."""
    task = next((t for t in DEFAULT_TASKS if t.objective == objective), None)
    if task is None:
        return "?"
    return f"{recipe_for(task.task, task.config, task.backbone).lr:g}"


def write_doc(data: dict[str, Any], notes: str | None) -> None:
    text = render(data)
    previous = DOC.read_text() if DOC.exists() else ""
    if notes is None and "## Reading" in previous:
        # Keep the hand-written reading of the results across re-renders.
        notes = previous.split("## Reading", 1)[1].strip()
    text = text.replace("NOTES_PLACEHOLDER", notes or "(to be written after the run)")
    DOC.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--render-only", action="store_true", help="no training; rebuild the doc")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--objectives", default="", help="comma-separated subset, e.g. resnet:shapes32")
    parser.add_argument("--layers", default="", help="comma-separated subset of the zoo layers")
    parser.add_argument("--results", type=Path, default=None,
                        help="write runs here instead (run subsets in parallel, then merge)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    global RESULTS
    if args.results:
        RESULTS = args.results
    if args.objectives:
        global DEFAULT_TASKS
        wanted = set(args.objectives.split(","))
        DEFAULT_TASKS = tuple(t for t in DEFAULT_TASKS if t.objective in wanted)
    start = time.perf_counter()
    layers = tuple(args.layers.split(",")) if args.layers else LAYERS
    data = _load() if args.render_only else run_all(layers, SEEDS)
    print_table(data)
    for obj, s in analyse(data).items():
        print(obj, {k: v for k, v in s.items() if k != "ranking"})
    write_doc(data, None)
    print(f"wrote {DOC} ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()

"""The promotion funnel, measured: false rejections, rank agreement between rungs, economics, and
the fate of a search's candidates rung by rung.

    python -m benchmarks.funnel calibrate [--workers 2]   # zoo + planted layers x presets x 5 seeds
    python -m benchmarks.funnel tau [--survivors 40]      # rung 0 vs the top rung, and the economics
    python -m benchmarks.funnel fate --db runs/evonorm.db --search 1
    python -m benchmarks.funnel positional                # the positional rule on the old uniform stream
    python -m benchmarks.funnel report                    # tables from what is measured so far

Resumable: every measurement is one line of benchmarks/results/funnel_runs.jsonl,
keyed by what it measured; a rerun skips what is there, so an interrupted run
loses at most the measurements in flight. `report` writes the summary to
benchmarks/results/funnel.json. One torch thread per worker process.

calibrate: for each preset that runs on this machine (quick; the default
config, whose first task is ResNet-20, so its stress test runs on the deep
ResNet) and each search seed 0-4, every known-good zoo layer and the planted
bad ones go through what the search does before any candidate climbs: the
zero-training stages, then rung 0 (stress test, short runs, the quality
verdict). Target: no known-good layer rejected; the planted ones (and
identity on the deep ResNet) caught.

tau: the quick preset. The zoo's graph layers and a seeded stream of random
graphs (what a search's initializer draws: the paper's uniform graph, half of
them given one normalizer move, `init_normalize_prob` 0.5) run the
zero-training stages and rung 0; the first `--survivors` stream survivors
(distinct fingerprints, none a zoo layer's) and the zoo layers then run the
top rung (3 seeds, full steps, the held-out task). Kendall's tau between
each layer's rung-0 score and its top-rung estimate, per objective.
Economics on the same stream: the core-seconds the funnel spends per
candidate judged (every stage it reached, ASHA's promotions simulated with
the measured runs) against training every candidate at the top rung.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from evonorm_search.config import load_config
from primitives import Graph, formula
from primitives.mutation import random_graph
from primitives.zoo import ZOO
from workers.evaluation import screen
from workers.funnel import RungSpec, rung_steps, train_rung

RESULTS = Path(__file__).resolve().parent / "results"
RUNS = RESULTS / "funnel_runs.jsonl"
SUMMARY = RESULTS / "funnel.json"

KNOWN_GOOD = ["bn_relu", "gn_relu", "layernorm", "rmsnorm", "evonorm_b0", "evonorm_b1", "evonorm_b2",
              "evonorm_s0", "evonorm_s1", "evonorm_s2"]
PLANTED = {
    "exploding: exp(exp(x)) * x": Graph.build(("exp", ["x"]), ("exp", [4]), ("mul", [5, "x"])),
    "overflowing: exp(exp(exp(x)))": Graph.build(("exp", ["x"]), ("exp", [4]), ("exp", [5])),
    "constant: x * s/s - x * s/s": Graph.build(("std_layer", ["x"]), ("div", [4, 4]), ("mul", [5, "x"]),
                                               ("neg", [6]), ("add", [6, 7])),
    "identity: x": Graph.build(("add", ["x", "zero"])),
}
PRESETS = {"quick": ("quick", {}), "default": (None, {})}
SEEDS = range(5)


def _config(preset: str, seed: int) -> Any:
    name, overrides = PRESETS[preset]
    return load_config(name, {**overrides, "seed": seed})


def _rung0_steps(preset: str) -> dict[str, int]:
    """What rung 0 trains each objective for under the preset as it is now (`TaskConfig.min_steps_frac`
    may lift a task above the rung's fraction). Rows measured under another definition keep their own."""
    cfg = _config(preset, 0)
    return {t.objective: rung_steps(t, cfg.rungs[0].steps_frac) for t in cfg.eval_spec().tasks}


# Stages decided before any training run: their outcome does not depend on how long rung 0 trains,
# so a row measured under an earlier rung-0 definition still stands for them.
BEFORE_TRAINING = {"static", "numeric", "duplicate", "stability"}


def _layers() -> dict[str, Graph]:
    out = {}
    for n in KNOWN_GOOD:
        g = ZOO[n].graph
        assert g is not None
        out[n] = g
    return {**out, **PLANTED}


# -- the measurements (each a pure function of its key, run in a worker process) --------------


def rung0(preset: str, seed: int, name: str, graph_json: str) -> dict[str, Any]:
    """Zero-training stages, then rung 0 at the search seed `seed`."""
    torch.set_num_threads(1)
    cfg = _config(preset, seed)
    spec = cfg.eval_spec()
    r0 = cfg.rungs[0]
    t = time.perf_counter()
    s = screen(graph_json, spec)
    screen_s = time.perf_counter() - t
    row: dict[str, Any] = {"kind": "rung0", "preset": preset, "seed": seed, "layer": name,
                           "rung_steps": _rung0_steps(preset), "load_average_1m": round(os.getloadavg()[0], 2),
                           "formula": formula(Graph.loads(graph_json)), "fingerprint": s.fingerprint,
                           "screen_s": screen_s}
    if s.rejection:
        return {**row, "stage": str(s.rejection.stage), "reason": s.rejection.reason, "runs": []}
    r = train_rung(graph_json, spec, RungSpec(0, r0.steps_frac, tuple(range(seed, seed + r0.seeds))), s)
    return {**row, "stage": str(r.rejection.stage) if r.rejection else None,
            "reason": r.rejection.reason if r.rejection else None,
            "stage_s": {str(k): v for k, v in r.stage_seconds}, "wall_s": r.wall_s,
            "runs": [{"objective": x.objective, "seed": x.seed, "steps": x.steps, "accuracy": x.accuracy,
                      "diverged": x.diverged, "wall_s": x.wall_s} for x in r.runs]}


def top(preset: str, name: str, graph_json: str) -> dict[str, Any]:
    """The top rung (every seed, full steps, the held-out tasks) at search seed 0."""
    torch.set_num_threads(1)
    cfg = _config(preset, 0)
    spec = cfg.eval_spec()
    rt = cfg.rungs[-1]
    rung = RungSpec(len(cfg.rungs) - 1, rt.steps_frac, tuple(range(rt.seeds)), top=True)
    r = train_rung(graph_json, spec, rung)
    return {"kind": "top", "preset": preset, "layer": name, "formula": formula(Graph.loads(graph_json)),
            "stage": str(r.rejection.stage) if r.rejection else None,
            "reason": r.rejection.reason if r.rejection else None, "wall_s": r.wall_s,
            "runs": [{"objective": x.objective, "seed": x.seed, "steps": x.steps, "accuracy": x.accuracy,
                      "diverged": x.diverged, "heldout": x.heldout, "wall_s": x.wall_s} for x in r.runs]}


# -- bookkeeping -------------------------------------------------------------------------------


def _key(row: dict[str, Any]) -> str:
    if row["kind"] == "rung0":
        # Rows from before `rung_steps` was recorded were measured at a third of every task's steps.
        steps = ",".join(f"{o}={n}" for o, n in sorted(row.get("rung_steps", {}).items()))
        return f"rung0|{row['preset']}|{row['seed']}|{row['layer']}" + (f"|{steps}" if steps else "")
    return f"top|{row['preset']}|{row['layer']}"


def current(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rung-0 rows of the rung-0 definition in force (one per preset, seed and layer), falling back
    to an earlier definition's row where that rejected the layer before any training; and every other row."""
    now = {p: _rung0_steps(p) for p in PRESETS}
    best: dict[tuple[Any, ...], dict[str, Any]] = {}
    out = []
    for r in rows:
        if r["kind"] != "rung0":
            out.append(r)
            continue
        k = (r["preset"], r["seed"], r["layer"])
        if r.get("rung_steps") == now[r["preset"]] or (r["stage"] in BEFORE_TRAINING and k not in best):
            best[k] = r
    return out + list(best.values())


def load() -> list[dict[str, Any]]:
    if not RUNS.exists():
        return []
    return [json.loads(line) for line in RUNS.read_text().splitlines() if line.strip()]


def _run_all(jobs: list[tuple[Any, tuple[Any, ...]]], workers: int) -> Iterator[dict[str, Any]]:
    rows = current(load())
    # a rung-0 job is done when a row stands for it (this definition's, or one rejected before training)
    stands = {(r["preset"], r["seed"], r["layer"]) for r in rows if r["kind"] == "rung0"}
    done = {_key(r) for r in rows if r["kind"] == "top"}
    todo = [(fn, args) for fn, args in jobs
            if (args[:3] not in stands if fn is rung0 else _key(_probe_key(fn, args)) not in done)]
    print(f"{len(jobs) - len(todo)} measured already, {len(todo)} to go", flush=True)
    RUNS.parent.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(workers) as pool:
        futures = [pool.submit(fn, *args) for fn, args in todo]
        for f in as_completed(futures):
            row = f.result()
            row["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
            with RUNS.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            accs = " ".join(f"{x['accuracy']:.3f}" for x in row["runs"])
            print(f"{_key(row):60s} {row.get('stage') or 'passed':10s} {accs}", flush=True)
            yield row


def _probe_key(fn: Any, args: tuple[Any, ...]) -> dict[str, Any]:
    if fn is rung0:
        return {"kind": "rung0", "preset": args[0], "seed": args[1], "layer": args[2],
                "rung_steps": _rung0_steps(args[0])}
    return {"kind": "top", "preset": args[0], "layer": args[1]}


def calibrate(workers: int) -> None:
    jobs = [(rung0, (p, s, n, g.dumps())) for p in PRESETS for n, g in _layers().items() for s in SEEDS]
    for _ in _run_all(jobs, workers):
        pass


STREAM_NORMALIZE_PROB = 0.5   # the random draws of a discovery search (SearchConfig.init_normalize_prob)


def _stream(stream_seed: int) -> Iterator[tuple[str, Graph]]:
    """The random stream: what a search's initializer draws (the paper's uniform graph; half of the
    draws given one normalizer move), seeded, named `draw:<seed>:<k>`."""
    rng = random.Random(stream_seed)
    k = 0
    while True:
        yield f"draw:{stream_seed}:{k}", random_graph(rng, normalize_prob=STREAM_NORMALIZE_PROB)
        k += 1


STREAM_DRAWS = 528   # the stream's length for the economics: what the first tau study measured


def tau(survivors: int, workers: int, stream_seed: int = 0) -> None:
    zoo = {n: z.graph for n, z in ZOO.items() if z.graph is not None}
    jobs: list[tuple[Any, tuple[Any, ...]]] = [(rung0, ("quick", 0, f"zoo:{n}", g.dumps()))
                                               for n, g in zoo.items()]
    list(_run_all(jobs, workers))
    # the random stream, in chunks, until enough distinct survivors
    stream = _stream(stream_seed)
    graphs = {f"zoo:{n}": g for n, g in zoo.items()}
    drawn = 0
    while len(_survivors(_stream_rows(current(load())))) < survivors or drawn < STREAM_DRAWS:
        chunk = []
        for _ in range(STREAM_DRAWS if drawn == 0 else 4 * workers):
            name, g = next(stream)
            graphs[name] = g
            drawn += 1
            chunk.append((rung0, ("quick", 0, name, g.dumps())))
        list(_run_all(chunk, workers))
    rows = [r for r in current(load()) if r["kind"] == "rung0" and r["preset"] == "quick" and r["seed"] == 0]
    chosen = [r for r in rows if r["layer"].startswith("zoo:") and r["stage"] is None]
    chosen += _survivors(_stream_rows(rows))[:survivors]
    while not all(r["layer"] in graphs for r in chosen):   # a resumed run: draw the stream up to them
        name, g = next(stream)
        graphs[name] = g
    list(_run_all([(top, ("quick", r["layer"], graphs[r["layer"]].dumps())) for r in chosen], workers))


def _stream_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["kind"] == "rung0" and r["preset"] == "quick" and r["seed"] == 0
            and r["layer"].startswith("draw:")]


def _survivors(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stream layers that passed rung 0, first of each fingerprint, none a zoo layer's duplicate."""
    seen = {r["fingerprint"] for r in current(load()) if r["kind"] == "rung0" and r["layer"].startswith("zoo:")}
    out = []
    for r in sorted(rows, key=lambda r: int(r["layer"].rsplit(":", 1)[1])):
        if r["stage"] is None and r["fingerprint"] not in seen:
            seen.add(r["fingerprint"])
            out.append(r)
    return out


def positional() -> dict[str, Any]:
    """The numeric stage's positional rule on the uniform stream measured before it existed (rows
    `random:0:k`, the paper's generator at stream seed 0, judged by the older stages): where each
    of those candidates stops now, and the rung-0 core-seconds that no longer train."""
    spec = _config("quick", 0).eval_spec()
    old = {r["layer"]: r for r in load() if r["kind"] == "rung0" and r["layer"].startswith("random:0:")}
    rng = random.Random(0)
    moves: dict[str, int] = {}
    saved = 0.0
    for k in range(1 + max((int(n.rsplit(":", 1)[1]) for n in old), default=-1)):
        g = random_graph(rng)
        r = old.get(f"random:0:{k}")
        if r is None:
            continue
        assert formula(g) == r["formula"], (k, formula(g), r["formula"])   # the same stream
        s = screen(g.dumps(), spec)
        now = "numeric (positional)" if s.rejection and "positions" in s.rejection.reason else \
            str(s.rejection.stage) if s.rejection else "passes the zero-training stages"
        key = f"{r['stage'] or 'survived rung 0'} -> {now}"
        moves[key] = moves.get(key, 0) + 1
        if now == "numeric (positional)":
            saved += r.get("wall_s", 0.0)
    return {"candidates": len(old), "before_to_now": moves, "rung0_core_s_before": sum(r.get("wall_s", 0.0)
                                                                                  for r in old.values()),
            "rung0_core_s_no_longer_spent": saved}


# -- the report --------------------------------------------------------------------------------


def summarise() -> dict[str, Any]:
    from scipy.stats import kendalltau

    every = load()
    rows = current(every)
    # Calibration: the row of the rung-0 definition in force where measured, else the earlier one
    # (the row says which: `rung_steps`, absent for a third of every task's steps).
    by_key: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in every + [r for r in rows if r["kind"] == "rung0"]:
        if r["kind"] == "rung0" and not r["layer"].startswith(("zoo:", "random:", "draw:")):
            by_key[(r["preset"], r["seed"], r["layer"])] = r
    cal = list(by_key.values())
    calibration = []
    for p in PRESETS:
        for name in _layers():
            got = sorted((r for r in cal if r["preset"] == p and r["layer"] == name), key=lambda r: r["seed"])
            if got:
                calibration.append({
                    "preset": p, "layer": name, "known_good": name in KNOWN_GOOD,
                    "seeds": [r["seed"] for r in got],
                    "rung0_steps": [r.get("rung_steps", "a third of each task's") for r in got],
                    "rejected": [r["stage"] for r in got], "reasons": [r["reason"] for r in got],
                    "rung0_accuracy": [[round(x["accuracy"], 4) for x in r["runs"]] for r in got]})
    out: dict[str, Any] = {
        "meta": {"date": datetime.now(UTC).isoformat(timespec="seconds"), "torch": torch.__version__,
                 "python": platform.python_version(), "cpu_count": os.cpu_count(),
                 "load_average_1m": round(os.getloadavg()[0], 2), "measurements": len(rows)},
        "calibration": calibration,
        "false_rejections": {p: sum(1 for c in calibration if c["preset"] == p and c["known_good"]
                                    for st in c["rejected"] if st) for p in PRESETS},
        "planted_caught": {p: {c["layer"]: sum(st is not None for st in c["rejected"]) for c in calibration
                               if c["preset"] == p and not c["known_good"]} for p in PRESETS},
    }
    r0 = {r["layer"]: r for r in rows if r["kind"] == "rung0" and r["preset"] == "quick" and r["seed"] == 0
          and r["layer"].startswith(("zoo:", "draw:"))}
    tops = {r["layer"]: r for r in rows if r["kind"] == "top" and r["preset"] == "quick" and r["stage"] is None}
    cfg = _config("quick", 0)
    objectives = cfg.objectives
    pairs = [(r0[n], tops[n]) for n in tops if n in r0 and r0[n]["stage"] is None]
    taus = {}

    def independent(lo: dict[str, Any], x: dict[str, Any]) -> bool:
        # a top-rung run rung 0 did not already make (same objective, steps and seed: the search reuses it)
        return not any((y["objective"], y["steps"], y["seed"]) == (x["objective"], x["steps"], x["seed"])
                       for y in lo["runs"])

    for obj in objectives:
        a = [statistics.mean(x["accuracy"] for x in lo["runs"] if x["objective"] == obj) for lo, _ in pairs]
        b = [statistics.mean(x["accuracy"] for x in hi["runs"] if x["objective"] == obj) for _, hi in pairs]
        c = [statistics.mean(x["accuracy"] for x in hi["runs"] if x["objective"] == obj and independent(lo, x))
             for lo, hi in pairs]
        if len(a) >= 3:
            t, ti = kendalltau(a, b), kendalltau(a, c)
            taus[obj] = {"tau": float(t.statistic), "p": float(t.pvalue), "n": len(a),
                         "rung0_steps": sorted({x["steps"] for lo, _ in pairs for x in lo["runs"]
                                                if x["objective"] == obj}),
                         # against the top-rung runs rung 0 did not make (what the target is judged on
                         # when rung 0 trains a task for its full steps and the top rung reuses that run)
                         "tau_independent": float(ti.statistic), "p_independent": float(ti.pvalue)}
    out["tau"] = {"layers": len(pairs), "per_objective": taus,
                  "layers_measured": [{"layer": lo["layer"], "formula": lo["formula"],
                                       "rung0": {o: [x["accuracy"] for x in lo["runs"] if x["objective"] == o]
                                                 for o in objectives},
                                       "top": {o: [x["accuracy"] for x in hi["runs"] if x["objective"] == o]
                                               for o in objectives + [f"{t.backbone}:{t.task}"
                                                                      for t in cfg.heldout_tasks]}}
                                      for lo, hi in pairs]}
    out["economics"] = economics(rows, cfg)
    return out


def economics(rows: list[dict[str, Any]], cfg: Any) -> dict[str, Any]:
    """Core-seconds per candidate judged: the funnel vs training everything at the top rung."""
    stream = [r for r in rows if r["kind"] == "rung0" and r["preset"] == "quick" and r["seed"] == 0
              and r["layer"].startswith("draw:")]
    # the stream's unbroken prefix: every draw up to the first one not measured (under this definition)
    have = {int(r["layer"].rsplit(":", 1)[1]) for r in stream}
    end = next(k for k in range(len(have) + 1) if k not in have)
    stream = [r for r in stream if int(r["layer"].rsplit(":", 1)[1]) < end]
    tops = {r["layer"]: r for r in rows if r["kind"] == "top" and r["preset"] == "quick"}
    if not stream or not tops:
        return {}
    top_s = statistics.mean(r["wall_s"] for r in tops.values())
    # The funnel: every candidate's screen and rung 0 as measured; ASHA sends promote[0] of the
    # survivors to rung 1 (2 of the top's 3 seeds at full steps) and promote[1] of those to the top
    # (the third seed and the held-out runs): costs from the measured top-rung runs.
    on = sum(r["screen_s"] + r.get("wall_s", 0.0) for r in stream)
    # A climb reuses the runs rung 0 made (same objective, steps and seed), so their time is not paid twice.
    r0_runs = {(o, n, cfg.seed) for o, n in _rung0_steps("quick").items()}
    r1_share, r2_share = [], []
    for t in tops.values():
        new = [x for x in t["runs"] if (x["objective"], x["steps"], x["seed"]) not in r0_runs]
        lower = sum(x["wall_s"] for x in new if not x["heldout"] and x["seed"] < cfg.rungs[1].seeds)
        r1_share.append(lower / max(t["wall_s"], 1e-9))
        r2_share.append((sum(x["wall_s"] for x in new) - lower) / max(t["wall_s"], 1e-9))
    share1, share2 = statistics.mean(r1_share), statistics.mean(r2_share)
    survivors = [r for r in stream if r["stage"] is None]
    n1 = len(survivors) * cfg.rungs[0].promote
    n2 = n1 * cfg.rungs[1].promote
    on += n1 * share1 * top_s + n2 * share2 * top_s
    off = len(stream) * top_s
    # Funnel off but the cheap stages on: the zero-training stages and the stress test, then the top
    # rung for every candidate they let through (no short runs, no promotion).
    past_stress = [r for r in stream if r["stage"] in (None, "quality")]
    stressed = [r for r in stream if r["stage"] in (None, "quality", "stability")]
    cheap_off = (sum(r["screen_s"] for r in stream)
                 + sum(dict(r.get("stage_s", {})).get("stability", 0.0) for r in stressed)
                 + len(past_stress) * top_s)
    return {"candidates": len(stream), "survivors_of_rung0": len(survivors), "top_rung_s": top_s,
            "funnel_core_s": on, "top_rung_everything_core_s": off,
            "judged_per_core_hour_funnel": len(stream) / (on / 3600),
            "judged_per_core_hour_top": len(stream) / (off / 3600), "ratio": off / on,
            "top_rung_evaluations_per_core_hour_funnel": n2 / (on / 3600),
            "top_rung_evaluations_per_core_hour_top": 3600 / top_s,
            "cheap_stages_then_top_core_s": cheap_off,
            "judged_per_core_hour_cheap_stages_then_top": len(stream) / (cheap_off / 3600),
            "ratio_vs_cheap_stages_then_top": cheap_off / on,
            "note": "the top-rung cost of a candidate the funnel rejected is the survivors' mean top-rung "
                    "time; ASHA's promotions are simulated from the measured runs (preset fractions)"}


def fate(db: str, search_id: int) -> dict[str, Any]:
    from db import CandidateStatus, open_store
    from evonorm_search.funnel import compare

    store = open_store(db)
    rows = store.list_candidates(search_id, limit=None)
    evals = store.evaluations_for_candidates([c.id for c in rows])
    runs = {cid: {(f"{e.backbone}:{e.task}", e.steps, e.seed): e.metrics["accuracy"] for e in es}
            for cid, es in evals.items()}
    base = next((c for c in rows if (c.mutation or "").endswith(":bn_relu")), None)
    cfg = load_config(None, store.get_search(search_id).config)
    members = []
    for c in rows:
        if c.status is CandidateStatus.EVALUATED and c.reused_from is None:
            comps = {}
            if base is not None and c.id != base.id and c.rung is not None:
                for obj in cfg.objectives:
                    # pairs at the candidate's longest runs only, as the front's comparisons are
                    mine = runs.get(c.id, {})
                    longest = max((k[1] for k in mine if k[0] == obj), default=0)
                    mine = {k: v for k, v in mine.items() if k[0] != obj or k[1] == longest}
                    cmp = compare(mine, runs.get(base.id, {}), obj, "bn_relu")
                    if cmp:
                        comps[obj] = {"diff": cmp.diff.mean, "n": cmp.diff.n, "p": cmp.p, "beats": cmp.beats}
            members.append({"id": c.id, "formula": formula(Graph.loads(c.graph)), "origin": c.mutation,
                            "rung": c.rung, "verified": c.verified,
                            "estimates": [e.to_json() for e in c.estimates or ()], "vs_bn_relu": comps})
    stages: dict[str, int] = {}
    for c in rows:
        if c.status is CandidateStatus.REJECTED:
            stages[c.rejection_stage or "?"] = stages.get(c.rejection_stage or "?", 0) + 1
    return {"search": search_id, "candidates": len(rows), "rejected_by_stage": stages,
            "duplicates": sum(c.reused_from is not None for c in rows),
            "reached_rung": {r: sum(1 for m in members if (m["rung"] or 0) >= r)
                             for r in range(len(cfg.rungs))},
            "members": members}


def report(s: dict[str, Any]) -> None:
    console = Console(width=150)
    t = Table(title="False rejections: known-good layers rejected before climbing (5 search seeds)")
    for col in ("preset", "layer", "rejected at seeds 0-4", "rung-0 accuracy (seed 0)"):
        t.add_column(col)
    for c in s["calibration"]:
        rej = " ".join(st or "-" for st in c["rejected"])
        t.add_row(c["preset"], c["layer"], rej, " ".join(f"{a:.3f}" for a in (c["rung0_accuracy"] or [[]])[0]))
    console.print(t)
    console.print(f"false rejections: {s['false_rejections']}; planted caught (of 5): {s['planted_caught']}")
    if s.get("tau", {}).get("per_objective"):
        console.print(f"Kendall tau rung 0 vs top over {s['tau']['layers']} layers: "
                      + ", ".join(f"{o} (rung 0 {v['rung0_steps']} steps) {v['tau']:.2f} (p {v['p']:.2g}); "
                                  f"vs the top's runs rung 0 did not make {v['tau_independent']:.2f}"
                                  for o, v in s["tau"]["per_objective"].items()))
    if s.get("economics"):
        e = s["economics"]
        console.print(f"economics: {e['judged_per_core_hour_funnel']:.0f} judged/core-hour with the funnel vs "
                      f"{e['judged_per_core_hour_top']:.0f} training each at the top rung ({e['ratio']:.1f}x), "
                      f"{e['judged_per_core_hour_cheap_stages_then_top']:.0f} with the zero-training stages "
                      f"and the stress test then the top rung ({e['ratio_vs_cheap_stages_then_top']:.1f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["calibrate", "tau", "fate", "positional", "report"])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--survivors", type=int, default=40)
    parser.add_argument("--db", default="runs/evonorm.db")
    parser.add_argument("--search", type=int, default=1)
    args = parser.parse_args()
    if args.what == "calibrate":
        calibrate(args.workers)
    elif args.what == "tau":
        tau(args.survivors, args.workers)
    elif args.what == "positional":
        out = positional()
        path = RESULTS / "funnel_positional.json"
        path.write_text(json.dumps(out, indent=2) + "\n")
        print(json.dumps(out, indent=2))
        return
    elif args.what == "fate":
        out = fate(args.db, args.search)
        path = RESULTS / "funnel_fate.json"
        path.write_text(json.dumps(out, indent=2) + "\n")
        print(json.dumps({k: v for k, v in out.items() if k != "members"}, indent=2))
        print(f"wrote {path}")
        return
    summary = summarise()
    report(summary)
    SUMMARY.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {SUMMARY}")


if __name__ == "__main__":
    main()

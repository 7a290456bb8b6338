"""Proof of discovery: searches from scratch, evolution against random search at equal core-time,
and every found layer retrained at seeds no search ran at.

    python -m benchmarks.discovery search [--seeds 0 1 2 3 4] [--core-hours 0.75]
    python -m benchmarks.discovery retrain            # fresh seeds for what the searches verified
    python -m benchmarks.discovery winner-search [--core-hours 1.2] # the longer small-batch search
    python -m benchmarks.discovery winner-retrain     # its best against the zoo, fresh seeds
    python -m benchmarks.discovery report             # benchmarks/results/discovery.json, docs plots
    evonorm-search status <id> --db sqlite:///benchmarks/results/discovery.db

The searches are the product's own: `SearchRunner` with the real screening,
rejection, funnel and proxy training, one job at a time in-process (one torch
thread), stored in benchmarks/results/discovery.db. For each search seed,
evolution and random search run side by side, one core each, so both see the
same machine load; each stops proposing when its jobs have run
`--core-hours` (`SearchConfig.max_core_hours`), then finishes what is in
flight and verifies its best (the funnel's last climbs), so the two spend
the same compute up to those last climbs, which the report counts.

Nothing is seeded from the zoo: the initial population (and every draw of
random search) is the paper's uniform random graph, half of the draws given
one normalizer move (`init_normalize_prob` 0.5; the search space is the
same). BN-ReLU is in every search only as the baseline at the funnel's seeds,
never bred from. The tasks are the quick preset's (MobileNetV2 on shapes32,
the Transformer on pydoc_chars) with its held-out ResNet on digits.

Resumable: a search is found by name in the database and resumed where it
stopped (the runner's recovery: finished work is kept, in-flight candidates
run again); every retraining is one line of
benchmarks/results/discovery_runs.jsonl, skipped when rerun.

The winner: one longer search on the small_batch preset (MobileNetV2 on
shapes32 at its full batch and at micro-batches of 4; held out: ResNet-20 at
micro-batches of 2), seeded with the zoo layers the EvoNorm paper compares
at small batch, on a local Ray of 2 CPUs, until `--core-hours`. Its best
verified layer whose fingerprint is no zoo layer's is retrained at
RETRAIN_SEEDS on every objective beside BN-ReLU, GN-ReLU, LayerNorm and
EvoNorm-S0 (discovery_winner_runs.jsonl), compared paired, and exported to
docs/winner/.

Retraining: each search's verified front members that use a statistic
(normalizers), its best verified layer, and the baselines (BN-ReLU, GN-ReLU,
LayerNorm, EvoNorm-S0), every task and the held-out one, full steps, at
seeds RETRAIN_SEEDS: no search runs at them (a search at seed s trains at
seeds s, s+1, s+2).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DB_PATH = Path(os.environ.get("EVONORM_DISCOVERY_DB", RESULTS / "discovery.db"))   # a smoke run elsewhere
DB = f"sqlite:///{DB_PATH}"
RUNS = DB_PATH.with_name(DB_PATH.stem + "_runs.jsonl")
SUMMARY = RESULTS / "discovery.json"
PLOT = ROOT / "docs" / "img" / "discovery_hypervolume.png"

STRATEGIES = ("evolution", "random")
SEEDS = (0, 1, 2, 3, 4)
RETRAIN_SEEDS = (1000, 1001, 1002, 1003, 1004)
BASELINES = ("bn_relu", "gn_relu", "layernorm", "evonorm_s0")
CORE_HOURS = 0.75  # the two searches of a seed side by side, one core each: about 45 min on 2 cores


BREED_AFTER = 3   # evolution breeds once 3 evaluated layers (a tournament's worth) are in its population


def search_name(strategy: str, seed: int) -> str:
    # "b3": evolution breeds after 3 evaluated layers. The pilot, `discovery-evolution-s{seed}` (seeds
    # 0 and 1), waited for a full population of 8, which took 0.3 and 0.64 of its 0.8 core-hours: the
    # two arms proposed the same draws most of the time. Random search is the same in both designs.
    if strategy == "evolution":
        return f"discovery-evolution-b{BREED_AFTER}-s{seed}"
    return f"discovery-random-s{seed}"


def pilot_name(seed: int) -> str:
    return f"discovery-evolution-s{seed}"


def search_config(strategy: str, seed: int, core_hours: float) -> dict[str, Any]:
    from evonorm_search.config import load_config

    return load_config("quick", {
        "name": search_name(strategy, seed), "strategy": strategy, "seed": seed,
        "budget": 100_000, "max_core_hours": core_hours, "in_flight": 1,
        # The quick preset's population (8, tournaments of 3); with no zoo seeds, breeding starts once
        # 3 random draws have finished rung 0 (until then the two arms of a seed propose the same draws).
        "seed_with_zoo": [], "init_normalize_prob": 0.5, "normalize_prob": 0.25,
        "breed_after": BREED_AFTER,
    }).model_dump(mode="json")


# -- searches ------------------------------------------------------------------------------------


def _find(store: Any, name: str) -> Any:
    return next((s for s in store.list_searches(limit=None) if s.name == name), None)


def run_one(strategy: str, seed: int, core_hours: float) -> None:
    """One search, created or resumed by name; in its own process (one core)."""
    import torch

    from db import SearchStatus, open_store
    from evonorm_search.runner import SearchRunner
    from workers.executors import InProcessExecutor

    torch.set_num_threads(1)
    store = open_store(DB)
    name = search_name(strategy, seed)
    s = _find(store, name)
    if s is None:
        cfg = search_config(strategy, seed, core_hours)
        s = store.create_search(name, cfg, seed=seed)
    if s.status is SearchStatus.FINISHED:
        print(f"{name}: finished already", flush=True)
        return
    # A killed run is still `running` with its dead runner's lease: the runner takes it over.
    t = time.perf_counter()
    last = [0.0]

    def progress(p: Any) -> None:
        if time.perf_counter() - last[0] > 30:
            last[0] = time.perf_counter()
            print(f"{name}: {p.created} proposed, {p.evaluated} evaluated, {p.rejected} rejected, "
                  f"{p.verified} verified, {p.core_s / 3600:.2f}/{core_hours} core-h", flush=True)

    done = SearchRunner(store, s.id, InProcessExecutor(), on_progress=progress).run()
    print(f"{name}: {done.status.value} in {time.perf_counter() - t:.0f} s, {done.core_s / 3600:.2f} core-h",
          flush=True)


def search(seeds: list[int], core_hours: float, parallel: int = 2) -> None:
    """The unfinished searches of the seeds, `parallel` at a time (one process, one core each), in seed
    order: a seed's two arms side by side when both are to run, so both see the same machine load."""
    from db import SearchStatus, open_store

    store = open_store(DB)
    todo = [(st, seed) for seed in seeds for st in STRATEGIES
            if (s := _find(store, search_name(st, seed))) is None or s.status is not SearchStatus.FINISHED]
    running: list[tuple[str, subprocess.Popen[bytes]]] = []
    failed = []
    while todo or running:
        while todo and len(running) < parallel:
            st, seed = todo.pop(0)
            running.append((search_name(st, seed), subprocess.Popen(
                [sys.executable, "-m", "benchmarks.discovery", "one", "--strategy", st, "--seed", str(seed),
                 "--core-hours", str(core_hours)], cwd=ROOT)))
        time.sleep(5)
        for name, p in [r for r in running if r[1].poll() is not None]:
            running.remove((name, p))
            if p.returncode:
                failed.append(f"{name} exited with {p.returncode}")
    if failed:
        raise SystemExit("; ".join(failed))


# -- retraining ----------------------------------------------------------------------------------


def _uses_statistic(graph_json: str) -> bool:
    from primitives import Graph
    from primitives.ops import Kind, get_op

    g = Graph.loads(graph_json)
    return any(get_op(g.node(i).op).kind is Kind.AGGREGATE for i in g.live_ids() if i >= 4)


def chosen_layers(store: Any) -> dict[str, str]:
    """name -> graph json: per finished search, its verified front normalizers and its best verified
    layer; and the baselines."""
    from db import CandidateStatus, SearchStatus
    from evonorm_search.pareto import maximised_mean, nondominated
    from primitives.zoo import ZOO

    out = {f"zoo:{n}": ZOO[n].graph.dumps() for n in BASELINES}   # type: ignore[union-attr]
    study = {search_name(st, seed) for st in STRATEGIES for seed in SEEDS}
    for s in store.list_searches(limit=None):
        if s.name not in study or s.status is not SearchStatus.FINISHED:
            continue
        cfg = s.config
        maximise = [True] * len(cfg["tasks"])
        rows = [c for c in store.list_candidates(s.id, status=CandidateStatus.EVALUATED, limit=None)
                if c.verified and c.reused_from is None and not (c.mutation or "").startswith("baseline:")]
        if not rows:
            continue
        points = [list(c.objectives[: len(maximise)]) for c in rows]
        front = [rows[i] for i in nondominated(points, maximise)]
        best = max(rows, key=lambda c: maximised_mean(c.objectives[: len(maximise)], maximise))
        for c in {*(c for c in front if _uses_statistic(c.graph)), best}:
            out[f"{s.name}:{c.id}"] = c.graph
    return out


def retrain_one(name: str, graph_json: str, preset: str = "quick",
                seeds: tuple[int, ...] = RETRAIN_SEEDS) -> dict[str, Any]:
    import torch

    from evonorm_search.config import load_config
    from primitives import Graph, formula
    from workers.funnel import RungSpec, train_rung

    torch.set_num_threads(1)
    cfg = load_config(preset, {})
    spec = cfg.eval_spec()
    r = train_rung(graph_json, spec, RungSpec(len(cfg.rungs) - 1, 1.0, seeds, top=True))
    return {"layer": name, "formula": formula(Graph.loads(graph_json)), "graph": graph_json,
            "rejection": None if r.rejection is None else f"{r.rejection.stage}: {r.rejection.reason}",
            "wall_s": r.wall_s, "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "runs": [{"objective": x.objective, "seed": x.seed, "steps": x.steps, "accuracy": x.accuracy,
                      "diverged": x.diverged, "heldout": x.heldout} for x in r.runs]}


def _merged(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One layer's row from its per-seed rows (the top rung rejects nothing but errors, so a seed's
    runs do not depend on the others')."""
    rejections = [p["rejection"] for p in parts if p["rejection"]]
    return {**parts[0], "rejection": "; ".join(rejections) or None,
            "wall_s": sum(p["wall_s"] for p in parts),
            "measured_at": max(p["measured_at"] for p in parts),
            "runs": sorted((x for p in parts for x in p["runs"]), key=lambda x: (x["objective"], x["seed"]))}


def load_runs(path: Path = RUNS) -> dict[str, dict[str, Any]]:
    if not path.exists():
        return {}
    return {r["layer"]: r for r in map(json.loads, path.read_text().splitlines()) if r}


def retrain(workers: int, layers: dict[str, str] | None = None, preset: str = "quick",
            runs_path: Path = RUNS) -> None:
    """Each layer at every RETRAIN_SEED, one job per (layer, seed) so that the pool stays busy to
    the end (5 layers on 2 workers would leave one idle for the last layer); a layer's line is
    written when all its seeds are in, so an interrupted run redoes only unfinished layers."""
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from db import open_store

    layers = chosen_layers(open_store(DB)) if layers is None else layers
    done = load_runs(runs_path)
    todo = {n: g for n, g in layers.items() if n not in done}
    print(f"{len(layers) - len(todo)} retrained already, {len(todo)} to go", flush=True)
    # The same graph found by two searches (the two arms of a seed share their first draws) trains
    # once; each name gets the row, marked with the name it was trained under.
    by_graph: dict[str, list[str]] = {}
    for n, g in todo.items():
        by_graph.setdefault(g, []).append(n)
    parts: dict[str, list[dict[str, Any]]] = {g: [] for g in by_graph}
    with ProcessPoolExecutor(workers) as pool:
        futures = {pool.submit(retrain_one, names[0], g, preset, (seed,)): g
                   for g, names in by_graph.items() for seed in RETRAIN_SEEDS}
        for f in as_completed(futures):
            g = futures[f]
            parts[g].append(f.result())
            if len(parts[g]) < len(RETRAIN_SEEDS):
                continue
            row, names = _merged(parts[g]), by_graph[g]
            with runs_path.open("a") as fh:
                for n in names:
                    fh.write(json.dumps({**row, "layer": n, "trained_as": names[0]}) + "\n")
            print(f"{row['layer']:40s} {row['formula'][:60]:60s} {row['wall_s']:.0f} s", flush=True)


# -- the report ----------------------------------------------------------------------------------


def _scores(row: dict[str, Any], objective: str) -> dict[int, float]:
    """seed -> accuracy (a diverged run counts 0: instability is part of a layer)."""
    return {x["seed"]: (0.0 if x["diverged"] else x["accuracy"])
            for x in row["runs"] if x["objective"] == objective}


def paired(a: dict[int, float], b: dict[int, float]) -> dict[str, Any]:
    """Paired difference a - b over the seeds both have: mean, stderr, n, one-sided p (a > b)."""
    from evonorm_search.funnel import estimate, paired_p

    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds]
    if not diffs:
        return {"n": 0}
    e = estimate(diffs)
    return {"diff": e.mean, "stderr": e.stderr, "n": e.n, "p": paired_p(diffs)}


def curves(store: Any, search_id: int, objectives: int) -> list[tuple[float, float]]:
    """(cumulative worker core-hours, hypervolume of the search's own layers' current estimates) after
    each recorded result, from the event log (each result's event carries its job's worker seconds)."""
    from evonorm_search.pareto import hypervolume

    maximise = [True] * objectives
    baseline_ids = {c.id for c in store.list_candidates(search_id, limit=None)
                    if (c.mutation or "").startswith("baseline:")}
    current: dict[int, list[float]] = {}
    spent = 0.0
    out = []
    after = 0
    while True:
        events = store.events_after(after, search_id=search_id, limit=5000)
        if not events:
            break
        after = events[-1].id
        for e in events:
            spent += float(e.payload.get("core_s") or 0.0)
            objs = e.payload.get("objectives")
            if e.candidate_id is not None and e.candidate_id not in baseline_ids and objs \
                    and e.payload.get("status", "evaluated") == "evaluated":
                current[e.candidate_id] = list(objs[:objectives])
            if "core_s" in e.payload:
                out.append((spent / 3600, hypervolume(list(current.values()), maximise)))
    return out


def summarise() -> dict[str, Any]:
    from db import SearchStatus, open_store
    from evonorm_search.pareto import maximised_mean

    store = open_store(DB)
    runs = load_runs()
    study = {search_name(st, seed) for st in STRATEGIES for seed in SEEDS}
    objectives = ["mobilenet:shapes32", "transformer:pydoc_chars"]
    heldout = "resnet:digits"
    base = runs.get("zoo:bn_relu")
    searches = []
    for s in sorted(store.list_searches(limit=None), key=lambda s: s.name):
        if not s.name.startswith("discovery-"):
            continue   # the winner search is summarised on its own
        entry: dict[str, Any] = {"name": s.name, "id": s.id, "strategy": s.config["strategy"],
                                 "pilot": s.name not in study,   # not in the comparison: see search_name
                                 "breed_after": s.config.get("breed_after"),
                                 "seed": s.config["seed"], "status": s.status.value,
                                 "core_hours": s.core_s / 3600, "candidates": s.num_candidates,
                                 "evaluated": s.num_evaluated, "rejected": s.num_rejected,
                                 "curve": curves(store, s.id, len(objectives))}
        mine = {n: r for n, r in runs.items() if n.startswith(f"{s.name}:")}
        layers = []
        for n, r in mine.items():
            layer = {"layer": n, "formula": r["formula"], "normalizer": _uses_statistic(r["graph"]),
                     "rejection": r["rejection"],
                     "retrained": {o: statistics.fmean(v.values()) if (v := _scores(r, o)) else None
                                   for o in [*objectives, heldout]}}
            if base is not None:
                layer["vs_bn_relu"] = {o: paired(_scores(r, o), _scores(base, o))
                                       for o in [*objectives, heldout]}
            layers.append(layer)
        entry["layers"] = layers
        # the search's best verified layer (its own estimates decide), and its retrained scores
        best = None
        for n in mine:
            cid = int(n.rsplit(":", 1)[1])
            c = store.get_candidate(cid)
            key = maximised_mean((c.objectives or ())[: len(objectives)], [True] * len(objectives))
            if best is None or key > best[0]:
                best = (key, n)
        entry["best"] = best[1] if best else None
        norm_ok = [la for la in layers if la["normalizer"] and la.get("vs_bn_relu")
                   and (d := la["vs_bn_relu"]["mobilenet:shapes32"]).get("n") and d["diff"] >= -0.01]
        entry["rediscovered"] = bool(norm_ok) if s.status is SearchStatus.FINISHED else None
        searches.append(entry)
    out: dict[str, Any] = {
        "meta": {"date": datetime.now(UTC).isoformat(timespec="seconds"), "python": platform.python_version(),
                 "cpu_count": os.cpu_count(), "retrain_seeds": list(RETRAIN_SEEDS),
                 "load_average_1m": round(os.getloadavg()[0], 2)},
        "baselines": {n: {o: statistics.fmean(v.values()) if (v := _scores(r, o)) else None
                          for o in [*objectives, heldout]}
                      for n, r in runs.items() if n.startswith("zoo:")},
        "searches": searches,
    }
    out["evolution_vs_random"] = versus([s for s in searches if not s["pilot"]], runs, heldout)
    out["hypervolume_spread"] = spread(out)
    out["winner"] = winner_summary(store)
    return out


def versus(searches: list[dict[str, Any]], runs: dict[str, dict[str, Any]], heldout: str,
           objectives: tuple[str, ...] = ("mobilenet:shapes32", "transformer:pydoc_chars")) -> dict[str, Any]:
    """Per seed: the retrained held-out score of each strategy's best verified layer; sign test.
    The same for each searched objective (retrained at fresh seeds too) under "by_objective": the
    held-out ResNet on digits sits near its ceiling, so those say more about what each strategy found."""
    from scipy.stats import binomtest

    by = {(s["strategy"], s["seed"]): s for s in searches}

    def compare(objective: str) -> dict[str, Any]:
        pairs = []
        for seed in sorted({s["seed"] for s in searches}):
            e, r = by.get(("evolution", seed)), by.get(("random", seed))
            if not (e and r and e["best"] and r["best"] and e["best"] in runs and r["best"] in runs):
                continue
            se, sr = _scores(runs[e["best"]], objective), _scores(runs[r["best"]], objective)
            pairs.append({"seed": seed, "evolution": statistics.fmean(se.values()),
                          "random": statistics.fmean(sr.values()), "paired": paired(se, sr)})
        gaps = [p["evolution"] - p["random"] for p in pairs]
        wins = sum(g > 0 for g in gaps)
        losses = sum(g < 0 for g in gaps)
        out: dict[str, Any] = {"pairs": pairs, "wins": wins, "losses": losses}
        if gaps:
            out["mean_gap"] = statistics.fmean(gaps)
            out["gap_stderr"] = statistics.stdev(gaps) / len(gaps) ** 0.5 if len(gaps) > 1 else None
            out["sign_test_p"] = binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue \
                if wins + losses else None
        return out

    return {"objective": heldout, **compare(heldout),
            "by_objective": {o: {k: v for k, v in compare(o).items() if k != "pairs"} for o in objectives}}


# -- the winner: a longer small-batch search, its best retrained against the zoo -------------------

# 1.2 core-hours: what one 3-hour session of this machine allows for the search plus the winner's
# retraining (about 1.75 core-hours). A 3-core-hour try (`winner-small_batch`, search 14) was
# cancelled after 0.01 so that both fit; a longer one takes a new name, e.g. `--core-hours 3`.
WINNER_CORE_HOURS = 1.2
WINNER_RUNS = DB_PATH.with_name(DB_PATH.stem + "_winner_runs.jsonl")
WINNER_DIR = ROOT / "docs" / "winner"


def winner_name(core_hours: float = WINNER_CORE_HOURS) -> str:
    return f"winner-small_batch-{core_hours:g}h"


WINNER = winner_name()


def winner_config(core_hours: float) -> dict[str, Any]:
    from evonorm_search.config import load_config

    # The preset as a user runs it (zoo seeds included: the winner must differ from them by
    # fingerprint), with a compute budget instead of a candidate count, and a larger population.
    return load_config("small_batch", {
        "name": winner_name(core_hours), "budget": 100_000, "max_core_hours": core_hours, "in_flight": 2,
        "population_size": 16, "tournament_size": 4, "init_normalize_prob": 0.5, "normalize_prob": 0.25,
    }).model_dump(mode="json")


def winner_search(core_hours: float) -> None:
    """The longer search, created or resumed by name, on a local Ray of 2 CPUs."""
    from db import SearchStatus, open_store
    from evonorm_search.runner import SearchRunner
    from workers.executors import make_executor

    store = open_store(DB)
    name = winner_name(core_hours)   # the report reads WINNER, the default budget's search
    s = _find(store, name) or store.create_search(name, winner_config(core_hours), seed=0)
    if s.status is SearchStatus.FINISHED:
        print(f"{name}: finished already", flush=True)
        return
    last = [0.0]

    def progress(p: Any) -> None:
        if time.perf_counter() - last[0] > 30:
            last[0] = time.perf_counter()
            print(f"{name}: {p.created} proposed, {p.evaluated} evaluated, {p.rejected} rejected, "
                  f"{p.verified} verified, {p.core_s / 3600:.2f}/{s.config['max_core_hours']} core-h",
                  flush=True)

    done = SearchRunner(store, s.id, make_executor("ray", local_cpus=2), on_progress=progress).run()
    print(f"{name}: {done.status.value}, {done.core_s / 3600:.2f} core-h", flush=True)


def winner_choice(store: Any) -> Any:
    """The finished winner search's best verified layer (mean of its objectives' estimates) that is no
    zoo layer: not a seed, not a baseline, and no zoo layer's fingerprint. None if there is none."""
    from db import CandidateStatus, SearchStatus
    from evonorm_search.config import load_config
    from evonorm_search.pareto import maximised_mean
    from primitives.zoo import ZOO
    from workers.evaluation import screen

    s = _find(store, WINNER)
    if s is None or s.status is not SearchStatus.FINISHED:
        return None
    spec = load_config(None, s.config).eval_spec()
    zoo = {screen(z.graph, spec).fingerprint for z in ZOO.values() if z.graph is not None}
    n = len(s.config["tasks"])
    rows = [c for c in store.list_candidates(s.id, status=CandidateStatus.EVALUATED, limit=None)
            if c.verified and c.reused_from is None and c.fingerprint not in zoo
            and not (c.mutation or "").startswith(("baseline:", "zoo:"))]
    return max(rows, key=lambda c: maximised_mean((c.objectives or ())[:n], [True] * n), default=None)


def winner_retrain(workers: int) -> None:
    from db import open_store
    from primitives.zoo import ZOO

    c = winner_choice(open_store(DB))
    if c is None:
        raise SystemExit(f"{WINNER}: not finished, or no verified layer outside the zoo")
    layers = {f"winner:{c.id}": c.graph}
    layers |= {f"zoo:{n}": ZOO[n].graph.dumps() for n in BASELINES}   # type: ignore[union-attr]
    retrain(workers, layers, preset="small_batch", runs_path=WINNER_RUNS)


def winner_summary(store: Any) -> dict[str, Any] | None:
    """The winner against each baseline on every objective (paired over RETRAIN_SEEDS), the issue's
    target checked, and the layer exported to docs/winner/."""
    from evonorm_search.config import load_config
    from primitives import Graph, formula
    from primitives.export import export_bytes

    c = winner_choice(store)
    runs = load_runs(WINNER_RUNS)
    if c is None or f"winner:{c.id}" not in runs:
        return None
    s = _find(store, WINNER)
    cfg = load_config(None, s.config)
    objectives = [t.objective for t in cfg.tasks] + [t.objective for t in cfg.heldout_tasks]
    mine = runs[f"winner:{c.id}"]
    table = {}
    for o in objectives:
        row: dict[str, Any] = {"winner": statistics.fmean(v.values()) if (v := _scores(mine, o)) else None}
        for b in BASELINES:
            if f"zoo:{b}" in runs:
                sb = _scores(runs[f"zoo:{b}"], o)
                row[b] = {"mean": statistics.fmean(sb.values()) if sb else None,
                          "winner_minus": paired(_scores(mine, o), sb)}
        table[o] = row
    small = [o for o in objectives if "@mb" in o]
    normal = [o for o in objectives if "@mb" not in o]
    beats_all_small = all((d := table[o][b]["winner_minus"]).get("p", 1.0) < 0.05 and d["diff"] > 0
                          for o in small for b in BASELINES if b in table[o])
    near_bn = all((d := table[o]["bn_relu"]["winner_minus"]).get("n") and d["diff"] >= -d["stderr"]
                  for o in normal if "bn_relu" in table[o])
    graph = Graph.loads(c.graph)
    WINNER_DIR.mkdir(parents=True, exist_ok=True)
    path = WINNER_DIR / "discovered_small_batch.py"
    path.write_bytes(export_bytes(graph, "py", name="DiscoveredSmallBatch", layout="nchw"))
    return {"search": s.id, "candidate": c.id, "formula": formula(graph), "fingerprint": c.fingerprint,
            "mutation": c.mutation, "core_hours": s.core_s / 3600, "candidates": s.num_candidates,
            "retrain_seeds": list(RETRAIN_SEEDS), "objectives": table,
            "target": {"beats_every_zoo_layer_at_small_batch": beats_all_small,
                       "within_one_stderr_of_bn_relu_at_normal_batch": near_bn},
            "exported": str(path.relative_to(ROOT))}


def _on_grid(curve: list[list[float]], grid: list[float]) -> list[float]:
    """A step curve (core-hours, hypervolume) read at each grid point (the last value at or before it)."""
    out, j, v = [], 0, 0.0
    for x in grid:
        while j < len(curve) and curve[j][0] <= x:
            v = curve[j][1]
            j += 1
        out.append(v)
    return out


def spread(summary: dict[str, Any], points: int = 76) -> dict[str, Any]:
    """Per strategy, the comparison searches' hypervolume on a common core-hour grid: median, min, max.
    The grid ends at the budget every search reached, so no curve is extended past its end."""
    study = [s for s in summary["searches"] if not s["pilot"] and s["curve"] and s["status"] == "finished"]
    if not study:
        return {}
    end = min(s["curve"][-1][0] for s in study)
    grid = [end * i / (points - 1) for i in range(points)]
    out: dict[str, Any] = {"core_hours": grid}
    for strategy in STRATEGIES:
        ys = [_on_grid(s["curve"], grid) for s in study if s["strategy"] == strategy]
        if ys:
            cols = list(zip(*ys, strict=True))
            out[strategy] = {"searches": len(ys), "median": [statistics.median(c) for c in cols],
                             "min": [min(c) for c in cols], "max": [max(c) for c in cols]}
    return out


def plot(summary: dict[str, Any]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    colors = {"evolution": "tab:blue", "random": "tab:orange"}
    for s in (s for s in summary["searches"] if not s["pilot"] and s["curve"]):
        x, y = zip(*s["curve"], strict=True)
        ax.step(x, y, where="post", color=colors[s["strategy"]], alpha=0.25, linewidth=0.8)
    band = summary.get("hypervolume_spread") or {}
    for strategy in STRATEGIES:
        if strategy in band:
            b = band[strategy]
            ax.fill_between(band["core_hours"], b["min"], b["max"], step="post", color=colors[strategy],
                            alpha=0.15)
            ax.step(band["core_hours"], b["median"], where="post", color=colors[strategy], linewidth=2,
                    label=f"{strategy}: median of {b['searches']} searches, band min-max")
    ax.set_xlabel("worker core-hours")
    ax.set_ylabel("hypervolume (MobileNet x Transformer accuracy)")
    ax.set_title("Discovery searches: hypervolume of their own layers vs compute")
    if band:
        ax.legend(loc="lower right", fontsize=8)
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=110)


def _pm(d: dict[str, Any], always_p: bool = False) -> str:
    """A paired difference as 'diff ± stderr' (p when it is small enough to matter, or always)."""
    if not d.get("n"):
        return "-"
    out = f"{d['diff']:+.3f}"
    if d.get("stderr") is not None:
        out += f" ± {d['stderr']:.3f}"
    if d.get("p") is not None and (d["p"] < 0.05 or always_p):
        out += f", p {d['p']:.3f}" if d["p"] >= 0.001 else ", p < 0.001"
    return out


def tables(summary: dict[str, Any]) -> str:
    """The markdown tables docs/discovery.md quotes, from discovery.json alone (so every number there
    can be traced back to it)."""
    objectives = ["mobilenet:shapes32", "transformer:pydoc_chars", "resnet:digits"]
    study = sorted((s for s in summary["searches"] if not s["pilot"]),
                   key=lambda s: (s["strategy"], s["seed"]))

    def row(*cells: Any) -> str:
        return "| " + " | ".join(str(c) for c in cells) + " |"

    lines = [row("search (id)", "core-hours", "candidates", "evaluated", "rejected", "layers retrained",
                 "of them normalizers"), "|---|---:|---:|---:|---:|---:|---:|"]
    for s in study:
        lines.append(row(f"{s['strategy']} s{s['seed']} ({s['id']})", f"{s['core_hours']:.2f}", s["candidates"],
                         s["evaluated"], s["rejected"], len(s["layers"]),
                         sum(la["normalizer"] for la in s["layers"])))
    lines += ["", row("baseline (retrained)", *objectives), "|---|" + "---:|" * len(objectives)]
    for n, b in sorted(summary["baselines"].items()):
        lines.append(row(n, *(f"{b[o]:.3f}" if b[o] is not None else "-" for o in objectives)))
    # Rediscovery: each search's normalizer that retrains best on the image objective, against BN-ReLU.
    lines += ["", row("search", "its best-retraining normalizer", "MobileNet (vs BN-ReLU)",
                      "Transformer (vs BN-ReLU)", "held out ResNet (vs BN-ReLU)",
                      "within 1 point of BN-ReLU on MobileNet"), "|---|---|---:|---:|---:|---|"]
    for s in study:
        norms = [la for la in s["layers"] if la["normalizer"] and la.get("vs_bn_relu")
                 and la["vs_bn_relu"][objectives[0]].get("n")]
        if not norms:
            lines.append(row(f"{s['strategy']} s{s['seed']}", "none retrained", "-", "-", "-", "no"))
            continue
        la = max(norms, key=lambda la: la["vs_bn_relu"][objectives[0]]["diff"])
        lines.append(row(f"{s['strategy']} s{s['seed']}", f"`{la['formula']}`",
                         *(f"{la['retrained'][o]:.3f} ({_pm(la['vs_bn_relu'][o])})" for o in objectives),
                         "**yes**" if s["rediscovered"] else "no"))
    lines.append("")
    for strategy in STRATEGIES:
        got = [s["rediscovered"] for s in study if s["strategy"] == strategy]
        lines.append(f"{strategy}: {sum(bool(g) for g in got)} of {len(got)} searches rediscovered  ")
    # Evolution vs random: the best verified layer of each, its retrained held-out score.
    v = summary["evolution_vs_random"]
    by = {(s["strategy"], s["seed"]): s for s in study}
    formulas = {la["layer"]: la["formula"] for s in study for la in s["layers"]}
    lines += ["", row("seed", "evolution's best verified layer", "held out", "random's best verified layer",
                      "held out", "evolution - random (paired)"), "|---:|---|---:|---|---:|---:|"]
    for p in v["pairs"]:
        e, r = by[("evolution", p["seed"])]["best"], by[("random", p["seed"])]["best"]
        lines.append(row(p["seed"], f"`{formulas.get(e, e)}`", f"{p['evolution']:.3f}",
                         f"`{formulas.get(r, r)}`", f"{p['random']:.3f}", _pm(p["paired"])))
    if v.get("mean_gap") is not None:
        ties = len(v["pairs"]) - v["wins"] - v["losses"]
        text = f"\nwins {v['wins']}, losses {v['losses']}, ties {ties}; mean gap {v['mean_gap']:+.4f}"
        if v.get("gap_stderr") is not None:
            text += f" ± {v['gap_stderr']:.4f}"
        if v.get("sign_test_p") is not None:
            text += f"; one-sided sign test p {v['sign_test_p']:.3f}"
        lines.append(text)
    for o, c in v.get("by_objective", {}).items():
        if c.get("mean_gap") is not None:
            se = f" ± {c['gap_stderr']:.4f}" if c.get("gap_stderr") is not None else ""
            p = f", sign test p {c['sign_test_p']:.3f}" if c.get("sign_test_p") is not None else ""
            lines.append(f"\n{o} (retrained): wins {c['wins']}, losses {c['losses']}, "
                         f"mean gap {c['mean_gap']:+.4f}{se}{p}")
    w = summary.get("winner")
    if w:
        # The winner against each zoo layer, every objective: means, and winner - zoo paired.
        lines += ["", f"winner: `{w['formula']}` (candidate {w['candidate']} of search {w['search']})", "",
                  row("objective", "winner", *(f"{b} (winner - {b})" for b in BASELINES)),
                  "|---|---:|" + "---:|" * len(BASELINES)]
        for o, t in w["objectives"].items():
            cells = [f"{t[b]['mean']:.3f} ({_pm(t[b]['winner_minus'], always_p=True)})" if b in t else "-"
                     for b in BASELINES]
            lines.append(row(o, f"{t['winner']:.3f}" if t["winner"] is not None else "-", *cells))
        lines.append(f"\ntarget: {w['target']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["search", "one", "retrain", "winner-search", "winner-retrain",
                                         "report"])
    parser.add_argument("--seeds", type=int, nargs="*", default=list(SEEDS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strategy", choices=STRATEGIES, default="evolution")
    parser.add_argument("--core-hours", type=float, default=None,
                        help=f"per search (default {CORE_HOURS}; winner-search {WINNER_CORE_HOURS})")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    core_hours = args.core_hours or (WINNER_CORE_HOURS if args.what == "winner-search" else CORE_HOURS)
    if args.what == "one":
        run_one(args.strategy, args.seed, core_hours)
    elif args.what == "search":
        search(args.seeds, core_hours)
    elif args.what == "retrain":
        retrain(args.workers)
    elif args.what == "winner-search":
        winner_search(core_hours)
    elif args.what == "winner-retrain":
        winner_retrain(args.workers)
    else:
        summary = summarise()
        SUMMARY.write_text(json.dumps(summary, indent=2) + "\n")
        plot(summary)
        print(json.dumps({k: v for k, v in summary.items() if k not in ("searches", "hypervolume_spread")},
                         indent=2))
        for s in summary["searches"]:
            print(f"{s['name']:28s} {s['status']:9s} {s['core_hours']:.2f} core-h  {s['candidates']} cand  "
                  f"best {s['best']}  rediscovered {s['rediscovered']}")
        print(tables(summary))
        print(f"wrote {SUMMARY} and {PLOT}")


if __name__ == "__main__":
    main()

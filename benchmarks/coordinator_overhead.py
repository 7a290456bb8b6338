"""How many candidates per second the coordinator (runner + store) sustains.

With a zero-cost evaluator (no torch: the screening returns the structural
hash as the fingerprint, the evaluation returns fixed scores at once) every
second spent is coordinator overhead: proposing (mutation, hashing), the
store's inserts and updates, and the bookkeeping. The target is at least
500 candidates/s, so that thousands of workers each taking tens of seconds
per candidate never wait on the coordinator.

    python -m benchmarks.coordinator_overhead [--budget 5000] [--pg URL]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from db import Store
from evonorm_search.config import load_config
from evonorm_search.runner import SearchRunner
from primitives import Graph, structural_hash
from workers.evaluation import EvalSpec, Screening
from workers.executors import InProcessExecutor
from workers.funnel import RungResult, RungSpec, RunScore, planned_runs

RESULTS = Path(__file__).parent / "results" / "coordinator_overhead.json"


def zero_screen(graph: str, spec: EvalSpec) -> Screening:
    return Screening(structural_hash(Graph.loads(graph)), None, ())


def zero_evaluate(graph: str, spec: EvalSpec, rung: RungSpec, screening: Screening | None,
                  done: Any) -> RungResult:
    h = int(structural_hash(Graph.loads(graph))[:8], 16) / 16**8
    runs = tuple(RunScore(t.objective, t.backbone, t.label, seed, steps, (h * (i + 1)) % 1, 1.0, False, None,
                          0.0, 1.0, 1, heldout)
                 for i, (t, steps, seed, heldout) in enumerate(planned_runs(spec, rung)))
    return RungResult(rung.index, runs, worker="bench")


def run_once(url: str, budget: int, in_flight: int) -> dict[str, float]:
    store = Store(url)
    cfg = load_config("quick", {"budget": budget, "in_flight": in_flight, "population_size": 100,
                                "tournament_size": 10, "seed_with_zoo": []})
    sid = store.create_search("bench", cfg.model_dump(mode="json"), seed=0).id
    runner = SearchRunner(store, sid, InProcessExecutor(), screen_fn=zero_screen, rung_fn=zero_evaluate)
    start = time.perf_counter()
    result = runner.run()
    elapsed = time.perf_counter() - start
    store.close()
    assert result.num_candidates == budget, result
    return {"candidates": budget, "seconds": elapsed, "per_s": budget / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=int, default=5000)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/test",
                        help="PostgreSQL URL ('' to skip)")
    args = parser.parse_args()
    out: dict[str, Any] = {"budget": args.budget, "in_flight": args.in_flight, "target_per_s": 500}
    with TemporaryDirectory() as tmp:
        out["sqlite"] = run_once(str(Path(tmp) / "bench.db"), args.budget, args.in_flight)
    if args.pg:
        from benchmarks.pg import fresh_schema_url

        with fresh_schema_url(args.pg) as url:
            out["postgresql"] = run_once(url, args.budget, args.in_flight)
    for backend in ("sqlite", "postgresql"):
        if backend in out:
            r = out[backend]
            verdict = "meets" if r["per_s"] >= 500 else "MISSES"
            print(f"{backend:10s} {r['candidates']} candidates in {r['seconds']:.2f}s = {r['per_s']:.0f}/s "
                  f"({verdict} the 500/s target)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

"""Read latency of the API on a big search, and the dashboard's time to first render.

A store is seeded with one search of 100,000 finished candidates (distinct
random graphs, a fifth rejected at various stages, the rest with two
accuracies; written with `add_candidates` + `finish_candidates` in batches,
events included, exactly as a runner writes them). The app is served by
`evonorm-search serve` (uvicorn, no runner) in its own process on a loopback
port; the client is httpx over keep-alive HTTP, one request at a time.

Reported per endpoint: p50 / p99 over `--requests` requests, after one
warm-up request (the first read of a search's front catches up with its
event log once; its time is reported as `front_cold_ms`). Target: p99 under
50 ms for the front and candidates endpoints.

Time to usable: headless Chromium (/usr/bin/chromium) opens
`/#/search/<id>`; the dashboard stamps `performance.now()` when the front
plot and the first table page are drawn. Reported: first visits (each with
an empty browser cache) and warm reloads, medians
(`benchmarks.dashboard_first_render` measures it alone, with a breakdown).

    python -m benchmarks.api_latency [--candidates 100000] [--requests 300] [--pg URL]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx

from db import CandidateOutcome, CandidateStatus, NewCandidate, NewEvaluation, SearchStatus, Store
from evonorm_search.config import load_config
from primitives import structural_hash
from primitives.mutation import random_graph
from primitives.zoo import ZOO

RESULTS = Path(__file__).parent / "results" / "api_latency.json"
TARGET_P99_MS = 50.0
STAGES = ["static", "numeric", "stability", "quality", "training", "worker"]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def seed(store: Store, n: int, batch: int = 2000) -> int:
    cfg = load_config("quick", {"name": f"bench-{n}", "budget": n})
    sid = store.create_search(cfg.name, cfg.model_dump(mode="json"), seed=0).id
    rng = random.Random(0)
    seeds = [(name, ZOO[name].graph) for name in cfg.seed_with_zoo]
    made = 0
    start = time.perf_counter()
    while made < n:
        news = []
        for k in range(made, min(n, made + batch)):
            if k < len(seeds):
                name, g = seeds[k]
                assert g is not None
                news.append(NewCandidate(g.dumps(), structural_hash(g), mutation=f"seed:{name}"))
                continue
            g = random_graph(random.Random(k))
            parent = [rng.randint(1, k)] if k > 1000 else []
            news.append(NewCandidate(g.dumps(), f"{structural_hash(g)}:{k}", parent_ids=parent,
                                     mutation="mutation" if parent else "random", generation=k // 1000))
        rows = store.add_candidates(sid, news)
        rng.shuffle(rows)
        outcomes = []
        for c in rows:
            if rng.random() < 0.2:
                stage = rng.choice(STAGES)
                outcomes.append(CandidateOutcome(c.id, CandidateStatus.REJECTED, rejection_stage=stage,
                                                 rejection_reason="bench"))
            else:
                acc = (rng.betavariate(2, 5), rng.betavariate(2, 5))
                evals = [NewEvaluation(t.backbone, t.label, {"accuracy": a, "loss": 1.0}, wall_s=30.0)
                         for t, a in zip(cfg.tasks, acc, strict=True)]
                outcomes.append(CandidateOutcome(c.id, CandidateStatus.EVALUATED, objectives=acc,
                                                 evaluations=evals))
        store.finish_candidates(outcomes)
        made += len(news)
        print(f"\r  seeded {made:,}/{n:,} candidates ({time.perf_counter() - start:.0f}s)", end="", flush=True)
    print()
    store.set_search_status(sid, SearchStatus.RUNNING)
    store.set_search_status(sid, SearchStatus.FINISHED)
    return sid


class Server:
    """`evonorm-search serve` in its own process (the client must not share the server's GIL)."""

    def __init__(self, url: str, port: int) -> None:
        self.cmd = [sys.executable, "-c", "from api.cli import app; app()", "serve", "--db", url,
                    "--port", str(port), "--executor", "inprocess", "--max-running", "0",
                    "--log-level", "warning"]
        self.base = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL)
        end = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > end or self.proc.poll() is not None:
                raise RuntimeError("the server did not start")
            time.sleep(0.2)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def percentiles(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    pick = lambda q: s[min(len(s) - 1, round(q * (len(s) - 1)))]  # noqa: E731
    return {"p50_ms": round(pick(0.50), 2), "p99_ms": round(pick(0.99), 2), "max_ms": round(s[-1], 2),
            "n": len(s)}


def measure(client: httpx.Client, requests: dict[str, str], n: int) -> dict[str, dict[str, float]]:
    out = {}
    for name, url in requests.items():
        client.get(url).raise_for_status()                 # warm-up
        samples = []
        for _ in range(n):
            t = time.perf_counter()
            r = client.get(url)
            samples.append((time.perf_counter() - t) * 1000)
            r.raise_for_status()
        out[name] = percentiles(samples)
        print(f"  {name:32s} p50 {out[name]['p50_ms']:7.2f} ms   p99 {out[name]['p99_ms']:7.2f} ms")
    return out


def first_render(url: str, visits: int = 4) -> dict[str, Any]:
    """The dashboard's time to usable (benchmarks.dashboard_first_render has the details)."""
    if shutil.which(CHROMIUM) is None:
        return {"skipped": f"{CHROMIUM} not found"}
    from benchmarks.dashboard_first_render import time_to_usable

    result = time_to_usable(url, visits, warm=2)
    print(f"  time to usable: first visit median {result['first_visit_median_ms']} ms, "
          f"warm median {result['warm_median_ms']} ms ({result['front_points']} front points, "
          f"{result['table_rows']} rows)")
    return result


def run(url: str, n: int, requests_per: int, port: int) -> dict[str, Any]:
    store = Store(url)
    t = time.perf_counter()
    sid = seed(store, n)
    seed_s = time.perf_counter() - t
    if store.backend == "postgresql":
        # What autovacuum does after a bulk load (the test server may run with it off): without
        # statistics the planner guesses a 394-row table and picks bitmap scans and sorts.
        import psycopg

        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
            for table in ("candidates", "events", "evaluations", "searches"):
                conn.execute(f"VACUUM ANALYZE {table}")  # type: ignore[arg-type]
    base = f"http://127.0.0.1:{port}"
    result: dict[str, Any] = {"backend": store.backend, "candidates": n, "seed_s": round(seed_s, 1)}
    with Server(url, port), httpx.Client(base_url=base, timeout=60) as client:
        t = time.perf_counter()
        front = client.get(f"/api/searches/{sid}/front").json()
        result["front_cold_ms"] = round((time.perf_counter() - t) * 1000, 1)
        result["front_members"] = len(front["members"])
        print(f"  first front read (catch-up over {n:,} events): {result['front_cold_ms']} ms, "
              f"{len(front['members'])} members")
        c = f"/api/searches/{sid}/candidates"
        result["latency"] = measure(client, {
            "front": f"/api/searches/{sid}/front",
            "candidates (dashboard first page)": f"{c}?sort=id&order=desc&limit=50",
            "candidates page 1000 (offset)": f"{c}?limit=50&offset=50000",
            "candidates last page": f"{c}?limit=50&offset={n - 50}",
            "candidates status=rejected": f"{c}?status=rejected&limit=50",
            "candidates stage=quality": f"{c}?rejection_stage=quality&limit=50",
            "candidates sort=generation": f"{c}?sort=generation&order=desc&limit=50",
            "candidates cursor after=": f"{c}?after={n - 100}&limit=50",
            "search detail (counts)": f"/api/searches/{sid}",
        }, requests_per)
        result["first_render"] = first_render(f"{base}/#/search/{sid}")
    store.close()
    main_endpoints = {k: v for k, v in result["latency"].items() if k.startswith(("front", "candidates"))}
    worst = max(v["p99_ms"] for v in main_endpoints.values())
    result["worst_p99_ms"] = worst
    result["meets_target"] = worst < TARGET_P99_MS
    print(f"  worst p99 of front/candidates: {worst:.1f} ms "
          f"({'meets' if worst < TARGET_P99_MS else 'MISSES'} the {TARGET_P99_MS:.0f} ms target)")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--port", type=int, default=8799)
    parser.add_argument("--pg", default="", help="also run on this PostgreSQL URL (default: SQLite only)")
    args = parser.parse_args()
    out: dict[str, Any] = {"target_p99_ms": TARGET_P99_MS}
    print("sqlite:")
    with TemporaryDirectory() as tmp:
        out["sqlite"] = run(str(Path(tmp) / "bench.db"), args.candidates, args.requests, args.port)
    if args.pg:
        from benchmarks.pg import fresh_schema_url

        print("postgresql:")
        with fresh_schema_url(args.pg) as url:
            out["postgresql"] = run(url, args.candidates, args.requests, args.port + 1)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

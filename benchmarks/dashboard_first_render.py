"""The dashboard's time to usable on a 100,000-candidate search, in a real browser.

A store is seeded with one finished search of `--candidates` candidates (as
`benchmarks.api_latency` seeds it: distinct random graphs, a fifth rejected,
events included), or an earlier seeded file is reused (`--db`). It is served
by `evonorm-search serve` (uvicorn, its own process, no runner); after the
first front read (the server's start-up warm-up does the same) headless
Chromium (Debian's /usr/bin/chromium, driven by playwright; no browser
download) opens `/#/search/<id>`.

Time to usable: `performance.now()` when the page has drawn the front plot
and the first page of the candidates table (the dashboard stamps it in
`window.__evonorm.firstRender`). Measured for `--visits` first visits, each
in a fresh browser context (empty cache), then `--warm` reloads in that
context (cached script and style, revalidated). Reported: every visit, the
medians, and where a first visit's time went (the page's own marks and the
resource timings of its requests, medians over visits).

The machine is shared: the load average (1, 5, 15 minutes) is recorded
before and after, with the number of cores.

    python -m benchmarks.dashboard_first_render [--candidates 100000] [--visits 9] [--warm 3] [--db PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx

from benchmarks.api_latency import CHROMIUM, CHROMIUM_ARGS, Server, seed
from db import Store

RESULTS = Path(__file__).parent / "results" / "dashboard_first_render.json"
TARGET_MS = 1000.0

# What the page did and when, read after the first render.
TIMINGS = """() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const marks = Object.fromEntries(performance.getEntriesByType("mark").map((m) => [m.name, m.startTime]));
  const api = performance.getEntriesByType("resource").filter((r) => r.name.includes("/api/"));
  const scripts = performance.getEntriesByType("resource").filter((r) => /\\.(js|css)$/.test(r.name));
  return {
    usable: window.__evonorm.firstRender,
    html: nav.responseEnd,
    assets: Math.max(...scripts.map((r) => r.responseEnd)),
    asset_bytes: scripts.reduce((n, r) => n + r.transferSize, 0),
    dom_content_loaded: nav.domContentLoadedEventEnd,
    first_request: Math.min(...api.map((r) => r.startTime)),
    last_response: Math.max(...api.map((r) => r.responseEnd)),
    front_drawn: marks["evonorm:front"] ?? null,
    table_drawn: marks["evonorm:table"] ?? null,
    requests: api.map((r) => r.name.replace(location.origin, "")),
    table_rows: document.querySelectorAll("#candidates tbody tr").length,
    front_points: Number(document.querySelector("#front-plot").dataset.points),
    plotly: typeof window.Plotly !== "undefined",
  };
}"""


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def time_to_usable(url: str, visits: int, warm: int) -> dict[str, Any]:
    """First visits in fresh contexts, then warm reloads; medians and a breakdown of the first visits."""
    from playwright.sync_api import sync_playwright

    ready = "window.__evonorm && window.__evonorm.firstRender !== null"
    cold: list[dict[str, Any]] = []
    warm_ms: list[float] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for _ in range(visits):
            context = browser.new_context(viewport={"width": 1400, "height": 950})
            page = context.new_page()
            page.goto(url)
            page.wait_for_function(ready, timeout=60_000)
            cold.append(page.evaluate(TIMINGS))
            for _ in range(warm):
                page.goto("about:blank")
                page.goto(url)
                page.wait_for_function(ready, timeout=60_000)
                warm_ms.append(page.evaluate("window.__evonorm.firstRender"))
            context.close()
        browser.close()
    med = lambda key: round(statistics.median(v[key] for v in cold), 1)  # noqa: E731
    first = cold[0]
    return {
        "first_visits_ms": [round(v["usable"], 1) for v in cold],
        "first_visit_median_ms": med("usable"),
        "warm_visits_ms": [round(v, 1) for v in warm_ms],
        "warm_median_ms": round(statistics.median(warm_ms), 1) if warm_ms else None,
        "first_visit_breakdown_median_ms": {k: med(k) for k in (
            "html", "assets", "dom_content_loaded", "first_request", "last_response", "front_drawn",
            "table_drawn")},
        "asset_bytes_on_the_wire": first["asset_bytes"],
        "requests": first["requests"],
        "table_rows": first["table_rows"],
        "front_points": first["front_points"],
        "plotting_library_loaded": first["plotly"],
    }


def run(db: str, candidates: int, visits: int, warm: int, port: int) -> dict[str, Any]:
    store = Store(db)
    try:
        search = next((s for s in store.list_searches(limit=10) if s.name == f"bench-{candidates}"), None)
        sid = search.id if search is not None else seed(store, candidates)
    finally:
        store.close()
    result: dict[str, Any] = {"candidates": candidates, "cores": os.cpu_count(), "load_before": load()}
    with Server(db, port) as server:
        t = time.perf_counter()
        httpx.get(f"{server.base}/api/searches/{sid}/front", timeout=120).raise_for_status()
        result["front_first_read_ms"] = round((time.perf_counter() - t) * 1000, 1)
        result.update(time_to_usable(f"{server.base}/#/search/{sid}", visits, warm))
    result["load_after"] = load()
    result["target_ms"] = TARGET_MS
    result["meets_target"] = result["first_visit_median_ms"] < TARGET_MS
    print(f"  time to usable, first visit: median {result['first_visit_median_ms']} ms over {visits} "
          f"({result['first_visits_ms']}); warm median {result['warm_median_ms']} ms; "
          f"load average {result['load_before']} -> {result['load_after']} on {result['cores']} cores")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", type=int, default=100_000)
    parser.add_argument("--visits", type=int, default=9)
    parser.add_argument("--warm", type=int, default=3)
    parser.add_argument("--port", type=int, default=8797)
    parser.add_argument("--db", default="", help="a SQLite file to seed once and reuse (default: a temporary "
                                                 "one)")
    args = parser.parse_args()
    if shutil.which(CHROMIUM) is None:
        raise SystemExit(f"{CHROMIUM} not found (apt-get install -y chromium)")
    if args.db:
        out = run(args.db, args.candidates, args.visits, args.warm, args.port)
    else:
        with TemporaryDirectory() as tmp:
            out = run(str(Path(tmp) / "bench.db"), args.candidates, args.visits, args.warm, args.port)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

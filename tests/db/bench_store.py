"""Store throughput: insert + finish candidates, as the runner does. Not a test.

    .venv/bin/python tests/db/bench_store.py                     # SQLite (temp file)
    .venv/bin/python tests/db/bench_store.py postgresql+psycopg://postgres@127.0.0.1/test

For PostgreSQL the tables are created in a throwaway schema that is dropped
afterwards. Per batch: add_candidates(64) -> mark_evaluating -> finish with 1
evaluation each, either as one finish_candidates call ("batched") or one
finish_candidate call per candidate ("per-candidate", 64 transactions).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from db import (
    CandidateOutcome,
    CandidateStatus,
    NewCandidate,
    NewEvaluation,
    Store,
)

GRAPH = (
    '{"schema":"evonorm-graph/1","nodes":[{"op":"mul","inputs":[3,0]},'
    '{"op":"sigmoid","inputs":[4]},{"op":"mul","inputs":[0,5]}]}'
)
METRICS = {"accuracy": 0.91, "loss": 0.31, "steps_per_s": 120.0, "wall_s": 0.0, "params": 4242}


def run(store: Store, n: int, batch: int, per_candidate: bool) -> float:
    search = store.create_search("bench", {"population": batch})
    store.set_search_status(search.id, "running")
    start = time.perf_counter()
    for b in range(0, n, batch):
        size = min(batch, n - b)
        added = store.add_candidates(
            search.id,
            [
                NewCandidate(
                    GRAPH,
                    f"{uuid.uuid4().hex}",
                    parent_ids=[1, 2],
                    mutation="swap input",
                    generation=b // batch,
                )
                for _ in range(size)
            ],
        )
        ids = store.mark_evaluating([c.id for c in added])
        outcomes = [
            CandidateOutcome(
                i,
                CandidateStatus.EVALUATED,
                objectives=[0.91, 120.0],
                evaluations=[NewEvaluation("resnet20", "cifar10", METRICS, wall_s=0.0, worker="bench")],
                fingerprint=f"fp{i}",
            )
            for i in ids
        ]
        if per_candidate:
            for o in outcomes:
                store.finish_candidates([o])
        else:
            store.finish_candidates(outcomes)
    elapsed = time.perf_counter() - start
    final = store.get_search(search.id)
    assert final.num_evaluated == n, final
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url", nargs="?", help="PostgreSQL URL; SQLite temp file when omitted")
    parser.add_argument("-n", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()

    if args.url is None:
        with tempfile.TemporaryDirectory() as tmp:
            report("sqlite", str(Path(tmp) / "bench.db"), args.n, args.batch)
        return
    schema = f"evonorm_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(args.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        url = make_url(args.url)
        url = url.set(query={**url.query, "options": f"-csearch_path={schema}"})
        report("postgresql", url.render_as_string(hide_password=False), args.n, args.batch)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def report(name: str, url: str, n: int, batch: int) -> None:
    with Store(url) as store:
        run(store, batch * 4, batch, per_candidate=False)  # warm up pools and caches
        batched = run(store, n, batch, per_candidate=False)
        single = run(store, n, batch, per_candidate=True)
    print(f"{name}: {n} candidates, batches of {batch}, 1 evaluation each")
    print(f"  batched finish:       {batched:8.0f} candidates/s")
    print(f"  per-candidate finish: {single:8.0f} candidates/s")


if __name__ == "__main__":
    main()

"""The coordinator app for the deploy tests: the real app, settings from EVONORM_*, real evaluation.

One test hook: in a search seeded with HANG_SEED, the candidate that is the
zoo's BN-ReLU hangs in its evaluation for an hour (as a candidate stuck in a
kernel or a deadlock would), so the executor's deadline must reject it. Every
other candidate runs `workers.funnel.train_rung` unchanged. This module is
importable on the Ray workers (PYTHONPATH), so the hook travels by reference.

    uvicorn --factory deploy_app:create_app
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI

from api.app import create_app as real_create_app
from primitives import Graph, structural_hash
from primitives.zoo import ZOO
from workers.evaluation import EvalSpec, Screening
from workers.funnel import RungResult, RungSpec, RunKey, train_rung

HANG_SEED = 424242
_BN_RELU = ZOO["bn_relu"].graph
assert _BN_RELU is not None
HANG_HASH = structural_hash(_BN_RELU)


def evaluate_or_hang(graph: Any, spec: EvalSpec, rung: RungSpec, screening: Screening | None = None,
                     done: frozenset[RunKey] = frozenset()) -> RungResult:
    if spec.seed == HANG_SEED and structural_hash(Graph.loads(graph)) == HANG_HASH:
        time.sleep(3600)
    return train_rung(graph, spec, rung, screening, done)


def create_app() -> FastAPI:
    return real_create_app(runner_kwargs={"rung_fn": evaluate_or_hang})

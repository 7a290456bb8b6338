"""Deterministic stand-ins for the proxy training, so runner tests take seconds.

Screening is real (`workers.evaluation.screen`); only the training is faked:
objectives are a function of the fingerprint, so functional duplicates get
equal scores exactly as real training would give them.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from workers.evaluation import EvalSpec, EvaluationResult, Screening, TaskScore, screen
from workers.executors import worker_name
from workers.rejection import Rejection, Stage

TRAINED: list[str] = []  # fingerprints trained in this process, in order


def score(fp: str, i: int) -> float:
    return int(hashlib.sha256(f"{fp}:{i}".encode()).hexdigest()[:8], 16) / 16**8


def fake_evaluate(graph: Any, spec: EvalSpec, cache: Any = None, screening: Screening | None = None,
                  delay_s: float = 0.0) -> EvaluationResult:
    screening = screening or screen(graph, spec)
    fp = screening.fingerprint
    assert fp is not None
    TRAINED.append(fp)
    if delay_s:
        time.sleep(delay_s)
    if score(fp, 99) < 0.2:  # a fifth fail the quality stage
        return EvaluationResult("rejected", fp, rejection=Rejection(Stage.QUALITY, "fake: too poor"),
                                worker=worker_name())
    scores = tuple(TaskScore(t.objective, t.backbone, t.task, score(fp, i), 1.0, 10, 100.0, 0.01, 1000)
                   for i, t in enumerate(spec.tasks))
    return EvaluationResult("evaluated", fp, scores, worker=worker_name())


def slow_evaluate(graph: Any, spec: EvalSpec, cache: Any = None, screening: Screening | None = None
                  ) -> EvaluationResult:
    return fake_evaluate(graph, spec, cache, screening, delay_s=0.05)

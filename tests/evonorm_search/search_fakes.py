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
from workers.funnel import RungResult, RungSpec, RunScore, planned_runs
from workers.rejection import Rejection, Stage

TRAINED: list[str] = []  # fingerprints trained in this process, in order


def score(fp: str, i: int) -> float:
    return int(hashlib.sha256(f"{fp}:{i}".encode()).hexdigest()[:8], 16) / 16**8

def _noise(fp: str, seed: int) -> float:
    """A layer's score moves a little with the seed, as real training's does."""
    return (int(hashlib.sha256(f"{fp}:seed{seed}".encode()).hexdigest()[:8], 16) / 16**8 - 0.5) * 0.02


def rung_fn(evaluate_like: Any, climb_delay_s: float = 0.0) -> Any:
    """A funnel rung job built on an evaluate-like fake (graph, spec, cache, screening) -> result.

    Rung 0 calls the fake once (its rejections, failures and cost stand); every
    run's accuracy is the fake's task score plus a small seed-dependent noise.
    Higher rungs score from the fingerprint without calling it again, so "trained
    once" counts stay per candidate.
    """

    def run(graph: Any, spec: EvalSpec, rung: RungSpec, screening: Screening | None = None,
            done: frozenset[Any] = frozenset()) -> Any:
        fp = (screening or screen(graph, spec)).fingerprint
        assert fp is not None
        base: dict[str, float] = {}
        cost = None
        if rung.index == 0:
            r = evaluate_like(graph, spec, None, screening)
            if not isinstance(r, EvaluationResult):
                return r                      # a JobFailure
            if r.status == "rejected":
                return RungResult(0, rejection=r.rejection, worker=worker_name())
            base = {s.objective: s.accuracy for s in r.scores}
            cost = r.cost
        elif climb_delay_s:
            time.sleep(climb_delay_s)
        runs = []
        for task, steps, seed, heldout in planned_runs(spec, rung):
            if (task.objective, steps, seed) in done:
                continue
            i = next((k for k, t in enumerate(spec.tasks) if t.objective == task.objective), 50)
            acc = base.get(task.objective, score(fp, i)) * (0.8 + 0.2 * rung.steps_frac) + _noise(fp, seed)
            runs.append(RunScore(task.objective, task.backbone, task.label, seed, steps, acc, 1.0, False, None,
                                 0.01, 100.0, 1000, heldout))
        return RungResult(rung.index, tuple(runs), cost=cost, worker=worker_name())

    return run


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
    scores = tuple(TaskScore(t.objective, t.backbone, t.label, score(fp, i), 1.0, 10, 100.0, 0.01, 1000)
                   for i, t in enumerate(spec.tasks))
    return EvaluationResult("evaluated", fp, scores, worker=worker_name())


def slow_evaluate(graph: Any, spec: EvalSpec, cache: Any = None, screening: Screening | None = None
                  ) -> EvaluationResult:
    return fake_evaluate(graph, spec, cache, screening, delay_s=0.05)


FAKE_RUNG = rung_fn(fake_evaluate)
SLOW_RUNG = rung_fn(slow_evaluate, climb_delay_s=0.05)

"""A fast stand-in for the proxy training, so API tests run whole searches in seconds.

Screening is real (`workers.evaluation.screen`, milliseconds); training is
replaced by scores derived from the functional fingerprint, so functional
duplicates score the same, as they would when trained. A fifth of the
candidates fail the quality stage.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from typing import Any

import uvicorn

from workers.evaluation import EvalSpec, EvaluationResult, Screening, TaskScore, screen
from workers.executors import worker_name
from workers.funnel import RungResult, RungSpec, RunScore, planned_runs
from workers.rejection import Rejection, Stage


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
            acc = base.get(task.objective, score(fp, i)) + _noise(fp, seed)
            runs.append(RunScore(task.objective, task.backbone, task.label, seed, steps, acc, 1.0, False, None,
                                 0.01, 100.0, 1000, heldout))
        return RungResult(rung.index, tuple(runs), cost=cost, worker=worker_name())

    return run


def fake_evaluate(graph: Any, spec: EvalSpec, cache: Any = None, screening: Screening | None = None,
                  delay_s: float = 0.0) -> EvaluationResult:
    screening = screening or screen(graph, spec)
    fp = screening.fingerprint
    assert fp is not None
    if delay_s:
        time.sleep(delay_s)
    if score(fp, 99) < 0.2:
        return EvaluationResult("rejected", fp, rejection=Rejection(Stage.QUALITY, "fake: too poor"),
                                worker=worker_name())
    scores = tuple(TaskScore(t.objective, t.backbone, t.label, score(fp, i), 1.0, 10, 100.0, 0.01, 1000)
                   for i, t in enumerate(spec.tasks))
    cost = 0.5 + 1.5 * score(fp, 77) if getattr(spec, "measure_cost", False) else None
    return EvaluationResult("evaluated", fp, scores, worker=worker_name(), cost=cost)


def slow_evaluate(graph: Any, spec: EvalSpec, cache: Any = None, screening: Screening | None = None
                  ) -> EvaluationResult:
    """0.1 s per candidate: a search stays running long enough to pause it."""
    return fake_evaluate(graph, spec, cache, screening, delay_s=0.1)


FAST_RUNNER: dict[str, Any] = {"rung_fn": rung_fn(fake_evaluate), "status_poll_s": 0.02}
SLOW_RUNNER: dict[str, Any] = {"rung_fn": rung_fn(slow_evaluate), "status_poll_s": 0.02}


def wait_for(predicate: Any, timeout: float = 60.0, interval: float = 0.05, what: str = "condition") -> Any:
    """Poll `predicate()` until it returns something truthy; return that."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


TINY_SEARCH: dict[str, Any] = {
    "name": "tiny", "budget": 30, "population_size": 6, "tournament_size": 3, "in_flight": 3,
    "seed_with_zoo": ["bn_relu", "evonorm_s0"],
    "tasks": [{"backbone": "resnet", "task": "shapes32"}, {"backbone": "transformer", "task": "pydoc_chars"}],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """uvicorn serving an app on a free loopback port, in a background thread."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="on", timeout_graceful_shutdown=5))
        self.thread = threading.Thread(target=self.server.run, daemon=True, name="uvicorn")

    def __enter__(self) -> LiveServer:
        self.thread.start()
        end = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > end or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def serve(db: str, port: int, evaluate: str = "fake", token: str | None = None) -> None:
    """The coordinator app with the fake training on 127.0.0.1:port (for subprocess tests)."""
    from api.app import create_app
    from evonorm_search.settings import Settings

    fn = {"fake": fake_evaluate, "slow": slow_evaluate}[evaluate]
    app = create_app(Settings(db_url=db, executor="inprocess", token=token),
                     runner_kwargs={"rung_fn": rung_fn(fn), "status_poll_s": 0.05})
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=5)


if __name__ == "__main__":
    import sys

    serve(sys.argv[1], int(sys.argv[2]), *(sys.argv[3:4] or ["fake"]))

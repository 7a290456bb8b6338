"""Executors: every job comes back once, as a value or a JobFailure; faults never take the pool down."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from workers.executors import InProcessExecutor, JobFailure, RayExecutor


def drain(ex: Any, timeout: float = 120.0) -> dict[int, Any]:
    out: dict[int, Any] = {}
    end = time.monotonic() + timeout
    while ex.in_flight:
        assert time.monotonic() < end, "executor did not finish its jobs"
        out.update(ex.wait(timeout_s=5.0))
    return out


def test_in_process_executor_returns_values_and_failures() -> None:
    ex = InProcessExecutor()
    ok = ex.submit(math.sqrt, 16.0)
    bad = ex.submit(math.sqrt, -1.0)
    dropped = ex.submit(math.sqrt, 9.0)
    ex.cancel(dropped)
    out = drain(ex)
    assert out[ok] == 4.0
    assert isinstance(out[bad], JobFailure) and out[bad].kind == "error"
    assert "ValueError" in out[bad].message
    assert dropped not in out


@pytest.fixture(scope="module")
def ray_executor() -> Iterator[RayExecutor]:
    ex = RayExecutor(local_cpus=2, max_retries=2)
    yield ex
    ex.close()


def test_ray_runs_real_tasks(ray_executor: RayExecutor) -> None:
    assert ray_executor.slots == 2
    jobs = {ray_executor.submit(math.factorial, n): math.factorial(n) for n in range(5, 10)}
    out = drain(ray_executor)
    assert {j: out[j] for j in jobs} == jobs


def test_ray_job_that_raises_is_a_failure_not_a_crash(ray_executor: RayExecutor) -> None:
    bad = ray_executor.submit(math.sqrt, -1.0)
    good = ray_executor.submit(math.sqrt, 25.0)
    out = drain(ray_executor)
    assert isinstance(out[bad], JobFailure) and out[bad].kind == "error" and "ValueError" in out[bad].message
    assert out[good] == 5.0


def test_ray_hung_job_times_out_and_the_pool_is_reused(ray_executor: RayExecutor) -> None:
    hung = ray_executor.submit(time.sleep, 3600, timeout_s=2.0)
    start = time.monotonic()
    out = drain(ray_executor)
    assert isinstance(out[hung], JobFailure) and out[hung].kind == "timeout"
    assert time.monotonic() - start < 30
    after = ray_executor.submit(math.sqrt, 49.0)
    assert drain(ray_executor)[after] == 7.0


def test_ray_retries_a_job_whose_worker_is_killed(ray_executor: RayExecutor, tmp_path: Path) -> None:
    pid_dir = str(tmp_path)

    # Nested, so cloudpickle ships it by value; each attempt leaves its worker's pid behind.
    def record_pid_then_sleep(seconds: float) -> int:
        with open(os.path.join(pid_dir, f"{os.getpid()}.pid"), "w"):
            pass
        time.sleep(seconds)
        return os.getpid()

    job = ray_executor.submit(record_pid_then_sleep, 3.0)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob("*.pid")):
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.05)
    first = int(next(tmp_path.glob("*.pid")).stem)
    os.kill(first, signal.SIGKILL)
    out = drain(ray_executor)
    # Completed, not a failure, and on another worker process than the one killed.
    assert isinstance(out[job], int) and out[job] != first
    assert {int(p.stem) for p in tmp_path.glob("*.pid")} == {first, out[job]}
    assert drain(ray_executor) == {}


def test_ray_job_that_kills_its_worker_every_time_is_rejected(ray_executor: RayExecutor) -> None:
    ex = RayExecutor(max_retries=1)  # joins the running local cluster
    try:
        job = ex.submit(os._exit, 1)
        out = drain(ex)
        assert isinstance(out[job], JobFailure) and out[job].kind == "worker_died"
        assert drain(ex) == {}
        again = ex.submit(math.sqrt, 4.0)
        assert drain(ex)[again] == 2.0
    finally:
        ex.close()


def test_ray_time_queued_behind_other_jobs_is_not_counted(ray_executor: RayExecutor) -> None:
    # 2 CPUs, 4 jobs of 1.5 s each with a 2.5 s limit: the last two wait ~1.5 s for a CPU, so timed
    # from submission they would pass their limit; timed from their start they finish well within it.
    jobs = [ray_executor.submit(time.sleep, 1.5, timeout_s=2.5) for _ in range(4)]
    out = drain(ray_executor)
    assert [out[j] for j in jobs] == [None] * 4, out
    # A job that runs too long is still timed out.
    hung = ray_executor.submit(time.sleep, 3600, timeout_s=1.0)
    assert isinstance(drain(ray_executor)[hung], JobFailure)


PROBE = """
import math, os, sys
from workers.executors import RayExecutor
ex = RayExecutor(local_cpus=1)
job = ex.submit(math.sqrt, 4.0)
out = {}
while ex.in_flight:
    out.update(ex.wait(5))
ex.close()
print(out[job], os.environ["RAY_AUTH_MODE"])
"""


def test_a_private_local_ray_uses_token_auth_without_writing_a_token_file(tmp_path: Path) -> None:
    # Ray 2.60's ray.init() would write ~/.ray/auth_token, which then turns token auth on for every
    # `ray start --head` on the machine (whose plain workers cannot join).
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env["HOME"] = str(tmp_path)
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=180,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-2:] == ["2.0", "token"]
    assert not (tmp_path / ".ray" / "auth_token").exists()

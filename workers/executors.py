"""Where evaluations run: in this process (tests, debugging) or on a Ray cluster.

An executor runs picklable jobs `fn(*args)` and hands back, for every job
submitted, exactly one outcome: the job's return value or a `JobFailure`
(timeout, worker died, out of memory, raised). It never raises for a job's
fault, so one bad candidate cannot take the pool or the search down.

The runner keeps at most `slots` jobs in flight, so a job's deadline counts
from its submission.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import time
import traceback
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobFailure:
    """Why a job produced no value. kind: timeout | worker_died | oom | error."""

    kind: str
    message: str


Outcome = Any  # the job's value, or a JobFailure


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Executor(ABC):
    slots: int

    @abstractmethod
    def submit(self, fn: Callable[..., Any], *args: Any, timeout_s: float | None = None) -> int:
        """Queue `fn(*args)`; returns a job id."""

    @abstractmethod
    def wait(self, timeout_s: float | None = None) -> list[tuple[int, Outcome]]:
        """Block until at least one job finishes (or `timeout_s` passes); return finished ones."""

    @property
    @abstractmethod
    def in_flight(self) -> int: ...

    def cancel(self, job_id: int) -> None:  # noqa: B027 - optional for executors
        """Drop a job; its outcome is never reported."""

    def close(self) -> None:  # noqa: B027
        pass

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _error(e: BaseException) -> JobFailure:
    last = traceback.extract_tb(e.__traceback__)[-1:] if e.__traceback__ else []
    where = f" at {last[0].filename}:{last[0].lineno}" if last else ""
    return JobFailure("error", f"{type(e).__name__}: {e}{where}")


class InProcessExecutor(Executor):
    """Runs jobs one at a time in the calling thread, inside `wait`.

    Timeouts cannot be enforced here (a Python thread cannot be killed); the
    evaluation's own `time_limit_s` is checked only between stages and tasks,
    so one long training runs to its end. Use Ray for hard limits.
    """

    def __init__(self) -> None:
        self.slots = 1 << 20  # a queue, not a pool: the runner's in_flight is the only limit
        self._ids = itertools.count()
        self._queue: deque[tuple[int, Callable[..., Any], tuple[Any, ...]]] = deque()

    def submit(self, fn: Callable[..., Any], *args: Any, timeout_s: float | None = None) -> int:
        job_id = next(self._ids)
        self._queue.append((job_id, fn, args))
        return job_id

    def wait(self, timeout_s: float | None = None) -> list[tuple[int, Outcome]]:
        """Run every job queued so far and return them together (so callers batch their writes)."""
        out = []
        for _ in range(len(self._queue)):
            job_id, fn, args = self._queue.popleft()
            try:
                out.append((job_id, fn(*args)))
            except MemoryError as e:
                out.append((job_id, JobFailure("oom", str(e) or "MemoryError")))
            except Exception as e:
                out.append((job_id, _error(e)))
        return out

    @property
    def in_flight(self) -> int:
        return len(self._queue)

    def cancel(self, job_id: int) -> None:
        self._queue = deque(j for j in self._queue if j[0] != job_id)


def _run_job(fn: Callable[..., Any], args: tuple[Any, ...], threads: int) -> Any:
    # One job per reserved CPU: keep torch from oversubscribing the node.
    import torch

    torch.set_num_threads(max(1, threads))
    return fn(*args)


@dataclass
class _Running:
    ref: Any
    deadline: float | None


class RayExecutor(Executor):
    """Jobs as Ray tasks, with per-job CPU/GPU reservations, retries and deadlines.

    `address=None` starts a private local Ray; an address ("auto",
    "ray://host:10001", "host:6379") joins an existing cluster. A worker
    process that dies (killed, segfault, node lost) is retried `max_retries`
    times by Ray; after that the job fails as `worker_died`. A job past its
    deadline is force-cancelled (its worker process is killed and replaced).
    """

    def __init__(self, address: str | None = None, *, num_cpus: float = 1, num_gpus: float = 0,
                 max_retries: int = 2, local_cpus: int | None = None,
                 init_kwargs: dict[str, Any] | None = None) -> None:
        import ray

        self._ray = ray
        self._owns_ray = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "logging_level": logging.WARNING}
            if address is None and local_cpus is not None:
                kwargs["num_cpus"] = local_cpus
            kwargs.update(init_kwargs or {})
            ray.init(address=address, **kwargs)
            self._owns_ray = True
        self.num_cpus = num_cpus
        self._task = ray.remote(_run_job).options(
            num_cpus=num_cpus, num_gpus=num_gpus, max_retries=max_retries, retry_exceptions=False)
        total = ray.cluster_resources()
        by_cpu = int(total.get("CPU", 1) // num_cpus) if num_cpus else 1 << 30
        by_gpu = int(total.get("GPU", 0) // num_gpus) if num_gpus else 1 << 30
        self.slots = max(1, min(by_cpu, by_gpu))
        self._ids = itertools.count()
        self._running: dict[int, _Running] = {}

    def submit(self, fn: Callable[..., Any], *args: Any, timeout_s: float | None = None) -> int:
        job_id = next(self._ids)
        ref = self._task.remote(fn, args, int(max(1, self.num_cpus)))
        deadline = time.monotonic() + timeout_s if timeout_s else None
        self._running[job_id] = _Running(ref, deadline)
        return job_id

    @property
    def in_flight(self) -> int:
        return len(self._running)

    def cancel(self, job_id: int) -> None:
        job = self._running.pop(job_id, None)
        if job is not None:
            self._ray.cancel(job.ref, force=True)

    def wait(self, timeout_s: float | None = None) -> list[tuple[int, Outcome]]:
        if not self._running:
            return []
        now = time.monotonic()
        deadlines = [j.deadline for j in self._running.values() if j.deadline is not None]
        limit = timeout_s
        if deadlines:
            until_first = max(0.0, min(deadlines) - now)
            limit = until_first if limit is None else min(limit, until_first)
        by_ref = {j.ref: job_id for job_id, j in self._running.items()}
        ready, _ = self._ray.wait(list(by_ref), num_returns=1, timeout=limit)
        # Collect everything already done, not just the first, to keep the pool busy.
        ready, _ = self._ray.wait(list(by_ref), num_returns=len(by_ref), timeout=0) if ready else (ready, None)
        out = [(by_ref[ref], self._outcome(ref)) for ref in ready]
        for job_id, _ in out:
            del self._running[job_id]
        now = time.monotonic()
        for job_id, job in list(self._running.items()):
            if job.deadline is not None and now >= job.deadline:
                self._ray.cancel(job.ref, force=True)
                del self._running[job_id]
                out.append((job_id, JobFailure("timeout", "evaluation exceeded its time limit")))
        return out

    def _outcome(self, ref: Any) -> Outcome:
        ex = self._ray.exceptions
        try:
            return self._ray.get(ref)
        except ex.OutOfMemoryError as e:
            return JobFailure("oom", _first_line(e))
        except (ex.WorkerCrashedError, ex.NodeDiedError, ex.ActorDiedError) as e:
            return JobFailure("worker_died", _first_line(e))
        except ex.TaskCancelledError as e:
            return JobFailure("timeout", _first_line(e))
        except ex.RayTaskError as e:
            cause = e.cause if isinstance(e.cause, BaseException) else e
            if isinstance(cause, MemoryError):
                return JobFailure("oom", _first_line(cause))
            return JobFailure("error", f"{type(cause).__name__}: {_first_line(cause)}")
        except ex.RayError as e:
            return JobFailure("worker_died", _first_line(e))

    def close(self) -> None:
        for job_id in list(self._running):
            self.cancel(job_id)
        if self._owns_ray:
            self._ray.shutdown()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:500] if text else type(e).__name__


def make_executor(kind: str = "ray", *, address: str | None = None, num_cpus: float = 1,
                  num_gpus: float = 0, **kwargs: Any) -> Executor:
    if kind == "inprocess":
        return InProcessExecutor()
    if kind == "ray":
        return RayExecutor(address, num_cpus=num_cpus, num_gpus=num_gpus, **kwargs)
    raise ValueError(f"unknown executor {kind!r} (inprocess | ray)")

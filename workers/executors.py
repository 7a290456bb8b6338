"""Where evaluations run: in this process (tests, debugging) or on a Ray cluster.

An executor runs picklable jobs `fn(*args)` and hands back, for every job
submitted, exactly one outcome: the job's return value or a `JobFailure`
(timeout, worker died, out of memory, raised). It never raises for a job's
fault, so one bad candidate cannot take the pool or the search down.

A job's deadline (`timeout_s`) counts from when it starts running, not from
its submission: time spent queued behind other searches' jobs on a busy
cluster is not the candidate's fault. `slots` follows the cluster as nodes
join and leave, and `faults()` reports what the executor saw go wrong (a lost
node, the jobs Ray runs again elsewhere) for the search's event log.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import socket
import time
import traceback
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
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
    @property
    @abstractmethod
    def slots(self) -> int:
        """Jobs the executor runs at once now (it may change as a cluster grows or shrinks)."""

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

    def faults(self) -> list[dict[str, Any]]:
        """Faults seen since the last call: dicts with `kind` (an event kind) and `jobs` (job ids hit)."""
        return []

    def close(self) -> None:  # noqa: B027
        pass

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def private_ray_auth(address: str | None) -> None:
    """Call before `ray.init(address)`: a private local Ray keeps its token out of the home directory.

    Ray 2.60's `ray.init()` of a new local cluster turns token auth on when RAY_AUTH_MODE is unset, and
    writes a token to ~/.ray/auth_token when it finds none. That file then turns token auth on for any
    `ray start --head` on the machine, whose plain `ray start --address` workers cannot join. Here the
    mode is set explicitly and a fresh token lives in this process's environment (its Ray processes
    inherit it). An explicit RAY_AUTH_MODE, a configured token, or joining a cluster (`address` set:
    see docs/deployment.md) is left alone.
    """
    if address is not None or "RAY_AUTH_MODE" in os.environ:
        return
    from ray._raylet import Config  # type: ignore[attr-defined]

    os.environ["RAY_AUTH_MODE"] = "token"
    configured = os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
    if not configured and not (Path.home() / ".ray" / "auth_token").exists():
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(16)
    Config.initialize("")   # Ray reads the mode once, at import: make this process see it (as ray.init does)


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
        self._ids = itertools.count()
        self._queue: deque[tuple[int, Callable[..., Any], tuple[Any, ...]]] = deque()

    def submit(self, fn: Callable[..., Any], *args: Any, timeout_s: float | None = None) -> int:
        job_id = next(self._ids)
        self._queue.append((job_id, fn, args))
        return job_id

    @property
    def slots(self) -> int:
        return 1 << 20  # a queue, not a pool: the runner's in_flight is the only limit

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


@dataclass(frozen=True)
class _Started:
    """A job's first yield: it is running now, on this node, in this worker process."""

    node: str
    pid: int


@dataclass(frozen=True)
class _Done:
    """A job's last yield: its value, and where it was computed (elsewhere than it started: retried)."""

    node: str
    pid: int
    value: Any


def _run_job(fn: Callable[..., Any], args: tuple[Any, ...], threads: int) -> Any:
    # A generator task: it yields `_Started` as it begins, so the driver times the run, not the queue.
    # Ray re-runs a task whose worker or node died, but drops what the first attempt already yielded,
    # so a `_Done` from another place than the `_Started` tells the driver the job was retried.
    import ray
    import torch  # before the start: a fresh worker's import is its start-up, not the job's time

    # One job per reserved CPU: keep torch from oversubscribing the node.
    torch.set_num_threads(max(1, threads))
    node = ray.get_runtime_context().get_node_id()
    yield _Started(node, os.getpid())
    yield _Done(node, os.getpid(), fn(*args))


@dataclass
class _Running:
    gen: Any                       # the task's ObjectRefGenerator
    timeout_s: float | None
    deadline: float | None = None  # set when the job starts running
    started: _Started | None = None
    retried: bool = False          # reported as retried already


class RayExecutor(Executor):
    """Jobs as Ray tasks, with per-job CPU/GPU reservations, retries and deadlines.

    `address=None` starts a private local Ray; an address ("auto",
    "ray://host:10001", "host:6379") joins an existing cluster. A worker
    process that dies (killed, segfault, node lost) is retried `max_retries`
    times by Ray; after that the job fails as `worker_died`. A job running
    past its deadline is force-cancelled (its worker process is killed and
    replaced); its deadline starts when it starts running (and again when a
    lost node's job is retried). `slots` is re-read from the live nodes every
    `refresh_s`.
    """

    def __init__(self, address: str | None = None, *, num_cpus: float = 1, num_gpus: float = 0,
                 max_retries: int = 2, local_cpus: int | None = None,
                 init_kwargs: dict[str, Any] | None = None, refresh_s: float = 2.0) -> None:
        import ray

        self._ray = ray
        self._owns_ray = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "logging_level": logging.WARNING}
            if address is None and local_cpus is not None:
                kwargs["num_cpus"] = local_cpus
            kwargs.update(init_kwargs or {})
            private_ray_auth(address)
            ray.init(address=address, **kwargs)
            self._owns_ray = True
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self._task = ray.remote(_run_job).options(
            num_cpus=num_cpus, num_gpus=num_gpus, max_retries=max_retries, retry_exceptions=False,
            num_returns="streaming")
        self.refresh_s = refresh_s
        self._ids = itertools.count()
        self._running: dict[int, _Running] = {}
        self._alive: dict[str, str] = {}        # node id -> address, alive at the last look
        self._faults: list[dict[str, Any]] = []
        self._slots = 1
        self._refreshed = -float("inf")
        self._refresh()

    @property
    def slots(self) -> int:
        if time.monotonic() - self._refreshed >= self.refresh_s:
            self._refresh()
        return self._slots

    def _refresh(self) -> None:
        """Slots from the resources of the nodes alive now; a node gone since the last look is a fault."""
        self._refreshed = time.monotonic()
        try:
            nodes = self._ray.nodes()
        except Exception:  # the GCS is briefly unreachable: keep the last view
            log.warning("ray.nodes() failed; keeping %d slots", self._slots, exc_info=True)
            return
        alive = {n["NodeID"]: n.get("NodeManagerAddress", "?") for n in nodes if n.get("Alive")}
        cpus = sum(n.get("Resources", {}).get("CPU", 0) for n in nodes if n.get("Alive"))
        gpus = sum(n.get("Resources", {}).get("GPU", 0) for n in nodes if n.get("Alive"))
        by_cpu = int(cpus // self.num_cpus) if self.num_cpus else 1 << 30
        by_gpu = int(gpus // self.num_gpus) if self.num_gpus else 1 << 30
        self._slots = max(1, min(by_cpu, by_gpu))
        now = time.monotonic()
        for node, address in self._alive.items():
            if node in alive:
                continue
            hit = [job_id for job_id, job in self._running.items() if job.started and job.started.node == node]
            self._faults.append({"kind": "node_lost", "node": node, "address": address, "jobs": hit})
            for job_id in hit:
                # Ray runs it again on a live node: its time limit starts over.
                job = self._running[job_id]
                job.deadline = now + job.timeout_s if job.timeout_s else None
                self._retried(job_id, job, to_node=None)
        self._alive = alive

    def _retried(self, job_id: int, job: _Running, to_node: str | None) -> None:
        """Report once that Ray runs a job again (its node was lost, or it ran on elsewhere)."""
        if job.retried or job.started is None:
            return
        job.retried = True
        self._faults.append({"kind": "candidate_retried", "jobs": [job_id], "from_node": job.started.node,
                             "to_node": to_node, "same_node": to_node == job.started.node})

    def faults(self) -> list[dict[str, Any]]:
        out, self._faults = self._faults, []
        return out

    def submit(self, fn: Callable[..., Any], *args: Any, timeout_s: float | None = None) -> int:
        job_id = next(self._ids)
        gen = self._task.remote(fn, args, int(max(1, self.num_cpus)))
        self._running[job_id] = _Running(gen, timeout_s)
        return job_id

    @property
    def in_flight(self) -> int:
        return len(self._running)

    def cancel(self, job_id: int) -> None:
        job = self._running.pop(job_id, None)
        if job is not None:
            self._ray.cancel(job.gen, force=True)

    def wait(self, timeout_s: float | None = None) -> list[tuple[int, Outcome]]:
        if not self._running:
            return []
        now = time.monotonic()
        deadlines = [j.deadline for j in self._running.values() if j.deadline is not None]
        limit = timeout_s
        if deadlines:
            until_first = max(0.0, min(deadlines) - now)
            limit = until_first if limit is None else min(limit, until_first)
        by_gen = {j.gen: job_id for job_id, j in self._running.items()}
        ready, _ = self._ray.wait(list(by_gen), num_returns=1, timeout=limit)
        # Collect everything already done, not just the first, to keep the pool busy.
        ready, _ = self._ray.wait(list(by_gen), num_returns=len(by_gen), timeout=0) if ready else (ready, None)
        out = []
        for gen in ready:
            job_id = by_gen[gen]
            value = self._next(gen)
            job = self._running[job_id]
            if isinstance(value, _Started):
                if job.started is not None and (job.started.node, job.started.pid) != (value.node, value.pid):
                    self._retried(job_id, job, to_node=value.node)   # a retry that announced itself
                job.started = value
                job.deadline = time.monotonic() + job.timeout_s if job.timeout_s else None
                continue
            del self._running[job_id]
            if isinstance(value, _Done):
                first = job.started
                if first is not None and (first.node, first.pid) != (value.node, value.pid):
                    self._retried(job_id, job, to_node=value.node)
                value = value.value
            out.append((job_id, value))
        now = time.monotonic()
        for job_id, job in list(self._running.items()):
            if job.deadline is not None and now >= job.deadline:
                self._ray.cancel(job.gen, force=True)
                del self._running[job_id]
                out.append((job_id, JobFailure("timeout", "evaluation exceeded its time limit")))
        return out

    def _next(self, gen: Any) -> Outcome:
        """The generator's next value: the start marker, the job's value, or a JobFailure."""
        try:
            ref = next(gen)
        except StopIteration:
            return JobFailure("worker_died", "the job ended without a result")
        return self._outcome(ref)

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

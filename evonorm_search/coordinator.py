"""The coordinator: runs the search runners of one process, one thread per active search.

The store is the source of truth; the coordinator only decides which searches
run here. A search's status drives everything:

    launch           create (queued), then schedule
    queued           waits for a free slot (`max_running`); the scheduler moves it to running
    running          a thread runs `SearchRunner.run()`; the runner polls the status
    pause            running|queued -> paused: the runner finishes what is in flight and returns
    resume           paused|failed -> queued: scheduled again; a fresh runner rebuilds from the store
    cancel           -> cancelled: the runner records in-flight candidates as cancelled

Crash recovery: on `start()` every search left running or queued is
scheduled again (the runner's own recovery moves evaluating candidates back
to pending). A graceful `stop()` interrupts the runners between jobs and
hands their searches back to queued, so the next start resumes them; it
never marks a search failed. Neither does a database outage, however long:
the runner waits for the store and carries on (`evonorm_search.outage`).
One coordinator per database: a second one
is refused each search the first one's runners hold (their lease), and
leaves it alone.

Exports: with `export_dir` set (EVONORM_EXPORT_DIR), a search that finishes has
its front written to `export_dir/search-<id>/winners/*.py`.

Executors: `settings.executor == "ray"` gives every runner its own
`RayExecutor` on one shared Ray connection (the coordinator calls
`ray.init` once, so no runner's executor owns Ray and shuts it down for the
others); `"inprocess"` runs jobs in the runner's thread (tests, debugging).
The cluster's slots (which follow nodes joining and leaving) are shared
fairly between the searches running here: max-min fair over what each asks
for (`in_flight`), so one search cannot fill the Ray queue ahead of another.
Tests inject a fast evaluation through `runner_kwargs={"rung_fn": ...}`.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from db import CandidateStatus, LeaseError, SearchRecord, SearchStatus, Store, TransitionError
from evonorm_search.config import SearchConfig, search_executor
from evonorm_search.domain import search_config
from evonorm_search.outage import run_through_outages
from evonorm_search.runner import Progress, SearchRunner, cancelled_outcome
from evonorm_search.summary import export_winners, winners_dir
from workers.executors import Executor, Outcome, private_ray_auth

log = logging.getLogger(__name__)

ExecutorFactory = Callable[[SearchConfig], Executor]


class StopRunner(SystemExit):
    """Raised inside a runner's thread to interrupt it at the next executor wait.

    A SystemExit on purpose: the runner treats it as an interruption (in-flight
    jobs dropped, candidates left for its recovery, status untouched), never as a
    failure.
    """


class _StoppableExecutor(Executor):
    """Delegates to an executor; raises StopRunner from `wait` once the coordinator stops.

    Its `slots` are this search's fair share of the executor's (`share(slots)`).
    """

    def __init__(self, inner: Executor, stop: threading.Event,
                 share: Callable[[int], int] = lambda slots: slots) -> None:
        self.inner = inner
        self.stop = stop
        self.share = share

    @property
    def slots(self) -> int:
        return self.share(self.inner.slots)

    def faults(self) -> list[dict[str, Any]]:
        return self.inner.faults()

    def submit(self, fn: Callable[..., Any], *args: Any, timeout_s: float | None = None) -> int:
        return self.inner.submit(fn, *args, timeout_s=timeout_s)

    def wait(self, timeout_s: float | None = None) -> list[tuple[int, Outcome]]:
        if self.stop.is_set():
            raise StopRunner()
        return self.inner.wait(timeout_s=timeout_s)

    @property
    def in_flight(self) -> int:
        return self.inner.in_flight

    def cancel(self, job_id: int) -> None:
        self.inner.cancel(job_id)

    def close(self) -> None:
        self.inner.close()


@dataclass
class RunnerInfo:
    """What the coordinator knows about a search it runs (for the API and metrics)."""

    search_id: int
    thread: threading.Thread
    progress: Progress | None = None
    reported: Counter[str] = field(default_factory=Counter)   # finished counts already added to totals


class Coordinator:
    """Schedules searches onto runner threads in this process.

    `executor_factory(config)` builds one executor per runner (default: from
    `executor` / `ray_address`); `runner_kwargs` go to every `SearchRunner`
    (`rung_fn`, `screen_fn`, `status_poll_s`). `max_running` searches run at
    once, the others wait queued (0: none runs, searches only queue). Runners
    ride out a database outage of up to `reconnect_s` (see `Store.with_reconnect`).
    """

    def __init__(self, store: Store, *, executor: str = "ray", ray_address: str | None = None,
                 executor_factory: ExecutorFactory | None = None,
                 runner_kwargs: Mapping[str, Any] | None = None, max_running: int = 4,
                 join_timeout_s: float = 30.0, reconnect_s: float = 60.0,
                 export_dir: Path | None = None) -> None:
        if executor not in ("ray", "inprocess"):
            raise ValueError(f"executor must be ray or inprocess, got {executor!r}")
        if max_running < 0:
            raise ValueError("max_running must be >= 0")
        self.store = store
        # Runners wait out a database outage (a PostgreSQL restart) of up to `reconnect_s` instead of
        # failing their search; the API's store keeps answering 503 at once.
        self._runner_store = store.with_reconnect(reconnect_s)
        self.executor = executor
        self.ray_address = ray_address
        self._own_executors = executor_factory is None
        self.executor_factory = executor_factory or self._default_executor
        self.runner_kwargs = dict(runner_kwargs or {})
        self.max_running = max_running
        self.export_dir = export_dir
        self.join_timeout_s = join_timeout_s
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._started = False
        self._runners: dict[int, RunnerInfo] = {}
        self._demand: dict[int, int] = {}   # search id -> in_flight, of the searches running here
        self.reconnect_s = reconnect_s
        self._finished_totals: Counter[str] = Counter()
        self._ray_lock = threading.Lock()
        self._ray_started = False

    # -- lifecycle ---------------------------------------------------------------
    def prepare(self) -> None:
        """Connect to Ray now (for "ray"; call it from the main thread: Ray installs signal handlers)."""
        if self.executor == "ray" and self._own_executors:
            self._ensure_ray()

    def start(self) -> list[int]:
        """Resume every search left running or queued (crash recovery); returns their ids."""
        with self._lock:
            self._stop.clear()
            self._started = True
            for failed in self.store.searches_with_status(SearchStatus.FAILED):
                if failed.runner is None:   # no candidate stays evaluating without a runner
                    self.store.reset_evaluating(failed.id)
            interrupted = [s.id for s in self.store.searches_with_status(SearchStatus.RUNNING)]
            # Running searches first (they were interrupted), then the queue in order.
            for sid in interrupted:
                if len(self._runners) < self.max_running:
                    self._start_thread(sid)
                else:  # no slot: back in the queue, so the scheduler finds it
                    self._hand_back(sid)
            self._schedule()
            resumed = sorted(self._runners)
        if resumed:
            log.info("coordinator: resumed searches %s", resumed)
        return resumed

    def stop(self) -> None:
        """Interrupt every runner between jobs and hand its search back to queued."""
        with self._lock:
            self._started = False
            self._stop.set()
            threads = [info.thread for info in self._runners.values()]
        for t in threads:
            t.join(self.join_timeout_s)
            if t.is_alive():
                log.warning("coordinator: runner thread %s did not stop within %.0fs", t.name,
                            self.join_timeout_s)
        if self._ray_started:
            try:
                import ray

                ray.shutdown()
            except Exception:  # pragma: no cover - best effort on the way out
                log.warning("coordinator: ray.shutdown failed", exc_info=True)
            self._ray_started = False

    def __enter__(self) -> Coordinator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- commands -------------------------------------------------------------------
    def launch(self, config: SearchConfig) -> SearchRecord:
        """Create a search (queued) and schedule it."""
        search = self.store.create_search(config.name, config.model_dump(mode="json"), seed=config.seed)
        with self._lock:
            self._schedule()
        return self.store.get_search(search.id)

    def pause(self, search_id: int) -> SearchRecord:
        """running|queued -> paused (TransitionError otherwise); the runner drains and returns."""
        return self.store.set_search_status(search_id, SearchStatus.PAUSED)

    def resume(self, search_id: int) -> SearchRecord:
        """paused|failed -> queued, then schedule (a runner still draining picks it up when it returns)."""
        with self._lock:
            self.store.set_search_status(search_id, SearchStatus.QUEUED,
                                         expected=[SearchStatus.PAUSED, SearchStatus.FAILED])
            self._schedule()
        return self.store.get_search(search_id)

    def cancel(self, search_id: int) -> SearchRecord:
        """-> cancelled (TransitionError when the search has ended); the runner stops.

        A runner records its own unfinished candidates as cancelled; for a search no runner of this
        process works on (paused, queued) the coordinator does, so none is left pending.
        """
        with self._lock:
            self.store.set_search_status(search_id, SearchStatus.CANCELLED)
            if search_id not in self._runners:
                unfinished = self.store.candidates_by_status(
                    search_id, [CandidateStatus.PENDING, CandidateStatus.EVALUATING])
                # Idempotent, first result wins: a runner elsewhere finishing one of these is harmless.
                self.store.finish_candidates([cancelled_outcome(c) for c in unfinished])
            self._schedule()
        return self.store.get_search(search_id)

    # -- views ---------------------------------------------------------------------
    def is_running(self, search_id: int) -> bool:
        with self._lock:
            return search_id in self._runners

    def running(self) -> list[int]:
        with self._lock:
            return sorted(self._runners)

    def progress(self, search_id: int) -> Progress | None:
        with self._lock:
            info = self._runners.get(search_id)
            return info.progress if info else None

    def finished_totals(self) -> dict[str, int]:
        """Candidates finished by this process's runners since start, by status."""
        with self._lock:
            return dict(self._finished_totals)

    # -- scheduling ------------------------------------------------------------------
    def _schedule(self) -> None:
        """Start runners for queued searches while slots are free (call with the lock held)."""
        if not self._started or self._stop.is_set():
            return
        free = self.max_running - len(self._runners)
        if free <= 0:
            return
        for search in self.store.searches_with_status(SearchStatus.QUEUED):
            if free <= 0:
                break
            if search.id in self._runners:
                continue  # its runner is draining; it reschedules itself when it returns
            self._start_thread(search.id)
            free -= 1

    def _start_thread(self, search_id: int) -> None:
        thread = threading.Thread(target=self._thread_main, args=(search_id,), daemon=True,
                                  name=f"search-{search_id}")
        self._runners[search_id] = RunnerInfo(search_id, thread)
        thread.start()

    def _thread_main(self, search_id: int) -> None:
        try:
            self._run_search(search_id)
        except Exception:
            log.exception("coordinator: search %s failed", search_id)
        finally:
            with self._lock:
                self._runners.pop(search_id, None)
                self._demand.pop(search_id, None)
                self._schedule()

    def _run_search(self, search_id: int) -> None:
        executor: Executor | None = None
        # Its own view of the store: the outages it rides out are this search's events.
        store = self.store.with_reconnect(self.reconnect_s)
        try:
            search = store.get_search(search_id)
            if search.status not in (SearchStatus.QUEUED, SearchStatus.RUNNING):
                return  # paused or cancelled before its runner started
            config = search_config(search)
            with self._lock:
                self._demand[search_id] = config.in_flight
            inner = self.executor_factory(config)
            executor = _StoppableExecutor(inner, self._stop, lambda slots: self._fair_share(search_id, slots))
            kwargs = {"on_progress": lambda p: self._on_progress(search_id, p), **self.runner_kwargs}
            if search.status is SearchStatus.QUEUED:
                # Claim it; a pause or cancel that got there first wins.
                store.set_search_status(search_id, SearchStatus.RUNNING, expected=[SearchStatus.QUEUED])
            if self._stop.is_set():
                raise StopRunner()
            ex = executor
            result = run_through_outages(lambda: SearchRunner(store, search_id, ex, **kwargs), store,
                                         search_id, check_stop=self._check_stop)
            log.info("coordinator: search %s returned with status %s", search_id, result.status)
            if result.status is SearchStatus.FINISHED and self.export_dir is not None:
                self._export(search_id, self.export_dir)
        except StopRunner:
            self._hand_back(search_id)
        except TransitionError as e:
            log.info("coordinator: search %s not started: %s", search_id, e)
        except LeaseError as e:
            # Another runner (another coordinator, a `run --resume`) has it: its status is that one's.
            log.warning("coordinator: search %s is not run here: %s", search_id, e)
        except Exception as e:
            # The runner marks its own failures; this covers what happens before it runs
            # (a stored config that no longer validates, an executor that cannot start).
            self._mark_failed(search_id, e)
            raise
        finally:
            if executor is not None:
                try:
                    executor.close()
                except Exception:
                    log.warning("coordinator: closing the executor of search %s failed", search_id,
                                exc_info=True)

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise StopRunner()

    def _fair_share(self, search_id: int, slots: int) -> int:
        """This search's max-min fair share of `slots` among the searches running here (at least 1)."""
        with self._lock:
            demand = dict(self._demand)
        want = demand.get(search_id, slots)
        left, others = slots, sorted(d for sid, d in demand.items() if sid != search_id)
        # Water-filling: the searches asking for less than an equal share get what they ask for.
        for n, d in enumerate(others):
            equal = left // (len(others) - n + 1)
            if d >= equal:
                break
            left -= d
        else:
            return max(1, min(want, left))
        return max(1, min(want, left // (len(others) - n + 1)))

    def _export(self, search_id: int, export_dir: Path) -> None:
        # A full disk or an unwritable volume costs the files, never the finished search.
        try:
            paths = export_winners(self._runner_store, search_id, winners_dir(export_dir, search_id))
            log.info("coordinator: exported %d winners of search %s", len(paths), search_id)
        except Exception:
            log.warning("coordinator: exporting the winners of search %s failed", search_id, exc_info=True)

    def _hand_back(self, search_id: int) -> None:
        try:
            self.store.set_search_status(search_id, SearchStatus.QUEUED, expected=[SearchStatus.RUNNING])
        except TransitionError:
            pass  # paused or cancelled meanwhile: that status stands
        except Exception:
            log.warning("coordinator: could not hand search %s back to the queue", search_id, exc_info=True)

    def _mark_failed(self, search_id: int, e: BaseException) -> None:
        try:
            self.store.reset_evaluating(search_id)
            self.store.set_search_status(search_id, SearchStatus.FAILED,
                                         error=f"{type(e).__name__}: {e}"[:2000],
                                         expected=[SearchStatus.QUEUED, SearchStatus.RUNNING])
        except Exception:
            log.warning("coordinator: could not mark search %s failed", search_id, exc_info=True)

    def _on_progress(self, search_id: int, progress: Progress) -> None:
        with self._lock:
            info = self._runners.get(search_id)
            if info is None:
                return
            info.progress = progress
            now = Counter(evaluated=progress.evaluated, rejected=progress.rejected)
            if not info.reported:  # a fresh runner starts from the store's counts: not new work
                info.reported = now
                return
            for status in ("evaluated", "rejected"):
                delta = now[status] - info.reported[status]
                if delta > 0:
                    self._finished_totals[status] += delta
            info.reported = now

    # -- executors --------------------------------------------------------------------
    def _default_executor(self, config: SearchConfig) -> Executor:
        if self.executor == "ray":
            self._ensure_ray()
        return search_executor(config, self.executor, self.ray_address)

    def _ensure_ray(self) -> None:
        """One `ray.init` for all runners, owned by the coordinator (shut down in `stop`)."""
        with self._ray_lock:
            import ray

            if not ray.is_initialized():
                # ray.init replaces the SIGTERM handler (with sys.exit) on the main thread; keep the
                # server's, so `kill` still means a graceful shutdown that hands searches back.
                main = threading.current_thread() is threading.main_thread()
                previous = signal.getsignal(signal.SIGTERM) if main else None
                private_ray_auth(self.ray_address)
                ray.init(address=self.ray_address, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.WARNING)
                if previous is not None:
                    signal.signal(signal.SIGTERM, previous)
                self._ray_started = True

"""Live views of running searches, maintained incrementally from the event log.

The dashboard asks for a search's Pareto front every time a candidate
finishes. Recomputing it from every evaluated row would cost O(candidates)
per request; instead a `FrontTracker` follows the search's
`candidate_finished` events (`Store.events_after`, a cursor on an index) and
keeps the non-dominated set, the hypervolume history and the counts by
rejection stage. A read costs one indexed query for new events plus work
proportional to what is new. Event ids become visible in id order (see
`db.store`), so following the log misses nothing, whatever order candidates
finish in.

Functional duplicates (`reused_from`) repeat their original's point and are
left out of the front, as in `evonorm_search.summary.pareto_front`.

A candidate that climbs a funnel rung (`candidate_promoted`) moves: its point
is re-estimated, and may fall. The tracker keeps every evaluated original's
current point, so after a batch with climbs it rebuilds the front from all
of them (climbs are few: the top fraction of each rung); between climbs the
front is kept incrementally. The verified front (members that finished the
top rung, held-out tasks included) is the non-dominated set of the verified
points alone.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from db import CandidateRecord, CandidateStatus, EventKind, EventRecord, Store
from evonorm_search.lru import LockedLRU
from evonorm_search.pareto import Front, front_order, nondominated

EVENT_BATCH = 5000          # events read per query while catching up
MAX_HISTORY = 400           # history is thinned to about this many entries


@dataclass(frozen=True)
class FrontPoint:
    candidate_id: int
    objectives: tuple[float, ...]


@dataclass(frozen=True)
class HistoryPoint:
    finished: int            # candidates finished (evaluated or rejected) so far
    evaluated: int           # of which evaluated
    hypervolume: float
    at: datetime | None      # when the last of them finished


@dataclass(frozen=True)
class FrontSnapshot:
    search_id: int
    last_event_id: int
    members: tuple[FrontPoint, ...]
    verified_members: tuple[FrontPoint, ...]   # the front of the verified points alone
    hypervolume: float
    history: tuple[HistoryPoint, ...]
    finished: int
    evaluated: int
    rejected: int
    by_stage: dict[str, int]


class FrontTracker:
    """One search's front, kept up to date from its events. Thread-safe.

    Points arrive one at a time in event order; the hypervolume history gets an entry when the front
    has changed and enough candidates finished since the last entry (every candidate early on, about
    every 0.5% of them later). It depends on the events only, not on when or how often anyone reads.
    """

    def __init__(self, search_id: int, maximise: list[bool]) -> None:
        self.search_id = search_id
        self.maximise = list(maximise)
        self._lock = threading.Lock()
        self._last_event = 0
        self._front = Front(self.maximise)
        self._hv = 0.0
        self._dirty = False          # the front changed since self._hv was computed
        self._finished = 0
        self._evaluated = 0
        self._rejected = 0
        self._by_stage: Counter[str] = Counter()
        self._history: list[HistoryPoint] = []
        self._last_at: datetime | None = None
        self._snapshot: FrontSnapshot | None = None
        self._points: dict[int, list[float]] = {}      # every evaluated original's current point
        self._verified: dict[int, list[float]] = {}    # those that finished the top rung
        self._rebuild = False                          # a point moved: rebuild the front from all

    def update(self, store: Store) -> FrontSnapshot:
        """Fold in the events written since the last call; return the current front."""
        with self._lock:
            changed = self._snapshot is None
            while True:
                events = store.events_after(self._last_event, search_id=self.search_id, limit=EVENT_BATCH)
                finished = [e for e in events if e.kind == EventKind.CANDIDATE_FINISHED and e.candidate_id]
                candidates = self._undominated(finished)
                for e in finished:
                    self._finish(int(e.candidate_id or 0), e.payload, e.created_at, e.id in candidates)
                for e in events:
                    if e.kind == EventKind.CANDIDATE_PROMOTED and e.candidate_id:
                        self._promoted(int(e.candidate_id), e.payload)
                if self._rebuild:
                    self._rebuild_front()
                if events:
                    self._last_event = events[-1].id
                    changed = True
                if len(events) < EVENT_BATCH:
                    break
            if changed or self._snapshot is None:
                self._snapshot = self._make_snapshot()
            return self._snapshot

    def _point(self, p: dict[str, object]) -> list[float] | None:
        """The front point an event brings, if any."""
        objectives = p.get("objectives")
        if (p.get("status") == "evaluated" and p.get("reused_from") is None and isinstance(objectives, list)
                and len(objectives) == len(self.maximise)):
            return [float(v) for v in objectives]
        return None

    def _undominated(self, events: list[EventRecord]) -> set[int]:
        """Ids of the events whose point the current front does not dominate (one vectorized test)."""
        rows = [(e.id, q) for e in events if (q := self._point(e.payload)) is not None]
        dominated = self._front.dominated([q for _, q in rows])
        return {i for (i, _), d in zip(rows, dominated, strict=True) if not d}

    def _finish(self, candidate_id: int, p: dict[str, object], at: datetime, may_enter: bool) -> None:
        self._finished += 1
        self._last_at = at
        if p.get("status") == "evaluated" and p.get("objectives") is not None:
            self._evaluated += 1
            point = self._point(p)
            if point is not None:
                self._points[candidate_id] = point
                if p.get("verified"):
                    self._verified[candidate_id] = point
            q = point if may_enter else None
            if q is not None and self._front.add(candidate_id, q):
                self._dirty = True
        else:
            self._rejected += 1
            self._by_stage[str(p.get("rejection_stage") or "?")] += 1
        last = self._history[-1].finished if self._history else 0
        if self._dirty and self._finished - last >= max(1, self._finished // 200):
            self._record(at)

    def _promoted(self, candidate_id: int, p: dict[str, object]) -> None:
        objectives = p.get("objectives")
        if not isinstance(objectives, list) or len(objectives) != len(self.maximise):
            return
        point = [float(v) for v in objectives]
        self._points[candidate_id] = point
        if p.get("verified"):
            self._verified[candidate_id] = point
        self._rebuild = True

    def _rebuild_front(self) -> None:
        keys, points = list(self._points), list(self._points.values())
        self._front = Front(self.maximise)
        for i in nondominated(points, self.maximise):
            self._front.add(keys[i], points[i])
        self._rebuild = False
        self._dirty = True

    def _current_hv(self) -> float:
        if self._dirty:
            self._hv = self._front.hypervolume()
            self._dirty = False
        return self._hv

    def _record(self, at: datetime | None) -> None:
        self._history.append(HistoryPoint(self._finished, self._evaluated, self._current_hv(), at))
        if len(self._history) > 2 * MAX_HISTORY:
            self._history = self._history[:1] + self._history[1:-1:2] + self._history[-1:]

    def _make_snapshot(self) -> FrontSnapshot:
        hv = self._current_hv()
        history = list(self._history)
        if not history or history[-1].finished < self._finished:
            history.append(HistoryPoint(self._finished, self._evaluated, hv, self._last_at))
        members = [FrontPoint(i, p) for i, p in zip(self._front.keys, self._front.points, strict=True)]
        members.sort(key=lambda m: front_order(m.objectives, self.maximise))   # as `summary` orders a front
        keys, points = list(self._verified), list(self._verified.values())
        verified = [FrontPoint(keys[i], tuple(points[i])) for i in nondominated(points, self.maximise)]
        verified.sort(key=lambda m: front_order(m.objectives, self.maximise))
        return FrontSnapshot(
            search_id=self.search_id, last_event_id=self._last_event,
            members=tuple(members), verified_members=tuple(verified), hypervolume=hv, history=tuple(history),
            finished=self._finished, evaluated=self._evaluated, rejected=self._rejected,
            by_stage=dict(sorted(self._by_stage.items())))


class LiveFronts:
    """Trackers for the searches someone looks at (least recently used ones are dropped)."""

    def __init__(self, store: Store, max_searches: int = 64) -> None:
        self.store = store
        self.max_searches = max_searches
        self._trackers: LockedLRU[int, FrontTracker] = LockedLRU(max_searches)

    def snapshot(self, search_id: int, maximise: list[bool]) -> FrontSnapshot:
        """The front of a search whose objectives have these directions (True: maximised)."""
        tracker = self._trackers.get_or_put(search_id, lambda: FrontTracker(search_id, maximise),
                                            keep=lambda t: t.maximise == list(maximise))
        return tracker.update(self.store)


class CandidateCache:
    """Finished candidates by id, cached for good once they can no longer change: rejected, or
    verified (an evaluated candidate below the top rung still climbs, and its duplicates with it)."""

    def __init__(self, store: Store, max_size: int = 20_000) -> None:
        self.store = store
        self.max_size = max_size
        self._rows: LockedLRU[int, CandidateRecord] = LockedLRU(max_size)

    def get(self, candidate_id: int) -> CandidateRecord:
        row = self._rows.get(candidate_id)
        if row is not None:
            return row
        row = self.store.get_candidate(candidate_id)
        if row.status is CandidateStatus.REJECTED or row.verified:
            self._rows.put(candidate_id, row)
        return row

"""`Store`: the one object the rest of the code uses to reach the database.

Every public method is one short transaction (`Store._run`) and returns
frozen records from `db.records`; nothing outside `db/` sees a Session, a
model or a SQLAlchemy exception (errors arrive as `db.errors`).

Concurrency model: the runner is the single writer of a search's candidates;
the API reads and changes search status from other threads or processes.
- SQLite: WAL mode, so reads never wait for the writer; write transactions
  start with BEGIN IMMEDIATE, so writers queue on the lock (busy_timeout)
  instead of failing when they upgrade from reading to writing.
- PostgreSQL: rows that a write reads and then changes are locked with
  SELECT ... FOR NO KEY UPDATE; event inserts are serialized so event ids
  become visible in id order (see `_append_events`).
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from typing import Any, Literal, TypeVar

from sqlalchemy import Engine, Row, Table, bindparam, delete, func, insert, select, update
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker

from db.engine import make_engine, writer
from db.errors import LeaseError, NotFoundError, RetryableStoreError, StoreError, TransitionError
from db.migrate import current_revisions, ensure_schema, head_revisions
from db.models import Base, Candidate, Evaluation, Event, RerankResult, RerankTrial, Search, utcnow
from db.records import (
    ENDED_SEARCH_STATUSES,
    SEARCH_TRANSITIONS,
    TERMINAL_SEARCH_STATUSES,
    CandidateOutcome,
    CandidateRecord,
    CandidateStatus,
    Estimate,
    EvaluationRecord,
    EventKind,
    EventRecord,
    NewCandidate,
    NewEvaluation,
    NewRerankResult,
    NewRerankTrial,
    RerankRecord,
    RerankTrialRecord,
    RungOutcome,
    SearchRecord,
    SearchStatus,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

CandidateOrder = Literal["id", "generation", "created_at", "updated_at"]

# Candidates, evaluations, events and rerank rows go through Core statements
# on the mapped tables: rows turn straight into records without identity-map
# and unit-of-work bookkeeping, and a batch is one executemany. Searches (one
# row at a time, read-modify-write) use the ORM.
_candidates: Table = Base.metadata.tables[Candidate.__tablename__]
_evaluations: Table = Base.metadata.tables[Evaluation.__tablename__]
_events: Table = Base.metadata.tables[Event.__tablename__]
_searches: Table = Base.metadata.tables[Search.__tablename__]
_rerank: Table = Base.metadata.tables[RerankResult.__tablename__]
_rerank_trials: Table = Base.metadata.tables[RerankTrial.__tablename__]

_CANDIDATE_ORDER_COLUMNS = {
    "id": _candidates.c.id,
    "generation": _candidates.c.generation,
    "created_at": _candidates.c.created_at,
    "updated_at": _candidates.c.updated_at,
}

_FINISH_CANDIDATE = (
    update(_candidates)
    .where(_candidates.c.id == bindparam("b_id"))
    .values(
        status=bindparam("b_status"),
        objectives=bindparam("b_objectives"),
        rejection_stage=bindparam("b_rejection_stage"),
        rejection_reason=bindparam("b_rejection_reason"),
        reused_from=bindparam("b_reused_from"),
        fingerprint=bindparam("b_fingerprint"),
        updated_at=bindparam("b_updated_at"),
        rung=bindparam("b_rung"),
        estimates=bindparam("b_estimates"),
        verified=bindparam("b_verified"),
    )
)

# Key of the PostgreSQL advisory lock that serializes event inserts.
_EVENT_LOCK_KEY = 0x65766F6E6F726D01

# Bound parameters per IN (...) list: far below SQLite's 32766 variable limit
# even with other parameters in the same statement.
_IN_CHUNK = 500

_SEED_RANGE = range(-(2**63), 2**63)

# PostgreSQL SQLSTATEs worth retrying: serialization failure, deadlock,
# lock not available, server shutting down, and connection exceptions.
_RETRYABLE_SQLSTATES = {"40001", "40P01", "55P03", "57P01", "57P02", "57P03"}
_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6


class Store:
    """Searches, candidates, evaluations, events and rerank results in SQL.

    `url` is a SQLite file path (or `sqlite:///path.db`) or a PostgreSQL URL
    (`postgresql+psycopg://user@host/db`). On construction the schema is
    upgraded to the latest migration (a single read when already there);
    with `migrate=False` a database that is not at the latest revision is an
    error instead. Safe to share between threads; call `close()` when done.
    """

    def __init__(self, url: str | os.PathLike[str] | URL, *, migrate: bool = True, echo: bool = False) -> None:
        self._engine: Engine = make_engine(url, echo=echo)
        try:
            if migrate:
                ensure_schema(self._engine)
            else:
                with self._engine.connect() as conn:
                    current = current_revisions(conn)
                if current != head_revisions():
                    raise StoreError(
                        f"database schema is at {list(current)}, this code needs "
                        f"{list(head_revisions())}: run db.migrate.upgrade(url)"
                    )
        except SQLAlchemyError as exc:
            self._engine.dispose()
            raise _translate("open store", exc, write=True) from exc
        except BaseException:
            self._engine.dispose()
            raise
        # expire_on_commit=False: records are built inside the transaction,
        # and nothing should reload rows after commit.
        self._reader = sessionmaker(self._engine, expire_on_commit=False, autoflush=False)
        self._writer = sessionmaker(writer(self._engine), expire_on_commit=False, autoflush=False)
        self._reconnect_s = 0.0  # see with_reconnect
        self._outages: list[dict[str, Any]] | None = None  # outages ridden out, for take_outages

    # -- lifecycle ------------------------------------------------------

    @property
    def backend(self) -> str:
        """ "sqlite" or "postgresql"."""
        return self._engine.dialect.name

    @property
    def url(self) -> str:
        """The database URL with any password masked."""
        return self._engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    # -- the transaction helper -------------------------------------------

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[Session]:
        """A session in one transaction: commit when the block returns, roll back if it raises."""
        factory = self._writer if write else self._reader
        with factory() as session, session.begin():
            yield session

    def _run(self, op: str, fn: Callable[[Session], T], *, write: bool, idempotent: bool = False) -> T:
        """Run `fn` in `_transaction` and translate database errors for callers.

        Every public method goes through here. A read whose connection was lost
        (PostgreSQL restarted mid-query) is run again once on a fresh
        connection: it has no effects, so repeating it is safe. A write is
        never repeated here, because a connection lost during COMMIT leaves
        its outcome unknown; it raises RetryableStoreError for the caller.

        A store from `with_reconnect(window_s)` instead waits out an outage
        (a server restart) for up to `window_s`: it repeats reads, writes that
        could not even connect (nothing was sent), and `idempotent` writes,
        whose repetition after an unknown outcome is harmless.
        """
        deadline = time.monotonic() + self._reconnect_s
        delay = 0.1
        attempt = 0
        down_since: float | None = None   # when this call first found the database unreachable
        while True:
            attempt += 1
            try:
                with self._transaction(write=write) as session:
                    result = fn(session)
                if down_since is not None and self._outages is not None:
                    self._outages.append({"op": op, "since": round(down_since, 3),
                                          "down_s": round(time.time() - down_since, 1)})
                return result
            except DBAPIError as exc:
                if attempt == 1 and not write and exc.connection_invalidated:
                    log.warning("%s: connection lost (%s); retrying once", op, exc.orig)
                    continue
                error = _translate(op, exc, write=write)
                safe = not write or idempotent or _never_connected(exc)
                if not (isinstance(error, RetryableStoreError) and safe and time.monotonic() < deadline):
                    if isinstance(error, RetryableStoreError) and down_since is not None:
                        error.down_since = down_since
                    raise error from exc
                if down_since is None:
                    down_since = time.time()
                if attempt <= 2:
                    log.warning("%s; retrying for up to %.0fs", error, deadline - time.monotonic())
                time.sleep(delay)
                delay = min(2.0, delay * 2)
            except SQLAlchemyError as exc:
                raise _translate(op, exc, write=write) from exc

    def with_reconnect(self, window_s: float) -> Store:
        """This store (same engine and pool) with calls that wait out a database outage of up to `window_s`.

        For long-running writers such as a search runner, which can pause through
        a server restart; the API keeps answering 503 quickly instead. Closing
        either closes both.
        """
        view = copy.copy(self)
        view._reconnect_s = max(0.0, window_s)
        view._outages = []
        return view

    def take_outages(self) -> list[dict[str, Any]]:
        """Outages this view rode out since the last call (op, down_s, since: a UNIX time), oldest first.

        Only a view from `with_reconnect` waits out outages; for others this is always empty.
        """
        if not self._outages:
            return []
        out = list(self._outages)
        del self._outages[: len(out)]
        return out

    def _append_events(
        self, session: Session, rows: list[dict[str, Any]], *, returning: bool = False
    ) -> list[EventRecord]:
        """Insert events; must be the last statement of a write transaction.

        A reader that follows the log with `after=<last id seen>` must never
        skip an event. On PostgreSQL ids come from a sequence when a row is
        inserted, not when it commits, so without care a transaction could
        commit id 11 before another commits id 10, and a reader that already
        moved its cursor to 11 would never see 10. An advisory lock held until
        commit makes event-writing transactions take ids in commit order.
        SQLite already runs one writer at a time.

        Pending ORM changes are flushed before taking the lock, so a
        transaction waiting for it holds no row lock that the holder could
        need (the holder only needs the key-share locks of the events'
        foreign keys, which this store never blocks: it locks rows FOR NO KEY
        UPDATE and never changes or deletes keys).

        Returns the inserted records only when `returning` is set.
        """
        if not rows:
            return []
        session.flush()
        if session.get_bind().dialect.name == "postgresql":
            session.execute(select(func.pg_advisory_xact_lock(_EVENT_LOCK_KEY)))
        now = utcnow()
        params = [
            {
                "kind": row["kind"],
                "payload": row["payload"],
                "search_id": row.get("search_id"),
                "candidate_id": row.get("candidate_id"),
                "created_at": now,
            }
            for row in rows
        ]
        if not returning:
            session.execute(insert(_events), params)
            return []
        stmt = insert(_events).returning(*_events.c, sort_by_parameter_order=True)
        return [_event_record(r) for r in session.execute(stmt, params)]

    # -- searches ---------------------------------------------------------

    def create_search(self, name: str, config: Mapping[str, Any], seed: int | None = None) -> SearchRecord:
        """A new search in status queued. `config` must be JSON-serializable."""
        if seed is not None and seed not in _SEED_RANGE:
            raise ValueError(f"seed {seed} does not fit in a signed 64-bit integer")

        def fn(s: Session) -> SearchRecord:
            now = utcnow()
            row = s.scalars(
                insert(Search).returning(Search),
                [
                    {
                        "name": name,
                        "config": dict(config),
                        "status": SearchStatus.QUEUED.value,
                        "seed": seed,
                        "num_candidates": 0,
                        "num_evaluated": 0,
                        "num_rejected": 0,
                        "created_at": now,
                        "updated_at": now,
                    }
                ],
            ).one()
            record = _search_record(row)
            self._append_events(
                s,
                [
                    {
                        "kind": EventKind.SEARCH_CREATED.value,
                        "search_id": row.id,
                        "payload": {"name": name, "seed": seed},
                    }
                ],
            )
            return record

        return self._run("create_search", fn, write=True)

    def get_search(self, search_id: int) -> SearchRecord:
        def fn(s: Session) -> SearchRecord:
            return _search_record(_get_search(s, search_id))

        return self._run("get_search", fn, write=False)

    def list_searches(
        self,
        *,
        status: SearchStatus | str | Iterable[SearchStatus | str] | None = None,
        limit: int | None = 100,
        offset: int = 0,
        newest_first: bool = True,
    ) -> list[SearchRecord]:
        _check_page(limit, offset)

        def fn(s: Session) -> list[SearchRecord]:
            stmt = select(Search)
            if status is not None:
                stmt = stmt.where(Search.status.in_(_search_statuses(status)))
            order = Search.id.desc() if newest_first else Search.id.asc()
            stmt = stmt.order_by(order).limit(limit).offset(offset)
            return [_search_record(r) for r in s.scalars(stmt)]

        return self._run("list_searches", fn, write=False)

    def searches_with_status(
        self, statuses: SearchStatus | str | Iterable[SearchStatus | str]
    ) -> list[SearchRecord]:
        """Searches in any of `statuses`, oldest first (the runner's queue order)."""
        return self.list_searches(status=statuses, limit=None, newest_first=False)

    def set_search_status(
        self,
        search_id: int,
        status: SearchStatus | str,
        *,
        expected: Collection[SearchStatus | str] | None = None,
        error: str | None = None,
    ) -> SearchRecord:
        """Move a search to `status` if `SEARCH_TRANSITIONS` allows it, atomically.

        `expected` makes it a compare-and-set: the change only happens when the
        current status is one of them (e.g. the runner finishing only a search
        that is still running, so it never overwrites a concurrent cancel).
        Raises TransitionError otherwise, NotFoundError for an unknown id.
        `error` is stored when given (typically with failed). Sets started_at
        on the first move to running and finished_at on an ended status (cleared when a failed one
        is resumed).
        """
        new = SearchStatus(status)
        allowed_from = None if expected is None else {SearchStatus(e) for e in expected}
        attempts = 0

        def fn(s: Session) -> SearchRecord:
            nonlocal attempts
            attempts += 1
            row = _get_search(s, search_id, lock=True)
            current = SearchStatus(row.status)
            if attempts > 1 and current is new:
                # A repeat after a lost COMMIT that went through: the move is done (no second event).
                return _search_record(row)
            if allowed_from is not None and current not in allowed_from:
                wanted = sorted(allowed_from)
                raise TransitionError(search_id, current, new, f"expected status in {wanted}")
            if new not in SEARCH_TRANSITIONS[current]:
                reason = (
                    "the search has ended"
                    if current in TERMINAL_SEARCH_STATUSES
                    else f"allowed: {sorted(SEARCH_TRANSITIONS[current])}"
                )
                raise TransitionError(search_id, current, new, reason)
            now = utcnow()
            row.status = new.value
            row.updated_at = now
            if new is SearchStatus.RUNNING and row.started_at is None:
                row.started_at = now
            if new in ENDED_SEARCH_STATUSES:
                row.finished_at = now
            elif current is SearchStatus.FAILED:
                # Resumed after a failure: it has not ended, and the old error no longer applies.
                row.finished_at = None
                row.error = None
            if error is not None:
                row.error = error
            record = _search_record(row)
            self._append_events(
                s,
                [
                    {
                        "kind": EventKind.SEARCH_STATUS.value,
                        "search_id": search_id,
                        "payload": {"from": current.value, "to": new.value, "error": error},
                    }
                ],
            )
            return record

        return self._run("set_search_status", fn, write=True, idempotent=True)

    # -- the runner's lease -----------------------------------------------

    def claim_search(
        self, search_id: int, runner: str, *, stale_after_s: float, take_from: str | None = None
    ) -> SearchRecord:
        """Make `runner` the one writer of a search, atomically (a lease on the row).

        Granted when nobody holds the lease, `runner` already does, the holder
        has not renewed it for `stale_after_s` (presumed dead), or the holder is
        `take_from` (the caller has seen that process gone). Raises LeaseError
        otherwise, NotFoundError for an unknown id.
        """

        def fn(s: Session) -> SearchRecord:
            row = _get_search(s, search_id, lock=True)
            now = utcnow()
            holder, beat = row.runner, row.runner_heartbeat
            age = (now - beat).total_seconds() if beat is not None else float("inf")
            if holder not in (None, runner, take_from) and age < stale_after_s:
                raise LeaseError(search_id, holder, age)
            row.runner, row.runner_heartbeat = runner, now
            return _search_record(row)

        return self._run("claim_search", fn, write=True)

    def renew_lease(self, search_id: int, runner: str) -> bool:
        """Renew `runner`'s lease; False when it no longer holds it (another runner took over)."""

        def fn(s: Session) -> bool:
            stmt = (update(Search).where(Search.id == search_id, Search.runner == runner)
                    .values(runner_heartbeat=utcnow()))
            return bool(s.execute(stmt).rowcount)  # type: ignore[attr-defined]

        return self._run("renew_lease", fn, write=True, idempotent=True)

    def release_search(self, search_id: int, runner: str) -> None:
        """Give the lease up, if `runner` still holds it."""

        def fn(s: Session) -> None:
            s.execute(update(Search).where(Search.id == search_id, Search.runner == runner)
                      .values(runner=None, runner_heartbeat=None))

        self._run("release_search", fn, write=True, idempotent=True)

    # -- candidates: writes ----------------------------------------------

    def add_candidates(self, search_id: int, candidates: Sequence[NewCandidate]) -> list[CandidateRecord]:
        """Insert new pending candidates; returns the inserted ones, in input order.

        A candidate whose structural_hash is already in the search (stored
        before, or earlier in the same batch) is skipped, not inserted and not
        returned: the result may be shorter than the input. Use
        `find_by_hashes` to get the existing rows of skipped ones. Because of
        that, repeating a batch is harmless (after a RetryableStoreError, say):
        the second call inserts only what the first did not. Writes one
        candidates_added event per call that inserted something.

        A store from `with_reconnect` repeats the call itself after a lost
        COMMIT, and then returns what the first attempt inserted too (the
        runner is the single writer of its search's candidates).
        """
        first_seen: set[str] | None = None  # hashes already stored when the first attempt looked

        def fn(s: Session) -> list[CandidateRecord]:
            nonlocal first_seen
            # Lock the search row: concurrent adds to one search queue here,
            # which keeps the duplicate check below race-free.
            _get_search(s, search_id, lock=True)
            hashes = list({c.structural_hash for c in candidates})
            seen: set[str] = set()
            for chunk in _chunks(hashes):
                seen.update(
                    s.scalars(
                        select(_candidates.c.structural_hash).where(
                            _candidates.c.search_id == search_id,
                            _candidates.c.structural_hash.in_(chunk),
                        )
                    )
                )
            if first_seen is None:
                first_seen = set(seen)
            earlier = self._by_hashes(s, search_id, sorted(seen - first_seen))  # a lost COMMIT's rows
            now = utcnow()
            rows: list[dict[str, Any]] = []
            for c in candidates:
                if c.structural_hash in seen:
                    continue
                seen.add(c.structural_hash)
                rows.append(
                    {
                        "search_id": search_id,
                        "graph": c.graph,
                        "structural_hash": c.structural_hash,
                        "fingerprint": c.fingerprint,
                        "parent_ids": list(c.parent_ids),
                        "mutation": c.mutation,
                        "generation": c.generation,
                        "status": CandidateStatus.PENDING.value,
                        "rejection_stage": None,
                        "rejection_reason": None,
                        "objectives": None,
                        "reused_from": None,
                        "created_at": now,
                        "updated_at": now,
                    }
                )
            if not rows:
                return _in_input_order(earlier, candidates)
            stmt = insert(_candidates).returning(*_candidates.c, sort_by_parameter_order=True)
            records = [_candidate_record(r) for r in s.execute(stmt, rows)]
            s.execute(
                update(_searches)
                .where(_searches.c.id == search_id)
                .values(num_candidates=_searches.c.num_candidates + len(records), updated_at=now)
            )
            self._append_events(
                s,
                [
                    {
                        "kind": EventKind.CANDIDATES_ADDED.value,
                        "search_id": search_id,
                        "payload": {
                            "ids": [r.id for r in records],
                            "skipped": len(candidates) - len(records),
                        },
                    }
                ],
            )
            return _in_input_order(earlier + records, candidates)

        return self._run("add_candidates", fn, write=True, idempotent=True)

    @staticmethod
    def _by_hashes(s: Session, search_id: int, hashes: Sequence[str]) -> list[CandidateRecord]:
        out: list[CandidateRecord] = []
        for chunk in _chunks(list(hashes)):
            rows = s.execute(select(_candidates).where(_candidates.c.search_id == search_id,
                                                       _candidates.c.structural_hash.in_(chunk)))
            out += [_candidate_record(r) for r in rows]
        return out

    def mark_evaluating(self, candidate_ids: Iterable[int]) -> list[int]:
        """Move pending candidates to evaluating; returns the ids that moved (sorted).

        Ids that are not pending (already evaluating, finished, unknown) are
        left alone and left out of the result. When a store from
        `with_reconnect` repeats the call after a lost COMMIT, ids already
        evaluating are counted as moved (by the first attempt).
        """
        return self._move_status(
            "mark_evaluating", candidate_ids, CandidateStatus.PENDING, CandidateStatus.EVALUATING
        )

    def reset_evaluating(self, search_id: int) -> list[int]:
        """Move a search's evaluating candidates back to pending (runner restart recovery)."""

        def fn(s: Session) -> list[int]:
            stmt = (
                update(_candidates)
                .where(
                    _candidates.c.search_id == search_id,
                    _candidates.c.status == CandidateStatus.EVALUATING.value,
                )
                .values(status=CandidateStatus.PENDING.value, updated_at=utcnow())
                .returning(_candidates.c.id)
            )
            return sorted(s.scalars(stmt))

        return self._run("reset_evaluating", fn, write=True, idempotent=True)

    def _move_status(
        self, op: str, ids: Iterable[int], old: CandidateStatus, new: CandidateStatus
    ) -> list[int]:
        unique = sorted(set(ids))
        if not unique:
            return []

        attempts = 0

        def fn(s: Session) -> list[int]:
            nonlocal attempts
            attempts += 1
            moved: list[int] = []
            now = utcnow()
            for chunk in _chunks(unique):
                stmt = (
                    update(_candidates)
                    .where(_candidates.c.id.in_(chunk), _candidates.c.status == old.value)
                    .values(status=new.value, updated_at=now)
                    .returning(_candidates.c.id)
                )
                moved.extend(s.scalars(stmt))
                if attempts > 1:
                    # A repeat after a lost COMMIT: rows already at `new` were moved by the first
                    # attempt (the runner is the single writer of its candidates), so they count.
                    moved.extend(s.scalars(select(_candidates.c.id).where(
                        _candidates.c.id.in_(chunk), _candidates.c.status == new.value)))
            return sorted(set(moved))

        return self._run(op, fn, write=True, idempotent=True)

    def finish_candidate(
        self,
        candidate_id: int,
        *,
        status: CandidateStatus | str,
        objectives: Sequence[float] | None = None,
        rejection_stage: str | None = None,
        rejection_reason: str | None = None,
        evaluations: Sequence[NewEvaluation] = (),
        reused_from: int | None = None,
        fingerprint: str | None = None,
    ) -> CandidateRecord:
        """Record one candidate's result; see `finish_candidates`."""
        outcome = CandidateOutcome(
            candidate_id=candidate_id,
            status=CandidateStatus(status),
            objectives=objectives,
            rejection_stage=rejection_stage,
            rejection_reason=rejection_reason,
            evaluations=evaluations,
            reused_from=reused_from,
            fingerprint=fingerprint,
        )
        return self.finish_candidates([outcome])[0]

    def finish_candidates(self, outcomes: Sequence[CandidateOutcome]) -> list[CandidateRecord]:
        """Record results: candidate row, its evaluations, counters and an event, in ONE transaction.

        Idempotent, first result wins: a candidate that is already evaluated
        or rejected (or appears twice in `outcomes`) is not changed and gets no
        new evaluations or event; its stored record is returned as is. So a
        finish repeated after a RetryableStoreError cannot duplicate rows.
        Candidates may be finished from pending or evaluating. An unknown
        candidate id raises NotFoundError and nothing is written.
        `fingerprint`, when given, is stored with the result. Returns one
        record per outcome, in order.
        """
        if not outcomes:
            return []
        ids = sorted({o.candidate_id for o in outcomes})

        def fn(s: Session) -> list[CandidateRecord]:
            # Lock the rows so a concurrent finish of the same candidate waits
            # and then sees it finished (idempotence under races, PostgreSQL;
            # SQLite writers are serialized anyway).
            stored: dict[int, CandidateRecord] = {}
            for chunk in _chunks(ids):
                stmt = (
                    select(_candidates)
                    .where(_candidates.c.id.in_(chunk))
                    .order_by(_candidates.c.id)
                    .with_for_update(key_share=True)
                )
                stored.update((r.id, _candidate_record(r)) for r in s.execute(stmt))
            missing = [i for i in ids if i not in stored]
            if missing:
                raise NotFoundError(f"finish_candidates: no candidates with ids {missing}")

            now = utcnow()
            updates: list[dict[str, Any]] = []
            evaluations: list[dict[str, Any]] = []
            events: list[dict[str, Any]] = []
            tallies: dict[int, Counter[str]] = {}
            spent: dict[int, float] = {}
            for o in outcomes:
                current = stored[o.candidate_id]
                if current.finished:
                    continue
                done = replace(
                    current,
                    status=o.status,
                    objectives=None if o.objectives is None else tuple(o.objectives),
                    rejection_stage=o.rejection_stage,
                    rejection_reason=o.rejection_reason,
                    reused_from=o.reused_from,
                    fingerprint=current.fingerprint if o.fingerprint is None else o.fingerprint,
                    updated_at=now,
                    rung=o.rung,
                    estimates=None if o.estimates is None else tuple(o.estimates),
                    verified=o.verified,
                )
                stored[o.candidate_id] = done
                objectives = None if done.objectives is None else list(done.objectives)
                updates.append(
                    {
                        "b_id": done.id,
                        "b_status": done.status.value,
                        "b_objectives": objectives,
                        "b_rejection_stage": done.rejection_stage,
                        "b_rejection_reason": done.rejection_reason,
                        "b_reused_from": done.reused_from,
                        "b_fingerprint": done.fingerprint,
                        "b_updated_at": now,
                        "b_rung": done.rung,
                        "b_estimates": _estimates_json(done.estimates),
                        "b_verified": done.verified,
                    }
                )
                evaluations.extend(_evaluation_row(done.id, e, now) for e in o.evaluations)
                tallies.setdefault(done.search_id, Counter())[done.status.value] += 1
                spent[done.search_id] = spent.get(done.search_id, 0.0) + o.core_s
                events.append(
                    {
                        "kind": EventKind.CANDIDATE_FINISHED.value,
                        "search_id": done.search_id,
                        "candidate_id": done.id,
                        "payload": {
                            "status": done.status.value,
                            "objectives": objectives,
                            "rejection_stage": done.rejection_stage,
                            "reused_from": done.reused_from,
                            "rung": done.rung,
                            "estimates": _estimates_json(done.estimates),
                            "verified": done.verified,
                            "core_s": o.core_s,
                        },
                    }
                )
            if updates:
                s.execute(_FINISH_CANDIDATE, updates)
            if evaluations:
                s.execute(insert(_evaluations), evaluations)
            for search_id, tally in tallies.items():
                s.execute(
                    update(_searches)
                    .where(_searches.c.id == search_id)
                    .values(
                        num_evaluated=_searches.c.num_evaluated + tally[CandidateStatus.EVALUATED.value],
                        num_rejected=_searches.c.num_rejected + tally[CandidateStatus.REJECTED.value],
                        core_s=_searches.c.core_s + spent.get(search_id, 0.0),
                        updated_at=now,
                    )
                )
            self._append_events(s, events)
            return [stored[o.candidate_id] for o in outcomes]

        return self._run("finish_candidates", fn, write=True, idempotent=True)

    def record_rung(self, outcome: RungOutcome) -> CandidateRecord:
        """Record an evaluated candidate's result at a higher funnel rung, in ONE transaction:
        its new runs, its objectives and estimates at that rung, and an event.

        Idempotent: an outcome for a rung the candidate has already reached (a
        repeat after a RetryableStoreError, say) changes nothing and adds no
        runs. Only an evaluated original climbs; anything else raises
        StoreError and nothing is written.
        """

        def fn(s: Session) -> CandidateRecord:
            stmt = select(_candidates).where(_candidates.c.id == outcome.candidate_id).with_for_update()
            row = s.execute(stmt).first()
            if row is None:
                raise NotFoundError(f"no candidate with id {outcome.candidate_id}")
            current = _candidate_record(row)
            if current.status is not CandidateStatus.EVALUATED or current.reused_from is not None:
                raise StoreError(f"record_rung: candidate {current.id} is {current.status.value}"
                                      f"{' (a duplicate)' if current.reused_from else ''}: only an "
                                      "evaluated original climbs the funnel")
            if current.rung is not None and current.rung >= outcome.rung:
                return current
            now = utcnow()
            done = replace(current, objectives=tuple(outcome.objectives), rung=outcome.rung,
                           estimates=tuple(outcome.estimates), verified=outcome.verified, updated_at=now)
            s.execute(
                update(_candidates)
                .where(_candidates.c.id == done.id)
                .values(objectives=list(outcome.objectives), rung=done.rung,
                        estimates=_estimates_json(done.estimates), verified=done.verified, updated_at=now)
            )
            # Functional duplicates show their original's result: they move with it.
            s.execute(
                update(_candidates)
                .where(_candidates.c.reused_from == done.id)
                .values(objectives=list(outcome.objectives), rung=done.rung,
                        estimates=_estimates_json(done.estimates), verified=done.verified)
            )
            if outcome.evaluations:
                s.execute(insert(_evaluations), [_evaluation_row(done.id, e, now) for e in outcome.evaluations])
            if outcome.core_s:
                s.execute(update(_searches).where(_searches.c.id == done.search_id)
                          .values(core_s=_searches.c.core_s + outcome.core_s))
            self._append_events(s, [{
                "kind": EventKind.CANDIDATE_PROMOTED.value,
                "search_id": done.search_id,
                "candidate_id": done.id,
                "payload": {"rung": done.rung, "objectives": list(outcome.objectives),
                            "estimates": _estimates_json(done.estimates), "verified": done.verified,
                            "core_s": outcome.core_s},
            }])
            return done

        return self._run("record_rung", fn, write=True, idempotent=True)

    # -- candidates: reads -------------------------------------------------

    def get_candidate(self, candidate_id: int) -> CandidateRecord:
        def fn(s: Session) -> CandidateRecord:
            row = s.execute(select(_candidates).where(_candidates.c.id == candidate_id)).first()
            if row is None:
                raise NotFoundError(f"no candidate with id {candidate_id}")
            return _candidate_record(row)

        return self._run("get_candidate", fn, write=False)

    def get_candidates(self, candidate_ids: Iterable[int]) -> list[CandidateRecord]:
        """Candidates by id, in id order; unknown ids are left out."""
        ids = sorted(set(candidate_ids))

        def fn(s: Session) -> list[CandidateRecord]:
            out: list[CandidateRecord] = []
            for chunk in _chunks(ids):
                stmt = select(_candidates).where(_candidates.c.id.in_(chunk)).order_by(_candidates.c.id)
                out += [_candidate_record(r) for r in s.execute(stmt)]
            return out

        return self._run("get_candidates", fn, write=False)

    def list_candidates(
        self,
        search_id: int,
        *,
        status: CandidateStatus | str | Iterable[CandidateStatus | str] | None = None,
        rejection_stage: str | None = None,
        after_id: int | None = None,
        order_by: CandidateOrder = "id",
        descending: bool = False,
        limit: int | None = 100,
        offset: int = 0,
    ) -> list[CandidateRecord]:
        """A page of a search's candidates.

        `after_id` keeps only ids greater than it (a cursor: with the default
        order, pass the last id seen to get only newer rows). Ties in
        `order_by` are broken by id in the same direction, so pages are
        stable and disjoint.
        """
        _check_page(limit, offset)
        if order_by not in _CANDIDATE_ORDER_COLUMNS:
            raise ValueError(f"order_by must be one of {sorted(_CANDIDATE_ORDER_COLUMNS)}")

        def fn(s: Session) -> list[CandidateRecord]:
            stmt = select(_candidates).where(_candidates.c.search_id == search_id)
            if status is not None:
                stmt = stmt.where(_candidates.c.status.in_(_candidate_statuses(status)))
            if rejection_stage is not None:
                stmt = stmt.where(_candidates.c.rejection_stage == rejection_stage)
            if after_id is not None:
                stmt = stmt.where(_candidates.c.id > after_id)
            keys = [_CANDIDATE_ORDER_COLUMNS[order_by]]
            if order_by != "id":
                keys.append(_candidates.c.id)
            stmt = stmt.order_by(*(k.desc() if descending else k.asc() for k in keys))
            stmt = stmt.limit(limit).offset(offset)
            return [_candidate_record(r) for r in s.execute(stmt)]

        return self._run("list_candidates", fn, write=False)

    def candidates_by_status(
        self,
        search_id: int,
        statuses: CandidateStatus | str | Iterable[CandidateStatus | str],
        *,
        limit: int | None = None,
    ) -> list[CandidateRecord]:
        """A search's candidates in any of `statuses`, by id (all of them unless `limit`)."""
        return self.list_candidates(search_id, status=statuses, limit=limit)

    def find_by_hash(self, search_id: int, structural_hash: str) -> CandidateRecord | None:
        return self.find_by_hashes(search_id, [structural_hash]).get(structural_hash)

    def find_by_hashes(self, search_id: int, structural_hashes: Iterable[str]) -> dict[str, CandidateRecord]:
        """Candidates of a search by structural hash; hashes not stored are absent."""
        hashes = sorted(set(structural_hashes))

        def fn(s: Session) -> dict[str, CandidateRecord]:
            return {r.structural_hash: r for r in self._by_hashes(s, search_id, hashes)}

        return self._run("find_by_hashes", fn, write=False)

    def find_by_fingerprint(
        self,
        fingerprint: str,
        *,
        search_id: int | None = None,
        status: CandidateStatus | str | Iterable[CandidateStatus | str] = (CandidateStatus.EVALUATED),
    ) -> CandidateRecord | None:
        """The first (lowest id) candidate with this functional fingerprint, or None.

        By default only evaluated candidates count (their results can be
        reused), in any search; `search_id` restricts it to one search.
        """

        def fn(s: Session) -> CandidateRecord | None:
            stmt = select(_candidates).where(
                _candidates.c.fingerprint == fingerprint,
                _candidates.c.status.in_(_candidate_statuses(status)),
            )
            if search_id is not None:
                stmt = stmt.where(_candidates.c.search_id == search_id)
            row = s.execute(stmt.order_by(_candidates.c.id).limit(1)).first()
            return None if row is None else _candidate_record(row)

        return self._run("find_by_fingerprint", fn, write=False)

    def count_by_status(self, search_id: int) -> dict[CandidateStatus, int]:
        """Candidates per status; every status is present (0 when none)."""

        def fn(s: Session) -> dict[CandidateStatus, int]:
            stmt = (
                select(_candidates.c.status, func.count())
                .where(_candidates.c.search_id == search_id)
                .group_by(_candidates.c.status)
            )
            counts = dict.fromkeys(CandidateStatus, 0)
            for status, n in s.execute(stmt):
                counts[CandidateStatus(status)] = n
            return counts

        return self._run("count_by_status", fn, write=False)

    def count_by_rejection_stage(self, search_id: int) -> dict[str, int]:
        """Rejected candidates per rejection stage (stages with none are absent)."""

        def fn(s: Session) -> dict[str, int]:
            stmt = (
                select(_candidates.c.rejection_stage, func.count())
                .where(
                    _candidates.c.search_id == search_id,
                    _candidates.c.status == CandidateStatus.REJECTED.value,
                )
                .group_by(_candidates.c.rejection_stage)
                .order_by(_candidates.c.rejection_stage)
            )
            return {stage or "": n for stage, n in s.execute(stmt)}

        return self._run("count_by_rejection_stage", fn, write=False)

    def evaluations_for(self, candidate_id: int) -> list[EvaluationRecord]:
        """A candidate's evaluations, oldest first (empty for unknown ids)."""
        return self.evaluations_for_candidates([candidate_id]).get(candidate_id, [])

    def evaluations_for_candidates(self, candidate_ids: Iterable[int]) -> dict[int, list[EvaluationRecord]]:
        """Evaluations of many candidates in one go; ids without any are absent."""
        ids = sorted(set(candidate_ids))

        def fn(s: Session) -> dict[int, list[EvaluationRecord]]:
            found: dict[int, list[EvaluationRecord]] = {}
            for chunk in _chunks(ids):
                stmt = (
                    select(_evaluations)
                    .where(_evaluations.c.candidate_id.in_(chunk))
                    .order_by(_evaluations.c.id)
                )
                for r in s.execute(stmt):
                    found.setdefault(r.candidate_id, []).append(_evaluation_record(r))
            return found

        return self._run("evaluations_for_candidates", fn, write=False)

    # -- events -------------------------------------------------------------

    def append_event(
        self,
        kind: str,
        payload: Mapping[str, Any] | None = None,
        *,
        search_id: int | None = None,
        candidate_id: int | None = None,
    ) -> EventRecord:
        def fn(s: Session) -> EventRecord:
            row = {
                "kind": str(kind),
                "payload": dict(payload or {}),
                "search_id": search_id,
                "candidate_id": candidate_id,
            }
            return self._append_events(s, [row], returning=True)[0]

        return self._run("append_event", fn, write=True)

    def record_spend(self, search_id: int, core_s: float, kind: str, payload: Mapping[str, Any] | None = None,
                     *, candidate_id: int | None = None) -> EventRecord:
        """Worker seconds that produced no result (a failed climb, say): added to the search's spend
        with an event saying why, in one transaction."""

        def fn(s: Session) -> EventRecord:
            s.execute(update(_searches).where(_searches.c.id == search_id)
                      .values(core_s=_searches.c.core_s + core_s))
            row = {"kind": str(kind), "payload": {**(payload or {}), "core_s": core_s},
                   "search_id": search_id, "candidate_id": candidate_id}
            return self._append_events(s, [row], returning=True)[0]

        return self._run("record_spend", fn, write=True)

    def events_after(
        self,
        after_id: int = 0,
        *,
        search_id: int | None = None,
        kinds: Collection[str] | None = None,
        limit: int = 1000,
    ) -> list[EventRecord]:
        """Events with id > after_id (of these `kinds` when given), in id order; pass the last id seen
        to follow the log."""
        _check_page(limit, 0)

        def fn(s: Session) -> list[EventRecord]:
            stmt = select(_events).where(_events.c.id > after_id)
            if search_id is not None:
                stmt = stmt.where(_events.c.search_id == search_id)
            order: Any = _events.c.id
            if kinds is not None:
                stmt = stmt.where(_events.c.kind.in_(sorted(str(k) for k in kinds)))
                if search_id is not None:
                    # `id + 0`: ordered by the (search_id, id) index, SQLite walked every event of the
                    # search (100,000 for as many candidates) to find its few faults; this way it reads
                    # them from (search_id, kind, id) and sorts those
                    order = _events.c.id + 0
            stmt = stmt.order_by(order).limit(limit)
            return [_event_record(r) for r in s.execute(stmt)]

        return self._run("events_after", fn, write=False)

    def last_event_id(self, *, search_id: int | None = None) -> int:
        """The newest event id (0 when none): where a follower that wants only new events starts."""

        def fn(s: Session) -> int:
            stmt = select(func.max(_events.c.id))
            if search_id is not None:
                stmt = stmt.where(_events.c.search_id == search_id)
            return s.scalar(stmt) or 0

        return self._run("last_event_id", fn, write=False)

    # -- rerank --------------------------------------------------------------

    def add_rerank_results(self, search_id: int, results: Sequence[NewRerankResult]) -> list[RerankRecord]:
        """Store final re-training results; candidates must belong to the search."""

        def fn(s: Session) -> list[RerankRecord]:
            _get_search(s, search_id)
            ids = sorted({r.candidate_id for r in results if r.candidate_id is not None})
            owned: set[int] = set()
            for chunk in _chunks(ids):
                owned.update(
                    s.scalars(
                        select(_candidates.c.id).where(
                            _candidates.c.id.in_(chunk), _candidates.c.search_id == search_id
                        )
                    )
                )
            foreign = [i for i in ids if i not in owned]
            if foreign:
                raise NotFoundError(f"search {search_id} has no candidates with ids {foreign}")
            if not results:
                return []
            now = utcnow()
            rows = [
                {
                    "search_id": search_id,
                    "candidate_id": r.candidate_id,
                    "zoo_layer": r.zoo_layer,
                    "backbone": r.backbone,
                    "metrics": dict(r.metrics),
                    "created_at": now,
                }
                for r in results
            ]
            stmt = insert(_rerank).returning(*_rerank.c, sort_by_parameter_order=True)
            records = [_rerank_record(r) for r in s.execute(stmt, rows)]
            self._append_events(
                s,
                [
                    {
                        "kind": EventKind.RERANK_ADDED.value,
                        "search_id": search_id,
                        "payload": {"ids": [r.id for r in records]},
                    }
                ],
            )
            return records

        return self._run("add_rerank_results", fn, write=True)

    def rerank_results(self, search_id: int) -> list[RerankRecord]:
        def fn(s: Session) -> list[RerankRecord]:
            stmt = select(_rerank).where(_rerank.c.search_id == search_id).order_by(_rerank.c.id)
            return [_rerank_record(r) for r in s.execute(stmt)]

        return self._run("rerank_results", fn, write=False)

    def put_rerank_trial(self, search_id: int, trial: NewRerankTrial) -> RerankTrialRecord:
        """Record one finished re-ranking trial, replacing a row with the same key (a trial run again)."""

        def fn(s: Session) -> RerankTrialRecord:
            _get_search(s, search_id)
            if trial.candidate_id is not None and s.scalar(
                select(_candidates.c.search_id).where(_candidates.c.id == trial.candidate_id)
            ) != search_id:
                raise NotFoundError(f"search {search_id} has no candidate {trial.candidate_id}")
            s.execute(delete(_rerank_trials).where(_rerank_trials.c.search_id == search_id,
                                                   _rerank_trials.c.key == trial.key))
            row = s.execute(insert(_rerank_trials).returning(*_rerank_trials.c), {
                "search_id": search_id, "key": trial.key, "candidate_id": trial.candidate_id,
                "zoo_layer": trial.zoo_layer, "objective": trial.objective, "metrics": dict(trial.metrics),
                "created_at": utcnow()}).one()
            return _rerank_trial_record(row)

        return self._run("put_rerank_trial", fn, write=True, idempotent=True)

    def rerank_trials(self, search_id: int) -> list[RerankTrialRecord]:
        """The search's recorded re-ranking trials, oldest first."""

        def fn(s: Session) -> list[RerankTrialRecord]:
            stmt = select(_rerank_trials).where(_rerank_trials.c.search_id == search_id).order_by(
                _rerank_trials.c.id)
            return [_rerank_trial_record(r) for r in s.execute(stmt)]

        return self._run("rerank_trials", fn, write=False)


# -- helpers ---------------------------------------------------------------


def _get_search(s: Session, search_id: int, *, lock: bool = False) -> Search:
    stmt = select(Search).where(Search.id == search_id)
    if lock:
        # FOR NO KEY UPDATE (not FOR UPDATE): it does not block the key-share
        # locks that inserting rows referencing this search takes, which
        # `_append_events`' deadlock argument relies on. SQLite ignores it.
        stmt = stmt.with_for_update(key_share=True)
    row = s.scalars(stmt).one_or_none()
    if row is None:
        raise NotFoundError(f"no search with id {search_id}")
    return row


def _chunks(values: Sequence[T], size: int = _IN_CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _check_page(limit: int | None, offset: int) -> None:
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")


def _search_statuses(value: SearchStatus | str | Iterable[SearchStatus | str]) -> list[str]:
    items = [value] if isinstance(value, str) else list(value)
    return [SearchStatus(v).value for v in items]


def _candidate_statuses(
    value: CandidateStatus | str | Iterable[CandidateStatus | str],
) -> list[str]:
    items = [value] if isinstance(value, str) else list(value)
    return [CandidateStatus(v).value for v in items]


def _in_input_order(records: list[CandidateRecord],
                    candidates: Sequence[NewCandidate]) -> list[CandidateRecord]:
    position = {c.structural_hash: i for i, c in reversed(list(enumerate(candidates)))}
    return sorted(records, key=lambda r: position[r.structural_hash])


def _translate(op: str, exc: SQLAlchemyError, *, write: bool) -> StoreError:
    detail = str(exc.orig) if isinstance(exc, DBAPIError) else str(exc)
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        outcome = " (the write may or may not have been committed)" if write else ""
        return RetryableStoreError(f"{op}: database connection lost{outcome}: {detail}")
    if isinstance(exc, DBAPIError) and _never_connected(exc):
        return RetryableStoreError(f"{op}: database unreachable, try again: {detail}")
    if isinstance(exc, PoolTimeoutError) or _retryable_driver_error(exc):
        return RetryableStoreError(f"{op}: database busy, try again: {detail}")
    return StoreError(f"{op}: {detail}")


def _never_connected(exc: DBAPIError) -> bool:
    """A PostgreSQL connection that could not be opened (server down or restarting): nothing was sent.

    psycopg raises OperationalError without a SQLSTATE for it; SQLAlchemy leaves the statement
    unset and, as no connection was in use, does not flag one as invalidated.
    """
    orig = exc.orig
    return (isinstance(exc, OperationalError) and exc.statement is None and not exc.connection_invalidated
            and hasattr(orig, "sqlstate") and getattr(orig, "sqlstate", None) is None)


def _retryable_driver_error(exc: SQLAlchemyError) -> bool:
    if not isinstance(exc, DBAPIError):
        return False
    if _never_connected(exc):
        return True
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    if isinstance(sqlstate, str):
        return sqlstate in _RETRYABLE_SQLSTATES or sqlstate.startswith("08")
    code = getattr(orig, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)


# -- rows -> records ---------------------------------------------------------
# Values arrive already converted by the column types (JSON parsed, times
# made UTC-aware), so these only reshape.


def _search_record(r: Search | Row[Any]) -> SearchRecord:
    return SearchRecord(
        id=r.id,
        name=r.name,
        config=r.config,
        status=SearchStatus(r.status),
        seed=r.seed,
        error=r.error,
        num_candidates=r.num_candidates,
        num_evaluated=r.num_evaluated,
        num_rejected=r.num_rejected,
        created_at=r.created_at,
        started_at=r.started_at,
        finished_at=r.finished_at,
        updated_at=r.updated_at,
        runner=r.runner,
        runner_heartbeat=r.runner_heartbeat,
        core_s=float(r.core_s or 0.0),
    )


def _candidate_record(r: Row[Any]) -> CandidateRecord:
    return CandidateRecord(
        id=r.id,
        search_id=r.search_id,
        graph=r.graph,
        structural_hash=r.structural_hash,
        fingerprint=r.fingerprint,
        parent_ids=tuple(r.parent_ids),
        mutation=r.mutation,
        generation=r.generation,
        status=CandidateStatus(r.status),
        rejection_stage=r.rejection_stage,
        rejection_reason=r.rejection_reason,
        objectives=None if r.objectives is None else tuple(r.objectives),
        reused_from=r.reused_from,
        created_at=r.created_at,
        updated_at=r.updated_at,
        rung=r.rung,
        estimates=None if r.estimates is None else tuple(Estimate.from_json(e) for e in r.estimates),
        verified=bool(r.verified),
    )


def _evaluation_record(r: Row[Any]) -> EvaluationRecord:
    return EvaluationRecord(
        id=r.id,
        candidate_id=r.candidate_id,
        backbone=r.backbone,
        task=r.task,
        metrics=r.metrics,
        wall_s=r.wall_s,
        worker=r.worker,
        created_at=r.created_at,
        rung=r.rung,
        seed=r.seed,
        steps=r.steps,
    )


def _evaluation_row(candidate_id: int, e: NewEvaluation, now: datetime) -> dict[str, Any]:
    return {"candidate_id": candidate_id, "backbone": e.backbone, "task": e.task, "metrics": dict(e.metrics),
            "wall_s": e.wall_s, "worker": e.worker, "created_at": now, "rung": e.rung, "seed": e.seed,
            "steps": e.steps}


def _estimates_json(estimates: Sequence[Estimate] | None) -> list[dict[str, Any]] | None:
    return None if estimates is None else [e.to_json() for e in estimates]


def _event_record(r: Row[Any]) -> EventRecord:
    return EventRecord(
        id=r.id,
        kind=r.kind,
        payload=r.payload,
        search_id=r.search_id,
        candidate_id=r.candidate_id,
        created_at=r.created_at,
    )


def _rerank_record(r: Row[Any]) -> RerankRecord:
    return RerankRecord(
        id=r.id,
        search_id=r.search_id,
        candidate_id=r.candidate_id,
        zoo_layer=r.zoo_layer,
        backbone=r.backbone,
        metrics=r.metrics,
        created_at=r.created_at,
    )


def _rerank_trial_record(r: Row[Any]) -> RerankTrialRecord:
    return RerankTrialRecord(
        id=r.id,
        search_id=r.search_id,
        key=r.key,
        candidate_id=r.candidate_id,
        zoo_layer=r.zoo_layer,
        objective=r.objective,
        metrics=r.metrics,
        created_at=r.created_at,
    )

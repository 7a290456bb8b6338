"""SQLAlchemy models: the schema, one class per table.

Only `db/` imports this module; the rest of the code sees `db.records`.
`migrations/versions/` must create exactly this schema (a test compares
them with alembic's `compare_metadata` on every backend), so a change here
needs a new migration.

Conventions:
- Statuses are short strings with a CHECK constraint instead of a native
  enum type, so adding a status is a plain migration on every backend.
- Timestamps are written by the store in UTC and read back timezone-aware.
- Ids of the tables that grow with every evaluation are 64-bit on
  PostgreSQL; SQLite keeps INTEGER because only `INTEGER PRIMARY KEY` is an
  alias of its autoincrementing rowid (and its INTEGER is 64-bit anyway).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.expression import false
from sqlalchemy.types import TypeDecorator

# Deterministic constraint names: migrations can refer to them, and they
# are identical on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

BigId = BigInteger().with_variant(Integer(), "sqlite")

SEARCH_STATUSES = ("queued", "running", "paused", "cancelled", "finished", "failed")
CANDIDATE_STATUSES = ("pending", "evaluating", "rejected", "evaluated")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python.

    SQLite has no time zone type and returns naive values; PostgreSQL returns
    the session's zone. Both come back as UTC so records compare equal
    across backends.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the store only writes aware UTC times")
        value = value.astimezone(UTC)
        # SQLite stores the literal text; dropping the offset keeps one
        # sortable format in the file.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
    }


class Search(Base):
    __tablename__ = "searches"
    __table_args__ = (
        CheckConstraint(_in("status", SEARCH_STATUSES), name="status"),
        Index(None, "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    config: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16))
    seed: Mapped[int | None] = mapped_column(BigInteger)
    error: Mapped[str | None] = mapped_column(Text)
    # Maintained by the store in the same transaction as the rows they
    # count, so the dashboard reads them without COUNT(*) over candidates.
    num_candidates: Mapped[int] = mapped_column(Integer, default=0)
    num_evaluated: Mapped[int] = mapped_column(Integer, default=0)
    num_rejected: Mapped[int] = mapped_column(Integer, default=0)
    # worker seconds spent by the search's jobs (migration 0005)
    core_s: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The lease of the one runner allowed to write the search, and its last renewal (migration 0003).
    runner: Mapped[str | None] = mapped_column(String(128))
    runner_heartbeat: Mapped[datetime | None]


class Candidate(Base):
    __tablename__ = "candidates"
    __table_args__ = (
        UniqueConstraint("search_id", "structural_hash"),
        CheckConstraint(_in("status", CANDIDATE_STATUSES), name="status"),
        # Work queue and listings: (search, status) ordered by id. The
        # trailing id makes PostgreSQL serve ORDER BY id from the index too
        # (SQLite appends the rowid to every index anyway).
        Index(None, "search_id", "status", "id"),
        # Cursors and paging within one search (after_id / ORDER BY id).
        Index(None, "search_id", "id"),
        # The other sort orders of a search's candidate pages (migration 0002).
        Index(None, "search_id", "generation", "id"),
        Index(None, "search_id", "updated_at", "id"),
        Index(None, "structural_hash"),
        Index(None, "fingerprint"),
        # A candidate's functional duplicates, updated with it as it climbs the funnel (migration 0004).
        Index(None, "reused_from"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    search_id: Mapped[int] = mapped_column(ForeignKey("searches.id"))
    graph: Mapped[str] = mapped_column(Text)
    structural_hash: Mapped[str] = mapped_column(String(128))
    fingerprint: Mapped[str | None] = mapped_column(String(128))
    parent_ids: Mapped[list[int]] = mapped_column(JSON)
    mutation: Mapped[str | None] = mapped_column(Text)
    generation: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16))
    rejection_stage: Mapped[str | None] = mapped_column(String(64))
    rejection_reason: Mapped[str | None] = mapped_column(Text)
    # none_as_null: "not evaluated yet" is SQL NULL, not the JSON text 'null'.
    objectives: Mapped[list[float] | None] = mapped_column(JSON(none_as_null=True))
    reused_from: Mapped[int | None] = mapped_column(BigId, ForeignKey("candidates.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The promotion funnel (migration 0004): the highest rung finished, the objectives as
    # estimates at that rung ([{"mean", "stderr", "n"}] in objective order), and whether the
    # top rung (with its held-out tasks) is done.
    rung: Mapped[int | None] = mapped_column(Integer)
    estimates: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON(none_as_null=True))
    verified: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class Evaluation(Base):
    __tablename__ = "evaluations"
    __table_args__ = (Index(None, "candidate_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    candidate_id: Mapped[int] = mapped_column(BigId, ForeignKey("candidates.id"))
    backbone: Mapped[str] = mapped_column(String(128))
    task: Mapped[str] = mapped_column(String(128))
    metrics: Mapped[dict[str, Any]]
    wall_s: Mapped[float | None] = mapped_column(Float)
    worker: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # One training run of the funnel (migration 0004): its rung, seed and step count.
    rung: Mapped[int | None] = mapped_column(Integer)
    seed: Mapped[int | None] = mapped_column(BigInteger)
    steps: Mapped[int | None] = mapped_column(Integer)


class Event(Base):
    """Append-only log; `id` is the dashboard's cursor.

    AUTOINCREMENT on SQLite so an id is never reused; on PostgreSQL the
    store serializes event inserts so ids become visible in id order (see
    `Store._append_events`).
    """

    __tablename__ = "events"
    # (search_id, kind, id): a search's faults without reading its whole log (a 100,000-candidate search has
    # 100,000 candidate_finished events before its first fault)
    __table_args__ = (Index(None, "search_id", "id"), Index(None, "search_id", "kind", "id"),
                      {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    search_id: Mapped[int | None] = mapped_column(ForeignKey("searches.id"))
    candidate_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("candidates.id"))
    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RerankResult(Base):
    """Final table from a longer re-training of a candidate or a zoo layer."""

    __tablename__ = "rerank_results"
    __table_args__ = (
        CheckConstraint("(candidate_id IS NULL) <> (zoo_layer IS NULL)", name="candidate_xor_zoo_layer"),
        Index(None, "search_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    search_id: Mapped[int] = mapped_column(ForeignKey("searches.id"))
    candidate_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("candidates.id"))
    zoo_layer: Mapped[str | None] = mapped_column(String(128))
    backbone: Mapped[str] = mapped_column(String(128))
    metrics: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RerankTrial(Base):
    """One finished trial of a re-ranking (a layer at one lr and seed on one objective), written as it ends.

    `key` is a hash of everything that decides the trial's training (objective, task config and steps,
    graph, eps, lr, seed): a re-ranking run again skips the keys it finds here (`evonorm_search.rerank`).
    """

    __tablename__ = "rerank_trials"
    __table_args__ = (
        CheckConstraint("(candidate_id IS NULL) <> (zoo_layer IS NULL)", name="candidate_xor_zoo_layer"),
        UniqueConstraint("search_id", "key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    search_id: Mapped[int] = mapped_column(ForeignKey("searches.id"))
    key: Mapped[str] = mapped_column(String(64))
    candidate_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("candidates.id"))
    zoo_layer: Mapped[str | None] = mapped_column(String(128))
    objective: Mapped[str] = mapped_column(String(128))
    metrics: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

"""Initial schema: searches, candidates, evaluations, events, rerank_results.

Revision ID: 0001
Revises:
Create Date: 2026-11-23

Written from an autogenerate of db/models.py, then tidied. Migrations spell
types out with plain `sa` types (never db.models) so this file keeps
creating the same schema when the models move on.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# 64-bit ids on PostgreSQL; SQLite needs exactly INTEGER for a rowid alias.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _timestamp(name: str, *, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "searches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("num_candidates", sa.Integer(), nullable=False),
        sa.Column("num_evaluated", sa.Integer(), nullable=False),
        sa.Column("num_rejected", sa.Integer(), nullable=False),
        _timestamp("created_at"),
        _timestamp("started_at", nullable=True),
        _timestamp("finished_at", nullable=True),
        _timestamp("updated_at"),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'paused', 'cancelled', 'finished', 'failed')",
            name=op.f("ck_searches_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_searches")),
    )
    op.create_index(op.f("ix_searches_status"), "searches", ["status"])

    op.create_table(
        "candidates",
        sa.Column("id", BigId, nullable=False),
        sa.Column("search_id", sa.Integer(), nullable=False),
        sa.Column("graph", sa.Text(), nullable=False),
        sa.Column("structural_hash", sa.String(length=128), nullable=False),
        sa.Column("fingerprint", sa.String(length=128), nullable=True),
        sa.Column("parent_ids", sa.JSON(), nullable=False),
        sa.Column("mutation", sa.Text(), nullable=True),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("rejection_stage", sa.String(length=64), nullable=True),
        sa.Column("rejection_reason", sa.Text(), nullable=True),
        sa.Column("objectives", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("reused_from", BigId, nullable=True),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.CheckConstraint(
            "status IN ('pending', 'evaluating', 'rejected', 'evaluated')",
            name=op.f("ck_candidates_status"),
        ),
        sa.ForeignKeyConstraint(
            ["reused_from"], ["candidates.id"], name=op.f("fk_candidates_reused_from_candidates")
        ),
        sa.ForeignKeyConstraint(["search_id"], ["searches.id"], name=op.f("fk_candidates_search_id_searches")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_candidates")),
        sa.UniqueConstraint(
            "search_id", "structural_hash", name=op.f("uq_candidates_search_id_structural_hash")
        ),
    )
    op.create_index(op.f("ix_candidates_search_id_status_id"), "candidates", ["search_id", "status", "id"])
    op.create_index(op.f("ix_candidates_search_id_id"), "candidates", ["search_id", "id"])
    op.create_index(op.f("ix_candidates_structural_hash"), "candidates", ["structural_hash"])
    op.create_index(op.f("ix_candidates_fingerprint"), "candidates", ["fingerprint"])

    op.create_table(
        "evaluations",
        sa.Column("id", BigId, nullable=False),
        sa.Column("candidate_id", BigId, nullable=False),
        sa.Column("backbone", sa.String(length=128), nullable=False),
        sa.Column("task", sa.String(length=128), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("wall_s", sa.Float(), nullable=True),
        sa.Column("worker", sa.String(length=256), nullable=True),
        _timestamp("created_at"),
        sa.ForeignKeyConstraint(
            ["candidate_id"], ["candidates.id"], name=op.f("fk_evaluations_candidate_id_candidates")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evaluations")),
    )
    op.create_index(op.f("ix_evaluations_candidate_id"), "evaluations", ["candidate_id"])

    op.create_table(
        "events",
        sa.Column("id", BigId, nullable=False),
        sa.Column("search_id", sa.Integer(), nullable=True),
        sa.Column("candidate_id", BigId, nullable=True),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        _timestamp("created_at"),
        sa.ForeignKeyConstraint(
            ["candidate_id"], ["candidates.id"], name=op.f("fk_events_candidate_id_candidates")
        ),
        sa.ForeignKeyConstraint(["search_id"], ["searches.id"], name=op.f("fk_events_search_id_searches")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_events_search_id_id"), "events", ["search_id", "id"])

    op.create_table(
        "rerank_results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("search_id", sa.Integer(), nullable=False),
        sa.Column("candidate_id", BigId, nullable=True),
        sa.Column("zoo_layer", sa.String(length=128), nullable=True),
        sa.Column("backbone", sa.String(length=128), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        _timestamp("created_at"),
        sa.CheckConstraint(
            "(candidate_id IS NULL) <> (zoo_layer IS NULL)",
            name=op.f("ck_rerank_results_candidate_xor_zoo_layer"),
        ),
        sa.ForeignKeyConstraint(
            ["candidate_id"],
            ["candidates.id"],
            name=op.f("fk_rerank_results_candidate_id_candidates"),
        ),
        sa.ForeignKeyConstraint(
            ["search_id"], ["searches.id"], name=op.f("fk_rerank_results_search_id_searches")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rerank_results")),
    )
    op.create_index(op.f("ix_rerank_results_search_id_id"), "rerank_results", ["search_id", "id"])


def downgrade() -> None:
    # Dropping a table drops its indexes; children before parents for the FKs.
    op.drop_table("rerank_results")
    op.drop_table("events")
    op.drop_table("evaluations")
    op.drop_table("candidates")
    op.drop_table("searches")

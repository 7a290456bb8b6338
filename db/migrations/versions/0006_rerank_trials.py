"""Re-ranking trials, each recorded as it finishes.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

`evonorm-search rerank` writes one row per finished Ray Tune trial (a layer
at one learning rate and seed on one objective) the moment it ends, so an
interrupted re-ranking keeps what it finished, and running it again skips
those trials (matched by `key`, a hash of what decides the training).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "rerank_trials",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("search_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("candidate_id", BigId, nullable=True),
        sa.Column("zoo_layer", sa.String(length=128), nullable=True),
        sa.Column("objective", sa.String(length=128), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("(candidate_id IS NULL) <> (zoo_layer IS NULL)",
                           name=op.f("ck_rerank_trials_candidate_xor_zoo_layer")),
        sa.ForeignKeyConstraint(["candidate_id"], ["candidates.id"],
                                name=op.f("fk_rerank_trials_candidate_id_candidates")),
        sa.ForeignKeyConstraint(["search_id"], ["searches.id"],
                                name=op.f("fk_rerank_trials_search_id_searches")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rerank_trials")),
        sa.UniqueConstraint("search_id", "key", name=op.f("uq_rerank_trials_search_id_key")),
    )


def downgrade() -> None:
    op.drop_table("rerank_trials")

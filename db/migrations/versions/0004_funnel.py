"""The promotion funnel: rungs, per-run seeds and objectives as estimates.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

A candidate climbs rungs of rising fidelity (more steps, more seeds, held-out
tasks); each training run is one `evaluations` row with its rung, seed and
step count, so a search stays auditable and a restarted runner knows which
runs are done. The candidate keeps its highest rung, its objectives as
estimates (mean, standard error, n) at that rung, and whether the top rung is
done (verified).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("candidates", sa.Column("rung", sa.Integer(), nullable=True))
    op.add_column("candidates", sa.Column("estimates", sa.JSON(none_as_null=True), nullable=True))
    op.add_column("candidates", sa.Column("verified", sa.Boolean(), nullable=False,
                                          server_default=sa.false()))
    op.add_column("evaluations", sa.Column("rung", sa.Integer(), nullable=True))
    op.add_column("evaluations", sa.Column("seed", sa.BigInteger(), nullable=True))
    op.add_column("evaluations", sa.Column("steps", sa.Integer(), nullable=True))
    op.create_index("ix_candidates_reused_from", "candidates", ["reused_from"])


def downgrade() -> None:
    op.drop_index("ix_candidates_reused_from", "candidates")
    for column in ("steps", "seed", "rung"):
        op.drop_column("evaluations", column)
    for column in ("verified", "estimates", "rung"):
        op.drop_column("candidates", column)

"""Indexes for the candidate table's sort orders: by generation and by last change.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

The dashboard pages a search's candidates sorted by generation or by when
they last changed; without these, each page of a 100,000-candidate search
sorts every row. The trailing id makes ties (ordered by id) come from the
index too.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for column in ("generation", "updated_at"):
        op.create_index(op.f(f"ix_candidates_search_id_{column}_id"), "candidates", ["search_id", column, "id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_candidates_search_id_updated_at_id"), table_name="candidates")
    op.drop_index(op.f("ix_candidates_search_id_generation_id"), table_name="candidates")

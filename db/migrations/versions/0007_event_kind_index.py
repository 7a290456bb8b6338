"""An index on events (search_id, kind, id): a search's events of some kinds (its faults) without its
whole log.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

The dashboard asks for a search's faults on every visit; with only
(search_id, id) that read went through every event of the search (34 ms
at 100,000 candidates, growing with the search).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(op.f("ix_events_search_id_kind_id"), "events", ["search_id", "kind", "id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_events_search_id_kind_id"), "events")

"""The runner's lease on a search: who runs it, and when it last said so.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

One writer per search: a runner claims the search before it touches it and
renews the claim while it runs, so a second runner (a `run --resume` beside
`serve`, a second coordinator on the same database) is refused instead of
training the first one's in-flight candidates again.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("searches", sa.Column("runner", sa.String(128), nullable=True))
    op.add_column("searches", sa.Column("runner_heartbeat", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # A plain DROP COLUMN (SQLite >= 3.35): a batch rebuild of `searches` would trip the foreign keys.
    op.drop_column("searches", "runner_heartbeat")
    op.drop_column("searches", "runner")

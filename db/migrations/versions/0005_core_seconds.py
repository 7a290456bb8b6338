"""Compute spent per search: the worker core-seconds (GPU-seconds on GPU workers) of its jobs.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

A search can be budgeted in compute (`SearchConfig.max_core_hours`), and two
searches compared at equal cost: each recorded result adds the seconds its
job ran to `searches.core_s`, in the same transaction, so a resumed runner
knows what is spent. The events that record results carry each job's share,
so spend over time is in the event log.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("searches", sa.Column("core_s", sa.Float(), nullable=False, server_default="0"))


def downgrade() -> None:
    op.drop_column("searches", "core_s")

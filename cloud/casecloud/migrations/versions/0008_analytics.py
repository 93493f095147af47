"""analytics: hourly and daily counts per case and metric, the aggregation's bookmarks, store hours

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02

Store analytics (issue 14, docs/analytics.md). New tables only. They hold no member, phone, card or
staff reference: counts per (case, period, metric). Backfill: the worker's analytics
job finds its bookmark at 0 and folds every stored event in on its first runs.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "analytics_hours",
        sa.Column("case_id", sa.String(length=32), nullable=False),
        sa.Column("hour", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("metric", sa.String(length=40), nullable=False),
        sa.Column("store_id", sa.String(length=32), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("case_id", "hour", "metric"),
    )
    with op.batch_alter_table("analytics_hours", schema=None) as batch_op:
        batch_op.create_index("ix_analytics_hours_store_hour", ["store_id", "hour"], unique=False)

    op.create_table(
        "analytics_days",
        sa.Column("case_id", sa.String(length=32), nullable=False),
        sa.Column("day", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("metric", sa.String(length=40), nullable=False),
        sa.Column("store_id", sa.String(length=32), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("case_id", "day", "metric"),
    )
    with op.batch_alter_table("analytics_days", schema=None) as batch_op:
        batch_op.create_index("ix_analytics_days_store_day", ["store_id", "day"], unique=False)

    op.create_table(
        "analytics_state",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "store_hours",
        sa.Column("store_id", sa.String(length=32), nullable=False),
        sa.Column("tz", sa.String(length=64), nullable=False),
        sa.Column("week", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["store_id"], ["stores.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("store_id"),
    )


def downgrade() -> None:
    # The counts go with them: they cannot be rebuilt for periods whose events are gone.
    op.drop_table("store_hours")
    op.drop_table("analytics_state")
    op.drop_table("analytics_days")
    op.drop_table("analytics_hours")

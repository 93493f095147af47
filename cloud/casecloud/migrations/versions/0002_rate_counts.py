"""rate limit counters: one row per (scope, key, second) with a count, instead of one per attempt

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30

The old table held one row per attempt and every limit counted them: at a thousand requests a
second a store's window is 600,000 rows to count per request. The new one holds one row per key
and second and a count `n`; the limits sum it. Existing rows are carried over, grouped.
Downgrading keeps one attempt per key and second (counters are working data, dropped after a day
anyway).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_counts",
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("at", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "key", "at"),
        sqlite_with_rowid=False,
    )
    op.execute("INSERT INTO rate_counts (scope, key, at, n) "
               "SELECT scope, key, at, COUNT(*) FROM rate_hits GROUP BY scope, key, at")
    with op.batch_alter_table("rate_hits", schema=None) as batch_op:
        batch_op.drop_index("ix_rate_hits_key")
    op.drop_table("rate_hits")


def downgrade() -> None:
    op.create_table(
        "rate_hits",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("rate_hits", schema=None) as batch_op:
        batch_op.create_index("ix_rate_hits_key", ["scope", "key", "at"], unique=False)
    op.execute("INSERT INTO rate_hits (scope, key, at) SELECT scope, key, at FROM rate_counts")
    op.drop_table("rate_counts")

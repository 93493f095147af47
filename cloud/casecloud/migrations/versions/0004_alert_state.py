"""alerts: severity, state (open, acknowledged, resolved), repeats, late help calls, delivery

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

One alert per case and kind is open at a time (a partial unique index, on SQLite and
PostgreSQL alike); repeats update it. Alerts from before this revision were one row per
notification with no state: they are history, so they start resolved (by "migration"), which also
keeps several old help alerts of one case from colliding in the new index.

cases.status_at: when the shown status (last_status) was true, so that door and alarm events
update it at once and an older event arriving late from a journal does not.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_OPEN = sa.text("state != 'resolved'")


def upgrade() -> None:
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("severity", sa.String(length=8), nullable=False, server_default="normal"))
        batch_op.add_column(sa.Column("state", sa.String(length=12), nullable=False, server_default="open"))
        batch_op.add_column(sa.Column("count", sa.BigInteger(), nullable=False, server_default="1"))
        batch_op.add_column(sa.Column("first_at", sa.BigInteger(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("last_at", sa.BigInteger(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("late", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column("acked_by", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("acked_at", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("resolved_by", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("resolved_at", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("notified_at", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("attempts", sa.BigInteger(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("last_error", sa.String(length=200), nullable=True))
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("status_at", sa.BigInteger(), nullable=True))
    op.execute("UPDATE alerts SET state = 'resolved', resolved_by = 'migration', resolved_at = created_at, "
               "first_at = created_at, last_at = created_at")
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.create_index("uq_alerts_open", ["case_id", "kind"], unique=True, sqlite_where=_OPEN,
                              postgresql_where=_OPEN)


def downgrade() -> None:
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_column("status_at")
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_index("uq_alerts_open")
        for col in ("last_error", "attempts", "notified_at", "resolved_at", "resolved_by", "acked_at", "acked_by",
                    "late", "last_at", "first_at", "count", "state", "severity"):
            batch_op.drop_column(col)

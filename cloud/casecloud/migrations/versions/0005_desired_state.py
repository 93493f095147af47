"""cases: desired state (staff set and config overrides) with a desired and an applied version

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

Staff credentials and config overrides become state the cloud re-sends until the case reports
it applied (desired.py). Existing cases start at 0/0 (in step, nothing managed): the next change
to their store's staff or their config is the first version they are sent.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("desired_v", sa.BigInteger(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("applied_v", sa.BigInteger(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("config_set", sa.JSON(), nullable=False, server_default=sa.text("'{}'")))
        batch_op.add_column(sa.Column("config_applied", sa.JSON(), nullable=False, server_default=sa.text("'{}'")))
        batch_op.add_column(sa.Column("state_sent_at", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("state_sends", sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("cases", schema=None) as batch_op:
        for col in ("state_sends", "state_sent_at", "config_applied", "config_set", "applied_v", "desired_v"):
            batch_op.drop_column(col)

"""cases.synced: whether the case's clock is set from the cloud (its hello answered), apart from
online (connected to the broker)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

A case can be connected and still refuse every request ("Service offline") because no worker
answered its greeting; the two are shown apart. Existing rows start unsynced: the next heartbeat
of each case says what it is.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("synced", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_column("synced")

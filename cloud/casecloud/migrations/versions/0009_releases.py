"""releases: signed firmware releases, their files, rollouts and each targeted case's state

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02

Over-the-air updates (issue 13, docs/ota.md). New tables only: nothing existing changes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "releases",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("version", sa.String(length=16), nullable=False),
        sa.Column("board", sa.String(length=16), nullable=False),
        sa.Column("mpy", sa.BigInteger(), nullable=False),
        sa.Column("min_version", sa.String(length=16), nullable=False),
        sa.Column("floor", sa.String(length=16), nullable=False),
        sa.Column("manifest", sa.LargeBinary(), nullable=False),
        sa.Column("sig", sa.String(length=128), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("files", sa.BigInteger(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("ready", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "release_files",
        sa.Column("release_id", sa.String(length=32), nullable=False),
        sa.Column("idx", sa.BigInteger(), nullable=False),
        sa.Column("path", sa.String(length=200), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(["release_id"], ["releases.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("release_id", "idx"),
    )
    op.create_table(
        "rollouts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("release_id", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("target", sa.JSON(), nullable=False),
        sa.Column("waves", sa.JSON(), nullable=False),
        sa.Column("wave", sa.BigInteger(), nullable=False),
        sa.Column("wave_at", sa.BigInteger(), nullable=False),
        sa.Column("wave_after_s", sa.BigInteger(), nullable=True),
        sa.Column("max_fail_pct", sa.BigInteger(), nullable=False),
        sa.Column("halt_reason", sa.String(length=200), nullable=False),
        sa.Column("halted_at", sa.BigInteger(), nullable=True),
        sa.Column("created_by", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["release_id"], ["releases.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("rollouts", schema=None) as batch_op:
        batch_op.create_index("ix_rollouts_release_id", ["release_id"], unique=False)
    op.create_table(
        "rollout_cases",
        sa.Column("rollout_id", sa.String(length=32), nullable=False),
        sa.Column("case_id", sa.String(length=32), nullable=False),
        sa.Column("wave", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("pct", sa.BigInteger(), nullable=False),
        sa.Column("why", sa.String(length=120), nullable=False),
        sa.Column("running", sa.String(length=32), nullable=True),
        sa.Column("cmd_id", sa.String(length=16), nullable=True),
        sa.Column("sent_at", sa.BigInteger(), nullable=True),
        sa.Column("sends", sa.BigInteger(), nullable=False),
        sa.Column("event_ts", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["rollout_id"], ["rollouts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("rollout_id", "case_id"),
    )
    with op.batch_alter_table("rollout_cases", schema=None) as batch_op:
        batch_op.create_index("ix_rollout_cases_case_id", ["case_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("rollout_cases", schema=None) as batch_op:
        batch_op.drop_index("ix_rollout_cases_case_id")
    op.drop_table("rollout_cases")
    with op.batch_alter_table("rollouts", schema=None) as batch_op:
        batch_op.drop_index("ix_rollouts_release_id")
    op.drop_table("rollouts")
    op.drop_table("release_files")
    op.drop_table("releases")

"""cases.key_sealed: case keys encrypted at rest; key_hex (the key in clear) becomes nullable

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

A migration has no key-encryption key, so it cannot seal: the service seals every clear key into
key_sealed and blanks key_hex at its next start (keyring.seal_legacy), before it serves.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("key_sealed", sa.String(300), nullable=True))
        batch_op.alter_column("key_hex", existing_type=sa.String(64), nullable=True)


def downgrade() -> None:
    # A migration cannot unseal (no key here): refuse rather than leave cases without keys.
    sealed = op.get_bind().execute(sa.text("SELECT count(*) FROM cases WHERE key_sealed IS NOT NULL")).scalar()
    if sealed:
        raise RuntimeError(f"0006 cannot be downgraded: {sealed} case keys are sealed")
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_column("key_sealed")
        batch_op.alter_column("key_hex", existing_type=sa.String(64), nullable=False)

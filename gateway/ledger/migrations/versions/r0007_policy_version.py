"""The policy version with each request (slmgw_requests.policy_version) and a row per policy reload
(slmgw_policy_reloads).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gateway.ledger.schema import UtcDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("slmgw_requests") as batch:
        batch.add_column(sa.Column("policy_version", sa.String(16)))
    op.create_table(
        "slmgw_policy_reloads",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("ts", UtcDateTime(), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("host", sa.String(128), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("old_version", sa.String(16), nullable=False),
        sa.Column("new_version", sa.String(16), nullable=False),
        sa.Column("diff", sa.JSON()),
        sa.Column("errors", sa.JSON()),
        sa.Column("restart_needed", sa.JSON()),
    )
    op.create_index("ix_slmgw_policy_reloads_ts", "slmgw_policy_reloads", ["ts"])


def downgrade() -> None:
    op.drop_table("slmgw_policy_reloads")
    with op.batch_alter_table("slmgw_requests") as batch:
        batch.drop_column("policy_version")

"""Hourly rollups (slmgw_rollup_hourly), the dirty-hour marks the writers leave, and rollup state.

Every hour that already has raw rows is marked dirty, so the first ``slmgw ledger rollup`` (or report)
computes its rollup; until then reports read those hours from the raw rows, with the same result.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gateway.ledger.schema import UtcDateTime, rollup_columns

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("slmgw_rollup_hourly", *rollup_columns())
    op.create_index("ix_slmgw_rollup_hourly_hour", "slmgw_rollup_hourly", ["hour"])
    op.create_table("slmgw_rollup_dirty",
                    sa.Column("hour", UtcDateTime(), primary_key=True),
                    sa.Column("version", sa.BigInteger(), nullable=False))
    op.create_table("slmgw_rollup_state",
                    sa.Column("name", sa.String(64), primary_key=True),
                    sa.Column("ts", UtcDateTime(), nullable=False))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("INSERT INTO slmgw_rollup_dirty (hour, version) "
                   "SELECT DISTINCT date_trunc('hour', ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', 1 "
                   "FROM slmgw_requests")
    else:  # naive UTC text 'YYYY-MM-DD HH:MM:SS.ffffff'
        op.execute("INSERT INTO slmgw_rollup_dirty (hour, version) "
                   "SELECT DISTINCT substr(ts, 1, 13) || ':00:00.000000', 1 FROM slmgw_requests")


def downgrade() -> None:
    op.drop_table("slmgw_rollup_state")
    op.drop_table("slmgw_rollup_dirty")
    op.drop_index("ix_slmgw_rollup_hourly_hour", "slmgw_rollup_hourly")
    op.drop_table("slmgw_rollup_hourly")

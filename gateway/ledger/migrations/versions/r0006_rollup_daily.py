"""Daily rollup cells (slmgw_rollup_daily), merged from complete days' hourly cells.

Built by the next ``slmgw ledger rollup`` or report; until then reports read the hourly cells.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08
"""

from __future__ import annotations

from alembic import op

from gateway.ledger.schema import rollup_columns

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("slmgw_rollup_daily", *rollup_columns())
    op.create_index("ix_slmgw_rollup_daily_hour", "slmgw_rollup_daily", ["hour"])


def downgrade() -> None:
    op.drop_index("ix_slmgw_rollup_daily_hour", "slmgw_rollup_daily")
    op.drop_table("slmgw_rollup_daily")

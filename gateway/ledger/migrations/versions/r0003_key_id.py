"""Ledger: a real key_id column (was extra.key_id) and an index on (tenant, ts) for budget queries.

Budgets sum ``cost_usd`` per tenant, or per key, since the start of the period. Without these the sum
scanned every row the tenant ever wrote and parsed JSON per row for per-key budgets.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("slmgw_requests") as batch:
        batch.add_column(sa.Column("key_id", sa.String(32)))
    # Rows written before this revision kept the key in extra; move it so old spend still counts.
    if op.get_bind().dialect.name == "postgresql":
        op.execute("UPDATE slmgw_requests SET key_id = LEFT(extra::jsonb ->> 'key_id', 32) "
                   "WHERE extra IS NOT NULL AND extra::text <> 'null' AND extra::jsonb ? 'key_id'")
    else:
        op.execute("UPDATE slmgw_requests SET key_id = substr(json_extract(extra, '$.key_id'), 1, 32) "
                   "WHERE extra IS NOT NULL AND json_valid(extra) AND json_extract(extra, '$.key_id') IS NOT NULL")
    op.create_index("ix_slmgw_requests_tenant_ts", "slmgw_requests", ["tenant", "ts"])
    op.create_index("ix_slmgw_requests_key_id_ts", "slmgw_requests", ["key_id", "ts"])


def downgrade() -> None:
    op.drop_index("ix_slmgw_requests_key_id_ts", "slmgw_requests")
    op.drop_index("ix_slmgw_requests_tenant_ts", "slmgw_requests")
    with op.batch_alter_table("slmgw_requests") as batch:
        batch.drop_column("key_id")

"""Ledger table slmgw_requests: one row per request.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gateway.ledger.schema import UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "slmgw_requests",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("ts", UtcDateTime(), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("endpoint", sa.String(16), nullable=False),
        sa.Column("requested_model", sa.String(256), nullable=False),
        sa.Column("stream", sa.Boolean(), nullable=False),
        sa.Column("route", sa.String(8), nullable=False),
        sa.Column("domain", sa.String(128)),
        sa.Column("model", sa.String(256)),
        sa.Column("backend", sa.String(128)),
        sa.Column("reason", sa.String(512), nullable=False),
        sa.Column("confidence", sa.Float()),
        sa.Column("escalation", sa.String(256)),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("ttft_ms", sa.Float()),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("error_code", sa.String(64)),
        sa.Column("cache", sa.String(8), nullable=False),
        sa.Column("would_route", sa.String(8)),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("baseline_cost_usd", sa.Float(), nullable=False),
        sa.Column("shadow_cost_usd", sa.Float()),
        sa.Column("baseline_model", sa.String(256), nullable=False),
        sa.Column("prompt_text", sa.Text()),
        sa.Column("extra", sa.JSON()),
    )
    op.create_index("ix_slmgw_requests_request_id", "slmgw_requests", ["request_id"])
    op.create_index("ix_slmgw_requests_ts", "slmgw_requests", ["ts"])
    op.create_index("ix_slmgw_requests_day", "slmgw_requests", ["day"])


def downgrade() -> None:
    op.drop_table("slmgw_requests")

"""Audit verdicts (slmgw_audits) and guardrail actions (slmgw_guardrail_events).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gateway.ledger.schema import UtcDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "slmgw_audits",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("ts", UtcDateTime(), nullable=False),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("domain", sa.String(128), nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("slm_backend", sa.String(128), nullable=False),
        sa.Column("slm_model", sa.String(256), nullable=False),
        sa.Column("reference_model", sa.String(256), nullable=False),
        sa.Column("judge_model", sa.String(256), nullable=False),
        sa.Column("verdict", sa.String(8), nullable=False),
        sa.Column("order1", sa.String(1)),
        sa.Column("order2", sa.String(1)),
        sa.Column("disagree", sa.Boolean(), nullable=False),
        sa.Column("error", sa.String(512)),
        sa.Column("slm_cost_usd", sa.Float(), nullable=False),
        sa.Column("reference_cost_usd", sa.Float(), nullable=False),
        sa.Column("judge_cost_usd", sa.Float(), nullable=False),
        sa.Column("prompt_text", sa.Text()),
        sa.Column("slm_answer", sa.Text()),
        sa.Column("reference_answer", sa.Text()),
    )
    op.create_index("ix_slmgw_audits_request_id", "slmgw_audits", ["request_id"])
    op.create_index("ix_slmgw_audits_ts", "slmgw_audits", ["ts"])
    op.create_index("ix_slmgw_audits_domain_ts", "slmgw_audits", ["domain", "ts"])
    op.create_table(
        "slmgw_guardrail_events",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("ts", UtcDateTime(), nullable=False),
        sa.Column("domain", sa.String(128), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("evidence", sa.JSON()),
    )
    op.create_index("ix_slmgw_guardrail_events_ts", "slmgw_guardrail_events", ["ts"])


def downgrade() -> None:
    op.drop_table("slmgw_guardrail_events")
    op.drop_table("slmgw_audits")

"""The audit tables (SQLAlchemy Core, in the ledger's database; created by ledger migrations 0005 and 0007).

``slmgw_audits``: one row per audited request (a verdict of the judge, or why there is none).
``slmgw_guardrail_events``: one row per guardrail action (tripped, reset), with the evidence.
``slmgw_policy_reloads``: one row per policy reload attempt (``gateway.reload``).
"""

from __future__ import annotations

import sqlalchemy as sa

from gateway.audit.tables import AUDITS, GUARDRAIL_EVENTS
from gateway.ledger.schema import UtcDateTime, metadata

audits = sa.Table(
    AUDITS,
    metadata,
    sa.Column("id", sa.String(32), primary_key=True, comment="event id; makes replays idempotent"),
    sa.Column("request_id", sa.String(128), nullable=False, index=True),
    sa.Column("ts", UtcDateTime(), nullable=False, index=True),
    sa.Column("tenant", sa.String(128), nullable=False),
    sa.Column("domain", sa.String(128), nullable=False),
    sa.Column("mode", sa.String(8), nullable=False, comment="audit (the SLM served) or shadow (the LLM did)"),
    sa.Column("slm_backend", sa.String(128), nullable=False),
    sa.Column("slm_model", sa.String(256), nullable=False),
    sa.Column("reference_model", sa.String(256), nullable=False),
    sa.Column("judge_model", sa.String(256), nullable=False),
    sa.Column("verdict", sa.String(8), nullable=False, comment="win, tie, loss (the SLM's) or error"),
    sa.Column("order1", sa.String(1), comment="judge's pick with the SLM as A: A, B, C, or NULL"),
    sa.Column("order2", sa.String(1), comment="judge's pick with the SLM as B"),
    sa.Column("disagree", sa.Boolean(), nullable=False, comment="the two orders disagreed (counted a tie)"),
    sa.Column("error", sa.String(512)),
    sa.Column("slm_cost_usd", sa.Float(), nullable=False),
    sa.Column("reference_cost_usd", sa.Float(), nullable=False),
    sa.Column("judge_cost_usd", sa.Float(), nullable=False),
    sa.Column("prompt_text", sa.Text()),
    sa.Column("slm_answer", sa.Text()),
    sa.Column("reference_answer", sa.Text()),
    sa.Index("ix_slmgw_audits_domain_ts", "domain", "ts"),
)

guardrail_events = sa.Table(
    GUARDRAIL_EVENTS,
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("ts", UtcDateTime(), nullable=False, index=True),
    sa.Column("domain", sa.String(128), nullable=False),
    sa.Column("action", sa.String(32), nullable=False, comment="alert, raise_threshold, shadow or reset"),
    sa.Column("actor", sa.String(128), nullable=False, comment="guardrail, or who reset it"),
    sa.Column("evidence", sa.JSON(), comment="window counts, rate, Wilson interval, floor, new state"),
)


policy_reloads = sa.Table(
    "slmgw_policy_reloads",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("ts", UtcDateTime(), nullable=False, index=True),
    sa.Column("actor", sa.String(128), nullable=False, comment="SIGHUP, admin api, file watch, replica"),
    sa.Column("host", sa.String(128), nullable=False, comment="host:pid of the worker that reloaded"),
    sa.Column("ok", sa.Boolean(), nullable=False),
    sa.Column("old_version", sa.String(16), nullable=False),
    sa.Column("new_version", sa.String(16), nullable=False),
    sa.Column("diff", sa.JSON(), comment="changed settings, secrets masked"),
    sa.Column("errors", sa.JSON()),
    sa.Column("restart_needed", sa.JSON()),
)

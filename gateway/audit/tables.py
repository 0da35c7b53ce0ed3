"""Names of the audit tables (no SQLAlchemy here: the serving path imports this)."""

AUDITS = "slmgw_audits"
GUARDRAIL_EVENTS = "slmgw_guardrail_events"

"""The ledger table as plain data (no SQLAlchemy): what the serving path needs to build and write rows.

``gateway.ledger.schema`` holds the same table as SQLAlchemy Core (for reports and migrations); tests
check that the two agree, and that ``HEAD_REVISION`` is the newest shipped migration.
"""

from __future__ import annotations

from typing import Any

TABLE = "slmgw_requests"
VERSION_TABLE = "slmgw_ledger_version"
"""Alembic's version table for the ledger (its own name, so the database can host other schemas)."""
ROLLUP_TABLE = "slmgw_rollup_hourly"
"""Hourly aggregates reports read (``gateway.ledger.rollup``)."""
ROLLUP_DAILY_TABLE = "slmgw_rollup_daily"
"""The same cells per UTC day, merged from a complete day's clean hourly cells (a month report reads
30 days of them instead of 720 hours)."""
DIRTY_TABLE = "slmgw_rollup_dirty"
"""Hours whose raw rows changed since their rollup was computed; the sinks mark them as they write."""
STATE_TABLE = "slmgw_rollup_state"
"""Named timestamps: ``raw_pruned_before`` (raw rows older than it were deleted by ``slmgw ledger prune``)."""
HEAD_REVISION = "0007"
"""The newest migration in ``migrations/versions`` (a serving worker compares it with the database's)."""

COLUMNS: tuple[str, ...] = (
    "id", "request_id", "ts", "day", "tenant", "endpoint", "requested_model", "stream", "route", "domain",
    "model", "backend", "reason", "confidence", "escalation", "prompt_tokens", "completion_tokens",
    "latency_ms", "ttft_ms", "status", "error_code", "cache", "would_route", "cost_usd", "baseline_cost_usd",
    "shadow_cost_usd", "baseline_model", "prompt_text", "extra", "key_id", "policy_version",
)
"""Every column of ``slmgw_requests``, in table order."""

LIMITS: dict[str, int] = {
    "id": 32, "request_id": 128, "day": 10, "tenant": 128, "endpoint": 16, "requested_model": 256,
    "route": 8, "domain": 128, "key_id": 32, "policy_version": 16, "model": 256, "backend": 128, "reason": 512,
    "escalation": 256, "error_code": 64, "cache": 8, "would_route": 8, "baseline_model": 256,
}
"""Length of each VARCHAR column."""

FLOATS = frozenset({"confidence", "latency_ms", "ttft_ms", "cost_usd", "baseline_cost_usd", "shadow_cost_usd"})
INTEGERS = frozenset({"prompt_tokens", "completion_tokens", "status"})


def clean(value: Any, column: str) -> Any:
    """Fit a string to its column (PostgreSQL rejects over-long strings and NUL bytes; one bad row
    must not block a whole batch)."""
    if not isinstance(value, str):
        return value
    value = value.replace("\x00", "")
    limit = LIMITS.get(column)
    return value[:limit] if limit else value

"""The ledger table: one row per finished request (SQLAlchemy Core, portable SQLite/PostgreSQL).

The schema itself is created and evolved only by the alembic migrations in ``migrations/``; this module
is the code's view of the latest revision, for reports and migrations. The serving path writes rows
without SQLAlchemy, from the same table described as plain data in ``gateway.ledger.columns``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from gateway.ledger.columns import TABLE, clean

__all__ = ["UtcDateTime", "clean", "metadata", "requests", "to_db"]

metadata = sa.MetaData()


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on every backend (SQLite has no time zones: stored naive UTC)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


requests = sa.Table(
    TABLE,
    metadata,
    sa.Column("id", sa.String(32), primary_key=True, comment="event id; makes replays idempotent"),
    sa.Column("request_id", sa.String(128), nullable=False, index=True),
    sa.Column("ts", UtcDateTime(), nullable=False, index=True),
    sa.Column("day", sa.String(10), nullable=False, index=True, comment="UTC date YYYY-MM-DD"),
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
    sa.Column("key_id", sa.String(32), comment="public id of the caller's key (per-key budgets sum by it)"),
    sa.Index("ix_slmgw_requests_tenant_ts", "tenant", "ts"),
    sa.Index("ix_slmgw_requests_key_id_ts", "key_id", "ts"),
)


def to_db(row: dict[str, Any]) -> dict[str, Any]:
    """A buffered (JSON-safe) row as the table's Python values."""
    out = dict(row)
    out["ts"] = datetime.fromtimestamp(float(row["ts"]), UTC)
    return out

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

from gateway.ledger.columns import DIRTY_TABLE, ROLLUP_DAILY_TABLE, ROLLUP_TABLE, STATE_TABLE, TABLE, clean

__all__ = ["UtcDateTime", "clean", "metadata", "requests", "rollup_daily", "rollup_dirty", "rollup_hourly",
           "rollup_state", "to_db"]

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
    sa.Column("policy_version", sa.String(16), comment="version of the policy that routed the request"),
    sa.Index("ix_slmgw_requests_tenant_ts", "tenant", "ts"),
    sa.Index("ix_slmgw_requests_key_id_ts", "key_id", "ts"),
)

ROLLUP_DIMS: tuple[str, ...] = ("day", "tenant", "domain", "route", "model", "baseline_model", "escalation")
"""The raw columns a rollup cell is keyed by (besides its hour)."""


def rollup_columns() -> list[sa.Column[Any]]:
    """The columns of ``slmgw_rollup_hourly`` (also used by migration 0004)."""
    return [
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("hour", UtcDateTime(), nullable=False, comment="start of the UTC hour"),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("domain", sa.String(128)),
        sa.Column("route", sa.String(8), nullable=False),
        sa.Column("model", sa.String(256)),
        sa.Column("baseline_model", sa.String(256), nullable=False),
        sa.Column("escalation", sa.String(256)),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("baseline_cost_usd", sa.Float(), nullable=False),
        sa.Column("cache_hits", sa.BigInteger(), nullable=False),
        sa.Column("cache_lookups", sa.BigInteger(), nullable=False),
        sa.Column("shadow_requests", sa.BigInteger(), nullable=False),
        sa.Column("shadow_slm", sa.BigInteger(), nullable=False),
        sa.Column("shadow_cost_usd", sa.Float(), nullable=False),
        sa.Column("shadow_baseline_cost_usd", sa.Float(), nullable=False),
        sa.Column("latency_n", sa.BigInteger(), nullable=False, comment="successful requests"),
        sa.Column("latency_hist", sa.LargeBinary(), nullable=False, comment="gateway.ledger.histogram"),
        sa.Column("latency_exact", sa.LargeBinary(), comment="the latencies as float64 when few"),
    ]


rollup_hourly = sa.Table(ROLLUP_TABLE, metadata, *rollup_columns(),
                         sa.Index("ix_slmgw_rollup_hourly_hour", "hour"))
"""Aggregates of the raw rows per hour x tenant x domain x route x model x baseline model x escalation
(several cells may share a key: a reader adds them up)."""

rollup_daily = sa.Table(ROLLUP_DAILY_TABLE, metadata, *rollup_columns(),
                        sa.Index("ix_slmgw_rollup_daily_hour", "hour"))
"""Cells merged per UTC day (``hour`` is the day's start): built from the hourly cells once a day is
complete and clean, deleted whenever one of its hours is recomputed."""

rollup_dirty = sa.Table(
    DIRTY_TABLE, metadata,
    sa.Column("hour", UtcDateTime(), primary_key=True),
    sa.Column("version", sa.BigInteger(), nullable=False, comment="bumped by every write into the hour"),
)

rollup_state = sa.Table(
    STATE_TABLE, metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("ts", UtcDateTime(), nullable=False),
)


def to_db(row: dict[str, Any]) -> dict[str, Any]:
    """A buffered (JSON-safe) row as the table's Python values."""
    out = dict(row)
    out["ts"] = datetime.fromtimestamp(float(row["ts"]), UTC)
    return out

"""The key store's table ``slmgw_api_keys`` (SQLAlchemy Core; created by ledger migration 0002)."""

from __future__ import annotations

import sqlalchemy as sa

from gateway.ledger.schema import UtcDateTime

metadata = sa.MetaData()

api_keys = sa.Table(
    "slmgw_api_keys",
    metadata,
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(24), nullable=False),
    sa.Column("tenant", sa.String(128), nullable=False),
    sa.Column("name", sa.String(128)),
    sa.Column("budget_usd", sa.Float()),
    sa.Column("rpm", sa.Integer()),
    sa.Column("tpm", sa.Integer()),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("revoked_at", UtcDateTime()),
)


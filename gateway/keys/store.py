"""The key store: table ``slmgw_api_keys`` in the ledger's database, created by ledger migration 0002.

Only a SHA-256 hash of each key is stored. Keys are 256-bit random tokens, so a fast hash is safe
(there is nothing to brute-force); a slow password hash (bcrypt, argon2) would cost tens of
milliseconds on every request, since the gateway has to hash the presented key to look it up.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import AsyncEngine

KEY_PREFIX = "sk-slmgw-"
# The table (SQLAlchemy) is in gateway.keys.table, imported by the queries below at their first use: the
# gateway imports this module for hash_key/StoredKey and must not load SQLAlchemy when no key store is on.


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class StoredKey:
    key_id: str
    tenant: str
    prefix: str = ""
    name: str | None = None
    budget_usd: float | None = None
    rpm: int | None = None
    tpm: int | None = None
    created_at: datetime | None = None
    revoked_at: datetime | None = None


def new_key() -> tuple[str, str, str]:
    """A fresh key, its hash and its public id (derived from the hash, never from the secret alone)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    digest = hash_key(key)
    return key, digest, "key_" + digest[:12]


async def create(engine: AsyncEngine, tenant: str, *, name: str | None = None, budget_usd: float | None = None,
                 rpm: int | None = None, tpm: int | None = None) -> tuple[str, StoredKey]:
    """Store a new key; returns the key itself (shown once, never stored) and its row."""
    from gateway.keys.table import api_keys

    key, digest, key_id = new_key()
    row = StoredKey(key_id=key_id, tenant=tenant, prefix=key[: len(KEY_PREFIX) + 4], name=name,
                    budget_usd=budget_usd, rpm=rpm, tpm=tpm, created_at=datetime.now(UTC))
    async with engine.begin() as conn:
        await conn.execute(api_keys.insert().values(
            key_id=row.key_id, key_hash=digest, prefix=row.prefix, tenant=tenant, name=name,
            budget_usd=budget_usd, rpm=rpm, tpm=tpm, created_at=row.created_at))
    return key, row


def _row(r: sa.Row[tuple[object, ...]]) -> StoredKey:
    m = r._mapping
    return StoredKey(key_id=m["key_id"], tenant=m["tenant"], prefix=m["prefix"], name=m["name"],
                     budget_usd=m["budget_usd"], rpm=m["rpm"], tpm=m["tpm"], created_at=m["created_at"],
                     revoked_at=m["revoked_at"])


async def list_keys(engine: AsyncEngine, *, tenant: str | None = None,
                    include_revoked: bool = False) -> list[StoredKey]:
    import sqlalchemy as sa

    from gateway.keys.table import api_keys

    q = sa.select(api_keys).order_by(api_keys.c.created_at)
    if tenant is not None:
        q = q.where(api_keys.c.tenant == tenant)
    if not include_revoked:
        q = q.where(api_keys.c.revoked_at.is_(None))
    async with engine.connect() as conn:
        return [_row(r) for r in (await conn.execute(q)).fetchall()]


async def revoke(engine: AsyncEngine, key_id: str) -> bool:
    """Mark a key revoked (the row stays for the audit trail). False if no active key has this id."""
    from gateway.keys.table import api_keys

    async with engine.begin() as conn:
        res = await conn.execute(api_keys.update()
                                 .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
                                 .values(revoked_at=datetime.now(UTC)))
    return bool(res.rowcount)


async def load_active(engine: AsyncEngine) -> dict[str, StoredKey]:
    """Every active key by its hash (what the gateway holds in memory)."""
    import sqlalchemy as sa

    from gateway.keys.table import api_keys

    q = sa.select(api_keys).where(api_keys.c.revoked_at.is_(None))
    async with engine.connect() as conn:
        return {r._mapping["key_hash"]: _row(r) for r in (await conn.execute(q)).fetchall()}

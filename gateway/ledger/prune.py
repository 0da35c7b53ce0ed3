"""Retention: delete raw ledger rows older than a cutoff, after their hours are rolled up.

Reports keep working over pruned time from the rollups (whole hours: the raw rows a partial hour
would need are gone). ``raw_pruned_before`` is recorded before any row is deleted, so readers and
``gateway.ledger.rollup.refresh`` know those hours have no raw rows left.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa

from gateway.ledger import rollup
from gateway.ledger.schema import requests as t

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine


class PruneError(RuntimeError):
    """Pruning cannot go ahead (the hours to delete could not all be rolled up)."""


async def prune(engine: AsyncEngine, before: datetime, *, chunk: timedelta = timedelta(days=1),
                progress: Callable[[int, int], None] | None = None) -> int:
    """Delete raw rows with ``ts < floor_hour(before)``; returns how many. Rolls those hours up first."""
    cutoff = rollup.floor_hour(before)
    await rollup.refresh(engine, end=cutoff)
    async with engine.begin() as conn:
        if not await rollup.has_rollups(conn):
            raise PruneError("the ledger has no rollup tables: run the migrations first")
        left = await rollup.dirty_hours(conn, end=cutoff)
        horizon = await rollup.pruned_before(conn)
        oldest = (await conn.execute(sa.select(sa.func.min(t.c.ts)).where(t.c.ts < cutoff))).scalar_one_or_none()
        if left and any(horizon is None or h >= horizon for h in left):
            raise PruneError(f"{len(left)} hours before {cutoff.isoformat()} are not rolled up yet")
        if horizon is None or horizon < cutoff:
            await rollup.set_pruned_before(conn, cutoff)
    if oldest is None:
        return 0
    deleted = 0
    start = rollup.floor_hour(oldest)
    steps = max(1, -(-(cutoff - start) // chunk))
    for i in range(steps):
        a, b = start + i * chunk, min(start + (i + 1) * chunk, cutoff)
        async with engine.begin() as conn:
            result = await conn.execute(sa.delete(t).where(t.c.ts >= a if i else sa.true(), t.c.ts < b))
            deleted += max(0, result.rowcount or 0)
        if progress is not None:
            progress(i + 1, steps)
    return deleted


async def maintain(engine: AsyncEngine, retention_days: float | None) -> tuple[int, int]:
    """One scheduled maintenance step: roll up finished hours, then prune raw rows older than
    ``retention_days`` (if set). Returns (hours rolled up, rows deleted)."""
    from datetime import UTC

    hours = await rollup.refresh(engine)
    deleted = 0
    if retention_days is not None:
        deleted = await prune(engine, datetime.now(UTC) - timedelta(days=retention_days))
    return hours, deleted

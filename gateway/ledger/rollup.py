"""Hourly rollups of the ledger: computed from the raw rows, one hour at a time, for the hours the
writers marked dirty.

Contract:

- Every write of raw rows (the sinks, also spill replays and late rows) marks the rows' hours in
  ``slmgw_rollup_dirty`` in the same transaction, bumping the hour's ``version``.
- ``refresh`` recomputes each dirty hour entirely from its raw rows (so a replayed or late row, or a
  duplicate skipped by ``ON CONFLICT``, can never be counted twice) and replaces the hour's cells; the
  mark is removed only if its version is unchanged, so an hour written meanwhile stays dirty.
- Readers (``gateway.reports``) use the cells of clean hours and the raw rows of everything else, so a
  report is the same whether or not ``refresh`` ran; rollups only make it fast.
- Hours before ``raw_pruned_before`` (``slmgw ledger prune``) have no raw rows left: a late row there is
  added to the hour as extra cells and its raw row deleted (a duplicate of a row pruned earlier cannot
  be recognized there and would count twice).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from gateway.ledger import histogram
from gateway.ledger.schema import ROLLUP_DIMS, requests, rollup_daily, rollup_dirty, rollup_hourly, rollup_state

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = ["DAY", "HOUR", "build_days", "built_days", "ceil_hour", "dirty_hours", "floor_day", "floor_hour",
           "has_rollups", "mark_all", "pruned_before", "refresh", "set_pruned_before"]

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
PRUNED_BEFORE = "raw_pruned_before"
_PG_LOCK_KEY = 0x534C4D4752  # one rollup writer at a time per hour on PostgreSQL
t = requests


def floor_hour(dt: datetime) -> datetime:
    return dt.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def floor_day(dt: datetime) -> datetime:
    return floor_hour(dt).replace(hour=0)


def ceil_hour(dt: datetime) -> datetime:
    f = floor_hour(dt)
    return f if f == dt else f + HOUR


async def has_rollups(conn: AsyncConnection) -> bool:
    return await conn.run_sync(lambda c: sa.inspect(c).has_table(rollup_dirty.name))


async def dirty_hours(conn: AsyncConnection, start: datetime | None = None,
                      end: datetime | None = None) -> dict[datetime, int]:
    """Dirty hours (with their version) in ``[start, end)``."""
    q = sa.select(rollup_dirty.c.hour, rollup_dirty.c.version)
    if start is not None:
        q = q.where(rollup_dirty.c.hour >= start)
    if end is not None:
        q = q.where(rollup_dirty.c.hour < end)
    return {h: int(v) for h, v in (await conn.execute(q)).all()}


async def pruned_before(conn: AsyncConnection) -> datetime | None:
    q = sa.select(rollup_state.c.ts).where(rollup_state.c.name == PRUNED_BEFORE)
    return (await conn.execute(q)).scalar_one_or_none()


async def set_pruned_before(conn: AsyncConnection, ts: datetime) -> None:
    await conn.execute(sa.delete(rollup_state).where(rollup_state.c.name == PRUNED_BEFORE))
    await conn.execute(sa.insert(rollup_state).values(name=PRUNED_BEFORE, ts=ts))


async def mark_all(engine: AsyncEngine) -> int:
    """Mark every hour that has raw rows dirty (a full rebuild at the next ``refresh``)."""
    hour_of = (sa.func.date_trunc("hour", sa.func.timezone("UTC", t.c.ts)) if engine.dialect.name == "postgresql"
               else sa.func.substr(t.c.ts, 1, 13))
    async with engine.begin() as conn:
        found = [h for (h,) in (await conn.execute(sa.select(hour_of).distinct())).all()]
        hours = {_as_hour(h) for h in found}
        existing = await dirty_hours(conn)
        for h in hours:
            if h in existing:
                await conn.execute(sa.update(rollup_dirty).where(rollup_dirty.c.hour == h)
                                   .values(version=rollup_dirty.c.version + 1))
            else:
                await conn.execute(sa.insert(rollup_dirty).values(hour=h, version=1))
    return len(hours)


def _as_hour(value: Any) -> datetime:
    if isinstance(value, datetime):
        return floor_hour(value if value.tzinfo else value.replace(tzinfo=UTC))
    return datetime.fromisoformat(f"{value}:00:00").replace(tzinfo=UTC)


async def refresh(engine: AsyncEngine, *, start: datetime | None = None, end: datetime | None = None,
                  progress: Callable[[int, int], None] | None = None) -> int:
    """Recompute the dirty hours in ``[start, end)`` (default: every complete hour before the current
    one; the current hour is still being written, readers take it from the raw rows). Returns the
    number of hours computed. Each hour commits on its own, so an interrupted refresh keeps its work."""
    now_hour = floor_hour(datetime.now(UTC))
    end = min(end, now_hour) if end is not None else now_hour
    async with engine.connect() as conn:
        if not await has_rollups(conn):
            return 0
        todo = sorted((await dirty_hours(conn, start, end)).items())
        horizon = await pruned_before(conn)
    for done, (hour, version) in enumerate(todo, 1):
        await _refresh_hour(engine, hour, version, pruned=horizon is not None and hour + HOUR <= horizon)
        if progress is not None:
            progress(done, len(todo))
    await build_days(engine, start, end)
    return len(todo)


async def built_days(conn: AsyncConnection, start: datetime, end: datetime) -> set[datetime]:
    """Days in ``[start, end)`` that have daily cells."""
    q = sa.select(rollup_daily.c.hour).where(rollup_daily.c.hour >= start, rollup_daily.c.hour < end).distinct()
    return set((await conn.execute(q)).scalars())


async def build_days(engine: AsyncEngine, start: datetime | None, end: datetime) -> int:
    """Merge the hourly cells of every complete, clean day in ``[start, end)`` without daily cells into
    daily cells. Returns the number of days built."""
    lo = floor_day(start) if start is not None else None
    async with engine.connect() as conn:
        q = sa.select(rollup_hourly.c.hour).where(rollup_hourly.c.hour < end)
        if lo is not None:
            q = q.where(rollup_hourly.c.hour >= lo)
        days = {floor_day(h) for h in (await conn.execute(q.distinct())).scalars()}
        days = {d for d in days if (lo is None or d >= lo) and d + DAY <= end}
        if not days:
            return 0
        days -= await built_days(conn, min(days), max(days) + DAY)
        dirty = {floor_day(h) for h in await dirty_hours(conn, min(days, default=end), end)}
    built = 0
    for day in sorted(days - dirty):
        built += await _build_day(engine, day)
    return built


_NUMBERS = ("requests", "errors", "prompt_tokens", "completion_tokens", "cost_usd", "baseline_cost_usd",
            "cache_hits", "cache_lookups", "shadow_requests", "shadow_slm", "shadow_cost_usd",
            "shadow_baseline_cost_usd", "latency_n")


async def _build_day(engine: AsyncEngine, day: datetime) -> int:
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
        # First a write, so SQLite takes its write lock before anything is read: the hourly cells read
        # below cannot change before this transaction commits.
        await conn.execute(sa.delete(rollup_daily).where(rollup_daily.c.hour == day))
        if await dirty_hours(conn, day, day + DAY):
            return 0
        h = rollup_hourly.c
        q = sa.select(*(h[d] for d in ROLLUP_DIMS), *(h[c] for c in _NUMBERS), h.latency_hist, h.latency_exact)
        merged: dict[tuple[Any, ...], dict[str, Any]] = {}
        for row in (await conn.execute(q.where(h.hour >= day, h.hour < day + DAY))).mappings():
            key = tuple(row[d] for d in ROLLUP_DIMS)
            cell = merged.get(key)
            if cell is None:
                cell = merged[key] = {**{d: row[d] for d in ROLLUP_DIMS}, **dict.fromkeys(_NUMBERS, 0),
                                      "hists": [], "exacts": []}
            for c in _NUMBERS:
                cell[c] += row[c]
            cell["hists"].append(row["latency_hist"])
            cell["exacts"].append(row["latency_exact"])
        cells = []
        for cell in merged.values():
            hists, exacts = cell.pop("hists"), cell.pop("exacts")
            counts = histogram.empty()
            histogram.add_encoded(counts, b"".join(hists))
            exact = None
            if cell["latency_n"] <= histogram.EXACT_MAX and all(e is not None for e in exacts):
                exact = b"".join(exacts)
            cells.append({**cell, "hour": day, "latency_hist": histogram.encode_counts(counts),
                          "latency_exact": exact})
        if cells:
            await conn.execute(sa.insert(rollup_daily), cells)
        return 1


_DIMS = [t.c[d] for d in ROLLUP_DIMS]


def count_if(cond: sa.ColumnElement[bool]) -> sa.ColumnElement[Any]:
    return sa.func.coalesce(sa.func.sum(sa.case((cond, 1), else_=0)), 0)


def _sum_if(cond: sa.ColumnElement[bool], col: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    return sa.func.coalesce(sa.func.sum(sa.case((cond, col), else_=0.0)), 0.0)


def cell_sums() -> list[sa.ColumnElement[Any]]:
    """The aggregates of a rollup cell over raw rows (named as the cell's columns)."""
    shadow = t.c.would_route.is_not(None)
    return [
        sa.func.count().label("requests"),
        count_if(t.c.status >= 400).label("errors"),
        sa.func.coalesce(sa.func.sum(t.c.prompt_tokens), 0).label("prompt_tokens"),
        sa.func.coalesce(sa.func.sum(t.c.completion_tokens), 0).label("completion_tokens"),
        sa.func.coalesce(sa.func.sum(t.c.cost_usd), 0.0).label("cost_usd"),
        sa.func.coalesce(sa.func.sum(t.c.baseline_cost_usd), 0.0).label("baseline_cost_usd"),
        count_if(t.c.cache == "hit").label("cache_hits"),
        count_if(t.c.cache.in_(("hit", "miss"))).label("cache_lookups"),
        count_if(shadow).label("shadow_requests"),
        count_if(t.c.would_route == "slm").label("shadow_slm"),
        _sum_if(shadow, sa.func.coalesce(t.c.shadow_cost_usd, t.c.cost_usd)).label("shadow_cost_usd"),
        _sum_if(shadow, t.c.baseline_cost_usd).label("shadow_baseline_cost_usd"),
    ]


async def _cells(conn: AsyncConnection, where: sa.ColumnElement[bool], hour: datetime) -> list[dict[str, Any]]:
    sums = sa.select(*_DIMS, *cell_sums()).where(where).group_by(*_DIMS)
    cells = {tuple(r[d] for d in ROLLUP_DIMS): dict(r) for r in (await conn.execute(sums)).mappings()}
    lat: dict[tuple[Any, ...], list[float]] = defaultdict(list)
    for row in (await conn.execute(sa.select(*_DIMS, t.c.latency_ms).where(where, t.c.status < 400))).all():
        lat[tuple(row[:-1])].append(float(row[-1]))
    out = []
    for key, cell in cells.items():
        values = lat.get(key, [])
        out.append({**cell, "hour": hour, "latency_n": len(values), "latency_hist": histogram.encode(values),
                    "latency_exact": histogram.encode_exact(values)})
    return out


async def _refresh_hour(engine: AsyncEngine, hour: datetime, version: int, *, pruned: bool) -> None:
    in_hour = sa.and_(t.c.ts >= hour, t.c.ts < hour + HOUR)
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
        if pruned:  # late rows into an hour whose raw rows are gone: add them, then drop them
            ids = list((await conn.execute(sa.select(t.c.id).where(in_hour))).scalars())
            where = sa.and_(in_hour, t.c.id.in_(ids)) if ids else sa.false()
        else:
            where = in_hour
        cells = await _cells(conn, where, hour)
        # the day's merged cells are stale now (rebuilt once the day is clean again)
        await conn.execute(sa.delete(rollup_daily).where(rollup_daily.c.hour == floor_day(hour)))
        if not pruned:
            await conn.execute(sa.delete(rollup_hourly).where(rollup_hourly.c.hour == hour))
        if cells:
            await conn.execute(sa.insert(rollup_hourly), cells)
        if pruned and ids:
            await conn.execute(sa.delete(t).where(t.c.id.in_(ids)))
        await conn.execute(sa.delete(rollup_dirty).where(rollup_dirty.c.hour == hour,
                                                         rollup_dirty.c.version == version))

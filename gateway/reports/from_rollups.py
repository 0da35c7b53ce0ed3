"""Report groups from the hourly rollup cells of clean hours (``gateway.ledger.rollup``)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa

from gateway.ledger.schema import rollup_hourly as r

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from gateway.reports.compute import Groups

_SUMS = ("requests", "errors", "prompt_tokens", "completion_tokens", "cost_usd", "baseline_cost_usd",
         "cache_hits", "cache_lookups", "shadow_requests", "shadow_slm", "shadow_cost_usd",
         "shadow_baseline_cost_usd")


async def add_rollups(conn: AsyncConnection, by: str, start: datetime, end: datetime, skip: set[datetime],
                      groups: Groups) -> set[str]:
    """Add the cells of hours in ``[start, end)`` except ``skip`` to ``groups``; returns their baseline
    models. Cells are streamed, so memory grows with the number of groups, not of cells."""
    baseline_models: set[str] = set()
    q = sa.select(r.c.hour, r.c[by], r.c.route, r.c.escalation, r.c.baseline_model, *(r.c[c] for c in _SUMS),
                  r.c.latency_n, r.c.latency_hist, r.c.latency_exact).where(r.c.hour >= start, r.c.hour < end)
    result = await conn.stream(q)
    async for row in result.mappings():
        if skip and row["hour"] in skip:
            continue
        value = row[by]
        acc = groups.get("(none)" if value is None and by in ("domain", "model") else str(value))
        acc.add_sums(row)
        route, requests = str(row["route"]), int(row["requests"])
        acc.add_route(route, requests)
        if row["escalation"] is not None:
            acc.reasons[str(row["escalation"])] += requests
            acc.n["escalations"] += requests
        if route == "slm" or row["escalation"] is not None:
            acc.n["slm_bound"] += requests
        n = int(row["latency_n"])
        if n:
            acc.latency.add_cell(n, row["latency_hist"], row["latency_exact"])
            groups.route_latency(route).add_cell(n, row["latency_hist"], row["latency_exact"])
        baseline_models.add(str(row["baseline_model"]))
    return baseline_models

"""Report groups from the hourly rollup cells of clean hours (``gateway.ledger.rollup``).

Sums are added up in SQL (one row per group x route x escalation x baseline model); latency histograms
are streamed as bytes, collected per group and route, and merged once per group at the end (one
``numpy.bincount``), so a month of cells costs little Python per cell.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from gateway.reports.compute import Groups

_SUMS = ("requests", "errors", "prompt_tokens", "completion_tokens", "cost_usd", "baseline_cost_usd",
         "cache_hits", "cache_lookups", "shadow_requests", "shadow_slm", "shadow_cost_usd",
         "shadow_baseline_cost_usd")
_BATCH = 20_000


def _key(value: Any, by: str) -> str:
    return "(none)" if value is None and by in ("domain", "model") else str(value)


async def add_rollups(conn: AsyncConnection, r: sa.Table, by: str, where: sa.ColumnElement[bool],
                      groups: Groups) -> set[str]:
    """Add the cells of table ``r`` (hourly or daily) matching ``where`` to ``groups``; returns their
    baseline models."""
    dims = (r.c[by], r.c.route, r.c.escalation, r.c.baseline_model)
    sums = sa.select(*dims, *(sa.func.sum(r.c[c]).label(c) for c in _SUMS)).where(where).group_by(*dims)
    baseline_models: set[str] = set()
    for row in (await conn.execute(sums)).mappings():
        acc = groups.get(_key(row[by], by))
        acc.add_sums(row)
        route, requests, escalation = str(row["route"]), int(row["requests"]), row["escalation"]
        acc.add_route(route, requests)
        if escalation is not None:
            acc.add_reason(str(escalation), requests, float(row["cost_usd"] or 0.0))
            acc.n["escalations"] += requests
        if route == "slm" or escalation is not None:
            acc.n["slm_bound"] += requests
        baseline_models.add(str(row["baseline_model"]))

    parts: dict[tuple[str, str], list[Any]] = defaultdict(lambda: [0, [], []])
    lat = (sa.select(r.c[by], r.c.route, r.c.latency_n, r.c.latency_hist, r.c.latency_exact)
           .where(where, r.c.latency_n > 0).execution_options(yield_per=_BATCH))
    result = await conn.stream(lat)
    async for batch in result.partitions(_BATCH):
        for value, route, n, hist, exact in batch:
            p = parts[(_key(value, by), str(route))]
            p[0] += n
            p[1].append(hist)
            p[2].append(exact)
    for (key, route), (n, hists, exacts) in parts.items():
        groups.get(key).latency.add_cells(n, hists, exacts)
        groups.route_latency(route).add_cells(n, hists, exacts)
    return baseline_models

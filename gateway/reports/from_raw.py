"""Report groups from raw ledger rows (the parts of a window no clean rollup hour covers)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from gateway.ledger.rollup import cell_sums, count_if
from gateway.ledger.schema import requests as t

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from gateway.reports.compute import Groups


async def add_raw(conn: AsyncConnection, key: sa.ColumnElement[Any], where: sa.ColumnElement[bool],
                  groups: Groups) -> set[str]:
    """Add the rows matching ``where`` to ``groups`` (by ``key``); returns their baseline models."""
    key = key.label("key")
    slm_bound = sa.or_(t.c.route == "slm", t.c.escalation.is_not(None))
    agg = sa.select(key, *cell_sums(), count_if(t.c.escalation.is_not(None)).label("escalations"),
                    count_if(slm_bound).label("slm_bound")).where(where).group_by(key)
    for row in (await conn.execute(agg)).mappings():
        groups.get(str(row["key"])).add_sums(row)
    by_route = sa.select(key, t.c.route, sa.func.count()).where(where).group_by(key, t.c.route)
    for k, route, count in (await conn.execute(by_route)).all():
        groups.get(str(k)).add_route(str(route), int(count))
    reasons = (sa.select(key, t.c.escalation, sa.func.count(), sa.func.coalesce(sa.func.sum(t.c.cost_usd), 0.0))
               .where(where, t.c.escalation.is_not(None)).group_by(key, t.c.escalation))
    for k, reason, count, cost in (await conn.execute(reasons)).all():
        groups.get(str(k)).add_reason(str(reason), int(count), float(cost))
    lat = sa.select(key, t.c.route, t.c.latency_ms).where(where, t.c.status < 400)
    found: dict[tuple[str, str], list[float]] = {}
    for k, route, ms in (await conn.execute(lat)).all():
        found.setdefault((str(k), str(route)), []).append(float(ms))
    for (k, route), values in found.items():
        groups.get(k).latency.add_values(values)
        groups.route_latency(route).add_values(values)
    models = sa.select(t.c.baseline_model).where(where).distinct()
    return {str(m) for m in (await conn.execute(models)).scalars()}

"""Report computation: the same numbers for the CLI, ``GET /admin/report`` and the dashboard.

Sums and counts are computed in SQL (GROUP BY, portable between SQLite and PostgreSQL); latency
percentiles from the selected rows' latencies in Python (linear interpolation between closest ranks,
numpy's default), which is exact and the same on both stores. Field meanings: docs/costs.md.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, get_args

import sqlalchemy as sa

from gateway.ledger.schema import requests as t

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

GroupBy = Literal["day", "domain", "route", "tenant", "model"]
GROUP_BY: tuple[str, ...] = get_args(GroupBy)
ROUTES = ("slm", "llm", "cache", "none")
_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class ReportError(ValueError):
    """Bad report parameters (rendered as 400 by the admin API, as a usage error by the CLI)."""


def parse_time(value: str, now: datetime | None = None) -> datetime:
    """``7d``, ``24h``, ``30m``, ``2w`` (that long before ``now``) or an ISO date/datetime (UTC if
    no zone is given)."""
    now = now or datetime.now(UTC)
    m = _SPAN.match(value)
    if m:
        return now - timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})
    try:
        dt = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ReportError(f"cannot read time {value!r}: use e.g. 7d, 24h, 30m or 2025-01-31") from None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _key_column(by: str) -> sa.ColumnElement[Any]:
    if by == "day":
        return t.c.day
    if by == "route":
        return t.c.route
    if by == "tenant":
        return t.c.tenant
    if by in ("domain", "model"):
        return sa.func.coalesce(t.c[by], "(none)")
    raise ReportError(f"cannot group by {by!r}: use one of {', '.join(GROUP_BY)}")


def _count_if(cond: sa.ColumnElement[bool]) -> sa.ColumnElement[Any]:
    return sa.func.coalesce(sa.func.sum(sa.case((cond, 1), else_=0)), 0)


def _sum_if(cond: sa.ColumnElement[bool], col: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    return sa.func.coalesce(sa.func.sum(sa.case((cond, col), else_=0.0)), 0.0)


def _money(x: float) -> float:
    return round(x, 6)


def _pct(part: float, whole: float, digits: int = 2) -> float:
    return round(100.0 * part / whole, digits) if whole else 0.0


def _ms(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


class _Acc:
    """Raw sums for one group; ``fields()`` turns them into the report's plain names."""

    def __init__(self) -> None:
        self.n: dict[str, float] = defaultdict(float)
        self.routes: dict[str, int] = dict.fromkeys(ROUTES, 0)
        self.reasons: dict[str, int] = defaultdict(int)
        self.latencies: list[float] = []

    def add(self, other: _Acc) -> None:
        for k, v in other.n.items():
            self.n[k] += v
        for k, c in other.routes.items():
            self.routes[k] = self.routes.get(k, 0) + c
        for k, c in other.reasons.items():
            self.reasons[k] += c
        self.latencies.extend(other.latencies)

    def fields(self) -> dict[str, Any]:
        n = self.n
        lat = sorted(self.latencies)
        savings = n["baseline"] - n["cost"]
        shadow_savings = n["shadow_baseline"] - n["shadow_cost"]
        return {
            "requests": int(n["requests"]),
            "errors": int(n["errors"]),
            "prompt_tokens": int(n["prompt_tokens"]),
            "completion_tokens": int(n["completion_tokens"]),
            "total_tokens": int(n["prompt_tokens"] + n["completion_tokens"]),
            "cost_usd": _money(n["cost"]),
            "baseline_cost_usd": _money(n["baseline"]),
            "savings_usd": _money(savings),
            "savings_pct": _pct(savings, n["baseline"]),
            "requests_by_route": dict(self.routes),
            "cache_hits": int(n["cache_hits"]),
            "cache_lookups": int(n["cache_lookups"]),
            "cache_hit_rate": _pct(n["cache_hits"], n["cache_lookups"]),
            "escalations": int(n["escalations"]),
            "slm_bound": int(n["slm_bound"]),
            "escalation_rate": _pct(n["escalations"], n["slm_bound"]),
            "escalation_reasons": dict(sorted(self.reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
            "latency_p50_ms": _ms(percentile(lat, 50)),
            "latency_p95_ms": _ms(percentile(lat, 95)),
            "shadow_requests": int(n["shadow_requests"]),
            "shadow_slm_requests": int(n["shadow_slm"]),
            "shadow_cost_usd": _money(n["shadow_cost"]),
            "shadow_baseline_cost_usd": _money(n["shadow_baseline"]),
            "shadow_savings_usd": _money(shadow_savings),
            "shadow_savings_pct": _pct(shadow_savings, n["shadow_baseline"]),
        }


async def build_report(engine: AsyncEngine, *, since: datetime, until: datetime | None = None,
                       by: str = "day") -> dict[str, Any]:
    """The report for ledger rows with ``since <= ts < until``, grouped ``by`` one of GROUP_BY."""
    until = until or datetime.now(UTC)
    key = _key_column(by).label("key")
    where = sa.and_(t.c.ts >= since, t.c.ts < until)
    groups: dict[str, _Acc] = defaultdict(_Acc)
    route_lat: dict[str, list[float]] = defaultdict(list)
    baseline_models: list[str] = []

    async with engine.connect() as conn:
        if not await conn.run_sync(lambda c: sa.inspect(c).has_table(t.name)):
            return _assemble(by, since, until, groups, route_lat, baseline_models)
        shadow = t.c.would_route.is_not(None)
        agg = sa.select(
            key,
            sa.func.count().label("requests"),
            _count_if(t.c.status >= 400).label("errors"),
            sa.func.coalesce(sa.func.sum(t.c.prompt_tokens), 0).label("prompt_tokens"),
            sa.func.coalesce(sa.func.sum(t.c.completion_tokens), 0).label("completion_tokens"),
            sa.func.coalesce(sa.func.sum(t.c.cost_usd), 0.0).label("cost"),
            sa.func.coalesce(sa.func.sum(t.c.baseline_cost_usd), 0.0).label("baseline"),
            _count_if(t.c.cache == "hit").label("cache_hits"),
            _count_if(t.c.cache.in_(("hit", "miss"))).label("cache_lookups"),
            _count_if(t.c.escalation.is_not(None)).label("escalations"),
            _count_if(sa.or_(t.c.route == "slm", t.c.escalation.is_not(None))).label("slm_bound"),
            _count_if(shadow).label("shadow_requests"),
            _count_if(t.c.would_route == "slm").label("shadow_slm"),
            _sum_if(shadow, sa.func.coalesce(t.c.shadow_cost_usd, t.c.cost_usd)).label("shadow_cost"),
            _sum_if(shadow, t.c.baseline_cost_usd).label("shadow_baseline"),
        ).where(where).group_by(key)
        for row in (await conn.execute(agg)).mappings():
            acc = groups[str(row["key"])]
            for name, value in row.items():
                if name != "key":
                    acc.n[name] = float(value or 0)
        by_route = sa.select(key, t.c.route, sa.func.count()).where(where).group_by(key, t.c.route)
        for k, route, count in (await conn.execute(by_route)).all():
            groups[str(k)].routes[str(route)] = int(count)
        reasons = (sa.select(key, t.c.escalation, sa.func.count())
                   .where(where, t.c.escalation.is_not(None)).group_by(key, t.c.escalation))
        for k, reason, count in (await conn.execute(reasons)).all():
            groups[str(k)].reasons[str(reason)] = int(count)
        lat = sa.select(key, t.c.route, t.c.latency_ms).where(where, t.c.status < 400)
        for k, route, ms in (await conn.execute(lat)).all():
            groups[str(k)].latencies.append(float(ms))
            route_lat[str(route)].append(float(ms))
        models = sa.select(t.c.baseline_model).where(where).distinct()
        baseline_models = sorted(str(m) for m in (await conn.execute(models)).scalars())
    return _assemble(by, since, until, groups, route_lat, baseline_models)


def _assemble(by: str, since: datetime, until: datetime, groups: dict[str, _Acc],
              route_lat: dict[str, list[float]], baseline_models: list[str]) -> dict[str, Any]:
    total = _Acc()
    for acc in groups.values():
        total.add(acc)
    totals = total.fields()
    totals["latency_by_route"] = {
        route: {"requests": len(v), "p50_ms": _ms(percentile(v, 50)), "p95_ms": _ms(percentile(v, 95))}
        for route, v in ((r, sorted(route_lat.get(r, []))) for r in ROUTES) if v}
    out_groups = [{"key": k, **acc.fields()} for k, acc in groups.items()]
    if by == "day":
        out_groups.sort(key=lambda g: g["key"])
    else:
        out_groups.sort(key=lambda g: (-g["requests"], g["key"]))
    return {
        "by": by,
        "since": since.isoformat(),
        "until": until.isoformat(),
        "generated_at": datetime.now(UTC).isoformat(),
        "baseline_models": baseline_models,
        "shadow": totals["shadow_requests"] > 0,
        "totals": totals,
        "groups": out_groups,
    }


COLUMNS: tuple[str, ...] = (
    "requests", "errors", "prompt_tokens", "completion_tokens", "cost_usd", "baseline_cost_usd",
    "savings_usd", "savings_pct", "cache_hit_rate", "escalation_rate", "latency_p50_ms", "latency_p95_ms",
)
SHADOW_COLUMNS: tuple[str, ...] = ("shadow_requests", "shadow_cost_usd", "shadow_savings_usd",
                                   "shadow_savings_pct")


def flat_rows(report: dict[str, Any]) -> Iterable[dict[str, Any]]:
    """One flat dict per group and a final TOTAL row (for CSV and tables)."""
    for g in [*report["groups"], {"key": "TOTAL", **report["totals"]}]:
        row = {"key": g["key"]}
        row.update({c: g[c] for c in (*COLUMNS, *SHADOW_COLUMNS)})
        row.update({f"route_{r}": g["requests_by_route"].get(r, 0) for r in ROUTES})
        row["escalation_reasons"] = ";".join(f"{k}={v}" for k, v in g["escalation_reasons"].items())
        yield row

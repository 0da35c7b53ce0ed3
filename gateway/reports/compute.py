"""Report computation: the same numbers for the CLI, ``GET /admin/report`` and the dashboard.

A window ``[since, until)`` is read in two parts: whole UTC hours whose rollup is clean come from the
hourly rollup cells (``gateway.ledger.rollup``), everything else (the partial hours at the window's
edges, the current hour, hours written since their rollup) from the raw rows, with the same sums in SQL
(GROUP BY, portable between SQLite and PostgreSQL). So a report costs about the number of groups, not
of requests, and its numbers are the raw rows' numbers (float sums may differ in the last bits, far
below the 1e-6 USD rounding). Latency percentiles are exact for small groups and otherwise within ~1 %
(``gateway.reports.latency``). Field meanings: docs/costs.md.
"""

from __future__ import annotations

import logging
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, get_args

import sqlalchemy as sa

from gateway.ledger import rollup
from gateway.ledger.schema import requests as t
from gateway.reports.latency import Latencies, percentile

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("slmgw.reports")

__all__ = ["GROUP_BY", "ROUTES", "ReportError", "build_report", "flat_rows", "parse_time", "percentile"]

GroupBy = Literal["day", "domain", "route", "tenant", "model"]
GROUP_BY: tuple[str, ...] = get_args(GroupBy)
ROUTES = ("slm", "llm", "cache", "none")
_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_SUMS = ("requests", "errors", "prompt_tokens", "completion_tokens", "cost_usd", "baseline_cost_usd",
         "cache_hits", "cache_lookups", "shadow_requests", "shadow_slm", "shadow_cost_usd",
         "shadow_baseline_cost_usd", "escalations", "slm_bound")
_USD = frozenset({"cost_usd", "baseline_cost_usd", "shadow_cost_usd", "shadow_baseline_cost_usd"})


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
        # USD sums are kept as their parts and added exactly (math.fsum) at the end, so partial sums
        # (rollup hours, raw ranges) add up as closely as possible to one SQL SUM over the raw rows.
        self.usd: dict[str, list[float]] = defaultdict(list)
        self.routes: dict[str, int] = dict.fromkeys(ROUTES, 0)
        self.reasons: dict[str, int] = defaultdict(int)
        self.reason_usd: dict[str, list[float]] = defaultdict(list)
        self.latency = Latencies()

    def add_reason(self, escalation: str, count: int, cost_usd: float) -> None:
        """Escalations are counted by kind (``escalation_kind``), with what the requests cost."""
        from gateway.records import escalation_kind

        kind = escalation_kind(escalation)
        self.reasons[kind] += count
        if cost_usd:
            self.reason_usd[kind].append(cost_usd)

    def add_sums(self, row: Mapping[Any, Any]) -> None:
        for name in _SUMS:
            value = row.get(name)
            if value:
                if name in _USD:
                    self.usd[name].append(float(value))
                else:
                    self.n[name] += float(value)

    def add_route(self, route: str, count: int) -> None:
        self.routes[route] = self.routes.get(route, 0) + count

    def add(self, other: _Acc) -> None:
        for k, v in other.n.items():
            self.n[k] += v
        for k, parts in other.usd.items():
            self.usd[k].extend(parts)
        for k, c in other.routes.items():
            self.routes[k] = self.routes.get(k, 0) + c
        for k, c in other.reasons.items():
            self.reasons[k] += c
        for k, parts in other.reason_usd.items():
            self.reason_usd[k].extend(parts)
        self.latency.add(other.latency)

    def fields(self) -> dict[str, Any]:
        n = defaultdict(float, {**self.n, **{k: math.fsum(self.usd.get(k, ())) for k in _USD}})
        savings = n["baseline_cost_usd"] - n["cost_usd"]
        shadow_savings = n["shadow_baseline_cost_usd"] - n["shadow_cost_usd"]
        escalations, slm_bound = int(n["escalations"]), int(n["slm_bound"])
        return {
            "requests": int(n["requests"]),
            "errors": int(n["errors"]),
            "prompt_tokens": int(n["prompt_tokens"]),
            "completion_tokens": int(n["completion_tokens"]),
            "total_tokens": int(n["prompt_tokens"] + n["completion_tokens"]),
            "cost_usd": _money(n["cost_usd"]),
            "baseline_cost_usd": _money(n["baseline_cost_usd"]),
            "savings_usd": _money(savings),
            "savings_pct": _pct(savings, n["baseline_cost_usd"]),
            "requests_by_route": dict(self.routes),
            "cache_hits": int(n["cache_hits"]),
            "cache_lookups": int(n["cache_lookups"]),
            "cache_hit_rate": _pct(n["cache_hits"], n["cache_lookups"]),
            "escalations": escalations,
            "slm_bound": slm_bound,
            "escalation_rate": _pct(escalations, slm_bound),
            "escalation_reasons": dict(sorted(self.reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
            "escalation_costs_usd": {k: _money(math.fsum(self.reason_usd.get(k, ()))) for k in
                                     sorted(self.reasons, key=lambda k: (-self.reasons[k], k))},
            "latency_p50_ms": _ms(self.latency.percentile(50)),
            "latency_p95_ms": _ms(self.latency.percentile(95)),
            "shadow_requests": int(n["shadow_requests"]),
            "shadow_slm_requests": int(n["shadow_slm"]),
            "shadow_cost_usd": _money(n["shadow_cost_usd"]),
            "shadow_baseline_cost_usd": _money(n["shadow_baseline_cost_usd"]),
            "shadow_savings_usd": _money(shadow_savings),
            "shadow_savings_pct": _pct(shadow_savings, n["shadow_baseline_cost_usd"]),
        }


class Groups:
    """The groups of a report being built, and the latencies by route for its totals."""

    def __init__(self) -> None:
        self.groups: dict[str, _Acc] = defaultdict(_Acc)
        self.by_route: dict[str, Latencies] = defaultdict(Latencies)

    def get(self, key: str) -> _Acc:
        return self.groups[key]

    def route_latency(self, route: str) -> Latencies:
        return self.by_route[route]


def _merge(ranges: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    out: list[tuple[datetime, datetime]] = []
    for a, b in sorted(ranges):
        if out and out[-1][1] >= a:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _within(table: sa.Table, ranges: list[tuple[datetime, datetime]]) -> sa.ColumnElement[bool]:
    return sa.or_(*(sa.and_(table.c.hour >= a, table.c.hour < b) for a, b in ranges))


def _raw_ranges(since: datetime, until: datetime, start: datetime, end: datetime,
                clean: set[datetime]) -> list[tuple[datetime, datetime]]:
    """``[since, until)`` minus the clean hours in ``[start, end)``, as merged ranges."""
    ranges: list[tuple[datetime, datetime]] = []

    def take(a: datetime, b: datetime) -> None:
        if a >= b:
            return
        if ranges and ranges[-1][1] == a:
            ranges[-1] = (ranges[-1][0], b)
        else:
            ranges.append((a, b))

    take(since, min(start, until))
    hour = start
    while hour < end:
        if hour not in clean:
            take(max(hour, since), min(hour + rollup.HOUR, until))
        hour += rollup.HOUR
    take(max(end, since), until)
    return ranges


async def build_report(engine: AsyncEngine, *, since: datetime, until: datetime | None = None,
                       by: str = "day", refresh: bool = True) -> dict[str, Any]:
    """The report for ledger rows with ``since <= ts < until``, grouped ``by`` one of GROUP_BY, with the
    period's audit verdicts (``gateway.reports.quality``) and net savings.

    With ``refresh`` the dirty complete hours of the window are rolled up first (a no-op when the
    rollups are current); without it, they are read from the raw rows (same numbers, slower)."""
    from gateway.reports.quality import add_quality

    until = until or datetime.now(UTC)
    report = await _build_requests_report(engine, since=since, until=until, by=by, refresh=refresh)
    await add_quality(engine, report, since, until)
    return report


async def _build_requests_report(engine: AsyncEngine, *, since: datetime, until: datetime | None = None,
                                 by: str = "day", refresh: bool = True) -> dict[str, Any]:
    """The report for ledger rows with ``since <= ts < until``, grouped ``by`` one of GROUP_BY.

    With ``refresh`` the dirty complete hours of the window are rolled up first (a no-op when the
    rollups are current); without it, they are read from the raw rows (same numbers, slower)."""
    now = datetime.now(UTC)
    until = until or now
    key = _key_column(by)
    groups = Groups()
    baseline_models: set[str] = set()
    async with engine.connect() as conn:
        if not await conn.run_sync(lambda c: sa.inspect(c).has_table(t.name)):
            return _assemble(by, since, until, groups, baseline_models)
        use_rollups = await rollup.has_rollups(conn)
    start, end = rollup.ceil_hour(since), rollup.floor_hour(min(until, now))
    if use_rollups and refresh and start < end:
        try:
            await rollup.refresh(engine, start=start, end=end)
        except Exception as exc:  # e.g. a read-only database user: dirty hours are read raw instead
            log.warning("rolling up the report's hours failed (%s: %s); reading them from raw rows",
                        type(exc).__name__, exc)
    async with engine.connect() as conn:
        clean: set[datetime] = set()
        if use_rollups and start < end:
            horizon = await rollup.pruned_before(conn)
            if horizon is not None and since < horizon:  # raw rows are gone there: whole hours only
                start = rollup.floor_hour(since)
            dirty = await rollup.dirty_hours(conn, start, end)
            pruned_dirty = {h for h in dirty if horizon is not None and h + rollup.HOUR <= horizon}
            hour = start
            while hour < end:
                if hour not in dirty:
                    clean.add(hour)
                hour += rollup.HOUR
            # Whole clean days with merged cells are read from the daily table, other hours hourly.
            days = sorted(d for d in await rollup.built_days(conn, start, end)
                          if d + rollup.DAY <= end and all(d + i * rollup.HOUR in clean for i in range(24)))
            day_ranges = _merge([(d, d + rollup.DAY) for d in days])
            if days:
                from gateway.ledger.schema import rollup_daily
                from gateway.reports.from_rollups import add_rollups

                baseline_models |= await add_rollups(conn, rollup_daily, by, _within(rollup_daily, day_ranges), groups)
            if len(clean) > 24 * len(days) or pruned_dirty:
                from gateway.ledger.schema import rollup_hourly
                from gateway.reports.from_rollups import add_rollups

                h = rollup_hourly.c.hour
                where = sa.and_(h >= start, h < end)
                skip = set(dirty) - pruned_dirty
                if skip:
                    where = sa.and_(where, h.not_in(sorted(skip)))
                if day_ranges:
                    where = sa.and_(where, sa.not_(_within(rollup_hourly, day_ranges)))
                baseline_models |= await add_rollups(conn, rollup_hourly, by, where, groups)
        ranges = _raw_ranges(since, until, start, end, clean) if clean else [(since, until)]
        if ranges:
            from gateway.reports.from_raw import add_raw

            where = sa.or_(*(sa.and_(t.c.ts >= a, t.c.ts < b) for a, b in ranges))
            baseline_models |= await add_raw(conn, key, where, groups)
    return _assemble(by, since, until, groups, baseline_models)


def _assemble(by: str, since: datetime, until: datetime, groups: Groups,
              baseline_models: set[str]) -> dict[str, Any]:
    total = _Acc()
    for acc in groups.groups.values():
        total.add(acc)
    totals = total.fields()
    totals["latency_by_route"] = {
        route: {"requests": lat.n, "p50_ms": _ms(lat.percentile(50)), "p95_ms": _ms(lat.percentile(95))}
        for route, lat in ((r, groups.by_route.get(r)) for r in ROUTES) if lat is not None and lat.n}
    out_groups = [{"key": k, **acc.fields()} for k, acc in groups.groups.items()]
    if by == "day":
        out_groups.sort(key=lambda g: g["key"])
    else:
        out_groups.sort(key=lambda g: (-g["requests"], g["key"]))
    return {
        "by": by,
        "since": since.isoformat(),
        "until": until.isoformat(),
        "generated_at": datetime.now(UTC).isoformat(),
        "baseline_models": sorted(baseline_models),
        "shadow": totals["shadow_requests"] > 0,
        "totals": totals,
        "groups": out_groups,
    }


COLUMNS: tuple[str, ...] = (
    "requests", "errors", "prompt_tokens", "completion_tokens", "cost_usd", "baseline_cost_usd",
    "savings_usd", "savings_pct", "cache_hit_rate", "escalation_rate", "latency_p50_ms", "latency_p95_ms",
)
AUDIT_COLUMNS: tuple[str, ...] = ("samples", "wins", "ties", "losses", "errors", "non_inferior_rate", "ci_low",
                                  "ci_high", "cost_usd")
SHADOW_COLUMNS: tuple[str, ...] = ("shadow_requests", "shadow_cost_usd", "shadow_savings_usd",
                                   "shadow_savings_pct")


def flat_rows(report: dict[str, Any]) -> Iterable[dict[str, Any]]:
    """One flat dict per group and a final TOTAL row (for CSV and tables)."""
    for g in [*report["groups"], {"key": "TOTAL", **report["totals"]}]:
        row = {"key": g["key"]}
        row.update({c: g[c] for c in (*COLUMNS, *SHADOW_COLUMNS)})
        row.update({f"route_{r}": g["requests_by_route"].get(r, 0) for r in ROUTES})
        row["escalation_reasons"] = ";".join(f"{k}={v}" for k, v in g["escalation_reasons"].items())
        audit = g.get("audit") if g["key"] != "TOTAL" else report.get("audit")
        if audit is not None:
            row.update({f"audit_{k}": audit.get(k) for k in AUDIT_COLUMNS})
        if g["key"] == "TOTAL" and "net_savings_usd" in g:
            row["net_savings_usd"] = g["net_savings_usd"]
        yield row

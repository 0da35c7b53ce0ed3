"""Audit verdicts in reports: per domain and for the whole period, the counts, the non-inferior rate
with its 95% Wilson interval, the judge's disagreement rate, and what audits cost; net savings are the
savings minus that cost. Reads ``slmgw_audits`` (few rows: a sample of SLM traffic)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.audit.stats import Tally


def _audit_object(t: Tally, cost: float) -> dict[str, Any]:
    out: dict[str, Any] = t.as_dict()
    out["cost_usd"] = round(cost, 8)
    return out


async def quality(conn: AsyncConnection, since: datetime, until: datetime) -> dict[str, Any]:
    """``{"totals": audit, "by_domain": {domain: audit}, "by_day": {day: {domain: audit}},
    "guardrails": {domain: last action}}``; each audit object is ``{samples, wins, ties, losses, errors,
    non_inferior_rate, ci_low, ci_high, disagreement_rate, cost_usd}``."""
    from gateway.audit.schema import audits, guardrail_events

    empty: dict[str, Any] = {"totals": _audit_object(Tally(), 0.0), "by_domain": {}, "by_day": {},
                             "guardrails": {}}
    if not await conn.run_sync(lambda c: sa.inspect(c).has_table(audits.name)):
        return empty
    a = audits.c
    # What an audit spent beyond serving the request: the judge calls, plus the reference call (audit
    # mode; the SLM's cost is the served request's) or the SLM call made only for the audit (shadow
    # mode; the reference is the LLM answer the client got).
    extra = a.judge_cost_usd + sa.case((a.mode == "shadow", a.slm_cost_usd), else_=a.reference_cost_usd)
    day = sa.func.substr(sa.cast(a.ts, sa.String), 1, 10)
    rows = (await conn.execute(
        sa.select(a.domain, day.label("day"), a.verdict, a.disagree, sa.func.count().label("n"),
                  sa.func.coalesce(sa.func.sum(extra), 0.0).label("cost"))
        .where(a.ts >= since, a.ts < until).group_by(a.domain, day, a.verdict, a.disagree))).all()
    per: dict[tuple[str, str], dict[str, float]] = {}
    for domain, d, verdict, disagree, n, cost in rows:
        acc = per.setdefault((domain, d), {"win": 0, "tie": 0, "loss": 0, "error": 0, "disagree": 0, "cost": 0.0})
        acc[verdict if verdict in ("win", "tie", "loss") else "error"] += n
        acc["disagree"] += n if disagree else 0
        acc["cost"] += float(cost)

    def tally_of(items: list[dict[str, float]]) -> tuple[Tally, float]:
        t = Tally(*(int(sum(i[k] for i in items)) for k in ("win", "tie", "loss", "error", "disagree")))
        return t, sum(i["cost"] for i in items)

    out = dict(empty)
    out["totals"] = _audit_object(*tally_of(list(per.values())))
    domains = sorted({d for d, _ in per})
    out["by_domain"] = {d: _audit_object(*tally_of([v for (dd, _), v in per.items() if dd == d])) for d in domains}
    by_day: dict[str, dict[str, Any]] = {}
    for (domain, d), v in sorted(per.items(), key=lambda kv: kv[0][1]):
        by_day.setdefault(d, {})[domain] = _audit_object(*tally_of([v]))
    out["by_day"] = by_day
    if await conn.run_sync(lambda c: sa.inspect(c).has_table(guardrail_events.name)):
        g = guardrail_events.c
        events = (await conn.execute(sa.select(g.domain, g.action, g.ts).where(g.ts < until)
                                     .order_by(g.ts))).all()
        last: dict[str, Any] = {}
        for domain, action, ts in events:
            last[domain] = {"action": None if action == "reset" else action, "since": ts.isoformat()}
        out["guardrails"] = {d: v for d, v in last.items() if v["action"] is not None}
    return out


async def add_quality(engine: AsyncEngine, report: dict[str, Any], since: datetime, until: datetime) -> None:
    """Attach audits to a report built by ``build_report``: ``report["audit"]`` (the period's object,
    with ``by_domain``, ``by_day`` and active ``guardrails``), ``audit`` in each group of a by-domain
    report, and ``totals.audit_cost_usd`` / ``totals.net_savings_usd``."""
    async with engine.connect() as conn:
        q = await quality(conn, since, until)
    report["audit"] = {**q["totals"], "by_domain": q["by_domain"], "by_day": q["by_day"],
                       "guardrails": q["guardrails"]}
    cost = float(q["totals"]["cost_usd"])
    totals = report["totals"]
    totals["audit_cost_usd"] = round(cost, 8)
    totals["net_savings_usd"] = round(float(totals.get("savings_usd", 0.0)) - cost, 8)
    if report.get("by") == "domain":
        for group in report.get("groups", []):
            group["audit"] = q["by_domain"].get(group["key"], _audit_object(Tally(), 0.0))

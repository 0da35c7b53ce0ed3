"""Hourly rollups: reports read them and give the raw rows' numbers; late and replayed spill rows keep
them consistent; percentiles from the histograms are within 2 % of the exact ones. SQLite and the real
PostgreSQL."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from gateway.costs import CostModel
from gateway.ledger import Ledger, rollup
from gateway.ledger.schema import requests, rollup_dirty, rollup_hourly
from gateway.metrics import Metrics
from gateway.records import RequestRecord
from gateway.reports.compute import build_report, percentile

try:
    from tests.gateway.ledger_helpers import PRICES, pg_database, policy, rec
except ImportError:  # tests/gateway is not a package: pytest puts this directory on sys.path
    from ledger_helpers import PRICES, pg_database, policy, rec  # type: ignore[no-redef]

T0 = datetime(2025, 6, 14, tzinfo=UTC).timestamp()
SINCE = datetime(2025, 6, 13, tzinfo=UTC)
UNTIL = datetime(2025, 6, 16, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
async def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Ledger]:
    async def make(url: str) -> Ledger:
        p = policy({"ledger": {"url": url, "spill_dir": "spill", "flush_interval_s": 0.05}},
                   base_dir=str(tmp_path))
        led = Ledger.from_policy(p, costs=CostModel.from_policy(p, PRICES), metrics=Metrics())
        await led.start()
        return led

    if request.param == "sqlite":
        led = await make("sqlite:///ledger.sqlite")
        yield led
        await led.close()
    else:
        async with pg_database() as url:
            led = await make(url)
            yield led
            await led.close()


def traffic(n: int, seed: int, hours: int = 30) -> list[RequestRecord]:
    """Varied requests over ``hours`` hours from T0 (routes, tenants, errors, cache, escalations, shadow)."""
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        kind = rnd.choice(["slm", "slm", "llm", "esc", "cache", "err", "shadow"])
        kw: dict[str, Any] = {"ts": T0 + rnd.uniform(0, hours * 3600), "tenant": rnd.choice(["acme", "beta", "gamma"]),
                              "latency_ms": rnd.lognormvariate(5, 1), "prompt_tokens": rnd.randint(1, 3000),
                              "completion_tokens": rnd.randint(0, 800),
                              "cache": rnd.choice(["miss", "bypass"])}
        if kind == "slm":
            kw |= {"domain": rnd.choice(["sql", "code"]), "backend": "sql-slm"}
        elif kind == "llm":
            kw |= {"route": "llm", "backend": "big", "model": "openai/gpt-4o", "domain": None}
        elif kind == "esc":
            kw |= {"route": "llm", "backend": "big", "model": "openai/gpt-4o",
                   "escalation": rnd.choice(["slm_error:timeout", "slm_error:connect"])}
        elif kind == "cache":
            kw |= {"route": "cache", "backend": None, "cache": "hit", "latency_ms": rnd.uniform(0.5, 3)}
        elif kind == "err":
            kw |= {"route": "none", "backend": None, "model": None, "status": 502, "error_code": "upstream_error",
                   "prompt_tokens": 0, "completion_tokens": 0}
        else:
            kw |= {"route": "llm", "backend": "big", "model": "openai/gpt-4o", "would_route": "slm"}
        out.append(rec(**kw))
    return out


async def raw_rows(ledger: Ledger) -> list[dict[str, Any]]:
    assert ledger.engine is not None
    async with ledger.engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(sa.select(requests))).mappings()]


def recompute(rows: list[dict[str, Any]], since: datetime, until: datetime) -> dict[str, dict[str, Any]]:
    """The report's figures per day, computed in Python from the raw rows (independent of the SQL)."""
    days: dict[str, dict[str, Any]] = defaultdict(lambda: {"requests": 0, "errors": 0, "tokens": 0, "cost": 0.0,
                                                           "baseline": 0.0, "hits": 0, "lookups": 0,
                                                           "reasons": Counter(), "lat": []})
    for r in rows:
        if not since <= r["ts"] < until:
            continue
        d = days[r["day"]]
        d["requests"] += 1
        d["errors"] += r["status"] >= 400
        d["tokens"] += r["prompt_tokens"] + r["completion_tokens"]
        d["cost"] += r["cost_usd"]
        d["baseline"] += r["baseline_cost_usd"]
        d["hits"] += r["cache"] == "hit"
        d["lookups"] += r["cache"] in ("hit", "miss")
        if r["escalation"]:
            d["reasons"][r["escalation"]] += 1
        if r["status"] < 400:
            d["lat"].append(r["latency_ms"])
    return days


def assert_matches(report: dict[str, Any], expected: dict[str, dict[str, Any]]) -> None:
    assert [g["key"] for g in report["groups"]] == sorted(expected)
    for g in report["groups"]:
        e = expected[g["key"]]
        assert (g["requests"], g["errors"], g["total_tokens"], g["cache_hits"], g["cache_lookups"]) == (
            e["requests"], e["errors"], e["tokens"], e["hits"], e["lookups"])
        # USD is rounded to 1e-6; sums in another order may land on the other side of a rounding edge
        assert g["cost_usd"] == pytest.approx(e["cost"], abs=1.000001e-6)
        assert g["baseline_cost_usd"] == pytest.approx(e["baseline"], abs=1.000001e-6)
        assert g["escalation_reasons"] == dict(e["reasons"])
        lat = sorted(e["lat"])
        for q, field in ((50, "latency_p50_ms"), (95, "latency_p95_ms")):
            exact = percentile(lat, q)
            assert exact is not None and g[field] == pytest.approx(exact, rel=0.02)


async def cells(ledger: Ledger) -> list[tuple[Any, ...]]:
    assert ledger.engine is not None
    cols = [c for c in rollup_hourly.c if c.name not in ("id", "latency_exact")]
    async with ledger.engine.connect() as conn:
        rows = (await conn.execute(sa.select(*cols))).all()
    # several cells may share a key (none here: no prune); compare sorted, floats rounded
    return sorted((tuple(round(v, 9) if isinstance(v, float) else v for v in r) for r in rows), key=repr)


async def test_spill_replay_keeps_rollups_equal_to_a_raw_recomputation(ledger: Ledger) -> None:
    assert ledger.engine is not None
    first = traffic(1500, seed=1)
    for r in first:
        ledger.record(r)
    await ledger.flush()
    before = await build_report(ledger.engine, since=SINCE, until=UNTIL, by="day")
    async with ledger.engine.connect() as conn:  # the report rolled every hour up
        assert (await conn.execute(sa.select(sa.func.count()).select_from(rollup_dirty))).scalar_one() == 0
        assert (await conn.execute(sa.select(sa.func.count()).select_from(rollup_hourly))).scalar_one() > 30
    assert before["totals"]["requests"] == 1500

    # A spill file arrives late: 200 rows already stored (a replay after an unknown commit outcome) and
    # 300 new rows in hours that were rolled up already.
    stored = await raw_rows(ledger)
    again = [{**{k: v for k, v in r.items() if k != "ts"}, "ts": r["ts"].timestamp(),
              "extra": None} for r in stored[:200]]
    late = [ledger._row(r, ledger.price(r)) for r in traffic(300, seed=2, hours=20)]
    path = ledger.spill.write([*again, *late])
    assert path is not None
    await ledger.flush()
    assert not ledger.spill.pending()

    after = await build_report(ledger.engine, since=SINCE, until=UNTIL, by="day")
    assert after["totals"]["requests"] == 1800
    assert_matches(after, recompute(await raw_rows(ledger), SINCE, UNTIL))
    # And the cells equal a rebuild from scratch.
    incremental = await cells(ledger)
    assert await rollup.mark_all(ledger.engine) >= 30
    assert await rollup.refresh(ledger.engine) >= 30
    assert await cells(ledger) == incremental


USD_FIELDS = ("cost_usd", "baseline_cost_usd", "savings_usd", "shadow_cost_usd", "shadow_baseline_cost_usd",
              "shadow_savings_usd")


class Usd(float):
    """USD figures are rounded to 1e-6. Prices are often multiples of 5e-7 per request, so a sum can sit
    exactly on a rounding edge, where summing in another order (hours, then the window) may round to
    the neighbouring micro-dollar: equal means within 1e-6."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, float) and abs(self - other) <= 1.000001e-6

    __hash__ = float.__hash__


async def test_report_from_rollups_equals_report_from_raw_rows(ledger: Ledger) -> None:
    assert ledger.engine is not None
    for r in traffic(800, seed=3):
        ledger.record(r)
    await ledger.flush()
    # A window with partial edge hours: the edges come from raw rows, the middle from rollups.
    since, until = datetime(2025, 6, 14, 3, 17, 5, tzinfo=UTC), datetime(2025, 6, 15, 2, 41, tzinfo=UTC)
    for by in ("day", "domain", "route", "tenant", "model"):
        raw = await build_report(ledger.engine, since=since, until=until, by=by, refresh=False)
        async with ledger.engine.connect() as conn:
            assert await rollup.dirty_hours(conn)  # nothing rolled up yet: that report read raw rows
        rolled = await build_report(ledger.engine, since=since, until=until, by=by)
        async with ledger.engine.connect() as conn:
            assert not await rollup.dirty_hours(conn, rollup.ceil_hour(since), rollup.floor_hour(until))
        for rep in (raw, rolled):
            rep.pop("generated_at")
            for g in [rep["totals"], *rep["groups"]]:
                for f in ("latency_p50_ms", "latency_p95_ms"):
                    g.pop(f)
                for lat in g.get("latency_by_route", {}).values():
                    lat.pop("p50_ms"), lat.pop("p95_ms")
        for rep in (raw, rolled):  # USD: see usd_equal
            for g in [rep["totals"], *rep["groups"]]:
                for f in USD_FIELDS:
                    g[f] = Usd(g[f])
                g["escalation_costs_usd"] = {k: Usd(v) for k, v in g["escalation_costs_usd"].items()}
        assert rolled == raw
        await rollup.mark_all(ledger.engine)  # next round starts from raw rows again
    assert_matches(await build_report(ledger.engine, since=since, until=until),
                   recompute(await raw_rows(ledger), since, until))


async def test_percentiles_from_rollups_are_within_2_percent(ledger: Ledger) -> None:
    assert ledger.engine is not None
    rnd = random.Random(7)
    lat = [rnd.lognormvariate(6, 1.2) for _ in range(6000)] + [rnd.uniform(1, 5) for _ in range(1000)]
    for i, ms in enumerate(lat):
        ledger.record(rec(ts=T0 + (i % 10) * 3600 + rnd.uniform(0, 3500), latency_ms=ms,
                          tenant=rnd.choice(["a", "b"]), domain=rnd.choice(["sql", "code"])))
    await ledger.flush()
    rep = await build_report(ledger.engine, since=SINCE, until=UNTIL, by="tenant")
    async with ledger.engine.connect() as conn:  # the cells hold histograms, not the values
        exact_cells = (await conn.execute(sa.select(sa.func.count()).select_from(rollup_hourly)
                                          .where(rollup_hourly.c.latency_exact.is_not(None)))).scalar()
    assert exact_cells == 0
    ordered = sorted(lat)
    for q in (50, 95, 99):
        from gateway.ledger.histogram import percentile as hist_percentile
        from gateway.reports.latency import Latencies

        merged = Latencies()
        merged.add_values(lat)
        merged.exact = None  # force the histogram
        exact = percentile(ordered, q)
        assert exact is not None
        assert hist_percentile(merged.counts, q) == pytest.approx(exact, rel=0.02)
    for field, q in (("latency_p50_ms", 50), ("latency_p95_ms", 95)):
        exact = percentile(ordered, q)
        assert exact is not None
        assert rep["totals"][field] == pytest.approx(exact, rel=0.02)
        assert rep["totals"][field] != round(exact, 1)  # it did come from the histogram


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
async def test_migration_0004_marks_existing_hours_for_backfill(store: str, tmp_path: Path) -> None:
    from gateway.ledger.store import create_engine, migrate, normalize_url

    async def run(url: str) -> None:
        engine = create_engine(normalize_url(url, tmp_path))
        try:
            await migrate(engine, "0003")
            async with engine.begin() as conn:  # written before rollups existed: no dirty marks
                old = await conn.run_sync(lambda c: sa.Table(requests.name, sa.MetaData(), autoload_with=c))
                rows = [{c: v for c, v in r.items() if c in old.c} for r in await _rows_for(traffic(400, seed=9))]
                await conn.execute(sa.insert(requests), rows)
            await migrate(engine)
            async with engine.connect() as conn:
                marked = set(await rollup.dirty_hours(conn))
            assert marked == {rollup.floor_hour(r["ts"]) for r in rows}
            before = await build_report(engine, since=SINCE, until=UNTIL, by="tenant", refresh=False)
            assert await rollup.refresh(engine) == len(marked)
            after = await build_report(engine, since=SINCE, until=UNTIL, by="tenant")
            for rep in (before, after):
                rep.pop("generated_at")
                for g in [rep["totals"], *rep["groups"]]:
                    for f in USD_FIELDS:
                        g[f] = Usd(g[f])
                    g["escalation_costs_usd"] = {k: Usd(v) for k, v in g["escalation_costs_usd"].items()}
            assert after["totals"]["requests"] == 400
            assert after["totals"] == before["totals"] and after["groups"] == before["groups"]
        finally:
            await engine.dispose()

    if store == "sqlite":
        await run("sqlite:///old.sqlite")
    else:
        async with pg_database() as url:
            await run(url)


async def _rows_for(records: list[RequestRecord]) -> list[dict[str, Any]]:
    from gateway.ledger.schema import to_db

    p = policy({})
    led = Ledger.from_policy(p, costs=CostModel.from_policy(p, PRICES))
    return [to_db(led._row(r, led.price(r))) for r in records]


async def test_whole_days_are_read_from_daily_cells_and_rebuilt_after_late_rows(ledger: Ledger) -> None:
    from gateway.ledger.schema import rollup_daily

    assert ledger.engine is not None
    for r in traffic(900, seed=11, hours=48):  # 2025-06-14 and 2025-06-15, whole days
        ledger.record(r)
    await ledger.flush()
    first = await build_report(ledger.engine, since=SINCE, until=UNTIL, by="domain")
    async with ledger.engine.connect() as conn:
        assert await rollup.built_days(conn, SINCE, UNTIL) == {datetime(2025, 6, 14, tzinfo=UTC),
                                                               datetime(2025, 6, 15, tzinfo=UTC)}
    async with ledger.engine.begin() as conn:  # hourly cells of whole days are not read any more
        await conn.execute(sa.update(rollup_hourly).values(requests=0, cost_usd=0.0))
    again = await build_report(ledger.engine, since=SINCE, until=UNTIL, by="domain")
    assert again["totals"]["requests"] == first["totals"]["requests"] == 900
    assert again["totals"]["cost_usd"] == first["totals"]["cost_usd"]

    # A late row: its hour is recomputed, its day's merged cells are dropped and rebuilt from the hours.
    await rollup.mark_all(ledger.engine)
    await rollup.refresh(ledger.engine)
    ledger.record(rec(ts=T0 + 5 * 3600 + 1, prompt_tokens=777, completion_tokens=0))
    await ledger.flush()
    async with ledger.engine.connect() as conn:
        days = await rollup.built_days(conn, SINCE, UNTIL)
    assert days == {datetime(2025, 6, 14, tzinfo=UTC), datetime(2025, 6, 15, tzinfo=UTC)}  # still, until refresh
    late = await build_report(ledger.engine, since=SINCE, until=UNTIL, by="domain")
    assert late["totals"]["requests"] == 901
    assert late["totals"]["prompt_tokens"] == first["totals"]["prompt_tokens"] + 777
    assert_matches(await build_report(ledger.engine, since=SINCE, until=UNTIL, by="day"),
                   recompute(await raw_rows(ledger), SINCE, UNTIL))
    async with ledger.engine.connect() as conn:
        n = (await conn.execute(sa.select(sa.func.count()).select_from(rollup_daily))).scalar_one()
    assert n > 0

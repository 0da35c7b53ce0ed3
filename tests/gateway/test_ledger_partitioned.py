"""The PostgreSQL partitioning recipe in docs/costs.md, run as written: the writer keeps writing (and
deduplicating replays) into the partitioned table, reports and rollups read it, and dropping an expired
partition after its hours are rolled up keeps the report's totals."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from gateway.costs import CostModel
from gateway.ledger import Ledger
from gateway.ledger.prune import prune
from gateway.metrics import Metrics
from gateway.reports.compute import build_report

try:
    from tests.gateway.ledger_helpers import PRICES, pg_database, policy, rec
except ImportError:  # tests/gateway is not a package: pytest puts this directory on sys.path
    from ledger_helpers import PRICES, pg_database, policy, rec  # type: ignore[no-redef]

DOC = Path(__file__).resolve().parents[2] / "docs" / "costs.md"
JUNE = datetime(2025, 6, 20, tzinfo=UTC).timestamp()
JULY = datetime(2025, 7, 3, tzinfo=UTC).timestamp()


def recipe() -> str:
    text = DOC.read_text(encoding="utf-8")
    sql = re.search(r"time partitioning of the raw table.*?```sql\n(.*?)```", text, re.S)
    assert sql is not None
    lines = [ln for ln in sql.group(1).splitlines() if not ln.startswith("-- ...")]
    july = ("CREATE TABLE slmgw_requests_2025_07 PARTITION OF slmgw_requests "
            "FOR VALUES FROM ('2025-07-01 00:00+00') TO ('2025-08-01 00:00+00');")
    return "\n".join(lines).replace("COMMIT;", july + "\nCOMMIT;")


async def test_partitioned_raw_table_recipe(tmp_path: Path) -> None:
    async with pg_database() as url:
        p = policy({"ledger": {"url": url, "spill_dir": "spill", "flush_interval_s": 0.05}}, base_dir=str(tmp_path))
        led = Ledger.from_policy(p, costs=CostModel.from_policy(p, PRICES), metrics=Metrics())
        await led.start()
        try:
            led.record(rec(request_id="before", ts=JUNE))
            await led.flush()
            conn = await asyncpg.connect(url.replace("postgresql://", "postgres://"))
            try:
                await conn.execute(recipe())
                parts = await conn.fetchval("SELECT count(*) FROM pg_inherits "
                                            "WHERE inhparent = 'slmgw_requests'::regclass")
                assert parts == 3
            finally:
                await conn.close()
            rows = [led._row(r, led.price(r)) for r in
                    [rec(request_id=f"j{i}", ts=JUNE + i * 60) for i in range(1, 40)]
                    + [rec(request_id=f"k{i}", ts=JULY + i * 60) for i in range(30)]]
            led._buf.extend(dict(r) for r in rows)
            await led.flush()
            led._buf.extend(dict(r) for r in rows[:20])  # a replay: the same ids and timestamps
            await led.flush()
            assert led.state().ok
            assert led.engine is not None
            since, until = datetime(2025, 6, 1, tzinfo=UTC), datetime(2025, 8, 1, tzinfo=UTC)
            rep = await build_report(led.engine, since=since, until=until, by="day")
            assert rep["totals"]["requests"] == 70

            # Expire June: roll its hours up, drop the partition, record the cutoff with prune.
            conn = await asyncpg.connect(url.replace("postgresql://", "postgres://"))
            try:
                from gateway.ledger import rollup

                await rollup.refresh(led.engine)
                await conn.execute("ALTER TABLE slmgw_requests DETACH PARTITION slmgw_requests_2025_06")
                await conn.execute("DROP TABLE slmgw_requests_2025_06")
            finally:
                await conn.close()
            assert await prune(led.engine, datetime(2025, 7, 1, tzinfo=UTC)) == 0
            after = await build_report(led.engine, since=since, until=until, by="day")
            assert after["totals"]["requests"] == 70
            assert [g["key"] for g in after["groups"]] == [g["key"] for g in rep["groups"]]
        finally:
            await led.close()



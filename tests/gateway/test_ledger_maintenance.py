"""`slmgw ledger prune | export | rollup` on a real SQLite ledger (and prune on PostgreSQL): retention keeps
report totals (from rollups), late rows into pruned hours still count, exports stream every column."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from gateway.cli import app as slmgw
from gateway.costs import CostModel
from gateway.ledger import Ledger
from gateway.ledger.columns import COLUMNS
from gateway.ledger.prune import prune
from gateway.ledger.schema import requests
from gateway.metrics import Metrics
from gateway.reports.compute import build_report

try:
    from tests.gateway.ledger_helpers import PRICES, pg_database, policy, rec
except ImportError:  # tests/gateway is not a package: pytest puts this directory on sys.path
    from ledger_helpers import PRICES, pg_database, policy, rec  # type: ignore[no-redef]

T0 = datetime(2025, 6, 10, tzinfo=UTC).timestamp()
SINCE, UNTIL = datetime(2025, 6, 1, tzinfo=UTC), datetime(2025, 6, 20, tzinfo=UTC)
CUTOFF = datetime(2025, 6, 12, tzinfo=UTC)


async def _ledger(url: str, tmp_path: Path) -> Ledger:
    p = policy({"ledger": {"url": url, "spill_dir": "spill", "flush_interval_s": 0.05}}, base_dir=str(tmp_path))
    led = Ledger.from_policy(p, costs=CostModel.from_policy(p, PRICES), metrics=Metrics())
    await led.start()
    return led


@pytest.fixture(params=["sqlite", "postgresql"])
async def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Ledger]:
    if request.param == "sqlite":
        led = await _ledger("sqlite:///ledger.sqlite", tmp_path)
        yield led
        await led.close()
    else:
        async with pg_database() as url:
            led = await _ledger(url, tmp_path)
            yield led
            await led.close()


def fill(ledger: Ledger, n: int = 600, hours: int = 24 * 5, start: float = T0, tag: str = "r") -> None:
    for i in range(n):
        ledger.record(rec(request_id=f"{tag}{i}", ts=start + (i * 3600 * hours / n) + 7,
                          latency_ms=10.0 + i % 97, prompt_tokens=i, tenant="acme" if i % 3 else "beta",
                          extra={"k": i} if i % 50 == 0 else {}))
    return None


async def count(ledger: Ledger) -> int:
    assert ledger.engine is not None
    async with ledger.engine.connect() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(requests))).scalar_one())


async def test_prune_keeps_report_totals_and_counts_late_rows(ledger: Ledger) -> None:
    assert ledger.engine is not None
    fill(ledger)
    await ledger.flush()
    before = await build_report(ledger.engine, since=SINCE, until=UNTIL, by="tenant")
    deleted = await prune(ledger.engine, CUTOFF)
    assert deleted == 600 - await count(ledger) and 0 < deleted < 600
    assert ledger.engine is not None
    async with ledger.engine.connect() as conn:  # nothing older than the cutoff is left
        oldest = (await conn.execute(sa.select(sa.func.min(requests.c.ts)))).scalar_one()
    assert oldest >= CUTOFF
    after = await build_report(ledger.engine, since=SINCE, until=UNTIL, by="tenant")
    for rep in (before, after):
        rep.pop("generated_at")
    assert after == before  # every figure, percentiles included: the same cells are read

    # A late row (a spill replayed after the prune) into a pruned hour is added, not lost or overwritten.
    ledger.record(rec(request_id="late", ts=T0 + 3600 + 5, prompt_tokens=1234, completion_tokens=0))
    await ledger.flush()
    late = await build_report(ledger.engine, since=SINCE, until=UNTIL, by="tenant")
    assert late["totals"]["requests"] == before["totals"]["requests"] + 1
    assert late["totals"]["prompt_tokens"] == before["totals"]["prompt_tokens"] + 1234
    assert await count(ledger) == 600 - deleted  # the late raw row was folded into the rollup and dropped


def filled(tmp_path: Path, n: int, hours: int) -> None:
    async def main() -> None:
        led = await _ledger("sqlite:///ledger.sqlite", tmp_path)
        try:
            fill(led, n=n, hours=hours)
            await led.flush()
        finally:
            await led.close()

    asyncio.run(main())


def test_export_csv_and_parquet_stream_every_row(tmp_path: Path) -> None:
    filled(tmp_path, 25_003, 24)
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    runner = CliRunner()
    res = runner.invoke(slmgw, ["ledger", "export", "--ledger-url", url, "--since", "2025-06-10T06:00",
                                "--until", "2025-06-10T18:00", "-o", str(tmp_path / "out.csv")])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out.csv").read_text())))
    expected = sum(1 for i in range(25_003) if 6 * 3600 <= i * 3600 * 24 / 25_003 + 7 < 18 * 3600)
    assert len(rows) == expected and list(rows[0]) == list(COLUMNS)
    assert all("2025-06-10T06:00" <= r["ts"] < "2025-06-10T18:00" for r in rows)
    assert rows == sorted(rows, key=lambda r: r["ts"])
    assert {json.loads(r["extra"])["k"] for r in rows if r["extra"]} >= {12_550}

    pq = pytest.importorskip("pyarrow.parquet")
    res = runner.invoke(slmgw, ["ledger", "export", "--ledger-url", url, "-f", "parquet",
                                "-o", str(tmp_path / "out.parquet")])
    assert res.exit_code == 0, res.output
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.num_rows == 25_003 and table.column_names == list(COLUMNS)
    assert sum(table.column("prompt_tokens").to_pylist()) == sum(range(25_003))
    assert str(table.schema.field("ts").type) == "timestamp[us, tz=UTC]"


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(slmgw, ["ledger", "prune", "--ledger-url", f"sqlite:///{tmp_path}/x.sqlite"])
    assert res.exit_code == 2 and "--older-than" in res.output and "Traceback" not in res.output
    (tmp_path / "dir.sqlite").mkdir()
    res = runner.invoke(slmgw, ["ledger", "rollup", "--ledger-url", f"sqlite:///{tmp_path}/dir.sqlite"])
    errors = [ln for ln in res.output.splitlines() if ln.startswith("error: ")]
    assert res.exit_code == 1 and "Traceback" not in res.output and "sqlalche.me" not in res.output
    assert len(errors) == 1 and "unable to open database file" in errors[0], res.output


def test_rollup_command_backfills(tmp_path: Path) -> None:
    filled(tmp_path, 300, 30)
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    res = CliRunner().invoke(slmgw, ["ledger", "rollup", "--ledger-url", url])
    assert res.exit_code == 0, res.output
    assert "rolled up 30 hours" in res.output
    res = CliRunner().invoke(slmgw, ["ledger", "rollup", "--ledger-url", url])
    assert "rolled up 0 hours" in res.output
    res = CliRunner().invoke(slmgw, ["ledger", "rollup", "--ledger-url", url, "--rebuild"])
    assert "rolled up 30 hours" in res.output




async def test_reports_process_maintains_on_schedule(tmp_path: Path) -> None:
    """serve-reports with ledger.maintenance_interval_s: rolls up and prunes by itself, report unchanged."""
    import time

    from gateway.ledger import rollup
    from gateway.reports.server import create_reports_app

    led = await _ledger("sqlite:///ledger.sqlite", tmp_path)
    now = time.time()
    try:
        fill(led, n=400, hours=24 * 8, start=now - 9 * 86400)
        await led.flush()
    finally:
        await led.close()
    p = policy({"ledger": {"url": "sqlite:///ledger.sqlite", "retention_days": 3, "maintenance_interval_s": 3600},
                "auth": {"admin_keys": ["admin-secret"]}}, base_dir=str(tmp_path))
    app = create_reports_app(p)
    engine = app.state.ledger.engine
    assert engine is not None
    since = datetime.fromtimestamp(now - 10 * 86400, UTC)
    before = await build_report(engine, since=since, by="tenant", refresh=False)
    async with app.router.lifespan_context(app):
        # The horizon is recorded first, then the expired rows are deleted in batches: wait for both.
        horizon, oldest = None, None
        for _ in range(400):
            async with engine.connect() as conn:
                horizon = await rollup.pruned_before(conn)
                oldest = (await conn.execute(sa.select(sa.func.min(requests.c.ts)))).scalar_one()
            if horizon is not None and oldest is not None and oldest >= horizon:
                break
            await asyncio.sleep(0.05)
        assert horizon is not None and abs((datetime.now(UTC) - horizon).total_seconds() - 3 * 86400) < 3700
        assert oldest is not None and oldest >= horizon
        after = await build_report(engine, since=rollup.floor_hour(since), by="tenant")
    for key in ("requests", "prompt_tokens", "errors"):
        assert after["totals"][key] == before["totals"][key]

"""Ledger on the real PostgreSQL (127.0.0.1:5432): migrations, and nothing lost when the database is
stopped under load and started again.

Each test works in a fresh database of its own (created and dropped here). The outage test stops the
cluster with pg_ctlcluster and ALWAYS starts it again (finally), since CI needs it running.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from gateway.costs import CostModel
from gateway.ledger import Ledger
from gateway.ledger.columns import HEAD_REVISION
from gateway.ledger.store import create_engine, current_revision, head_revision, migrate, normalize_url

try:
    from tests.gateway.ledger_helpers import PRICES, pg_database, policy, rec, wait_for_pg
except ImportError:  # tests/gateway is not a package: pytest puts this directory on sys.path
    from ledger_helpers import PRICES, pg_database, policy, rec, wait_for_pg  # type: ignore[no-redef]

@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with pg_database() as url:
        yield url


def _cluster(action: str) -> None:
    versions = sorted(os.listdir("/etc/postgresql"))
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", action],
                   check=True, capture_output=True, timeout=120)


def make_ledger(url: str, tmp_path: Path, **ledger: Any) -> Ledger:
    cfg = {"url": url, "spill_dir": "spill", **ledger}
    p = policy({"ledger": cfg}, base_dir=str(tmp_path))
    return Ledger.from_policy(p, costs=CostModel.from_policy(p, PRICES))


async def _count(url: str) -> tuple[int, int]:
    engine = create_engine(normalize_url(url))
    try:
        async with engine.connect() as conn:
            total, distinct = (await conn.execute(sa.text(
                "SELECT count(*), count(DISTINCT request_id) FROM slmgw_requests"))).one()
            return int(total), int(distinct)
    finally:
        await engine.dispose()


async def test_pg_migrations_and_roundtrip(pg_url: str, tmp_path: Path) -> None:
    ledger = make_ledger(pg_url, tmp_path)
    await ledger.start()
    try:
        assert ledger.sink is not None and ledger.sink.dialect == "postgresql"
        assert await ledger.sink.revision() == {HEAD_REVISION}
        # Reports get an SQLAlchemy engine on the same database; alembic agrees about the revision.
        assert ledger.engine is not None and ledger.engine.dialect.name == "postgresql"
        assert await current_revision(ledger.engine) == head_revision() == HEAD_REVISION
        await migrate(ledger.engine)  # idempotent
        ledger.record(rec(request_id="pg-1", ts=1_750_000_123.5, reason="x" * 2000))
        await ledger.flush()
        async with ledger.engine.connect() as conn:
            row = (await conn.execute(sa.text("SELECT ts, day, cost_usd, reason FROM slmgw_requests"))).one()
        assert row.ts.tzinfo is not None and row.ts.timestamp() == 1_750_000_123.5
        assert row.day == "2025-06-15" and row.cost_usd == pytest.approx(0.0003)
        assert len(row.reason) == 512  # clipped to the column, not a rejected batch
    finally:
        await ledger.close()


@pytest.mark.skipif(not shutil.which("pg_ctlcluster") or not glob.glob("/etc/postgresql/*"),
                    reason="needs a local PostgreSQL cluster managed by pg_ctlcluster")
@pytest.mark.timeout(240)
async def test_nothing_lost_when_pg_stops_under_load(pg_url: str, tmp_path: Path) -> None:
    total = 4000
    ledger = make_ledger(pg_url, tmp_path, buffer_max=300, batch_size=100, flush_interval_s=0.05,
                         write_timeout_s=3.0, retry_max_s=0.5)
    await ledger.start()
    saw_down = saw_spill = False
    stopped = False
    try:
        for i in range(total):
            ledger.record(rec(request_id=f"load-{i:05d}", ts=1_750_000_000.0 + i))
            if i % 20 == 0:
                await asyncio.sleep(0.002)  # ~10k records/s offered, the writer runs in between
            if i == 1000:
                await asyncio.to_thread(_cluster, "stop")
                stopped = True
            if stopped and i % 100 == 0:
                h = ledger.state()
                saw_down = saw_down or h.store == "down"
                saw_spill = saw_spill or h.spilled > 0
            if i == 3000:
                # Give the writer time to notice the outage and the spiller time to work.
                for _ in range(100):
                    h = ledger.state()
                    saw_down = saw_down or h.store == "down"
                    saw_spill = saw_spill or h.spilled > 0
                    if saw_down and saw_spill:
                        break
                    await asyncio.sleep(0.05)
                assert ledger.state().buffered <= 300 + 100, ledger.state()
                await asyncio.to_thread(_cluster, "start")
                stopped = False
        assert saw_down, "the ledger never noticed the outage"
        assert saw_spill, "rows never spilled to disk during the outage"
        await wait_for_pg(60)
        for _ in range(60):
            try:
                await ledger.flush(within_s=20)
                break
            except Exception:
                await asyncio.sleep(0.5)
        assert ledger.state().buffered == 0 and ledger.state().spilled == 0, ledger.state()
    finally:
        if stopped:
            await asyncio.to_thread(_cluster, "start")
        await ledger.close()
    assert await _count(pg_url) == (total, total)
    assert not list((tmp_path / "spill").glob("spill-*"))

"""Ledger on SQLite: batched writes, migrations, prompt privacy, outage -> spill -> replay, close."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from gateway.costs import CostModel
from gateway.ledger import Ledger
from gateway.ledger.dsn import parse_store_url
from gateway.ledger.spill import SpillDir
from gateway.ledger.store import (
    create_engine,
    current_revision,
    downgrade,
    head_revision,
    migrate,
    normalize_url,
)

try:
    from tests.gateway.ledger_helpers import PRICES, policy, rec
except ImportError:  # tests/gateway is not a package: pytest puts this directory on sys.path
    from ledger_helpers import PRICES, policy, rec  # type: ignore[no-redef]


def make_ledger(tmp_path: Path, **ledger: Any) -> Ledger:
    cfg = {"url": "sqlite:///ledger.sqlite", "spill_dir": "spill", "flush_interval_s": 0.05,
           "retry_max_s": 0.2, "write_timeout_s": 2.0, **ledger}
    p = policy({"ledger": cfg}, base_dir=str(tmp_path))
    return Ledger.from_policy(p, costs=CostModel.from_policy(p, PRICES))


def _db(ledger: Ledger) -> sqlite3.Connection:
    """The ledger's SQLite file, read with the stdlib driver (neither the writer's code nor SQLAlchemy)."""
    conn = sqlite3.connect(parse_store_url(ledger.url, ledger.base_dir).path)
    conn.row_factory = sqlite3.Row
    return conn


async def rows(ledger: Ledger, where: str = "") -> list[dict[str, Any]]:
    with contextlib.closing(_db(ledger)) as conn:
        return [dict(r) for r in conn.execute(f"SELECT * FROM slmgw_requests {where} ORDER BY request_id")]


async def count(ledger: Ledger) -> int:
    with contextlib.closing(_db(ledger)) as conn:
        return int(conn.execute("SELECT count(*) FROM slmgw_requests").fetchone()[0])


async def test_rows_are_written_in_batches_with_costs(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path, batch_size=100)
    await ledger.start()
    try:
        for i in range(1, 251):
            ledger.record(rec(request_id=f"r{i:04d}", ts=1_750_000_000.0 + i, prompt_text="secret prompt"))
        ledger.record(rec(request_id="r9999", route="cache", backend=None, cache="hit", ttft_ms=3.5, stream=True))
        await ledger.flush()
        assert await count(ledger) == 251
        assert ledger.state().written == 251 and ledger.state().buffered == 0
        first = (await rows(ledger, "WHERE request_id = 'r0001'"))[0]
        assert first["cost_usd"] == pytest.approx(0.0003)  # 1500 tokens on sql-slm at $0.20/1M
        assert first["baseline_cost_usd"] == pytest.approx(0.0075)
        assert first["baseline_model"] == "openai/gpt-4o"
        assert first["day"] == "2025-06-15" and first["tenant"] == "acme" and first["route"] == "slm"
        assert first["prompt_text"] is None  # privacy by default
        hit = (await rows(ledger, "WHERE request_id = 'r9999'"))[0]
        assert (hit["cost_usd"], hit["cache"], hit["ttft_ms"], bool(hit["stream"])) == (0.0, "hit", 3.5, True)
    finally:
        await ledger.close()
    assert (tmp_path / "ledger.sqlite").exists()


async def test_prompt_text_only_when_opted_in(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path, store_prompts=True)
    await ledger.start()
    ledger.record(rec(request_id="p1", prompt_text="SELECT 1\x00 please"))
    await ledger.close()
    ledger = make_ledger(tmp_path, store_prompts=True)
    await ledger.start()
    try:
        assert (await rows(ledger))[0]["prompt_text"] == "SELECT 1 please"
    finally:
        await ledger.close()


async def test_background_writer_needs_no_flush(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path)
    await ledger.start()
    try:
        for _ in range(7):
            ledger.record(rec())
        for _ in range(100):
            if await count(ledger) >= 7:
                break
            await asyncio.sleep(0.05)
        assert await count(ledger) == 7
    finally:
        await ledger.close()


async def test_record_is_cheap_and_never_raises(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path)
    await ledger.start()
    try:
        bad = rec()
        bad.ts = "yesterday"  # type: ignore[assignment]
        ledger.record(bad)  # logged, not raised
        t0 = time.perf_counter()
        for _ in range(2000):
            ledger.record(rec())
        per_record_us = (time.perf_counter() - t0) / 2000 * 1e6
        assert per_record_us < 500, per_record_us
        await ledger.flush()
        assert await count(ledger) == 2000
    finally:
        await ledger.close()


async def test_migrations_are_versioned_and_idempotent(tmp_path: Path) -> None:
    engine = create_engine(normalize_url("sqlite:///m.sqlite", tmp_path))
    try:
        assert await current_revision(engine) is None
        await migrate(engine)
        await migrate(engine)
        assert await current_revision(engine) == head_revision()
        await downgrade(engine, "base")
        async with engine.connect() as conn:
            assert not await conn.run_sync(lambda c: sa.inspect(c).has_table("slmgw_requests"))
        await migrate(engine)
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()


def test_migrations_ship_inside_the_package() -> None:
    import gateway.ledger.migrations as mig

    root = Path(mig.__file__).parent
    assert (root / "env.py").is_file() and (root / "script.py.mako").is_file()
    assert any(p.name.startswith("r0001") for p in (root / "versions").iterdir())


async def test_store_down_spills_then_replays_everything(tmp_path: Path) -> None:
    # The SQLite "file" is a directory: every connection fails, as if the store were down.
    blocker = tmp_path / "ledger.sqlite"
    blocker.mkdir()
    ledger = make_ledger(tmp_path, buffer_max=50, batch_size=20)
    await ledger.start()
    try:
        assert ledger.state().store == "down" and not ledger.state().ok
        for i in range(500):
            ledger.record(rec(request_id=f"d{i:04d}"))
            if i % 50 == 0:
                await asyncio.sleep(0.01)
        for _ in range(250):
            if ledger.state().buffered <= 50:
                break
            await asyncio.sleep(0.02)
        health = ledger.state()
        assert health.buffered <= 50, health  # memory stays bounded
        assert health.spilled >= 450, health
        assert list((tmp_path / "spill").glob("spill-*.jsonl"))
        with pytest.raises(Exception):  # noqa: B017 - the store's own error surfaces from flush
            await ledger.flush()
        blocker.rmdir()  # the store is back
        await ledger.flush()
        assert await count(ledger) == 500
        assert len({r["request_id"] for r in await rows(ledger)}) == 500
        assert not list((tmp_path / "spill").glob("spill-*"))
        assert ledger.state().ok and ledger.state().spilled == 0
    finally:
        await ledger.close()


async def test_close_while_down_spills_and_next_start_replays(tmp_path: Path) -> None:
    blocker = tmp_path / "ledger.sqlite"
    blocker.mkdir()
    ledger = make_ledger(tmp_path)
    await ledger.start()
    for i in range(120):
        ledger.record(rec(request_id=f"c{i:04d}"))
    await ledger.close(within_s=1.0)
    assert SpillDir(tmp_path / "spill").count_rows() == 120
    blocker.rmdir()
    ledger = make_ledger(tmp_path)
    await ledger.start()
    try:
        for _ in range(100):  # replayed by the writer at start, without a flush
            if not ledger.state().spilled:
                break
            await asyncio.sleep(0.05)
        assert await count(ledger) == 120
    finally:
        await ledger.close()


async def test_replay_is_idempotent_and_recovers_dead_claims(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path)
    await ledger.start()
    try:
        row = ledger._row(rec(request_id="once"), ledger.price(rec()))
        ledger._buf.append(dict(row))
        await ledger.flush()
        # A replay that inserted its rows but died before deleting its file (pid 2**22+1 is not alive).
        spill = SpillDir(tmp_path / "spill")
        path = spill.write([row])
        assert path is not None
        os.replace(path, path.with_name(path.name + f".replaying-{2**22 + 1}"))
        assert spill.recover_stale() == 1
        await ledger.flush()
        assert await count(ledger) == 1
        assert not list((tmp_path / "spill").iterdir())
    finally:
        await ledger.close()


def test_claims_name_their_host_and_other_hosts_take_back_only_old_ones(tmp_path: Path) -> None:
    """A spill directory shared by pods: a claim from another host cannot be checked for a live
    process, so it is released only once it is older than the stale age."""
    from gateway.ledger import spill as spill_mod

    spill = SpillDir(tmp_path)
    path = spill.write([{"id": "a"}])
    assert path is not None
    claimed = spill.claim(path)
    assert claimed is not None and claimed.name.endswith(f".replaying-{spill_mod._HOST}-{os.getpid()}")
    assert spill.pending() == [claimed]  # our own claim stays ours to finish
    other = claimed.with_name(path.name + ".replaying-other_pod-1")
    os.replace(claimed, other)
    assert spill.pending() == [] and spill.recover_stale() == 0  # fresh: its pod may still be replaying
    old = time.time() - spill_mod.STALE_CLAIM_S - 5
    os.utime(other, (old, old))
    assert spill.recover_stale() == 1 and [p.name for p in spill.pending()] == [path.name]

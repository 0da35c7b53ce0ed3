"""Budget spend from the ledger (issue 13): key_id is a real, indexed column (migrated from extra), and a
ledger that cannot be read never counts as zero spend."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from gateway.costs import Cost
from gateway.errors import GatewayError
from gateway.ledger.store import create_engine, migrate, normalize_url
from gateway.limits import Budgets, BudgetUnavailable, Grant, Limits

try:
    from tests.gateway.ledger_helpers import policy, rec
except ImportError:  # tests/gateway is not a package: pytest puts this directory on sys.path
    from ledger_helpers import policy, rec  # type: ignore[no-redef]

NOW = "2999-01-01 00:00:00.000000"  # inside any budget period


async def _ledger(tmp_path: Path, revision: str) -> str:
    url = normalize_url("sqlite:///l.sqlite", tmp_path)
    engine = create_engine(url)
    try:
        await migrate(engine, revision)
    finally:
        await engine.dispose()
    return url


def _insert(db: Path, **row: object) -> None:
    base: dict[str, object] = {"id": f"id{row.get('cost_usd')}{row.get('tenant')}{len(str(row))}",
                               "request_id": "r", "ts": NOW, "day": "2999-01-01", "tenant": "acme",
                               "endpoint": "chat", "requested_model": "auto", "stream": 0, "route": "llm",
                               "reason": "x", "prompt_tokens": 1, "completion_tokens": 1, "latency_ms": 1.0,
                               "status": 200, "cache": "miss", "cost_usd": 1.0, "baseline_cost_usd": 1.0,
                               "baseline_model": "m", "extra": "null"}
    base.update(row)
    with sqlite3.connect(db) as conn:
        conn.execute(f"INSERT INTO slmgw_requests ({', '.join(base)}) VALUES ({', '.join('?' * len(base))})",
                     list(base.values()))


async def test_migration_moves_key_id_out_of_extra_and_indexes_budget_queries(tmp_path: Path) -> None:
    url = await _ledger(tmp_path, "0002")
    db = tmp_path / "l.sqlite"
    _insert(db, id="a", cost_usd=2.0, extra=json.dumps({"key_id": "key_A"}))
    _insert(db, id="b", cost_usd=3.0, extra=json.dumps({"key_id": "key_B"}))
    _insert(db, id="c", cost_usd=5.0)
    await _ledger(tmp_path, "head")
    with sqlite3.connect(db) as conn:
        assert dict(conn.execute("SELECT id, key_id FROM slmgw_requests").fetchall()) == \
            {"a": "key_A", "b": "key_B", "c": None}
        indexes = {r[1]: r for r in conn.execute("PRAGMA index_list(slmgw_requests)")}
        assert "ix_slmgw_requests_tenant_ts" in indexes
        cols = [r[2] for r in conn.execute("PRAGMA index_info(ix_slmgw_requests_tenant_ts)")]
        assert cols == ["tenant", "ts"]
        plan = " ".join(str(r) for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT sum(cost_usd) FROM slmgw_requests WHERE tenant = 'acme' AND ts >= ?",
            (NOW,)))
        assert "ix_slmgw_requests_tenant_ts" in plan
    budgets = Budgets(create_engine(url), "month", 60.0)
    try:
        assert await budgets.spent("acme") == pytest.approx(10.0)
        assert await budgets.spent("acme", "key_A") == pytest.approx(2.0)
        assert await budgets.spent("acme", "key_B") == pytest.approx(3.0)
    finally:
        await budgets.close()


async def test_unreadable_ledger_keeps_last_spend_plus_own_charges(tmp_path: Path) -> None:
    url = await _ledger(tmp_path, "head")
    _insert(tmp_path / "l.sqlite", id="a", cost_usd=4.0, key_id="key_A")
    budgets = Budgets(create_engine(url), "month", cache_s=0.0)  # every check reads the ledger
    try:
        assert await budgets.spent("acme", "key_A") == pytest.approx(4.0)
        budgets.charge("acme", "key_A", 0.5)  # served by this process, not yet written

        async def hangs(*_a: object) -> float:
            await asyncio.sleep(3600)
            return 0.0

        budgets._query = hangs  # type: ignore[method-assign]  # the ledger stops answering
        import gateway.limits as limits_mod

        limits_mod._QUERY_TIMEOUT_S, saved = 0.05, limits_mod._QUERY_TIMEOUT_S
        try:
            assert await budgets.spent("acme", "key_A") == pytest.approx(4.5)
            budgets.charge("acme", "key_A", 1.0)
            assert await budgets.spent("acme", "key_A") == pytest.approx(5.5)
            with pytest.raises(BudgetUnavailable):  # the tenant scope was never read: refused, not zero
                await budgets.spent("acme")
        finally:
            limits_mod._QUERY_TIMEOUT_S = saved
        assert budgets.errors >= 1
    finally:
        await budgets.close()


async def test_never_read_scope_is_refused_not_zero(tmp_path: Path) -> None:
    budgets = Budgets(create_engine(normalize_url("sqlite:///missing/dir/l.sqlite", tmp_path)), "day", 0.0)
    try:
        with pytest.raises(BudgetUnavailable) as err:
            await budgets.spent("acme", "key_A")
        assert isinstance(err.value, GatewayError) and err.value.status == 503
        assert err.value.body()["error"]["code"] == "budget_unavailable"
    finally:
        await budgets.close()


async def test_settle_charges_the_finished_requests_cost(tmp_path: Path) -> None:
    url = await _ledger(tmp_path, "head")
    p = policy({"ledger": {"url": "sqlite:///l.sqlite"}}, base_dir=str(tmp_path))
    limits = Limits(p, None, Budgets(create_engine(url), "total", cache_s=60.0))
    try:
        assert limits.budgets is not None
        assert await limits.budgets.spent("acme", "key_A") == 0.0
        limits.settle(Grant(), rec(key_id="key_A"), Cost(cost_usd=0.25, baseline_cost_usd=1.0))
        assert await limits.budgets.spent("acme", "key_A") == pytest.approx(0.25)
        assert await limits.budgets.spent("acme", "key_B") == 0.0
    finally:
        await limits.close()

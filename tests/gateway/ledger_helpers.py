"""Shared builders for the ledger/cost/report tests (issue 6)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from gateway.config import Policy, parse_policy
from gateway.records import RequestRecord

PRICES: dict[str, dict[str, Any]] = {
    # The given price table every hand-computed figure in the tests is based on (USD per token).
    "gpt-4o": {"input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05},
    "gpt-4o-mini": {"input_cost_per_token": 1.5e-07, "output_cost_per_token": 6e-07},
}


def policy(extra: dict[str, Any] | None = None, base_dir: str = ".") -> Policy:
    raw: dict[str, Any] = {
        "slm_backends": {
            "sql-slm": {"base_url": "http://127.0.0.1:9/v1", "model": "sql",
                        "cost": {"usd_per_1m_tokens": 0.20}},
            "code-slm": {"base_url": "http://127.0.0.1:9/v1", "model": "code",
                         "cost": {"gpu_hour_usd": 1.80, "tokens_per_second": 500}},
        },
        "llm_backends": {
            "big": {"model": "openai/gpt-4o"},
            "small": {"model": "openai/gpt-4o-mini", "input_usd_per_1m": 0.10},
        },
        "domains": [{"name": "sql", "backend": "sql-slm"}, {"name": "code", "backend": "code-slm"}],
        "fallback": {"llm": ["big", "small"]},
        "auth": {"admin_keys": ["admin-secret"]},
    }
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return parse_policy(raw, base_dir=base_dir, env={})


_ids = itertools.count()


def rec(**kw: Any) -> RequestRecord:
    base: dict[str, Any] = {"request_id": f"req-{next(_ids)}", "ts": 1_750_000_000.0, "tenant": "acme",
                            "endpoint": "chat", "requested_model": "auto", "route": "slm",
                            "domain": "sql", "model": "sql", "backend": "sql-slm",
                            "reason": "classified sql=0.9>=0.5", "confidence": 0.9,
                            "prompt_tokens": 1000, "completion_tokens": 500, "latency_ms": 100.0,
                            "cache": "miss"}
    base.update(kw)
    return RequestRecord(**base)


DAY1 = 1_750_000_000.0 - 86_400  # 2025-06-14 15:06:40 UTC
DAY2 = 1_750_000_000.0  # 2025-06-15 15:06:40 UTC


def sample_records() -> list[RequestRecord]:
    """Eight requests in [2025-06-14, 2025-06-16) and one older; the expected report is in test_report.py."""
    return [
        rec(ts=DAY1, route="slm", backend="sql-slm", latency_ms=100, cache="miss"),
        rec(ts=DAY1 + 1, route="slm", backend="code-slm", domain="code", model="code", latency_ms=200,
            cache="miss"),
        rec(ts=DAY1 + 2, route="llm", backend="big", model="openai/gpt-4o", escalation="slm_error:timeout",
            latency_ms=1000, cache="miss"),
        rec(ts=DAY1 + 3, route="cache", backend=None, model="sql", latency_ms=2, cache="hit"),
        rec(ts=DAY2, route="llm", backend="small", model="openai/gpt-4o-mini", domain=None, latency_ms=500,
            cache="bypass", reason="low_confidence sql=0.41<0.50"),
        rec(ts=DAY2 + 1, route="llm", backend="big", model="openai/gpt-4o", escalation="slm_error:connect",
            latency_ms=800, cache="miss"),
        rec(ts=DAY2 + 2, route="none", backend=None, model=None, status=502, error_code="upstream_error",
            prompt_tokens=0, completion_tokens=0, latency_ms=50, cache="bypass"),
        rec(ts=DAY2 + 3, route="llm", backend="big", model="openai/gpt-4o", would_route="slm", tenant="beta",
            latency_ms=600, cache="miss"),
        rec(ts=DAY1 - 4 * 86_400, route="llm", backend="big", model="openai/gpt-4o", latency_ms=9999),
    ]


# -- PostgreSQL (127.0.0.1:5432): a fresh database per test ------------------------------------------------

PG = os.environ.get("SLMGW_TEST_PG", "postgresql://postgres@127.0.0.1:5432")


async def pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(f"{PG}/test", timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def wait_for_pg(within_s: float) -> None:
    import asyncpg

    deadline = time.monotonic() + within_s
    while True:
        try:
            conn = await asyncpg.connect(f"{PG}/test", timeout=2)
            await conn.close()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)


@contextlib.asynccontextmanager
async def pg_database() -> AsyncIterator[str]:
    """The URL of a new, empty database, dropped afterwards (skips the test without a PostgreSQL)."""
    import pytest

    name = f"slmgw_ledger_{uuid.uuid4().hex[:10]}"
    try:
        await pg_admin(f'CREATE DATABASE "{name}"')
    except (OSError, ConnectionError) as exc:
        pytest.skip(f"PostgreSQL at {PG} is not reachable: {exc}")
    try:
        yield f"{PG}/{name}"
    finally:
        await wait_for_pg(60)
        await pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

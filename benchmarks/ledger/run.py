"""Ledger write cost: the raw-driver sinks next to the SQLAlchemy statement they replaced.

    .venv/bin/python -m benchmarks.ledger [--rows 20000] [--batch 500] [--repeat 3] [--pg URL] [--json FILE]

For SQLite (a file in a temporary directory) and PostgreSQL (a database created on ``--pg`` and dropped
afterwards; skipped when unreachable), each path writes the same buffered rows in batches into a freshly
migrated database of its own: ``sqlalchemy`` is ``gateway.ledger.store.insert_rows`` (``to_db`` + the
Core ``INSERT ... ON CONFLICT DO NOTHING`` on an async engine, what the writer did before), ``sink`` is
``Sink.values`` + ``Sink.insert`` (sqlite3 on a worker thread / asyncpg ``executemany``). It prints this
process's CPU time (all threads; the PostgreSQL server's own CPU is not counted) and wall time per 1,000
rows, the median of ``--repeat`` runs after one warm-up batch.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

Write = Callable[[list[dict[str, Any]]], Awaitable[None]]


def make_rows(n: int, start: int = 0) -> list[dict[str, Any]]:
    """Rows shaped as ``Ledger.record`` buffers them."""
    rows = []
    for i in range(start, start + n):
        llm = i % 3 == 0
        rows.append({
            "id": uuid.uuid4().hex, "request_id": f"req-{i:08d}", "ts": 1_750_000_000.0 + i * 0.01,
            "day": "2025-06-15", "tenant": f"tenant-{i % 7}", "endpoint": "chat", "requested_model": "auto",
            "stream": i % 4 == 0, "route": "llm" if llm else "slm", "domain": None if llm else "sql",
            "model": "openai/gpt-4o-mini" if llm else "sql", "backend": "llm" if llm else "sql",
            "reason": "low_confidence sql=0.41<0.60" if llm else "classified sql=0.93>=0.60",
            "confidence": 0.41 if llm else 0.93, "escalation": None, "prompt_tokens": 120 + i % 50,
            "completion_tokens": 80 + i % 30, "latency_ms": 35.5 + i % 10, "ttft_ms": 12.0 if i % 4 == 0 else None,
            "status": 200, "error_code": None, "cache": "miss", "would_route": None, "cost_usd": 1.2e-05,
            "baseline_cost_usd": 0.0011, "shadow_cost_usd": None, "baseline_model": "openai/gpt-4o",
            "prompt_text": None, "extra": {"key_id": "key_abc"} if i % 5 == 0 else None,
        })
    return rows


async def _migrated(url: str) -> None:
    from gateway.ledger.store import create_engine, migrate

    engine = create_engine(url)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()


async def _measure(write: Write, rows: int, batch: int) -> tuple[float, float]:
    """CPU and wall milliseconds per 1,000 rows."""
    data = make_rows(rows, start=10_000_000)
    batches = [data[i:i + batch] for i in range(0, rows, batch)]
    await write(make_rows(batch, start=20_000_000))  # warm-up: connect, compile/prepare
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for b in batches:
        await write(b)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return cpu * 1e6 / rows, wall * 1e6 / rows


async def run_path(store: str, path: str, url: str, rows: int, batch: int) -> tuple[float, float]:
    from gateway.ledger.dsn import parse_store_url
    from gateway.ledger.sink import open_sink
    from gateway.ledger.store import create_engine, insert_rows, normalize_url

    await _migrated(normalize_url(url))
    if path == "sqlalchemy":
        engine = create_engine(normalize_url(url))

        async def old(b: list[dict[str, Any]]) -> None:
            await insert_rows(engine, b)

        try:
            return await _measure(old, rows, batch)
        finally:
            await engine.dispose()
    sink = open_sink(parse_store_url(url))

    async def new(b: list[dict[str, Any]]) -> None:
        await sink.insert([sink.values(r) for r in b])

    try:
        return await _measure(new, rows, batch)
    finally:
        await sink.close()


async def _pg_database(server: str, name: str, create: bool) -> None:
    import asyncpg

    conn = await asyncpg.connect(f"{server}/postgres", timeout=5)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"' if create else f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def bench(args: argparse.Namespace) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    stores = ["sqlite", "postgresql"] if args.pg else ["sqlite"]
    with tempfile.TemporaryDirectory(prefix="slmgw-ledger-bench-") as tmp:
        for store in stores:
            for path in ("sqlalchemy", "sink"):
                cpu, wall = [], []
                for rep in range(args.repeat):
                    if store == "sqlite":
                        url = f"sqlite:///{Path(tmp) / f'{path}-{rep}.sqlite'}"
                        c, w = await run_path(store, path, url, args.rows, args.batch)
                    else:
                        name = f"slmgw_ledger_bench_{uuid.uuid4().hex[:8]}"
                        try:
                            await _pg_database(args.pg, name, create=True)
                        except OSError as exc:
                            print(f"PostgreSQL at {args.pg} unreachable ({exc}); skipped", file=sys.stderr)
                            break
                        try:
                            c, w = await run_path(store, path, f"{args.pg}/{name}", args.rows, args.batch)
                        finally:
                            await _pg_database(args.pg, name, create=False)
                    cpu.append(c)
                    wall.append(w)
                if cpu:
                    results.append({"store": store, "path": path, "rows": args.rows, "batch": args.batch,
                                    "cpu_ms_per_1k_rows": round(statistics.median(cpu), 2),
                                    "wall_ms_per_1k_rows": round(statistics.median(wall), 2)})
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000, help="rows per run (default 20000)")
    parser.add_argument("--batch", type=int, default=500, help="rows per INSERT (the ledger's batch_size, 500)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per path; the median is printed")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432",
                        help="PostgreSQL server to create a scratch database on ('' to skip)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results = asyncio.run(bench(args))
    print(f"{'store':<11} {'path':<11} {'CPU ms/1k rows':>15} {'wall ms/1k rows':>16}")
    for r in results:
        print(f"{r['store']:<11} {r['path']:<11} {r['cpu_ms_per_1k_rows']:>15.1f} {r['wall_ms_per_1k_rows']:>16.1f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0

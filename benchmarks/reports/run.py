"""Reports at scale: report time and memory from raw rows against hourly rollups, and client latency on
the serving worker while the dashboard refreshes.

    .venv/bin/python -m benchmarks.reports [--rows 1000000] [--days 30] [--pg URL] [--keep DIR]
                                           [--latency-s 10] [--json FILE]

For SQLite (a file in a temporary directory, or ``--keep DIR`` to reuse a filled one) and PostgreSQL
(``--pg postgresql://postgres@127.0.0.1:5432``: a database created there and dropped afterwards), the
ledger is filled with ``--rows`` synthetic requests over ``--days`` days ending now, through the
gateway's own sinks. Then, each in a fresh process (``benchmarks.reports.measure``):

- ``raw``: the 30-day report while no hour is rolled up yet (every row read, as before rollups);
- ``backfill``: ``slmgw ledger rollup`` (every hour rolled up; a one-time cost, then one hour per hour);
- ``rollups``: the same report from the rollups.

Time is wall time of the report call; extra memory is peak RSS minus RSS just before the call.
Then, on one uvicorn worker (``benchmarks.reports.server``) with the real ``/admin/report`` (reports on
a report process), client requests (``GET /ping`` every 5 ms) are timed for ``--latency-s`` seconds
without and with a dashboard fetching a 30-day report every second (cycling through the five
groupings, so the 5 s result cache never answers); the same with the runner's thread mode and with the
report built on the event loop (as before).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.reports.fill import fill

BYS = ("day", "tenant", "domain")
MODES = ("process", "thread", "loop")
MODE_NAMES = {"process": "report process", "thread": "report thread", "loop": "event loop"}


async def _migrate(url: str) -> None:
    from gateway.ledger.store import create_engine, migrate, normalize_url

    engine = create_engine(normalize_url(url))
    try:
        await migrate(engine)
    finally:
        await engine.dispose()


def _measure(url: str, mode: str, by: str, days: float) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "benchmarks.reports.measure", url, mode, by, str(days)],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"measurement {mode} by {by} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def _client_latency(port: int, seconds: float, dashboard: bool) -> dict[str, float]:
    import httpx

    base = f"http://127.0.0.1:{port}"
    lat: list[float] = []
    reports: list[float] = []
    stop = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        async def dash() -> None:
            i = 0
            while time.monotonic() < stop:
                by = ("day", "domain", "route", "tenant", "model")[i % 5]
                t0 = time.perf_counter()
                r = await client.get("/admin/report", params={"since": "30d", "by": by},
                                     headers={"authorization": "Bearer bench-admin"})
                r.raise_for_status()
                reports.append(time.perf_counter() - t0)
                i += 1
                await asyncio.sleep(max(0.0, 1.0 - (time.perf_counter() - t0)))

        task = asyncio.create_task(dash()) if dashboard else None
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            (await client.get("/ping")).raise_for_status()
            lat.append((time.perf_counter() - t0) * 1000)
            await asyncio.sleep(0.005)
        if task is not None:
            await task
    return {"p50_ms": _pct(lat, 50), "p99_ms": _pct(lat, 99), "max_ms": max(lat), "n": len(lat),
            "report_s": statistics.median(reports) if reports else 0.0}


def _serve_and_measure(url: str, seconds: float, mode: str) -> dict[str, dict[str, float]]:
    port = _free_port()
    cmd = [sys.executable, "-m", "benchmarks.reports.server", url, str(port), mode]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        import httpx

        for _ in range(200):
            try:
                httpx.get(f"http://127.0.0.1:{port}/ping", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        asyncio.run(_client_latency(port, 2.0, dashboard=True))  # warm-up: engine, report thread
        steady = asyncio.run(_client_latency(port, seconds, dashboard=False))
        busy = asyncio.run(_client_latency(port, seconds, dashboard=True))
        return {"steady": steady, "dashboard": busy}
    finally:
        proc.terminate()
        proc.wait(10)


def bench_store(store: str, url: str, rows: int, days: float, latency_s: float, fill_needed: bool,
                skip_raw: bool = False) -> dict[str, Any]:
    result: dict[str, Any] = {"store": store, "rows": rows}
    asyncio.run(_migrate(url))
    if fill_needed:
        print(f"{store}: filling {rows:,} rows over {days:g} days", file=sys.stderr)
        result["fill_s"] = asyncio.run(fill(url, rows, days))
    for by in () if skip_raw else BYS:
        print(f"{store}: raw report by {by}", file=sys.stderr)
        result[f"raw_{by}"] = _measure(url, "raw", by, days)
    print(f"{store}: backfilling rollups", file=sys.stderr)
    result["backfill"] = _measure(url, "backfill", "day", days)
    for by in BYS:
        print(f"{store}: rollup report by {by}", file=sys.stderr)
        result[f"rollups_{by}"] = _measure(url, "rollups", by, days)
    if latency_s > 0:
        print(f"{store}: client latency while the dashboard refreshes", file=sys.stderr)
        for mode in MODES:
            result[f"latency_{mode}"] = _serve_and_measure(url, latency_s, mode)
    return result


def _print(results: list[dict[str, Any]]) -> None:
    print("\nReport over the whole window (30 days), fresh process per run")
    print("| store | rows | group by | raw s | raw extra MB | rollups s | rollups extra MB | speed-up |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        for by in BYS:
            raw, rol = r.get(f"raw_{by}"), r[f"rollups_{by}"]
            raw_cells = (f"{raw['seconds']:.2f} | {raw['extra_mb']:.0f}" if raw else "(skipped) | -")
            ratio = f"{raw['seconds'] / rol['seconds']:.0f}x" if raw else "-"
            print(f"| {r['store']} | {r['rows']:,} | {by} | {raw_cells} | {rol['seconds']:.3f} | "
                  f"{rol['extra_mb']:.0f} | {ratio} |")
    print("\nOne-time backfill (slmgw ledger rollup) and fill")
    print("| store | rows | hours | backfill s | backfill extra MB | fill s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in results:
        b = r["backfill"]
        print(f"| {r['store']} | {r['rows']:,} | {b['hours']} | {b['seconds']:.1f} | {b['extra_mb']:.0f} | "
              f"{r.get('fill_s', float('nan')):.0f} |")
    if any("latency_process" in r for r in results):
        print("\nClient GET /ping on the same worker, steady vs dashboard refreshing every second")
        print("| store | report runs | steady p50 / p99 ms | dashboard p50 / p99 / max ms | p99 ratio | "
              "report s (median) |")
        print("| --- | --- | --- | --- | --- | --- |")
        for r in results:
            for mode in MODES:
                key, name = f"latency_{mode}", MODE_NAMES[mode]
                if key not in r:
                    continue
                s, d = r[key]["steady"], r[key]["dashboard"]
                print(f"| {r['store']} | {name} | {s['p50_ms']:.2f} / {s['p99_ms']:.2f} | "
                      f"{d['p50_ms']:.2f} / {d['p99_ms']:.2f} / {d['max_ms']:.1f} | "
                      f"{d['p99_ms'] / s['p99_ms']:.2f}x | {d['report_s']:.3f} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--pg", help="PostgreSQL server URL without a database, e.g. postgresql://postgres@127.0.0.1:5432")
    ap.add_argument("--no-sqlite", action="store_true")
    ap.add_argument("--keep", type=Path, help="Directory for the SQLite file (reused if already filled).")
    ap.add_argument("--latency-s", type=float, default=10.0)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--skip-raw", action="store_true", help="Measure rollups only (raw reports take minutes at 10M).")
    args = ap.parse_args()
    results = []
    if not args.no_sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            base = args.keep or Path(tmp)
            base.mkdir(parents=True, exist_ok=True)
            db = base / f"reports-{args.rows}.sqlite"
            url = f"sqlite:///{db}"
            fresh = not db.exists()
            if not fresh:  # reuse: start from raw again (every hour dirty, no cells)
                import sqlite3

                asyncio.run(_migrate(url))
                with sqlite3.connect(db) as conn:
                    conn.execute("DELETE FROM slmgw_rollup_hourly")
                    conn.execute("DELETE FROM slmgw_rollup_daily")
                    conn.execute("INSERT OR IGNORE INTO slmgw_rollup_dirty (hour, version) "
                                 "SELECT DISTINCT substr(ts, 1, 13) || ':00:00.000000', 1 FROM slmgw_requests")
            results.append(bench_store("sqlite", url, args.rows, args.days, args.latency_s, fresh, args.skip_raw))
    if args.pg:
        name = f"slmgw_bench_{uuid.uuid4().hex[:8]}"
        asyncio.run(_pg_admin(args.pg, f'CREATE DATABASE "{name}"'))
        try:
            results.append(bench_store("postgresql", f"{args.pg}/{name}", args.rows, args.days, args.latency_s, True,
                                       args.skip_raw))
        finally:
            asyncio.run(_pg_admin(args.pg, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    _print(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(f"\n(cpu count {os.cpu_count()}; python {sys.version.split()[0]})")
    return 0


async def _pg_admin(server: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(f"{server}/test", timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()

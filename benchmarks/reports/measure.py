"""One measurement in a fresh process (so peak memory is its own): ``python -m benchmarks.reports.measure
URL MODE BY``, MODE ``raw`` (a report over rows no rollup covers yet), ``backfill`` (``rollup.refresh``
of every hour) or ``rollups`` (a report after the backfill). Prints one JSON line."""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def measure(url: str, mode: str, by: str, days: float) -> dict[str, Any]:
    import sqlalchemy as sa

    from gateway.ledger import rollup
    from gateway.ledger.store import create_engine, normalize_url
    from gateway.reports.compute import build_report

    engine = create_engine(normalize_url(url))
    try:
        async with engine.connect() as conn:  # warm up: connect, inspect, import everything
            await conn.execute(sa.text("SELECT 1"))
        since = datetime.now(UTC) - timedelta(days=days)
        await build_report(engine, since=datetime.now(UTC) - timedelta(minutes=1), refresh=False)
        before = _rss_mb()
        t0 = time.perf_counter()
        out: dict[str, Any] = {}
        if mode == "backfill":
            out["hours"] = await rollup.refresh(engine)
        else:
            rep = await build_report(engine, since=since, by=by, refresh=mode == "rollups")
            out["requests"] = rep["totals"]["requests"]
            out["p50"], out["p95"] = rep["totals"]["latency_p50_ms"], rep["totals"]["latency_p95_ms"]
            out["cost"] = rep["totals"]["cost_usd"]
        out["seconds"] = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        out["extra_mb"], out["peak_mb"] = max(0.0, peak - before), peak
        return out
    finally:
        await engine.dispose()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(measure(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])))))

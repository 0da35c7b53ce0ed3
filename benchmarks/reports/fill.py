"""Synthetic ledger rows for the reports benchmark: ``n`` requests spread evenly over the ``days`` before
now, written through the gateway's own sinks (so every hour is marked for the rollups, as in
production)."""

from __future__ import annotations

import random
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

TENANTS = [f"tenant-{i}" for i in range(8)]
DOMAINS = ["sql", "code", "support", "extract"]
REASONS = ["slm_error:timeout", "slm_error:connect", "slm_error:overloaded", "context_too_long"]


def make_rows(n: int, start: int, end_ts: float, span_s: float, seed: int) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    rows = []
    for i in range(start, start + n):
        ts = end_ts - span_s + rnd.random() * span_s
        dt = datetime.fromtimestamp(ts, UTC)
        kind = rnd.random()
        domain: str | None = rnd.choice(DOMAINS)
        route, model, escalation, status, cache = "slm", domain, None, 200, "miss"
        latency = rnd.lognormvariate(5.0, 0.8)
        if kind < 0.25:
            route, model, domain, latency = "llm", "openai/gpt-4o-mini", None, rnd.lognormvariate(6.5, 0.6)
        elif kind < 0.30:
            route, model, escalation = "llm", "openai/gpt-4o-mini", rnd.choice(REASONS)
            latency = rnd.lognormvariate(7.0, 0.5)
        elif kind < 0.40:
            route, cache, latency = "cache", "hit", rnd.uniform(0.5, 3.0)
        elif kind < 0.42:
            route, model, status = "none", None, 502
        pt, ct = rnd.randint(20, 2000), rnd.randint(0, 600)
        cost = 0.0 if route == "cache" else (pt + ct) * 2e-7 if route == "slm" else pt * 1.5e-7 + ct * 6e-7
        rows.append({
            "id": uuid.UUID(int=rnd.getrandbits(128)).hex, "request_id": f"req-{i:09d}", "ts": ts,
            "day": dt.strftime("%Y-%m-%d"), "tenant": rnd.choice(TENANTS), "endpoint": "chat",
            "requested_model": "auto", "stream": False, "route": route, "domain": domain, "model": model,
            "backend": route, "reason": "classified", "confidence": 0.9, "escalation": escalation,
            "prompt_tokens": pt, "completion_tokens": ct, "latency_ms": latency, "ttft_ms": None,
            "status": status, "error_code": None if status < 400 else "upstream_error", "cache": cache,
            "would_route": None, "cost_usd": cost,
            "baseline_cost_usd": cost if status >= 400 else pt * 2.5e-6 + ct * 1e-5,
            "shadow_cost_usd": None, "baseline_model": "openai/gpt-4o", "prompt_text": None, "extra": None,
            "key_id": None,
        })
    return rows


async def fill(url: str, rows: int, days: float, *, batch: int = 5000, seed: int = 1) -> float:
    """Write ``rows`` rows ending now; returns the seconds it took. Progress goes to stderr."""
    from gateway.ledger.dsn import parse_store_url
    from gateway.ledger.sink import open_sink

    sink = open_sink(parse_store_url(url, "."))
    end_ts, span = time.time() - 60, days * 86400
    t0 = time.perf_counter()
    try:
        for start in range(0, rows, batch):
            part = make_rows(min(batch, rows - start), start, end_ts, span, seed + start)
            await sink.insert([sink.values(r) for r in part])
            done = start + len(part)
            if done % (batch * 20) == 0 or done == rows:
                print(f"  filled {done:,}/{rows:,} rows ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    finally:
        await sink.close()
    return time.perf_counter() - t0

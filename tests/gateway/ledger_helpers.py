"""Shared builders for the ledger/cost/report tests (issue 6)."""

from __future__ import annotations

import itertools
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

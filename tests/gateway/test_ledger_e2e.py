"""End to end through the real openai SDK against the gateway on loopback: every request leaves one
ledger row (errors and streams included), non-stream answers carry x-slmgw-cost-usd, the admin report
and /metrics see them, and shadow mode records what the router would have done."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy.engine import make_url

from gateway.background import BackgroundGateway
from gateway.config import Policy
from gateway.costs import load_model_cost_map, lookup_price

ADMIN_KEY = "sk-test-admin"
API_KEY = "sk-test-tenant-a"
SQL_PROMPT = "Write a SQL query that joins the orders table with customers."
GENERAL_PROMPT = "Tell me a short story about a lighthouse keeper."


def _rows(gw: BackgroundGateway) -> list[dict[str, Any]]:
    db = make_url(gw.policy.ledger.url).database
    assert db is not None
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM slmgw_requests ORDER BY ts")]


def _admin(gw: BackgroundGateway, path: str) -> httpx.Response:
    return httpx.get(f"{gw.url}{path}", headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)


def test_every_request_is_recorded_and_reported(make_policy: Callable[..., Policy],
                                                start_gateway: Callable[[Policy], BackgroundGateway]) -> None:
    gw = start_gateway(make_policy())
    client = openai.OpenAI(base_url=gw.base_url, api_key=API_KEY, max_retries=0, timeout=30)

    slm = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": SQL_PROMPT}])
    llm = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": GENERAL_PROMPT}])
    assert slm.headers["x-slmgw-route"] == "slm" and llm.headers["x-slmgw-route"] == "llm"
    stream = client.chat.completions.create(model="auto", stream=True,
                                            messages=[{"role": "user", "content": GENERAL_PROMPT}])
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])

    # The LLM answer's cost header is gpt-4o-mini's bundled price on the reported usage.
    usage = llm.parse().usage
    assert usage is not None
    price = lookup_price("openai/gpt-4o-mini", load_model_cost_map())
    assert price is not None
    expected = price.cost(usage.prompt_tokens, usage.completion_tokens)
    assert float(llm.headers["x-slmgw-cost-usd"]) == pytest.approx(expected, abs=1e-8)
    assert float(slm.headers["x-slmgw-cost-usd"]) == 0.0  # no SLM cost in this policy

    report = _admin(gw, "/admin/report?since=1h&by=route")  # flushes the ledger first
    assert report.status_code == 200, report.text
    totals = report.json()["totals"]
    assert totals["requests"] == 4 and totals["errors"] == 1
    assert totals["requests_by_route"] == {"slm": 1, "llm": 2, "cache": 0, "none": 1}
    assert totals["baseline_cost_usd"] > totals["cost_usd"] > 0

    rows = {r["request_id"]: r for r in _rows(gw)}
    assert len(rows) == 4
    row = rows[llm.headers["x-request-id"]]
    assert (row["route"], row["tenant"], row["status"]) == ("llm", "tenant-a", 200)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (usage.prompt_tokens, usage.completion_tokens)
    assert row["cost_usd"] == pytest.approx(float(llm.headers["x-slmgw-cost-usd"]), abs=1e-8)
    assert row["prompt_text"] is None
    sql_row = rows[slm.headers["x-request-id"]]
    assert (sql_row["route"], sql_row["domain"], sql_row["backend"]) == ("slm", "sql", "sql")
    assert sql_row["baseline_cost_usd"] > 0
    streamed = [r for r in rows.values() if r["stream"]]
    assert len(streamed) == 1 and streamed[0]["ttft_ms"] is not None and streamed[0]["completion_tokens"] > 0
    assert [r["status"] for r in rows.values() if r["route"] == "none"] == [404]

    metrics = _admin(gw, "/metrics")
    assert metrics.status_code == 200
    assert 'slmgw_requests_total{domain="sql",endpoint="chat",route="slm",status="200"} 1.0' in metrics.text
    assert 'slmgw_backend_up{backend="sql",kind="slm"} 1.0' in metrics.text
    assert httpx.get(f"{gw.url}/metrics", timeout=10).status_code == 401
    ready = httpx.get(f"{gw.url}/health/ready", headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10).json()
    assert ready["components"]["ledger"]["ok"] is True


def test_shadow_mode_records_would_be_savings(make_policy: Callable[..., Policy],
                                              start_gateway: Callable[[Policy], BackgroundGateway]) -> None:
    base = make_policy()
    slm = {name: {**b.model_dump(exclude_none=True), "cost": {"usd_per_1m_tokens": 0.02}}
           for name, b in base.slm_backends.items()}
    gw = start_gateway(make_policy(router={"kind": "keyword", "threshold": 0.6, "shadow": True},
                                   slm_backends=slm))
    client = openai.OpenAI(base_url=gw.base_url, api_key=API_KEY, max_retries=0, timeout=30)
    answer = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": SQL_PROMPT}])
    assert answer.headers["x-slmgw-route"] == "llm"  # the LLM answers in shadow mode
    assert answer.headers["x-slmgw-domain"] == "sql"
    report = _admin(gw, "/admin/report?since=1h").json()
    assert report["shadow"] is True
    t = report["totals"]
    assert (t["shadow_requests"], t["shadow_slm_requests"]) == (1, 1)
    assert 0 < t["shadow_cost_usd"] < t["cost_usd"]
    # each figure is rounded to 1e-6
    assert t["shadow_savings_usd"] == pytest.approx(t["baseline_cost_usd"] - t["shadow_cost_usd"], abs=2.1e-6)
    (row,) = _rows(gw)
    assert (row["route"], row["would_route"], row["domain"]) == ("llm", "slm", "sql")


def test_requests_refused_before_routing_are_recorded(make_policy: Callable[..., Policy],
                                                      start_gateway: Callable[[Policy], BackgroundGateway]) -> None:
    gw = start_gateway(make_policy())
    wrong = openai.OpenAI(base_url=gw.base_url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
    client = openai.OpenAI(base_url=gw.base_url, api_key=API_KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="auto", messages=[{"role": "wizard", "content": "hi"}])
    bad_id = info.value.response.headers["x-request-id"]
    report = _admin(gw, "/admin/report?since=1h&by=route")
    assert report.json()["totals"]["requests"] == 2
    rows = {r["request_id"]: r for r in _rows(gw)}
    assert len(rows) == 2
    assert (rows[bad_id]["status"], rows[bad_id]["route"], rows[bad_id]["tenant"]) == (400, "none", "tenant-a")
    unauth = next(r for r in rows.values() if r["request_id"] != bad_id)
    assert (unauth["status"], unauth["tenant"], unauth["error_code"]) == (401, "unknown", "invalid_api_key")

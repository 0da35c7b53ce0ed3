"""Reports: numbers hand-computed from the sample records (prices in ledger_helpers.PRICES), the CLI in
its three formats, and GET /admin/report with its admin-key checks.

Per record (1000 prompt + 500 completion tokens unless noted), cost / baseline (gpt-4o 0.0075):
  d1: sql-slm 0.0003 | code-slm 0.0015 | big escalated(timeout) 0.0075 | cache hit 0
  d2: small 0.0004 | big escalated(connect) 0.0075 | error 0 tokens: 0/0 | big, shadow would_route=slm(sql) 0.0075
Totals: cost 0.0247, baseline 7 * 0.0075 = 0.0525, savings 0.0278 (52.95 %).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from starlette.responses import JSONResponse, Response
from typer.testing import CliRunner

from gateway.costs import CostModel
from gateway.errors import GatewayError
from gateway.ledger import Ledger
from gateway.metrics import Metrics
from gateway.reports.admin import metrics_router, router
from gateway.reports.cli import app as report_app
from gateway.reports.compute import build_report, parse_time, percentile

try:
    from tests.gateway.ledger_helpers import PRICES, policy, sample_records
except ImportError:  # tests/gateway is not a package: pytest puts this directory on sys.path
    from ledger_helpers import PRICES, policy, sample_records  # type: ignore[no-redef]

SINCE = datetime(2025, 6, 14, tzinfo=UTC)
UNTIL = datetime(2025, 6, 16, tzinfo=UTC)


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[Ledger]:
    p = policy({"ledger": {"url": "sqlite:///ledger.sqlite"}}, base_dir=str(tmp_path))
    led = Ledger.from_policy(p, costs=CostModel.from_policy(p, PRICES), metrics=Metrics())
    await led.start()
    for r in sample_records():
        led.record(r)
    await led.flush()
    yield led
    await led.close()


async def test_totals_are_hand_computed(ledger: Ledger) -> None:
    assert ledger.engine is not None
    rep = await build_report(ledger.engine, since=SINCE, until=UNTIL, by="day")
    t = rep["totals"]
    assert t["requests"] == 8 and t["errors"] == 1
    assert (t["prompt_tokens"], t["completion_tokens"], t["total_tokens"]) == (7000, 3500, 10500)
    assert t["cost_usd"] == pytest.approx(0.0247, abs=1e-9)
    assert t["baseline_cost_usd"] == pytest.approx(0.0525, abs=1e-9)
    assert t["savings_usd"] == pytest.approx(0.0278, abs=1e-9)
    assert t["savings_pct"] == 52.95
    assert t["requests_by_route"] == {"slm": 2, "llm": 4, "cache": 1, "none": 1}
    assert (t["cache_hits"], t["cache_lookups"], t["cache_hit_rate"]) == (1, 6, 16.67)
    assert (t["escalations"], t["slm_bound"], t["escalation_rate"]) == (2, 4, 50.0)
    assert t["escalation_reasons"] == {"slm_error:connect": 1, "slm_error:timeout": 1}
    # escalations by kind, with what the escalated requests cost (both went to gpt-4o: 1000 in, 500 out)
    assert t["escalation_costs_usd"] == {"slm_error:connect": 0.0075, "slm_error:timeout": 0.0075}
    # successful latencies [2, 100, 200, 500, 600, 800, 1000]: p50 500; p95 at rank 5.7 = 800 + 0.7 * 200
    assert (t["latency_p50_ms"], t["latency_p95_ms"]) == (500.0, 940.0)
    assert t["latency_by_route"] == {
        "slm": {"requests": 2, "p50_ms": 150.0, "p95_ms": 195.0},
        "llm": {"requests": 4, "p50_ms": 700.0, "p95_ms": 970.0},
        "cache": {"requests": 1, "p50_ms": 2.0, "p95_ms": 2.0},
    }
    # Shadow: one request would have gone to the sql SLM (0.0003) instead of gpt-4o (0.0075).
    assert rep["shadow"] is True
    assert (t["shadow_requests"], t["shadow_slm_requests"]) == (1, 1)
    assert t["shadow_cost_usd"] == pytest.approx(0.0003)
    assert t["shadow_savings_usd"] == pytest.approx(0.0072)
    assert t["shadow_savings_pct"] == 96.0
    assert rep["baseline_models"] == ["openai/gpt-4o"]


async def test_groups(ledger: Ledger) -> None:
    assert ledger.engine is not None
    days = await build_report(ledger.engine, since=SINCE, until=UNTIL, by="day")
    assert [g["key"] for g in days["groups"]] == ["2025-06-14", "2025-06-15"]
    d1, d2 = days["groups"]
    assert (d1["requests"], d1["cost_usd"], d1["baseline_cost_usd"], d1["savings_pct"]) == (
        4, pytest.approx(0.0093), pytest.approx(0.03), 69.0)
    assert (d2["requests"], d2["cost_usd"], d2["baseline_cost_usd"], d2["savings_pct"]) == (
        4, pytest.approx(0.0154), pytest.approx(0.0225), 31.56)
    tenants = await build_report(ledger.engine, since=SINCE, until=UNTIL, by="tenant")
    assert [(g["key"], g["requests"]) for g in tenants["groups"]] == [("acme", 7), ("beta", 1)]
    routes = await build_report(ledger.engine, since=SINCE, until=UNTIL, by="route")
    assert {g["key"]: g["requests"] for g in routes["groups"]} == {"llm": 4, "slm": 2, "cache": 1, "none": 1}
    domains = await build_report(ledger.engine, since=SINCE, until=UNTIL, by="domain")
    assert {g["key"]: g["requests"] for g in domains["groups"]} == {"sql": 6, "code": 1, "(none)": 1}
    models = await build_report(ledger.engine, since=SINCE, until=UNTIL, by="model")
    assert {g["key"]: g["requests"] for g in models["groups"]}["openai/gpt-4o"] == 3
    # The older row only appears with a wider window.
    wide = await build_report(ledger.engine, since=datetime(2025, 6, 1, tzinfo=UTC), until=UNTIL)
    assert wide["totals"]["requests"] == 9


async def test_empty_store_gives_an_empty_report(tmp_path: Path) -> None:
    from gateway.ledger.store import create_engine, normalize_url

    engine = create_engine(normalize_url("sqlite:///fresh.sqlite", tmp_path))
    try:
        rep = await build_report(engine, since=SINCE, until=UNTIL)
    finally:
        await engine.dispose()
    assert rep["totals"]["requests"] == 0 and rep["groups"] == [] and rep["totals"]["savings_pct"] == 0.0


def test_parse_time_and_percentile() -> None:
    now = datetime(2025, 6, 15, 12, tzinfo=UTC)
    assert parse_time("7d", now) == datetime(2025, 6, 8, 12, tzinfo=UTC)
    assert parse_time("36h", now) == datetime(2025, 6, 14, 0, tzinfo=UTC)
    assert parse_time("2025-06-01") == datetime(2025, 6, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="cannot read time"):
        parse_time("last tuesday")
    assert percentile([], 50) is None
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5


async def _cli(*args: str, ok: bool = True) -> Any:
    # In a thread: the command runs its own event loop (asyncio.run), as it does from a shell.
    result = await asyncio.to_thread(CliRunner().invoke, report_app, ["report", *args])
    if not ok:
        return result
    assert result.exit_code == 0, result.output
    return result.output


async def test_cli_formats(ledger: Ledger, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    window = ["--since", "2025-06-14", "--until", "2025-06-16"]
    data = json.loads(await _cli("--ledger-url", url, *window, "--by", "day", "--format", "json"))
    assert data["totals"]["savings_usd"] == pytest.approx(0.0278)
    assert [g["key"] for g in data["groups"]] == ["2025-06-14", "2025-06-15"]

    rows = list(csv.DictReader(io.StringIO(await _cli("--ledger-url", url, *window, "--by", "route", "-f", "csv"))))
    assert rows[-1]["key"] == "TOTAL" and rows[-1]["requests"] == "8"
    assert float(rows[-1]["baseline_cost_usd"]) == pytest.approx(0.0525)
    assert rows[-1]["escalation_reasons"] == "slm_error:connect=1;slm_error:timeout=1"

    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(json.dumps({"llm_backends": {"big": {"model": "openai/gpt-4o"}},
                                       "fallback": {"llm": "big"},
                                       "ledger": {"url": "sqlite:///ledger.sqlite"}}))
    table = await _cli("--config", str(policy_file), *window, "--by", "tenant")
    assert "acme" in table and "beta" in table and "TOTAL" in table
    assert "$0.0278" in table and "52.95" in table and "would-be savings" in table
    bad = await _cli("--ledger-url", url, "--since", "someday", ok=False)
    assert bad.exit_code != 0


def _app(ledger: Ledger, admin_keys: list[str]) -> FastAPI:
    app = FastAPI()
    app.include_router(router)
    app.include_router(metrics_router)
    app.state.policy = policy({"auth": {"admin_keys": admin_keys, "api_keys": ["client-key"]}})
    app.state.ledger = ledger
    app.state.metrics = ledger.metrics

    @app.exception_handler(GatewayError)
    async def _err(request: Request, exc: GatewayError) -> Response:  # as gateway.app renders them
        return JSONResponse(exc.body(), status_code=exc.status)

    return app


async def test_admin_report_api(ledger: Ledger) -> None:
    transport = httpx.ASGITransport(app=_app(ledger, ["admin-secret"]))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
        q = "since=2025-06-14&until=2025-06-16&by=domain"
        r = await http.get(f"/admin/report?{q}", headers={"authorization": "Bearer admin-secret"})
        assert r.status_code == 200, r.text
        assert r.json()["totals"]["cost_usd"] == pytest.approx(0.0247)
        assert r.json()["by"] == "domain"
        r = await http.get(f"/admin/report?{q}")
        assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
        r = await http.get(f"/admin/report?{q}", headers={"authorization": "Bearer nope"})
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        r = await http.get(f"/admin/report?{q}", headers={"authorization": "Bearer client-key"})
        assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
        r = await http.get("/admin/report?by=color", headers={"authorization": "Bearer admin-secret"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "by"
        r = await http.get("/admin/dashboard")
        assert r.status_code == 200 and "<svg" not in r.text and "chart-savings" in r.text
        assert "script-src 'sha256-" in r.headers["content-security-policy"]
        # No CDN, nothing external: the only URL is the SVG namespace name.
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg\b)", r.text)
        assert "<script src" not in r.text and not re.search(r'href="(?!data:)', r.text)


async def test_metrics_endpoint(ledger: Ledger) -> None:
    transport = httpx.ASGITransport(app=_app(ledger, ["admin-secret"]))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
        assert (await http.get("/metrics")).status_code == 401
        r = await http.get("/metrics", headers={"authorization": "Bearer admin-secret"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'slmgw_requests_total{domain="sql",endpoint="chat",route="slm",status="200"} 1.0' in text
    assert 'slmgw_escalations_total{reason="slm_error:timeout"} 1.0' in text
    assert 'slmgw_cache_lookups_total{result="hit"} 1.0' in text
    assert "slmgw_ledger_store_up 1.0" in text


def test_escalations_are_counted_by_kind_without_their_measurements() -> None:
    from gateway.records import escalation_kind

    assert escalation_kind("context_length:3000+512>4096") == "context_length"
    assert escalation_kind("low_answer_confidence sql=-1.90<-1.20") == "low_answer_confidence"
    assert escalation_kind("slm_error:timeout") == "slm_error:timeout"
    assert escalation_kind("unsupported:tools") == "unsupported:tools"
    assert escalation_kind("slm_down:slm_unreachable,context_length:9+1>8") == "slm_down:slm_unreachable,context_length"

"""/admin/report off the serving loop: built on the report thread, shared within the cache TTL, cut off
by the time limit with an OpenAI-shaped 503."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request
from starlette.responses import JSONResponse, Response

from gateway.costs import CostModel
from gateway.errors import GatewayError
from gateway.ledger import Ledger
from gateway.ledger.store import normalize_url
from gateway.metrics import Metrics
from gateway.reports import compute
from gateway.reports.admin import router
from gateway.reports.runner import ReportRunner, ReportTimeout

try:
    from tests.gateway.ledger_helpers import PRICES, policy, sample_records
except ImportError:  # tests/gateway is not a package: pytest puts this directory on sys.path
    from ledger_helpers import PRICES, policy, sample_records  # type: ignore[no-redef]

SINCE, UNTIL = datetime(2025, 6, 14, tzinfo=UTC), datetime(2025, 6, 16, tzinfo=UTC)


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


def _url(ledger: Ledger) -> str:
    return normalize_url(ledger.url, ledger.base_dir)


async def test_runner_builds_on_its_own_thread_and_caches(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[str] = []
    real = compute.build_report

    async def spy(*args: object, **kwargs: object) -> dict[str, object]:
        threads.append(threading.current_thread().name)
        return await real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(compute, "build_report", spy)
    runner = ReportRunner(_url(ledger), mode="thread", ttl_s=60)
    try:
        key = ("2025-06-14", "2025-06-16", "day")
        first, second = await asyncio.gather(runner.report(key, SINCE, UNTIL, "day"),
                                             runner.report(key, SINCE, UNTIL, "day"))
        third = await runner.report(key, SINCE, UNTIL, "day")
        assert first is second is third and first["totals"]["requests"] == 8
        assert threads == ["slmgw-reports"]  # one build, on the report thread
        other = await runner.report(("2025-06-14", "2025-06-16", "tenant"), SINCE, UNTIL, "tenant")
        assert other["by"] == "tenant" and len(threads) == 2
        runner.ttl_s = 0  # expired: built again
        again = await runner.report(key, SINCE, UNTIL, "day")
        assert again is not first and again["totals"] == first["totals"] and len(threads) == 3
    finally:
        runner.close()


async def test_process_mode_builds_the_same_report_in_a_child_process(ledger: Ledger) -> None:
    assert ledger.engine is not None
    expected = await compute.build_report(ledger.engine, since=SINCE, until=UNTIL, by="domain")
    runner = ReportRunner(_url(ledger), ttl_s=60)
    try:
        assert runner._pool is not None
        got = await runner.report(("x", "y", "domain"), SINCE, UNTIL, "domain")
        pids = list(runner._pool._processes)  # type: ignore[attr-defined]
        assert len(pids) == 1 and pids[0] != os.getpid()
        for rep in (expected, got):
            rep.pop("generated_at")
        assert got == expected
        with pytest.raises(ReportTimeout):  # the limit applies in the child too
            runner.timeout_s = 1e-6
            await runner.report(("x", "y", "day"), SINCE, UNTIL, "day")
    finally:
        runner.close()


async def test_time_limit_gives_an_openai_shaped_503(ledger: Ledger) -> None:
    runner = ReportRunner(_url(ledger), mode="thread", timeout_s=1e-6)
    try:
        with pytest.raises(ReportTimeout):
            await runner.report(("a", None, "day"), SINCE, UNTIL, "day")
    finally:
        runner.close()

    app = FastAPI()
    app.include_router(router)
    app.state.policy = policy({"auth": {"admin_keys": ["admin-secret"]}})
    app.state.ledger = ledger
    app.state.report_runner = ReportRunner(_url(ledger), mode="thread", timeout_s=1e-6)

    @app.exception_handler(GatewayError)
    async def _err(request: Request, exc: GatewayError) -> Response:
        return JSONResponse(exc.body(), status_code=exc.status)

    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
            r = await http.get("/admin/report?since=2025-06-14", headers={"authorization": "Bearer admin-secret"})
        assert r.status_code == 503
        err = r.json()["error"]
        assert err["code"] == "report_timeout" and err["type"] == "api_error" and "in time" in err["message"]
        # a failure is not cached: with a sane limit the same request succeeds
        app.state.report_runner.timeout_s = 30
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
            r = await http.get("/admin/report?since=2025-06-14&until=2025-06-16",
                               headers={"authorization": "Bearer admin-secret"})
        assert r.status_code == 200 and r.json()["totals"]["requests"] == 8
    finally:
        app.state.report_runner.close()


async def test_reports_process_serves_only_the_reports(ledger: Ledger, tmp_path: Path) -> None:
    from gateway.reports.server import create_reports_app

    p = policy({"ledger": {"url": "sqlite:///ledger.sqlite"}, "auth": {"admin_keys": ["admin-secret"]}},
               base_dir=str(tmp_path))
    app = create_reports_app(p)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
            r = await http.get("/admin/report?since=2025-06-14&until=2025-06-16&by=tenant",
                               headers={"authorization": "Bearer admin-secret"})
            assert r.status_code == 200 and r.json()["totals"]["cost_usd"] == pytest.approx(0.0247)
            assert [g["key"] for g in r.json()["groups"]] == ["acme", "beta"]
            r = await http.get("/admin/report?since=2025-06-14")
            assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
            r = await http.post("/v1/chat/completions", json={"model": "x", "messages": []})
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
            assert (await http.get("/admin/dashboard")).status_code == 200
    finally:
        app.state.report_runner.close()

"""The dashboard in a real headless Chromium (Debian packages chromium + chromium-driver, driven by
selenium): the page loads with the admin key from its URL fragment, the SVG charts render with data,
and every number it shows equals the JSON report's."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from starlette.responses import JSONResponse, Response

from gateway.costs import CostModel
from gateway.errors import GatewayError
from gateway.ledger import Ledger
from gateway.reports.admin import router

try:
    from tests.gateway.ledger_helpers import PRICES, policy, sample_records
except ImportError:  # tests/gateway is not a package: pytest puts this directory on sys.path
    from ledger_helpers import PRICES, policy, sample_records  # type: ignore[no-redef]

CHROMIUM = os.environ.get("SLMGW_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("SLMGW_CHROMEDRIVER", shutil.which("chromedriver") or "/usr/bin/chromedriver")
KEY = "admin-secret"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
                       reason="needs Debian's chromium and chromium-driver "
                              "(apt-get install -y chromium chromium-driver)"),
]
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the test extra)")


def _app(tmp_path: Path) -> FastAPI:
    p = policy({"ledger": {"url": "sqlite:///ledger.sqlite"}, "auth": {"admin_keys": [KEY]}},
               base_dir=str(tmp_path))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ledger = Ledger.from_policy(p, costs=CostModel.from_policy(p, PRICES))
        await ledger.start()
        now = time.time()
        for r in sample_records():  # the same traffic, moved to the last three days
            r.ts = now - 86_400 * (2 if r.ts < 1_750_000_000.0 else 1) + (r.ts % 60)
            if r.latency_ms == 9999:
                r.ts = now - 60 * 86_400  # outside the default 7-day window
            ledger.record(r)
        await ledger.flush()
        from gateway.audit.store import AuditStore

        store = AuditStore(lambda: ledger.engine, tmp_path / "spill")
        for i, (days_ago, domain, verdict) in enumerate([(2, "sql", "win"), (2, "sql", "tie"), (1, "sql", "loss"),
                                                          (1, "sql", "win"), (1, "code", "win")]):
            store.add("slmgw_audits", {
                "id": f"a{i}", "request_id": f"r{i}", "ts": now - 86_400 * days_ago + i, "tenant": "acme",
                "domain": domain, "mode": "audit", "slm_backend": "sql-slm", "slm_model": domain,
                "reference_model": "openai/gpt-4o", "judge_model": "openai/gpt-4o", "verdict": verdict,
                "order1": None, "order2": None, "disagree": False, "error": None, "slm_cost_usd": 0.0003,
                "reference_cost_usd": 0.001, "judge_cost_usd": 0.002})
        await store.flush()
        app.state.ledger = ledger
        yield
        await ledger.close()

    app = FastAPI(lifespan=lifespan)
    app.state.policy = p
    app.include_router(router)

    @app.exception_handler(GatewayError)
    async def _err(request: Request, exc: GatewayError) -> Response:
        return JSONResponse(exc.body(), status_code=exc.status)

    return app


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    srv = uvicorn.Server(uvicorn.Config(_app(tmp_path), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    assert srv.started
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 "--window-size=1400,1800"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _wait_ready(driver: Any) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 20).until(
        lambda d: d.find_element("tag name", "body").get_attribute("data-state") in ("ready", "error"))
    assert driver.find_element("tag name", "body").get_attribute("data-state") == "ready", \
        driver.find_element("id", "status").text


def _values(driver: Any, css: str, *attrs: str) -> dict[tuple[str, ...], float]:
    out = {}
    for node in driver.find_elements("css selector", css):
        out[tuple(node.get_attribute(a) for a in attrs)] = float(node.get_attribute("data-value"))
    return out


def test_dashboard_charts_match_the_json_report(server: str, browser: Any, tmp_path: Path) -> None:
    browser.get(f"{server}/admin/dashboard#key={KEY}")
    _wait_ready(browser)
    assert "key=" not in browser.current_url  # the key is not left in the address bar
    browser.save_screenshot(str(tmp_path / "dashboard.png"))
    if os.environ.get("SLMGW_SCREENSHOT_DIR"):
        browser.save_screenshot(os.path.join(os.environ["SLMGW_SCREENSHOT_DIR"], "dashboard.png"))

    report = httpx.get(f"{server}/admin/report?since=7d&by=day",
                       headers={"authorization": f"Bearer {KEY}"}).json()
    totals = report["totals"]
    assert totals["requests"] == 8 and len(report["groups"]) == 2

    # KPI tiles: the raw value and the text shown.
    kpis = {n.get_attribute("data-kpi"): n for n in browser.find_elements("css selector", "[data-kpi]")}
    for name in ("requests", "cost_usd", "baseline_cost_usd", "savings_usd", "savings_pct", "cache_hit_rate",
                 "escalation_rate", "shadow_savings_usd"):
        assert float(kpis[name].get_attribute("data-value")) == pytest.approx(totals[name]), name
    assert kpis["savings_usd"].find_element("class name", "value").text == f"${totals['savings_usd']:.4f}"
    assert kpis["savings_pct"].find_element("class name", "value").text == f"{totals['savings_pct']:g}%"

    # Savings over time: one bar per day and series, heights from the same numbers.
    bars = _values(browser, "#chart-savings rect[data-day]", "data-day", "data-series")
    expected = {(g["key"], s): g[s] for g in report["groups"]
                for s in ("baseline_cost_usd", "cost_usd", "savings_usd", "shadow_savings_usd")}
    assert bars == pytest.approx(expected)
    heights = [float(n.get_attribute("height")) for n in
               browser.find_elements("css selector", "#chart-savings rect[data-series=baseline_cost_usd]")]
    assert all(h > 0 for h in heights)

    # Route mix, escalation reasons, latency by route.
    routes = _values(browser, "#chart-routes path[data-route]", "data-route")
    assert routes == {(k,): v for k, v in totals["requests_by_route"].items() if v}
    reasons = _values(browser, "#chart-escalations rect[data-reason]", "data-reason")
    assert reasons == {(k,): v for k, v in totals["escalation_reasons"].items()} and reasons
    latency = _values(browser, "#chart-latency rect[data-route]", "data-route", "data-series")
    assert latency == {(r, s): v[s] for r, v in totals["latency_by_route"].items() for s in ("p50_ms", "p95_ms")}

    # Quality over time: one point per day and domain, at the report's non-inferior rate.
    points = _values(browser, "#chart-quality circle[data-day]", "data-day", "data-domain")
    audit = report["audit"]
    assert audit["samples"] == 5 and audit["cost_usd"] == pytest.approx(0.015)
    assert points == pytest.approx({(day, dom): a["non_inferior_rate"] for day, by in audit["by_day"].items()
                                    for dom, a in by.items()})
    assert len(points) == 3
    assert float(kpis["net_savings_usd"].get_attribute("data-value")) == pytest.approx(totals["savings_usd"] - 0.015)

    # The table's TOTAL row.
    total_row = browser.find_element("css selector", "#table tr[data-key=TOTAL]")
    cells = {c.get_attribute("data-field"): c for c in total_row.find_elements("tag name", "td")}
    assert float(cells["baseline_cost_usd"].get_attribute("data-value")) == pytest.approx(totals["baseline_cost_usd"])
    assert int(cells["requests"].text) == totals["requests"]

    # Regrouping the table by tenant fetches that report.
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element("id", "by")).select_by_value("tenant")
    _wait_ready(browser)
    keys = [r.get_attribute("data-key") for r in browser.find_elements("css selector", "#table tbody tr")]
    assert keys == ["acme", "beta", "TOTAL"]
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def test_dashboard_asks_for_a_key(server: str, browser: Any) -> None:
    browser.get(f"{server}/admin/dashboard")
    form = browser.find_element("id", "keyform")
    assert form.is_displayed() and not browser.find_elements("css selector", "#chart-savings rect")
    browser.find_element("id", "keyinput").send_keys("wrong")
    browser.find_element("css selector", "#keyentry button").click()
    time.sleep(0.5)
    assert "refused" in browser.find_element("id", "keyerror").text
    browser.find_element("id", "keyinput").send_keys(KEY)
    browser.find_element("css selector", "#keyentry button").click()
    _wait_ready(browser)
    assert browser.find_elements("css selector", "#chart-savings rect[data-day]")

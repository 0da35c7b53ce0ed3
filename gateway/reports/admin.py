"""Admin HTTP API: ``GET /admin/report`` (JSON), ``GET /admin/dashboard`` (HTML) and ``GET /metrics``.

Auth: ``/admin/report`` and ``/metrics`` need ``Authorization: Bearer <one of auth.admin_keys>`` (401
without a valid key, 403 for a client key). ``/admin/dashboard`` is a static page with no data in it,
so it is served without a key; its script sends the key with every report fetch. The key is given to
the page as ``/admin/dashboard#key=KEY`` (the fragment never reaches the server or its logs) or typed
into its form, and kept in the tab's sessionStorage. See docs/costs.md.

Services are looked up on ``app.state``: the ledger as ``app.state.ledger`` or
``app.state.services.extras["ledger"]``, the metrics likewise under ``metrics``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from gateway.errors import AuthenticationError, GatewayError, InvalidRequest, PermissionDenied

if TYPE_CHECKING:
    from gateway.ledger import Ledger
    from gateway.metrics import Metrics
    from gateway.reports.runner import ReportRunner

_STATIC = Path(__file__).parent / "static"


class ServiceUnavailable(GatewayError):
    status = 503
    type = "api_error"
    code = "ledger_unavailable"


def _bearer(request: Request) -> str | None:
    value = request.headers.get("authorization")
    if value and value[:7].lower() == "bearer ":
        return value[7:].strip() or None
    return request.headers.get("api-key") or None


def require_admin(request: Request) -> None:
    """FastAPI dependency: a valid admin key or an OpenAI-shaped 401/403 (raised as GatewayError and
    rendered by the app's error handler)."""
    policy = getattr(request.app.state, "policy", None)
    admin_keys: list[str] = list(policy.auth.admin_keys) if policy is not None else []
    key = _bearer(request)
    if key is None:
        raise AuthenticationError("Missing admin key: send it as 'Authorization: Bearer <key>'.",
                                  code="missing_api_key")
    if any(hmac.compare_digest(key.encode(), k.encode()) for k in admin_keys):
        return
    client_keys = {k.key for k in policy.auth.api_keys} if policy is not None else set()
    services = getattr(request.app.state, "services", None)  # key-store keys are client keys too
    if key in client_keys or (services is not None and services.keys.is_client_key(key)):
        raise PermissionDenied("This key may not use the admin API.")
    raise AuthenticationError("Incorrect admin key provided.")


def _service(request: Request, name: str) -> Any:
    state = request.app.state
    found = getattr(state, name, None)
    if found is None:
        services = getattr(state, "services", None)
        found = getattr(services, "extras", {}).get(name) if services is not None else None
    return found


router = APIRouter(prefix="/admin", tags=["admin"])


@router.get("/report", dependencies=[Depends(require_admin)])
async def report(request: Request, since: str = Query("7d", description="7d, 24h, 30m, 2w or ISO date"),
                 until: str | None = Query(None, description="End (exclusive), default now"),
                 by: str = Query("day", description="day, domain, route, tenant or model")) -> JSONResponse:
    """The cost-savings report as JSON (same fields as ``slmgw report --format json``), built off the
    serving event loop with a time limit; identical requests within a few seconds share one result."""
    from gateway.reports.compute import GROUP_BY, ReportError, parse_time
    from gateway.reports.runner import ReportTimeout

    ledger: Ledger | None = _service(request, "ledger")
    if ledger is None or ledger.engine is None:
        raise ServiceUnavailable("The ledger is not running.")
    if by not in GROUP_BY:
        raise InvalidRequest(f"by must be one of {', '.join(GROUP_BY)}", param="by")
    try:
        start = parse_time(since)
        end = parse_time(until) if until else None
    except ReportError as exc:
        raise InvalidRequest(str(exc), param="since") from None
    try:  # best effort: include what is still buffered, without waiting long for a slow store
        await ledger.flush(within_s=2.0)
    except Exception:
        pass
    try:
        data = await _runner(request, ledger).report((since, until, by), start, end, by)
    except ReportTimeout as exc:
        raise ServiceUnavailable(f"The report did not finish in time ({exc}); try a shorter window.",
                                 code="report_timeout") from None
    except Exception as exc:
        raise ServiceUnavailable(f"The ledger store cannot be read: {type(exc).__name__}") from None
    return JSONResponse(data, headers={"cache-control": "no-store"})


def _runner(request: Request, ledger: Ledger) -> ReportRunner:
    """The app's report runner (one thread, created at the first report)."""
    from gateway.ledger.store import normalize_url
    from gateway.reports.runner import ReportRunner

    runner: ReportRunner | None = getattr(request.app.state, "report_runner", None)
    if runner is None:
        runner = ReportRunner(normalize_url(ledger.url, ledger.base_dir))
        request.app.state.report_runner = runner
    return runner


def _sha256(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


@cache
def _dashboard() -> tuple[str, str]:
    css = (_STATIC / "dashboard.css").read_text(encoding="utf-8")
    js = (_STATIC / "dashboard.js").read_text(encoding="utf-8")
    html = (_STATIC / "dashboard.html").read_text(encoding="utf-8")
    html = html.replace("/*CSS*/", css).replace("/*JS*/", js)
    csp = (f"default-src 'none'; script-src {_sha256(js)}; style-src {_sha256(css)}; connect-src 'self'; "
           "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    return html, csp


@router.get("/dashboard", response_class=HTMLResponse)
async def dashboard() -> HTMLResponse:
    """The savings dashboard (no data in the page itself; it fetches ./report with the admin key)."""
    html, csp = _dashboard()
    return HTMLResponse(html, headers={"content-security-policy": csp, "x-content-type-options": "nosniff",
                                       "referrer-policy": "no-referrer", "cache-control": "no-store"})


metrics_router = APIRouter(tags=["admin"])


@metrics_router.get("/metrics", dependencies=[Depends(require_admin)])
async def metrics(request: Request) -> Response:
    """Prometheus text exposition of the ``slmgw_*`` metrics (admin key required)."""
    from gateway.metrics import CONTENT_TYPE_LATEST

    m: Metrics | None = _service(request, "metrics")
    if m is None:
        raise ServiceUnavailable("Metrics are not enabled.", code="metrics_unavailable")
    ledger: Ledger | None = _service(request, "ledger")
    if ledger is not None:
        h = ledger.state()
        m.set_ledger_state(h.buffered, h.store == "up")
    slm = _service(request, "slm")  # serving's SlmHealth: backends -> state up | degraded | down
    try:
        for name, info in (slm.health().get("backends", {}) if slm is not None else {}).items():
            m.set_backend_health(name, "slm", info.get("state") in ("up", "degraded"))
    except Exception:  # metrics must render even if a health snapshot changes shape
        pass
    body = m.render()
    return Response(body, media_type=CONTENT_TYPE_LATEST)

"""Admin routes for audits: the state of every guardrail, and resetting one (admin key)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import JSONResponse, Response

from gateway.errors import InvalidRequest, ModelNotFound
from gateway.reports.admin import require_admin

router = APIRouter(dependencies=[Depends(require_admin)])


def _services(request: Request) -> Any:
    return getattr(request.app.state, "services", None)


@router.get("/admin/guardrails")
async def guardrails_state(request: Request) -> Response:
    services = _services(request)
    guards = services.guardrails if services is not None else None
    auditor = services.auditor if services is not None else None
    out: dict[str, Any] = {"audit": auditor.health() if auditor is not None else None, "guardrails": {}}
    if guards is not None:
        await guards.refresh()
        out["guardrails"] = {d: {"action": s.action, "threshold_delta": s.threshold_delta, "since": s.since,
                                 "evidence": s.evidence} for d, s in guards.states().items()}
    return JSONResponse(out)


@router.post("/admin/guardrails/reset")
async def reset_guardrail(request: Request) -> Response:
    """Body ``{"domain": "sql"}``: the domain goes back to normal routing on every replica."""
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise InvalidRequest("Body must be JSON: {\"domain\": \"<name>\"}.") from None
    domain = body.get("domain") if isinstance(body, dict) else None
    if not isinstance(domain, str):
        raise InvalidRequest("Body must be JSON: {\"domain\": \"<name>\"}.", param="domain")
    services = _services(request)
    guards = services.guardrails if services is not None else None
    if guards is None or domain not in guards.rules:
        raise ModelNotFound(f"No guardrail for domain {domain!r}.", param="domain", code="guardrail_not_found")
    if services.auditor is not None:
        services.auditor.reset(domain, actor="admin api")  # the audit process records it, tells the replicas
    else:  # no audit process (nothing sampled): reset the shared state directly
        await guards.reset(domain, actor="admin api")
    return JSONResponse({"domain": domain, "action": None})

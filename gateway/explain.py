"""Why a request would go where it goes: the full routing decision for a request body, without calling
any model. ``POST /admin/route/explain`` (admin key) explains against the running policy, with the live
SLM health and the cache; ``slmgw route explain --config FILE`` explains offline against a policy file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import JSONResponse, Response

from gateway.errors import InvalidRequest
from gateway.reports.admin import require_admin

if TYPE_CHECKING:
    from gateway.pipeline import Pipeline
    from gateway.services import Services
    from router.base import Decision
    from serving.dispatch import Kind

router = APIRouter(dependencies=[Depends(require_admin)])


def _decision(d: Decision) -> dict[str, Any]:
    return {"target": d.target, "domain": d.domain, "confidence": round(d.confidence, 6), "reason": d.reason,
            "scores": {k: round(v, 6) for k, v in d.scores.items()},
            "features": [{"feature": f, "weight": round(w, 6)} for f, w in d.features]}


def _threshold(services: Services, domain: str | None) -> float | None:
    """The threshold the router applies to the domain: its own (a classifier's calibrated ones) when it
    says, else the policy's."""
    if domain is None:
        return None
    own = getattr(services.router, "thresholds", None)
    if own is not None and domain in own:
        return float(own[domain])
    dom = services.policy.domain(domain)
    if dom is None:
        return None
    return dom.threshold if dom.threshold is not None else services.policy.router.threshold


async def explain(services: Services, body: dict[str, Any], tenant: str = "default",
                  headers: Mapping[str, str] | None = None, live: bool = True,
                  pipeline: Pipeline | None = None) -> dict[str, Any]:
    """The decision for ``body`` (a chat body unless it has ``prompt``); raises ``GatewayError`` for a
    body the gateway would refuse (unknown model, ...). ``pipeline``: the running one (its models are
    loaded already); one is built for ``services`` otherwise."""
    from gateway.audit import hooks as audit_hooks
    from gateway.records import RequestRecord
    from serving.escalation import output_tokens, prompt_bounds, unsupported_feature

    kind: Kind = "completion" if "prompt" in body and "messages" not in body else "chat"
    body = {"model": "auto", **body}
    if pipeline is None:
        from gateway.pipeline import Pipeline

        pipeline = Pipeline(services)
    first, targets = pipeline.resolve(kind, body)
    decision = first
    checks: list[dict[str, Any]] = []
    if services.guardrails is not None and body["model"] == "auto":
        decision, targets, shadowed = audit_hooks.guard(services, decision, targets)
        state = services.guardrails.state(first.domain)
        checks.append({"check": "guardrail", "fired": decision is not first or shadowed,
                       "detail": None if state is None else {"action": state.action,
                                                             "threshold_delta": state.threshold_delta}})
    privacy = services.extras.get("privacy")
    if privacy is not None:
        rec = RequestRecord(request_id="explain", ts=0.0, tenant=tenant, endpoint=kind, requested_model="auto")
        before = decision
        decision, targets, _ = privacy.apply(dict(body), decision, targets, rec)
        checks.append({"check": "privacy", "fired": decision is not before, "detail": rec.extra.get("privacy")})
    slm = next((t for t in targets if t.route == "slm"), None)
    if slm is not None:
        backend = services.policy.slm_backends[slm.backend]
        feature = unsupported_feature(body, backend.supports)
        checks.append({"check": "unsupported_feature", "fired": feature is not None, "detail": feature})
        lower, upper = prompt_bounds(kind, body)
        out = output_tokens(body)
        window = backend.context_length
        fits = "yes" if upper + out <= window else "no" if lower + out > window else "ask vLLM /tokenize"
        checks.append({"check": "context_length", "fired": fits == "no",
                       "detail": {"prompt_tokens_between": [lower, upper], "max_tokens": out, "window": window,
                                  "fits": fits}})
        health = services.dispatcher.health
        health_state = health.backend_state(slm.backend) if live else "not checked (offline)"
        checks.append({"check": "slm_health", "fired": live and health_state not in ("up", "unknown"),
                       "detail": {"state": health_state, "replicas": len(health.replicas_of(slm.backend))}})
    cache_answer: dict[str, Any] = {"checked": False}
    cache = services.extras.get("cache") if live else None
    if cache is not None:
        plan = cache.plan(kind, tenant, body, headers or {}, decision.domain)
        found = await cache.backend.get(plan.key) if plan.read else None
        cache_answer = {"checked": True, "cacheable": plan.read or plan.write, "would_answer": found is not None,
                        "why_not": plan.reason or None}
    return {"policy_version": services.version, "endpoint": kind, "requested_model": body["model"],
            "decision": _decision(decision), "router_decision": _decision(first) if decision is not first else None,
            "threshold": _threshold(services, decision.domain), "checks": checks,
            "targets": [f"{t.route}:{t.backend}" for t in targets], "cache": cache_answer}


@router.post("/admin/route/explain")
async def explain_route(request: Request) -> Response:
    """Body: the request body a client would send (``model`` defaults to ``auto``)."""
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise InvalidRequest("Body must be the JSON request body a client would send.") from None
    if not isinstance(body, dict) or not ("messages" in body or "prompt" in body):
        raise InvalidRequest("Body must be a chat (messages) or completion (prompt) request body.")
    # The running services and pipeline, read once (as a request does): no model is loaded per call.
    services: Services = request.app.state.services
    pipeline: Pipeline = request.app.state.pipeline
    tenant = request.query_params.get("tenant", "default")
    return JSONResponse(await explain(services, body, tenant, request.headers, pipeline=pipeline))

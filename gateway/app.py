"""The FastAPI application factory. Nothing happens at import time; ``create_app(policy)`` builds it."""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from gateway.asgi import GatewayApp, error_response, gateway_error_response, unexpected_error_response
from gateway.auth import KeyRing
from gateway.config import Policy, load_policy
from gateway.errors import GatewayError
from gateway.services import Services

log = logging.getLogger("slmgw")


def build_services(policy: Policy) -> Services:
    from router.base import build_router
    from serving.dispatch import Dispatcher

    return Services(policy=policy, router=build_router(policy), dispatcher=Dispatcher(policy),
                    keys=KeyRing(policy))


def create_app(policy: Policy, path: Path | None = None) -> FastAPI:
    """Build the gateway for one policy. Services are created at start-up and closed at shutdown. With
    ``path`` (the policy's file) the policy can be reloaded while serving (``gateway.reload``)."""
    from gateway.handlers import FAST_ROUTES
    from gateway.handlers import router as api_router
    from gateway.hardening import start_guards, stop_guards
    from gateway.pipeline import Pipeline
    from gateway.reports.admin import metrics_router
    from gateway.reports.admin import router as admin_router

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = build_services(policy)
        from gateway.policy_version import model_digest, policy_version

        services.model_digest = model_digest(policy)
        services.version = policy_version(policy, services.model_digest)
        # CACHE: Redis (or the in-process LRU); a Redis that is down is logged, never fatal.
        from gateway.cache import ResponseCache

        cache = ResponseCache.from_config(policy.cache)
        await cache.start()
        services.extras["cache"] = cache
        # LEDGER: the cost model is checked here (an unpriced baseline stops start-up with its reason).
        from gateway.ledger import Ledger
        from gateway.metrics import Metrics

        metrics = Metrics()
        ledger = Ledger.from_policy(policy, metrics=metrics)
        await ledger.start()
        services.extras["ledger"] = ledger
        services.extras["metrics"] = metrics
        from gateway.cache.metrics import register as register_cache_metrics

        register_cache_metrics(cache, metrics.registry)
        from gateway.audit.setup import start_audits, stop_audits

        await start_audits(services, metrics)  # AUDIT: only with a policy `audit` section
        from gateway.audit.store import AuditStore
        from gateway.reload import Reloader
        from gateway.reload_triggers import Triggers

        ops_store = AuditStore(lambda: ledger.engine, ledger.spill.path)  # RELOAD: a row per reload
        ops_store.start()
        triggers = Triggers(Reloader(app, path, ops_store))
        app.state.reload = triggers
        await start_guards(services)  # key store refresh, rate limits + budgets, privacy (gateway.hardening)
        app.state.services = services
        app.state.pipeline = Pipeline(services)
        if policy.llm_backends:
            # litellm takes seconds to import: do it now, not on the first escalated request.
            services.dispatcher.llm.litellm  # noqa: B018
        # SLM replicas: probe once (logs adapters vLLM does not serve), then poll; /health/ready shows it.
        await services.dispatcher.start()
        services.extras["slm"] = services.dispatcher.health
        await triggers.start()  # RELOAD: SIGHUP, file watch, versions published by other workers
        # Everything loaded so far (litellm alone is ~400k objects) lives as long as the process: move it
        # out of the collector's reach so full collections stop pausing requests (docs/performance.md).
        gc.collect()
        gc.freeze()
        log.info("slm-gateway ready: %d domains, %d SLM backends, %d LLM backends",
                 len(policy.domains), len(policy.slm_backends), len(policy.llm_backends))
        try:
            yield
        finally:
            await triggers.close()
            await ops_store.close()
            runner = getattr(app.state, "report_runner", None)  # the report process, if a report ran
            if runner is not None:
                runner.close()
            services = app.state.services  # the running policy's, after any reloads
            await stop_guards(services)
            await stop_audits(services)  # AUDIT: verdicts of finished audits are written or spilled
            await cache.close()  # CACHE: finishes background stores
            await ledger.close()  # LEDGER: drains the buffer (or spills it) before the services go away
            await services.close()

    app = GatewayApp(title="slm-gateway", version="0.1.0", lifespan=lifespan,
                     description="OpenAI-compatible gateway routing between small models and a hosted LLM")
    app.include_router(api_router)
    app.fast_routes.update(FAST_ROUTES)
    app.include_router(admin_router)  # LEDGER: /admin/report, /admin/dashboard
    app.include_router(metrics_router)  # LEDGER: /metrics (admin key)
    from gateway.audit.admin import router as audit_router

    app.include_router(audit_router)  # AUDIT: /admin/guardrails
    from gateway.reload_admin import router as reload_router

    app.include_router(reload_router)  # RELOAD: /admin/reload
    from gateway.explain import router as explain_router

    app.include_router(explain_router)  # /admin/route/explain
    app.state.policy = policy

    @app.exception_handler(GatewayError)
    async def _gateway_error(request: Request, exc: GatewayError) -> Response:
        return gateway_error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        first: dict[str, Any] = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return error_response(400, f"Invalid request: {first.get('msg', 'bad input')}", "invalid_request_error",
                              "invalid_request", param)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        kind = "invalid_request_error" if exc.status_code < 500 else "api_error"
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        message = f"Unknown route {request.method} {request.url.path}" if exc.status_code == 404 else str(
            exc.detail)
        return error_response(exc.status_code, message, kind, code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        return unexpected_error_response(request, exc)

    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` (used by ``slmgw serve`` with several workers)."""
    path = Path(os.environ["SLMGW_CONFIG"])
    return create_app(load_policy(path), path=path)

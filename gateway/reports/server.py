"""A process of its own for the reports: ``/admin/report`` and ``/admin/dashboard`` without the serving
routes (``slmgw ledger serve-reports``), so serving workers never build reports at all.

It reads the ledger (and rolls up the hours reports need); it writes no request rows, so it has no
ledger writer: ``Reader`` gives the admin router the engine it reads with.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from gateway.config import Policy


log = logging.getLogger("slmgw.reports")


async def _maintain(reader: Reader, interval_s: float, retention_days: float | None) -> None:
    """Roll up (and prune) every ``interval_s``, first right away; errors are logged and retried."""
    from gateway.ledger.prune import maintain

    while True:
        try:
            assert reader.engine is not None
            hours, deleted = await maintain(reader.engine, retention_days)
            if hours or deleted:
                log.info("ledger maintenance: rolled up %d hours, deleted %d raw rows", hours, deleted)
        except Exception as exc:
            log.warning("ledger maintenance failed: %s: %s", type(exc).__name__, exc)
        await asyncio.sleep(interval_s)


class Reader:
    """The part of ``gateway.ledger.Ledger`` the admin router uses, for a process that only reads."""

    def __init__(self, url: str, base_dir: str | Path) -> None:
        from gateway.ledger.store import create_engine, normalize_url

        self.url = url
        self.base_dir = base_dir
        self.engine: AsyncEngine | None = create_engine(normalize_url(url, base_dir))

    async def flush(self, within_s: float | None = None) -> None:
        """Nothing is buffered here: the serving processes write the rows."""


def create_reports_app(policy: Policy) -> FastAPI:
    from gateway.asgi import error_response, gateway_error_response, unexpected_error_response
    from gateway.errors import GatewayError
    from gateway.reports.admin import router

    reader = Reader(policy.ledger.url, policy.base_dir)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        interval = policy.ledger.maintenance_interval_s
        task = asyncio.create_task(_maintain(reader, interval, policy.ledger.retention_days)) if interval else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            runner = getattr(_app.state, "report_runner", None)
            if runner is not None:
                runner.close()
            if reader.engine is not None:
                await reader.engine.dispose()

    app = FastAPI(title="slm-gateway reports", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    app.include_router(router)
    app.state.policy = policy
    app.state.ledger = reader

    @app.exception_handler(GatewayError)
    async def _gateway_error(request: Request, exc: GatewayError) -> Response:
        return gateway_error_response(request, exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        kind = "invalid_request_error" if exc.status_code < 500 else "api_error"
        return error_response(exc.status_code, f"Unknown route {request.method} {request.url.path}"
                              if exc.status_code == 404 else str(exc.detail), kind,
                              {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        return unexpected_error_response(request, exc)

    return app

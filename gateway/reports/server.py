"""A process of its own for the reports: ``/admin/report`` and ``/admin/dashboard`` without the serving
routes (``slmgw ledger serve-reports``), so serving workers never build reports at all.

It reads the ledger (and rolls up the hours reports need); it writes no request rows, so it has no
ledger writer: ``Reader`` gives the admin router the engine it reads with.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from gateway.config import Policy


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

    app = FastAPI(title="slm-gateway reports", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(router)
    app.state.policy = policy
    app.state.ledger = Reader(policy.ledger.url, policy.base_dir)

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

"""The benchmark's serving worker: one uvicorn worker with the real ``/admin/report`` router (reports
on the report thread) and ``GET /ping``, a client request that only needs the event loop. With
``--on-loop`` the report is built on the event loop instead (as before issue 20), for comparison.

    python -m benchmarks.reports.server URL PORT [--on-loop]
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from fastapi import FastAPI
from starlette.responses import JSONResponse


def build(url: str, on_loop: bool) -> FastAPI:
    from gateway.config import parse_policy
    from gateway.errors import GatewayError
    from gateway.ledger.store import create_engine, normalize_url
    from gateway.reports.admin import router

    app = FastAPI()
    app.state.policy = parse_policy({"llm_backends": {"llm": {"model": "openai/gpt-4o-mini"}},
                                     "fallback": {"llm": ["llm"]}, "auth": {"admin_keys": ["bench-admin"]}},
                                    base_dir=".", env={})
    engine = create_engine(normalize_url(url))

    async def flush(within_s: float | None = None) -> None:  # nothing buffered: no writer in this process
        return None

    app.state.ledger = SimpleNamespace(engine=engine, url=url, base_dir=".", flush=flush)

    @app.exception_handler(GatewayError)
    async def _error(_request: Any, exc: GatewayError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.get("/ping")
    async def ping() -> dict[str, bool]:
        return {"ok": True}

    if on_loop:
        @app.get("/admin/report")
        async def report_on_loop(since: str = "30d", by: str = "day") -> JSONResponse:
            from gateway.reports.compute import build_report

            data = await build_report(engine, since=datetime.now(UTC) - timedelta(days=float(since[:-1])), by=by)
            return JSONResponse(data)
    else:
        app.include_router(router)
    return app


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(build(sys.argv[1], "--on-loop" in sys.argv), host="127.0.0.1", port=int(sys.argv[2]),
                loop="uvloop", http="httptools", access_log=False, log_level="warning")

"""The benchmark's serving worker: one uvicorn worker with the real ``/admin/report`` router (reports
in a report process) and ``GET /ping``, a client request that only needs the event loop. MODE
``process`` (the default of ``/admin/report``), ``thread`` (the runner's thread mode) or ``loop`` (the
report built on the event loop, as before issue 20), for comparison.

    python -m benchmarks.reports.server URL PORT MODE
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from fastapi import FastAPI
from starlette.responses import JSONResponse


def build(url: str, mode: str) -> FastAPI:
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

    if mode == "loop":
        @app.get("/admin/report")
        async def report_on_loop(since: str = "30d", by: str = "day") -> JSONResponse:
            from gateway.reports.compute import build_report

            data = await build_report(engine, since=datetime.now(UTC) - timedelta(days=float(since[:-1])), by=by)
            return JSONResponse(data)
    else:
        from gateway.reports.runner import ReportRunner

        app.state.report_runner = ReportRunner(normalize_url(url), mode="thread" if mode == "thread" else "process")
        app.include_router(router)
    return app


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(build(sys.argv[1], sys.argv[3]), host="127.0.0.1", port=int(sys.argv[2]),
                loop="uvloop", http="httptools", access_log=False, log_level="warning")

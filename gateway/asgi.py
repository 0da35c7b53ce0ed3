"""The ASGI application: FastAPI, with a fast path for the OpenAI POST endpoints.

Every request to /v1/chat/completions, /v1/completions and /v1/embeddings (and the same without /v1)
goes straight from the server to its handler: no middleware stack, no route matching, no dependency
solving. Those layers cost about a third of the gateway's CPU per request (docs/performance.md) and
these routes use none of them. Everything else (models, health, admin, metrics, OpenAPI docs) is served
by FastAPI as usual, and the fast routes still appear in the OpenAPI schema through their APIRoutes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from gateway.errors import GatewayError

log = logging.getLogger("slmgw")
Handler = Callable[[Request], Awaitable[Response]]


def error_response(status: int, message: str, type_: str, code: str | None = None,
                   param: str | None = None, headers: Mapping[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=dict(headers) if headers else None)


def gateway_error_response(request: Request, exc: GatewayError) -> JSONResponse:
    headers = dict(exc.headers)
    rid = getattr(request.state, "request_id", None)
    if rid:
        headers["x-request-id"] = rid
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


def unexpected_error_response(request: Request, exc: BaseException) -> JSONResponse:
    rid = getattr(request.state, "request_id", None)
    log.error("unexpected error handling %s %s (request %s)", request.method, request.url.path, rid,
              exc_info=exc)
    return error_response(500, f"Internal gateway error (request id {rid}); see the gateway log.",
                          "api_error", "internal_error")


class EventStreamResponse(StreamingResponse):
    """A streaming response without Starlette's per-stream anyio task group: the body is sent from the
    request's own task, and one plain asyncio task waits for the client to disconnect and cancels the
    stream (so the upstream is released and the ledger row says 499). About a tenth of a streamed
    request's CPU went to the task group (docs/performance.md)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        streamer = asyncio.current_task()
        assert streamer is not None
        gone = False

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            streamer.cancel()

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            async for chunk in self.body_iterator:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not gone:
                raise
            streamer.uncancel()  # the client left: not an error of the server's
        finally:
            watcher.cancel()


class GatewayApp(FastAPI):
    fast_routes: dict[str, Handler]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fast_routes = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            handler = self.fast_routes.get(scope["path"])
            if handler is not None:
                scope["app"] = self
                request = Request(scope, receive)
                try:
                    response = await handler(request)
                except GatewayError as exc:
                    response = gateway_error_response(request, exc)
                except Exception as exc:
                    response = unexpected_error_response(request, exc)
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

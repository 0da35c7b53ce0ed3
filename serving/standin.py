"""A local OpenAI-compatible stand-in upstream, for the demo, tests and benchmarks.

It is not a model: it answers every request with a short fixed text that names the model it was asked
for (``[stand-in <model>] ...``), so a caller can see which upstream answered. It speaks enough of the
OpenAI / vLLM API for the gateway: chat and text completions (streaming too, with
``stream_options.include_usage``), embeddings, ``/v1/models``, ``/health`` and vLLM's ``/tokenize``.
Behaviour knobs (``delay_s``, ``fail_status``) let tests make it slow or failing at run time.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web


@dataclass
class StandinState:
    models: list[str] = field(default_factory=lambda: ["standin"])
    delay_s: float = 0.0
    """Sleep before answering (simulates model latency)."""
    fail_status: int | None = None
    """When set, every completion request fails with this HTTP status."""
    reply: str = "This is a stand-in answer, not a model's."
    reply_fn: Callable[[dict[str, Any]], str] | None = None
    """When set, the answer text is ``reply_fn(request body)`` (scripted judges in tests)."""
    chunk_delay_s: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    """Bodies of the completion requests received (most recent last, capped)."""
    hits: list[dict[str, Any]] = field(default_factory=list)
    """Every request received, of any path: ``{"method", "path", "headers"}`` (headers lower-cased)."""
    record: bool = True


def _words(text: str) -> list[str]:
    return text.split(" ")


def _count_tokens(body: dict[str, Any]) -> int:
    text = orjson.dumps(body.get("messages") or body.get("prompt") or body.get("input") or "")
    return max(1, len(text) // 4)


class Standin:
    def __init__(self, state: StandinState | None = None) -> None:
        self.state = state or StandinState()
        self.app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[self._record_hit])
        r = self.app.router
        for prefix in ("/v1", ""):
            r.add_post(f"{prefix}/chat/completions", self.chat)
            r.add_post(f"{prefix}/completions", self.completions)
            r.add_post(f"{prefix}/embeddings", self.embeddings)
            r.add_get(f"{prefix}/models", self.list_models)
        r.add_get("/health", self.health)
        r.add_post("/tokenize", self.tokenize)

    @web.middleware
    async def _record_hit(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.state.record:
            self.state.hits.append({"method": request.method, "path": request.path,
                                    "headers": {k.lower(): v for k, v in request.headers.items()}})
            del self.state.hits[:-500]
        response: web.StreamResponse = await handler(request)
        return response

    # -- handlers -------------------------------------------------------------------------------------
    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="")

    async def list_models(self, request: web.Request) -> web.Response:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "standin"} for m in self.state.models]
        return self._json({"object": "list", "data": data})

    async def tokenize(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        n = _count_tokens(body)
        return self._json({"count": n, "max_model_len": 4096, "tokens": list(range(n))})

    async def _prelude(self, request: web.Request) -> tuple[dict[str, Any], web.Response | None]:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return {}, self._error(400, "invalid JSON")
        if self.state.record:
            self.state.requests.append(body)
            del self.state.requests[:-200]
        if self.state.delay_s:
            await asyncio.sleep(self.state.delay_s)
        if self.state.fail_status:
            return body, self._error(self.state.fail_status, f"stand-in failing with {self.state.fail_status}")
        model = body.get("model")
        if model not in self.state.models and "*" not in self.state.models:
            return body, self._error(404, f"The model `{model}` does not exist.")
        return body, None

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body, err = await self._prelude(request)
        if err is not None:
            return err
        return await self._answer(request, body, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body, err = await self._prelude(request)
        if err is not None:
            return err
        return await self._answer(request, body, chat=False)

    async def embeddings(self, request: web.Request) -> web.Response:
        body, err = await self._prelude(request)
        if err is not None:
            return err
        inputs = body.get("input")
        items = inputs if isinstance(inputs, list) else [inputs]
        data = []
        for i, item in enumerate(items):
            digest = hashlib.sha256(orjson.dumps(item)).digest()
            data.append({"object": "embedding", "index": i, "embedding": [b / 255 for b in digest[:8]]})
        n = _count_tokens(body)
        return self._json({"object": "list", "data": data, "model": body.get("model"),
                           "usage": {"prompt_tokens": n, "total_tokens": n}})

    # -- answers --------------------------------------------------------------------------------------
    def _text(self, model: str, body: dict[str, Any]) -> str:
        if self.state.reply_fn is not None:
            return self.state.reply_fn(body)
        return f"[stand-in {model}] {self.state.reply}"

    async def _answer(self, request: web.Request, body: dict[str, Any], chat: bool) -> web.StreamResponse:
        model = str(body.get("model"))
        text = self._text(model, body)
        prompt_tokens = _count_tokens(body)
        words = _words(text)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(words),
                 "total_tokens": prompt_tokens + len(words)}
        rid = f"{'chatcmpl' if chat else 'cmpl'}-standin{int(time.time() * 1e6)}"
        created = int(time.time())
        if not body.get("stream"):
            if chat:
                choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                          "finish_reason": "stop", "logprobs": None}
                obj = "chat.completion"
            else:
                choice = {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
                obj = "text_completion"
            return self._json({"id": rid, "object": obj, "created": created, "model": model,
                               "choices": [choice], "usage": usage})
        resp = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache"})
        await resp.prepare(request)
        obj = "chat.completion.chunk" if chat else "text_completion"
        for i, chunk_text in enumerate(self._pieces(words)):
            if chat:
                delta: dict[str, Any] = {"content": chunk_text}
                if i == 0:
                    delta["role"] = "assistant"
                choice = {"index": 0, "delta": delta, "finish_reason": None, "logprobs": None}
            else:
                choice = {"index": 0, "text": chunk_text, "finish_reason": None, "logprobs": None}
            await self._send(resp, {"id": rid, "object": obj, "created": created, "model": model,
                                    "choices": [choice]})
            if self.state.chunk_delay_s:
                await asyncio.sleep(self.state.chunk_delay_s)
        last: dict[str, Any] = ({"index": 0, "delta": {}, "finish_reason": "stop", "logprobs": None} if chat
                                else {"index": 0, "text": "", "finish_reason": "stop", "logprobs": None})
        await self._send(resp, {"id": rid, "object": obj, "created": created, "model": model, "choices": [last]})
        opts = body.get("stream_options") or {}
        if isinstance(opts, dict) and opts.get("include_usage"):
            await self._send(resp, {"id": rid, "object": obj, "created": created, "model": model,
                                    "choices": [], "usage": usage})
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    @staticmethod
    def _pieces(words: list[str]) -> Iterable[str]:
        for i, w in enumerate(words):
            yield w if i == 0 else " " + w

    @staticmethod
    async def _send(resp: web.StreamResponse, obj: dict[str, Any]) -> None:
        await resp.write(b"data: " + orjson.dumps(obj) + b"\n\n")

    @staticmethod
    def _json(obj: dict[str, Any], status: int = 200) -> web.Response:
        return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json")

    def _error(self, status: int, message: str) -> web.Response:
        kind = "invalid_request_error" if status < 500 else "server_error"
        return self._json({"error": {"message": message, "type": kind, "param": None, "code": None}}, status)


class StandinServer:
    """Runs a ``Standin`` on 127.0.0.1 in a background thread (for tests and the demo)."""

    def __init__(self, models: list[str], port: int = 0, **state: Any) -> None:
        self.state = StandinState(models=models, **state)
        self.standin = Standin(self.state)
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> StandinServer:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._start())
            except BaseException as exc:
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._stop())
            loop.close()

        self._thread = threading.Thread(target=run, name=f"standin-{self.state.models[0]}", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]
        return self

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.standin.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._port, reuse_address=True)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None


async def serve_forever(models: list[str], host: str, port: int, delay_s: float = 0.0) -> None:
    """Run a stand-in in the current event loop until cancelled (``python -m serving.standin``)."""
    standin = Standin(StandinState(models=models, delay_s=delay_s, record=False))
    runner = web.AppRunner(standin.app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="OpenAI-compatible stand-in upstream (not a model)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--models", default="*", help="comma-separated model names to accept; * for any")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds to wait before each answer")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve_forever(args.models.split(","), args.host, args.port, args.delay))


if __name__ == "__main__":
    main()

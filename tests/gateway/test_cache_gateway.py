"""The response cache through the running gateway, with the real openai SDK on loopback.

Real Redis on 127.0.0.1:6379 under a per-test key prefix (removed afterwards), and a redis-server the
outage test starts, stops and restarts on its own port.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
import redis as redis_sync
from aiohttp import web

from gateway.background import BackgroundGateway
from gateway.config import Policy
from serving.standin import StandinServer
from tests.conftest import ADMIN_KEY, API_KEY, API_KEY_B

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}

try:
    from tests.gateway.test_cache_backends import REDIS_URL, RedisServer, free_port
except ImportError:  # pytest's rootdir-less import mode
    from test_cache_backends import REDIS_URL, RedisServer, free_port  # type: ignore[no-redef]

SQL = [{"role": "user", "content": "Write a SQL query joining the orders table with customers."}]
GENERAL = [{"role": "user", "content": "Suggest a name for a golden retriever puppy."}]
Start = Callable[..., BackgroundGateway]


@pytest.fixture
def start(make_policy: Callable[..., Policy], start_gateway: Callable[[Policy], BackgroundGateway],
          prefix: str) -> Start:
    """Start a gateway whose cache uses the shared Redis under this test's prefix."""
    def go(**cache: Any) -> BackgroundGateway:
        cfg = {"redis_url": REDIS_URL, "key_prefix": prefix, "redis_op_timeout_ms": 250, **cache}
        return start_gateway(make_policy(cache=cfg))
    return go


def sdk(gw: BackgroundGateway, key: str = API_KEY) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=30)


def chat(client: Any, **kw: Any) -> tuple[dict[str, Any], httpx.Headers]:
    args: dict[str, Any] = {"model": "auto", "messages": SQL, "temperature": 0, **kw}
    raw = client.chat.completions.with_raw_response.create(**args)
    return raw.parse().model_dump(), raw.headers


def sse_lines(gw: BackgroundGateway, body: dict[str, Any], key: str = API_KEY) -> tuple[list[str], httpx.Headers]:
    with httpx.stream("POST", f"{gw.base_url}/chat/completions", json=body, timeout=30,
                      headers={"authorization": f"Bearer {key}"}) as resp:
        assert resp.status_code == 200
        return [line for line in resp.iter_lines() if line], resp.headers


def test_miss_then_hit(start: Start, slm_upstream: StandinServer) -> None:
    gw = start()
    client = sdk(gw)
    first, h1 = chat(client)
    assert (h1["x-slmgw-cache"], h1["x-slmgw-route"]) == ("miss", "slm")
    calls = len(slm_upstream.state.requests)
    second, h2 = chat(client)
    assert (h2["x-slmgw-cache"], h2["x-slmgw-route"]) == ("hit", "cache")
    assert (h2["x-slmgw-model"], h2["x-slmgw-domain"]) == ("sql", "sql")
    assert second == first  # the stored answer itself: same id, created, text and usage
    assert len(slm_upstream.state.requests) == calls  # the upstream was not asked again
    # Field order and irrelevant fields do not matter; a changed parameter does.
    _, h3 = chat(client, user="someone-else", stream=False)
    assert h3["x-slmgw-cache"] == "hit"
    _, h4 = chat(client, max_tokens=7)
    assert h4["x-slmgw-cache"] == "miss"


def test_nondeterministic_requests_bypass_and_opt_in(start: Start, slm_upstream: StandinServer) -> None:
    client = sdk(start())
    for _ in range(2):
        _, h = chat(client, temperature=0.9)
        assert (h["x-slmgw-cache"], h["x-slmgw-route"]) == ("bypass", "slm")
    opted = sdk(start(nondeterministic_domains=["sql"]))
    assert chat(opted, temperature=0.9)[1]["x-slmgw-cache"] == "miss"
    assert chat(opted, temperature=0.9)[1]["x-slmgw-cache"] == "hit"
    assert chat(opted, temperature=0.9, messages=GENERAL)[1]["x-slmgw-cache"] == "bypass"  # llm: no opt-in


def test_request_cache_control(start: Start, slm_upstream: StandinServer) -> None:
    client = sdk(start())
    _, h = chat(client, extra_body={"cache": {"no-store": True}})
    assert h["x-slmgw-cache"] == "miss"
    assert "cache" not in slm_upstream.state.requests[-1]  # never sent upstream
    assert chat(client)[1]["x-slmgw-cache"] == "miss"  # the no-store answer was not kept
    assert chat(client)[1]["x-slmgw-cache"] == "hit"
    calls = len(slm_upstream.state.requests)
    _, h = chat(client, extra_headers={"Cache-Control": "no-cache"})
    assert (h["x-slmgw-cache"], h["x-slmgw-route"]) == ("bypass", "slm")
    assert len(slm_upstream.state.requests) == calls + 1


def test_tenants_are_isolated(start: Start) -> None:
    gw = start()
    a, b = sdk(gw, API_KEY), sdk(gw, API_KEY_B)
    answer_a, h = chat(a)
    assert h["x-slmgw-cache"] == "miss"
    answer_b, h = chat(b)
    assert h["x-slmgw-cache"] == "miss" and answer_b["id"] != answer_a["id"]
    assert chat(a)[0]["id"] == answer_a["id"] and chat(b)[0]["id"] == answer_b["id"]
    # Tenants mapped to one namespace share answers ("team" is a namespace of its own, so a first miss).
    shared = start(namespaces={"tenant-a": "team", "tenant-b": "team"})
    assert chat(sdk(shared, API_KEY_B))[1]["x-slmgw-cache"] == "miss"
    assert chat(sdk(shared, API_KEY))[1]["x-slmgw-cache"] == "hit"


@pytest.mark.parametrize("include_usage", [True, False])
def test_stream_replay_is_chunk_for_chunk(start: Start, slm_upstream: StandinServer, include_usage: bool) -> None:
    gw = start()
    body = {"model": "auto", "messages": SQL, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": include_usage}}
    original, h1 = sse_lines(gw, body)
    assert h1["x-slmgw-cache"] == "miss" and len(original) > 3
    calls = len(slm_upstream.state.requests)
    time.sleep(0.05)  # the store runs in the background after the last byte
    replay, h2 = sse_lines(gw, body)
    assert (h2["x-slmgw-cache"], h2["x-slmgw-route"]) == ("hit", "cache")
    assert h2["content-type"].startswith("text/event-stream")
    assert replay == original  # same chunks, same order, same ids, usage chunk and [DONE]
    assert len(slm_upstream.state.requests) == calls
    chunks = [orjson.loads(line.removeprefix("data: ")) for line in replay[:-1]]
    assert (chunks[-1].get("choices") == [] and chunks[-1]["usage"]) if include_usage else \
        all(c["choices"] and "usage" not in c for c in chunks)


def test_stream_and_non_stream_answer_each_other(start: Start) -> None:
    client = sdk(start())
    stream = client.chat.completions.create(model="auto", messages=SQL, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    time.sleep(0.05)
    whole, h = chat(client)  # stream: false after a stored stream -> the assembled completion
    assert h["x-slmgw-cache"] == "hit"
    assert whole["choices"][0]["message"]["content"] == text
    assert whole["choices"][0]["finish_reason"] == "stop"
    assert whole["usage"] == chunks[-1].usage.model_dump()
    assert whole["id"] == chunks[0].id
    # and a stream hit on an answer stored from a non-stream response gets synthesised chunks
    other = [{"role": "user", "content": "List every table with a join on orders, as SQL."}]
    stored, _ = chat(client, messages=other)
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=other, temperature=0,
                                                           stream=True, stream_options={"include_usage": True})
    assert raw.headers["x-slmgw-cache"] == "hit"
    replay = list(raw.parse())
    assert "".join(c.choices[0].delta.content or "" for c in replay if c.choices) == \
        stored["choices"][0]["message"]["content"]
    assert replay[-1].usage is not None and replay[-1].usage.total_tokens == stored["usage"]["total_tokens"]


def test_text_completions_are_cached(start: Start) -> None:
    client = sdk(start())
    raw1 = client.completions.with_raw_response.create(model="auto", prompt="SELECT from which table? sql",
                                                       temperature=0)
    raw2 = client.completions.with_raw_response.create(model="auto", prompt="SELECT from which table? sql",
                                                       temperature=0)
    assert (raw1.headers["x-slmgw-cache"], raw2.headers["x-slmgw-cache"]) == ("miss", "hit")
    assert raw2.parse().model_dump() == raw1.parse().model_dump()
    # chat and completion share nothing even for the same model and parameters
    assert chat(client)[1]["x-slmgw-cache"] == "miss"


def test_errors_are_never_cached(start: Start, slm_upstream: StandinServer, llm_upstream: StandinServer) -> None:
    from openai import APIStatusError

    gw = start()
    client = sdk(gw)
    slm_upstream.state.fail_status = llm_upstream.state.fail_status = 400  # refused: passed on, not stored
    with pytest.raises(APIStatusError) as err:
        chat(client)
    assert err.value.response.headers["x-slmgw-cache"] == "miss"
    slm_upstream.state.fail_status = llm_upstream.state.fail_status = 503  # every backend fails
    with pytest.raises(APIStatusError) as err:
        chat(client)
    assert err.value.status_code >= 500
    slm_upstream.state.fail_status = llm_upstream.state.fail_status = None
    assert chat(client)[1]["x-slmgw-cache"] == "miss"
    assert chat(client)[1]["x-slmgw-cache"] == "hit"


class BrokenStream:
    """An upstream whose streams send one chunk and then drop the connection."""

    def __init__(self) -> None:
        self.port = free_port()
        self.calls = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.calls += 1
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        chunk = {"id": f"chatcmpl-broken{self.calls}", "object": "chat.completion.chunk", "created": 1,
                 "model": "sql", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "SEL"},
                                              "finish_reason": None}]}
        await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.close()  # cut mid-answer
        return resp

    @staticmethod
    async def _ok(resp: web.Response) -> web.Response:
        return resp

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/health", lambda _: self._ok(web.Response(text="")))
        app.router.add_get("/v1/models", lambda _: self._ok(web.json_response(
            {"object": "list", "data": [{"id": "sql", "object": "model", "created": 0, "owned_by": "x"}]})))
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def __enter__(self) -> BrokenStream:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._runner is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def test_a_stream_that_ends_in_an_error_is_not_stored(make_policy: Callable[..., Policy],
                                                      start_gateway: Callable[[Policy], BackgroundGateway],
                                                      slm_upstream: StandinServer, prefix: str) -> None:
    with BrokenStream() as broken:
        policy = make_policy(cache={"redis_url": REDIS_URL, "key_prefix": prefix, "redis_op_timeout_ms": 250})
        slm = {**policy.model_dump()["slm_backends"]}
        slm["sql"] = {**slm["sql"], "base_urls": [f"http://127.0.0.1:{broken.port}/v1"]}
        gw = start_gateway(make_policy(slm_backends=slm, cache={"redis_url": REDIS_URL, "key_prefix": prefix,
                                                                "redis_op_timeout_ms": 250}))
        body = {"model": "sql", "messages": SQL, "temperature": 0, "stream": True}
        for _ in range(2):
            lines, headers = sse_lines(gw, body)
            assert headers["x-slmgw-cache"] == "miss"  # the first, cut stream was not stored
            assert '"error"' in lines[-1] and lines[-1] != "data: [DONE]"
            time.sleep(0.05)
        assert broken.calls == 2
    keys = list(redis_sync.Redis.from_url(REDIS_URL).scan_iter(match=prefix + "*"))
    assert keys == []


def test_ttl_expiry(start: Start) -> None:
    client = sdk(start(domain_ttl_s={"sql": 1}))
    assert chat(client)[1]["x-slmgw-cache"] == "miss"
    assert chat(client)[1]["x-slmgw-cache"] == "hit"
    time.sleep(1.3)
    assert chat(client)[1]["x-slmgw-cache"] == "miss"
    # a per-request TTL overrides the domain's
    assert chat(client, max_tokens=5, extra_body={"cache": {"ttl": 30}})[1]["x-slmgw-cache"] == "miss"
    time.sleep(1.3)
    assert chat(client, max_tokens=5)[1]["x-slmgw-cache"] == "hit"


def test_hit_is_recorded_as_route_cache(start: Start) -> None:
    gw = start()
    client = sdk(gw)
    chat(client)
    _, h = chat(client)
    assert h["x-slmgw-route"] == "cache" and float(h["x-slmgw-overhead-ms"]) < 100
    deadline = time.monotonic() + 5
    while True:
        metrics = httpx.get(f"{gw.url}/metrics", headers={"authorization": f"Bearer {ADMIN_KEY}"}).text
        if 'route="cache"' in metrics or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert any(line.startswith("slmgw_requests_total{") and 'route="cache"' in line for line in metrics.splitlines())
    assert 'slmgw_cache_lookups_total{result="hit"} 1.0' in metrics
    assert 'slmgw_cache_store_up{backend="redis"} 1.0' in metrics


def test_redis_outage_mid_test(make_policy: Callable[..., Policy],
                               start_gateway: Callable[[Policy], BackgroundGateway]) -> None:
    server = RedisServer()
    server.start()
    try:
        gw = start_gateway(make_policy(cache={"redis_url": server.url, "redis_op_timeout_ms": 50,
                                              "redis_backoff_max_s": 0.3}))
        client = sdk(gw)
        assert chat(client)[1]["x-slmgw-cache"] == "miss"
        assert chat(client)[1]["x-slmgw-cache"] == "hit"
        server.stop()
        for i in range(10):
            t0 = time.perf_counter()
            answer, h = chat(client, max_tokens=20 + i)
            assert answer["choices"][0]["message"]["content"]
            assert (h["x-slmgw-cache"], h["x-slmgw-route"]) == ("bypass", "slm")
            assert time.perf_counter() - t0 < 2.0
        ready = httpx.get(f"{gw.url}/health/ready", headers=ADMIN).json()
        assert ready["components"]["cache"]["ok"] is False
        assert ready["components"]["cache"]["state"] == "down"
        server.start()  # same port, empty
        deadline = time.monotonic() + 10
        while chat(client)[1]["x-slmgw-cache"] == "bypass":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(0.05)
        assert chat(client)[1]["x-slmgw-cache"] == "hit"
        assert httpx.get(f"{gw.url}/health/ready", headers=ADMIN).json()["components"]["cache"]["ok"] is True
    finally:
        server.stop()


def test_in_process_cache_without_redis(make_policy: Callable[..., Policy],
                                        start_gateway: Callable[[Policy], BackgroundGateway]) -> None:
    gw = start_gateway(make_policy(cache={"enabled": True}))
    client = sdk(gw)
    assert chat(client)[1]["x-slmgw-cache"] == "miss"
    assert chat(client)[1]["x-slmgw-cache"] == "hit"
    assert httpx.get(f"{gw.url}/health/ready", headers=ADMIN).json()["components"]["cache"]["backend"] == "memory"


def test_disabled_cache_says_bypass(client: Any) -> None:
    # The shared fixtures run with the cache off.
    for _ in range(2):
        assert chat(client)[1]["x-slmgw-cache"] == "bypass"

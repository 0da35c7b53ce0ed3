"""SLM replicas, health, circuit breaking and escalation, against loopback stand-in servers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from aiohttp import web

from gateway.background import BackgroundGateway, free_port
from gateway.config import Policy
from serving.escalation import output_tokens, prompt_bounds, unsupported_feature
from serving.health import Replica
from serving.standin import StandinServer
from tests.conftest import ADMIN_KEY, API_KEY

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}

SQL = [{"role": "user", "content": "Write a SQL query joining the orders table with customers."}]
DOMAINS = ("sql", "code", "support", "math")


@pytest.fixture
def replicas() -> Iterator[list[StandinServer]]:
    servers = [StandinServer(models=list(DOMAINS)).start() for _ in range(2)]
    yield servers
    for s in servers:
        s.stop()


def slm(urls: list[str], **kw: Any) -> dict[str, Any]:
    return {n: {"base_urls": urls, "model": n, "timeout_s": 5, "connect_timeout_s": 1,
                "health_interval_s": 0.2, "max_backoff_s": 0.5, **kw} for n in DOMAINS}


def chat(gw: BackgroundGateway, messages: list[dict[str, Any]] = SQL, **body: Any) -> httpx.Response:
    return httpx.post(f"{gw.base_url}/chat/completions", headers={"authorization": f"Bearer {API_KEY}"},
                      json={"model": "auto", "messages": messages, **body}, timeout=30)


def ready(gw: BackgroundGateway) -> dict[str, Any]:
    data: dict[str, Any] = httpx.get(f"{gw.url}/health/ready", headers=ADMIN).json()["components"]["slm"]
    return data


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


# -- replicas and breaker ---------------------------------------------------------------------------
def test_failed_replica_hands_over_to_the_next(make_policy: Callable[..., Policy], start_gateway: Any,
                                               replicas: list[StandinServer],
                                               caplog: pytest.LogCaptureFixture) -> None:
    a, b = replicas
    gw = start_gateway(make_policy(slm_backends=slm([a.base_url, b.base_url], max_backoff_s=30)))
    a.state.fail_status = 503
    for _ in range(8):
        resp = chat(gw)
        assert resp.headers["x-slmgw-route"] == "slm"
        assert resp.json()["choices"][0]["message"]["content"].startswith("[stand-in sql]")
    # After FAILURES_TO_OPEN failures the breaker took a out (for 1 s at first); b served the rest.
    assert len(a.state.requests) == 3
    assert f"SLM replica {a.base_url} taken out: slm_http_503" in caplog.text
    # The probe finds a healthy (its /health never failed): back in rotation.
    a.state.fail_status = None
    wait_for(lambda: ready(gw)["replicas"][a.base_url]["state"] == "up")
    assert ready(gw)["backends"]["sql"]["state"] == "up"


def test_every_replica_failing_escalates_with_all_reasons(make_policy: Callable[..., Policy],
                                                          start_gateway: Any,
                                                          replicas: list[StandinServer]) -> None:
    a, b = replicas
    gw = start_gateway(make_policy(slm_backends=slm([a.base_url, b.base_url])))
    a.state.fail_status, b.state.fail_status = 503, 429
    resp = chat(gw)
    assert resp.status_code == 200
    assert resp.headers["x-slmgw-route"] == "llm"
    assert resp.headers["x-slmgw-reason"].startswith("escalated slm_http_503+slm_overloaded;")


def test_least_outstanding_spreads_load(make_policy: Callable[..., Policy], start_gateway: Any,
                                        replicas: list[StandinServer]) -> None:
    a, b = replicas
    gw = start_gateway(make_policy(slm_backends=slm([a.base_url, b.base_url])))
    a.state.delay_s = b.state.delay_s = 0.3

    async def burst() -> None:
        async with httpx.AsyncClient(timeout=30) as c:
            await asyncio.gather(*(c.post(f"{gw.base_url}/chat/completions",
                                          headers={"authorization": f"Bearer {API_KEY}"},
                                          json={"model": "sql", "messages": SQL}) for _ in range(6)))

    asyncio.run(burst())
    assert len(a.state.requests) == len(b.state.requests) == 3


def test_pick_prefers_fewest_in_flight() -> None:
    from gateway.config import parse_policy
    from serving.health import SlmHealth

    pol = parse_policy({"slm_backends": slm(["http://a:1/v1", "http://b:1/v1", "http://c:1/v1"]),
                        "llm_backends": {"llm": {"model": "openai/x"}}, "fallback": {"llm": "llm"}})
    h = SlmHealth(pol, lambda: None)  # type: ignore[arg-type,return-value]
    ra, rb, rc = (h.replicas[u] for u in ("http://a:1/v1", "http://b:1/v1", "http://c:1/v1"))
    ra.outstanding, rb.outstanding, rc.outstanding = 2, 0, 1
    assert h.pick("sql", set()) is rb
    assert h.pick("sql", {rb.url}) is rc
    rc.mark_down("slm_unreachable")
    assert h.pick("sql", {rb.url}) is ra
    ra.models = frozenset({"code"})  # a no longer serves the sql adapter
    assert h.pick("sql", {rb.url}) is None
    assert h.unavailable_reason("sql") == "slm_model_missing"


def test_backoff_doubles_up_to_the_cap() -> None:
    rep = Replica("http://x:1/v1", max_backoff_s=5)
    waits = []
    for _ in range(5):
        rep.mark_down("probe_timeout")
        waits.append(rep.backoff_s)
    assert waits == [1.0, 2.0, 4.0, 5, 5]
    rep.mark_up(frozenset({"sql"}))  # a good probe: half-open
    assert (rep.state, rep.half_open) == ("up", True)
    rep.request_ok()
    assert (rep.state, rep.backoff_s, rep.failures, rep.half_open) == ("up", 0.0, 0, False)


def test_half_open_replica_fails_once_and_is_out_again() -> None:
    from gateway.config import parse_policy
    from serving.health import SlmHealth

    pol = parse_policy({"slm_backends": slm(["http://a:1/v1"], max_backoff_s=30),
                        "llm_backends": {"llm": {"model": "openai/x"}}, "fallback": {"llm": "llm"}})
    h = SlmHealth(pol, lambda: None)  # type: ignore[arg-type,return-value]
    rep = h.replicas["http://a:1/v1"]
    for _ in range(3):
        h.record_failure(rep, "slm_http_500", "sql")
    assert (rep.state, rep.backoff_s) == ("down", 1.0)
    rep.mark_up()
    h.record_failure(rep, "slm_timeout", "sql")
    assert (rep.state, rep.backoff_s) == ("down", 2.0)
    rep.mark_up()
    h.record_success(rep)
    h.record_failure(rep, "slm_http_500", "sql")
    h.record_failure(rep, "slm_overloaded", "sql")  # 429 is load, not a fault
    assert rep.state == "up"


def test_dead_replica_found_at_start_and_recovers(make_policy: Callable[..., Policy],
                                                   start_gateway: Any) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    gw = start_gateway(make_policy(slm_backends=slm([url])))
    state = ready(gw)
    assert state["backends"]["sql"]["state"] == "down"
    assert any("no replica is up" in p for p in state["problems"])
    resp = chat(gw)
    assert resp.headers["x-slmgw-route"] == "llm"
    assert resp.headers["x-slmgw-reason"].startswith("escalated slm_down:slm_unreachable")
    server = StandinServer(models=list(DOMAINS), port=port).start()
    try:
        wait_for(lambda: ready(gw)["backends"]["sql"]["state"] == "up")
        assert chat(gw).headers["x-slmgw-route"] == "slm"
    finally:
        server.stop()


def test_adapter_not_served_is_reported(make_policy: Callable[..., Policy], start_gateway: Any,
                                        caplog: pytest.LogCaptureFixture) -> None:
    server = StandinServer(models=["sql", "code", "support"]).start()  # no "math" adapter
    try:
        gw = start_gateway(make_policy(slm_backends=slm([server.base_url])))
        state = ready(gw)
        assert state["backends"]["math"]["state"] == "model_missing"
        assert any("does not serve model 'math'" in p for p in state["problems"])
        assert "does not serve model 'math'" in caplog.text
        resp = chat(gw, [{"role": "user", "content": "solve this equation: 2x = 4"}])
        assert resp.headers["x-slmgw-route"] == "llm"
        assert resp.headers["x-slmgw-reason"].startswith("escalated slm_model_missing")
        assert all(r["model"] != "math" for r in server.state.requests)
    finally:
        server.stop()


# -- escalation rules --------------------------------------------------------------------------------
@pytest.mark.parametrize(("extra", "reason"), [
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "unsupported:tools"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}},
     "unsupported:json_schema"),
])
def test_features_the_slm_lacks_go_to_the_llm(gateway: BackgroundGateway, slm_upstream: StandinServer,
                                              extra: dict[str, Any], reason: str) -> None:
    resp = chat(gateway, **extra)
    assert resp.headers["x-slmgw-route"] == "llm"
    assert resp.headers["x-slmgw-reason"].startswith(f"escalated {reason};")
    assert not slm_upstream.state.requests


def test_images_go_to_the_llm_unless_supported(make_policy: Callable[..., Policy], start_gateway: Any,
                                               slm_upstream: StandinServer) -> None:
    msg = [{"role": "user", "content": [{"type": "text", "text": "Which SQL table is in this picture?"},
                                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]}]
    gw = start_gateway(make_policy())
    assert chat(gw, msg).headers["x-slmgw-reason"].startswith("escalated unsupported:images")
    gw2 = start_gateway(make_policy(slm_backends=slm([slm_upstream.base_url], supports=["images"])))
    assert chat(gw2, msg).headers["x-slmgw-route"] == "slm"


def test_context_window(make_policy: Callable[..., Policy], start_gateway: Any,
                        slm_upstream: StandinServer) -> None:
    gw = start_gateway(make_policy(slm_backends=slm([slm_upstream.base_url], context_length=200)))
    assert chat(gw, max_tokens=10).headers["x-slmgw-route"] == "slm"
    # max_tokens alone overflows the window
    resp = chat(gw, max_tokens=500)
    assert resp.headers["x-slmgw-reason"].startswith("escalated context_length:")
    # certainly too long without counting
    long = [{"role": "user", "content": "select * from orders join customers " * 200}]
    assert chat(gw, long).headers["x-slmgw-reason"].startswith("escalated context_length:")
    # in between: counted by the server's /tokenize (the stand-in counts ~4 bytes a token)
    mid = [{"role": "user", "content": "sql query " * 40}]
    resp = chat(gw, mid, max_tokens=20)
    assert resp.headers["x-slmgw-route"] == "slm"


def test_escalation_helpers() -> None:
    assert unsupported_feature({"tools": []}, []) is None
    assert unsupported_feature({"functions": [{"name": "f"}]}, []) == "tools"
    assert unsupported_feature({"tools": [{}]}, ["tools"]) is None
    assert unsupported_feature({"response_format": {"type": "json_object"}}, []) is None
    lo, hi = prompt_bounds("chat", {"messages": [{"role": "user", "content": "héllo"}]})
    assert lo <= 2 <= hi
    assert prompt_bounds("completion", {"prompt": [1, 2, 3]}) == (3, 3)
    assert output_tokens({"max_completion_tokens": 7, "max_tokens": 9}) == 7
    assert output_tokens({}) == 1


# -- streams ------------------------------------------------------------------------------------------
@pytest.fixture
def broken_stream() -> Iterator[str]:
    """An SLM that sends one chunk of a stream, then drops the connection."""
    import threading

    port = free_port()
    loop = asyncio.new_event_loop()

    async def models(_r: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": n} for n in DOMAINS]})

    async def health(_r: web.Request) -> web.Response:
        return web.Response(text="")

    async def chat_handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        chunk = (b'{"id":"c1","object":"chat.completion.chunk","created":0,"model":"sql",'
                 b'"choices":[{"index":0,"delta":{"role":"assistant","content":"partial"}}]}')
        await resp.write(b"data: " + chunk + b"\n\n")
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.close()
        return resp

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat_handler)
    runner = web.AppRunner(app)

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        loop.run_forever()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    time.sleep(0.2)
    yield f"http://127.0.0.1:{port}/v1"
    loop.call_soon_threadsafe(loop.stop)
    t.join(5)


def test_stream_error_after_first_byte_ends_with_error_event(make_policy: Callable[..., Policy],
                                                             start_gateway: Any, broken_stream: str) -> None:
    gw = start_gateway(make_policy(slm_backends=slm([broken_stream])))
    with httpx.stream("POST", f"{gw.base_url}/chat/completions", headers={"authorization": f"Bearer {API_KEY}"},
                      json={"model": "sql", "messages": SQL, "stream": True}, timeout=30) as resp:
        assert resp.status_code == 200
        assert resp.headers["x-slmgw-route"] == "slm"  # decided before the first byte
        events = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert '"partial"' in events[0]
    assert '"error"' in events[-1]  # no [DONE]: an OpenAI-style error event ends the stream


# -- LLM fallback chain ------------------------------------------------------------------------------
def test_llm_chain_falls_through_and_never_shows_keys(make_policy: Callable[..., Policy], start_gateway: Any,
                                                       llm_upstream: StandinServer,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    secret = "sk-secret-primary-0123456789"
    pol = make_policy(llm_backends={
        "primary": {"model": "openai/gpt-4o", "api_base": dead, "api_key": secret, "timeout_s": 2},
        "second": {"model": "openai/gpt-4o-mini", "api_base": llm_upstream.base_url, "api_key": "sk-x2"},
    }, fallback={"llm": ["primary", "second"]}, embeddings=None)
    gw = start_gateway(pol)
    resp = chat(gw, [{"role": "user", "content": "Tell me a story about a cat."}])
    assert resp.status_code == 200
    assert resp.headers["x-slmgw-model"] == "openai/gpt-4o-mini"
    assert resp.headers["x-slmgw-reason"].startswith("escalated llm_")
    assert secret not in caplog.text
    llm_upstream.state.fail_status = 500
    resp = chat(gw, [{"role": "user", "content": "Tell me a story about a cat."}])
    assert resp.status_code == 503
    body = resp.json()
    assert body["error"]["code"] == "no_backend_available"
    assert secret not in resp.text

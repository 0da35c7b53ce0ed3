"""Rate limits shared through the real Redis by two gateway apps, token accounting, budgets from the
ledger (429 with x-should-retry: false, which the real openai SDK obeys), max_tokens caps, fail-open."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
import redis

from gateway.background import BackgroundGateway
from gateway.config import Policy
from gateway.limits import RateLimiter, _duration, estimate_tokens
from serving.standin import StandinServer
from tests.conftest import ADMIN_KEY, API_KEY, API_KEY_B

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def prefix() -> Iterator[str]:
    p = f"slmgw:test-issue7:{uuid.uuid4().hex[:8]}:"
    yield p
    r = redis.Redis.from_url(REDIS_URL)
    for key in r.scan_iter(match=p + "*"):
        r.delete(key)
    r.close()


def _limits(prefix: str, **tenant: Any) -> dict[str, Any]:
    # A generous Redis time budget: on a loaded test machine 50 ms can pass, and the limiter would fail open.
    return {"redis_url": REDIS_URL, "key_prefix": prefix, "tenants": {"tenant-a": tenant}, "redis_timeout_ms": 2000}


def _chat(gw: BackgroundGateway, key: str = API_KEY, **body: Any) -> httpx.Response:
    payload = {"model": "sql", "messages": [{"role": "user", "content": "select 1"}], **body}
    return httpx.post(f"{gw.base_url}/chat/completions", json=payload,
                      headers={"authorization": f"Bearer {key}"}, timeout=30)


def test_duration_format_is_openais() -> None:
    assert _duration(0.25) == "250ms"
    assert _duration(1.0) == "1s"
    assert _duration(360) == "6m0s"
    assert _duration(61.2) == "1m2s"


def test_token_estimate_counts_prompt_and_completion() -> None:
    body = {"messages": [{"role": "user", "content": "x" * 400}], "n": 2}
    assert estimate_tokens("chat", body, 100) == len('[{"role":"user","content":"' + "x" * 400 + '"}]') // 4 + 200
    assert estimate_tokens("embedding", {"input": "abcdabcd"}, 100) == 2


async def test_lua_bucket_is_atomic_and_refills(prefix: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS_URL)
    limiter = RateLimiter(client, prefix, 1.0, 60)
    try:
        results = [await limiter.take("k", 3, 0, 0) for _ in range(4)]
        assert [r[0] for r in results if r] == [True, True, True, False]
        denied = results[3]
        assert denied is not None and 0 < denied[3] <= 20.5  # one request refills in 60/3 s
        # token bucket: 100 tpm, take 60 then 60 again -> the second waits for the missing 20 tokens
        assert (await limiter.take("t", 0, 100, 60))[0] is True  # type: ignore[index]
        second = await limiter.take("t", 0, 100, 60)
        assert second is not None and second[0] is False and second[3] == pytest.approx(12.0, abs=0.5)
        await limiter.adjust("t", 100, 50)  # refund 50 tokens: the same request fits now
        assert (await limiter.take("t", 0, 100, 60))[0] is True  # type: ignore[index]
    finally:
        await client.aclose()


def test_two_gateway_replicas_share_one_limit(make_policy: Callable[..., Policy],
                                              start_gateway: Callable[[Policy], BackgroundGateway],
                                              prefix: str) -> None:
    policy = make_policy(limits=_limits(prefix, rpm=4))
    one, two = start_gateway(policy), start_gateway(policy)
    statuses = [_chat(gw).status_code for gw in (one, two, one, two)]
    assert statuses == [200, 200, 200, 200]
    first = _chat(one)
    limited = _chat(two)  # the other replica sees the same exhausted bucket
    assert first.status_code == 429 and limited.status_code == 429
    body = limited.json()["error"]
    assert body["type"] == "rate_limit_error" and body["code"] == "rate_limit_exceeded"
    assert 1 <= int(limited.headers["retry-after"]) <= 16
    assert limited.headers["x-ratelimit-limit-requests"] == "4"
    assert limited.headers["x-ratelimit-remaining-requests"] == "0"
    assert limited.headers["x-ratelimit-reset-requests"].endswith("s")
    # Another tenant's key has its own (unlimited) bucket.
    assert _chat(one, key=API_KEY_B).status_code == 200


def test_success_carries_ratelimit_headers_and_tokens_are_settled_to_actual_usage(
        make_policy: Callable[..., Policy], start_gateway: Callable[[Policy], BackgroundGateway],
        prefix: str) -> None:
    gw = start_gateway(make_policy(limits=_limits(prefix, rpm=100, tpm=10_000)))
    first = _chat(gw, max_tokens=4000)
    assert first.status_code == 200
    h = first.headers
    assert h["x-ratelimit-limit-requests"] == "100" and h["x-ratelimit-remaining-requests"] == "99"
    assert h["x-ratelimit-limit-tokens"] == "10000"
    reserved = 10_000 - int(h["x-ratelimit-remaining-tokens"])
    assert reserved >= 4000  # the up-front charge includes max_tokens
    usage = first.json()["usage"]
    time.sleep(0.3)  # the correction is applied just after the response
    second = _chat(gw, max_tokens=1)
    spent_before_second = 10_000 - int(second.headers["x-ratelimit-remaining-tokens"])
    # After settling, only the first request's actual usage (+ the second's reservation) is charged.
    assert spent_before_second < reserved
    assert spent_before_second <= usage["total_tokens"] + 50


def test_request_larger_than_the_token_limit_is_not_retryable(
        make_policy: Callable[..., Policy], start_gateway: Callable[[Policy], BackgroundGateway],
        prefix: str) -> None:
    gw = start_gateway(make_policy(limits=_limits(prefix, tpm=1000)))
    resp = _chat(gw, max_tokens=5000)
    assert resp.status_code == 429 and resp.headers["x-should-retry"] == "false"
    assert resp.json()["error"]["code"] == "request_too_large"


def _counting_client(gw: BackgroundGateway, retries: int) -> tuple[openai.OpenAI, list[str]]:
    sent: list[str] = []
    http = httpx.Client(event_hooks={"request": [lambda r: sent.append(str(r.url))]})
    return openai.OpenAI(base_url=gw.base_url, api_key=API_KEY, max_retries=retries, timeout=30,
                         http_client=http), sent


def test_spent_budget_is_429_that_the_openai_sdk_does_not_retry(
        make_policy: Callable[..., Policy], start_gateway: Callable[[Policy], BackgroundGateway],
        llm_upstream: StandinServer) -> None:
    policy = make_policy(limits={"tenants": {"tenant-a": {"budget_usd": 1e-9}}, "budget_cache_s": 0.05},
                         ledger={"url": make_policy().ledger.url, "flush_interval_s": 0.05})
    gw = start_gateway(policy)
    client, sent = _counting_client(gw, retries=3)
    first = client.chat.completions.with_raw_response.create(
        model="llm", messages=[{"role": "user", "content": "hello there"}])
    assert float(first.headers["x-slmgw-cost-usd"]) > 1e-9  # the LLM call costs more than the budget
    deadline = time.monotonic() + 5
    while True:
        sent.clear()
        try:
            client.chat.completions.create(model="llm", messages=[{"role": "user", "content": "again"}])
        except openai.RateLimitError as exc:
            err = exc
            break
        assert time.monotonic() < deadline, "the budget was never enforced"
        time.sleep(0.1)
    assert err.status_code == 429 and err.response.headers["x-should-retry"] == "false"
    assert err.body["code"] == "insufficient_quota"  # type: ignore[index]
    assert len(sent) == 1, f"the SDK retried a spent budget: {sent}"
    # Tenant b has no budget.
    b = openai.OpenAI(base_url=gw.base_url, api_key=API_KEY_B, max_retries=0)
    assert b.chat.completions.create(model="llm", messages=[{"role": "user", "content": "hi"}]).choices


def test_the_sdk_does_retry_a_plain_rate_limit(make_policy: Callable[..., Policy],
                                               start_gateway: Callable[[Policy], BackgroundGateway],
                                               prefix: str) -> None:
    # The contrast that makes x-should-retry meaningful: without it the SDK retries a 429 (after retry-after).
    gw = start_gateway(make_policy(limits=_limits(prefix, rpm=60)))
    for _ in range(200):  # drain the bucket (it refills one request a second meanwhile)
        if _chat(gw).status_code == 429:
            break
    else:
        pytest.fail("the rate limit never applied")
    client, sent = _counting_client(gw, retries=1)
    assert client.chat.completions.create(model="sql", messages=[{"role": "user", "content": "select 1"}]).choices
    assert len(sent) == 2  # a 429, then the retry one second later succeeded


def test_max_tokens_cap(make_policy: Callable[..., Policy], start_gateway: Callable[[Policy], BackgroundGateway],
                        slm_upstream: StandinServer) -> None:
    gw = start_gateway(make_policy(limits={"tenants": {"tenant-a": {"max_tokens": 50}}}))
    over = _chat(gw, max_tokens=51)
    assert over.status_code == 400 and over.json()["error"]["param"] == "max_tokens"
    assert _chat(gw, max_completion_tokens=500).status_code == 400
    assert _chat(gw, max_tokens=50).status_code == 200
    slm_upstream.state.requests.clear()
    assert _chat(gw).status_code == 200
    assert slm_upstream.state.requests[-1]["max_completion_tokens"] == 50  # the cap is applied when absent
    assert _chat(gw, key=API_KEY_B, max_tokens=5000).status_code == 200  # other tenants: no cap


def test_redis_down_fails_open(make_policy: Callable[..., Policy],
                               start_gateway: Callable[[Policy], BackgroundGateway]) -> None:
    limits = {"redis_url": "redis://127.0.0.1:9/0", "tenants": {"tenant-a": {"rpm": 1}}}
    gw = start_gateway(make_policy(limits=limits))
    statuses = [_chat(gw).status_code for _ in range(4)]
    assert statuses == [200] * 4  # over the limit of 1, but the limiter cannot be asked: pass
    health = httpx.get(f"{gw.url}/health/ready", headers=ADMIN, timeout=10).json()["components"]["limits"]
    assert health["redis"] == "down" and health["fail_open"] >= 4
    metrics = httpx.get(f"{gw.url}/metrics", headers={"authorization": "Bearer sk-test-admin"}, timeout=10).text
    assert "slmgw_limits_fail_open_total 4.0" in metrics

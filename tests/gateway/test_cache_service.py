"""ResponseCache: what may be read and written, TTLs, tenant scope, bounds, and never raising."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis as redis_sync

from gateway.cache.backend import CacheStats
from gateway.cache.entry import CacheEntry, EntryMeta
from gateway.cache.memory import MemoryBackend
from gateway.cache.redis_backend import RedisBackend
from gateway.cache.service import ResponseCache, entry_from_chunks, entry_from_completion
from gateway.config import CacheConfig

REDIS_URL = "redis://127.0.0.1:6379/0"
BODY: dict[str, Any] = {"model": "auto", "messages": [{"role": "user", "content": "count rows"}],
                        "temperature": 0}
HOT: dict[str, Any] = {**BODY, "temperature": 0.8}


def completion(text: str = "SELECT count(*) FROM t", finish: str | None = "stop") -> dict[str, Any]:
    return {"id": "chatcmpl-x", "object": "chat.completion", "created": 1, "model": "sql-lora",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                         "finish_reason": finish}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}}


def entry(domain: str | None = "sql", **kw: Any) -> CacheEntry:
    return entry_from_completion("chat", completion(**kw), EntryMeta(route="slm", domain=domain, model="sql-lora"))


def make(**cfg: Any) -> ResponseCache:
    return ResponseCache(CacheConfig(**cfg), MemoryBackend())


# -- plan ------------------------------------------------------------------------------------------

def test_deterministic_requests_are_read_and_written() -> None:
    plan = make().plan("chat", "t1", BODY, {}, domain="sql")
    assert plan.read and plan.write and plan.deterministic and plan.reason == ""


def test_nondeterministic_requests_bypass_unless_domain_opts_in() -> None:
    assert not make().plan("chat", "t1", HOT, domain="sql").read
    opted = make(nondeterministic_domains=["sql"])
    assert opted.plan("chat", "t1", HOT, domain="sql").read
    assert not opted.plan("chat", "t1", HOT, domain="code").write
    assert not opted.plan("chat", "t1", HOT, domain=None).read
    assert make(nondeterministic_domains=["*"]).plan("chat", "t1", HOT, domain=None).write


@pytest.mark.parametrize(("field", "headers", "read", "write"), [
    ({"no-cache": True}, {}, False, True),
    ({"no-store": True}, {}, True, False),
    (None, {"cache-control": "no-cache"}, False, True),
    (None, {"cache-control": "no-store"}, True, False),
    (None, {"cache-control": "no-cache, no-store"}, False, False),
])
def test_request_control(field: Any, headers: dict[str, str], read: bool, write: bool) -> None:
    body = {**BODY, "cache": field} if field is not None else BODY
    plan = make().plan("chat", "t1", body, headers)
    assert (plan.read, plan.write) == (read, write)


def test_ttl_choice() -> None:
    cache = make(default_ttl_s=100, domain_ttl_s={"sql": 30}, max_ttl_s=500)
    plan = cache.plan("chat", "t", BODY)
    assert cache.ttl_for(plan, "sql") == 30
    assert cache.ttl_for(plan, "code") == 100
    assert cache.ttl_for(plan, None) == 100
    assert cache.ttl_for(cache.plan("chat", "t", {**BODY, "cache": {"ttl": 7}}), "sql") == 7
    assert cache.ttl_for(cache.plan("chat", "t", {**BODY, "cache": {"ttl": 10**6}}), "sql") == 500
    assert cache.ttl_for(cache.plan("chat", "t", {**BODY, "cache": {"no-store": True}}), "sql") is None


def test_disabled_cache_bypasses() -> None:
    plan = make(enabled=False).plan("chat", "t", BODY)
    assert not plan.read and not plan.write and plan.reason == "disabled"


# -- lookup and store --------------------------------------------------------------------------------

async def test_miss_store_hit_counts() -> None:
    cache = make()
    plan = cache.plan("chat", "t1", BODY, domain="sql")
    assert (await cache.lookup(plan)).outcome == "miss"
    assert await cache.store(plan, entry())
    hit = await cache.lookup(cache.plan("chat", "t1", {**BODY, "stream": True}, domain="sql"))
    assert hit.outcome == "hit" and hit.entry is not None
    assert hit.entry.completion == completion()
    assert hit.entry.meta == EntryMeta(route="slm", domain="sql", model="sql-lora", prompt_tokens=7,
                                       completion_tokens=5)
    assert (await cache.lookup(cache.plan("chat", "t1", HOT))).outcome == "bypass"
    assert cache.stats == CacheStats(hits=1, misses=1, bypasses=1, stores=1)


async def test_tenants_are_isolated_unless_they_share_a_namespace() -> None:
    cache = make(namespaces={"t2": "shared", "t3": "shared"})
    await cache.store(cache.plan("chat", "t1", BODY), entry())
    assert (await cache.lookup(cache.plan("chat", "t2", BODY))).outcome == "miss"
    await cache.store(cache.plan("chat", "t2", BODY), entry())
    assert (await cache.lookup(cache.plan("chat", "t3", BODY))).outcome == "hit"
    assert (await cache.lookup(cache.plan("chat", "t4", BODY))).outcome == "miss"


async def test_a_tenant_named_like_a_shared_alias_cannot_reach_it() -> None:
    cache = make(namespaces={"t2": "shared", "t3": "shared"})
    await cache.store(cache.plan("chat", "t2", BODY), entry())
    for tenant in ("shared", "ns:shared", "tenant:shared", "shared:chat"):
        assert (await cache.lookup(cache.plan("chat", tenant, BODY))).outcome == "miss", tenant
    await cache.store(cache.plan("chat", "shared", BODY), entry())  # nor can it fill the alias's entries
    assert (await cache.lookup(cache.plan("chat", "t3", BODY))).outcome == "hit"  # t2's entry, not "shared"'s
    assert len({cache.plan("chat", t, BODY).key for t in ("t2", "t3", "shared", "ns:shared")}) == 3


async def test_a_stream_over_max_entry_bytes_is_let_go_as_it_passes() -> None:
    cache = make(max_entry_bytes=2048)
    plan = cache.plan("chat", "t", BODY)
    rec = cache.recorder(plan, EntryMeta(route="slm", domain="sql"))
    assert rec is not None
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": {"content": "x" * 100}, "finish_reason": None}]}
    kept = 0
    while rec.add(chunk):
        kept += 1
        assert kept < 100, "the recorder never stopped"
    assert 6 <= kept <= 10  # about 2048 bytes of ~230-byte chunks
    assert rec._chunks == []  # released at once, not at the end of the stream
    assert rec.add(chunk) is False and rec._chunks == []
    rec.finish()
    await cache.drain()
    assert (await cache.lookup(plan)).outcome == "miss"
    assert cache.stats.too_large == 1


async def test_endpoint_kinds_are_separate() -> None:
    cache = make()
    await cache.store(cache.plan("chat", "t", BODY), entry())
    assert (await cache.lookup(cache.plan("completion", "t", BODY))).outcome == "miss"


async def test_incomplete_and_oversized_answers_are_not_stored() -> None:
    cache = make(max_entry_bytes=2048)
    plan = cache.plan("chat", "t", BODY)
    assert not await cache.store(plan, entry(finish=None))
    assert not await cache.store(plan, entry(finish="error"))
    assert not await cache.store(plan, entry(text="x" * 4096))
    assert cache.stats.too_large == 1 and cache.stats.stores == 0
    assert (await cache.lookup(plan)).outcome == "miss"
    assert await cache.store(plan, entry(finish="length"))  # truncated by max_tokens is still an answer


async def test_cut_stream_is_not_stored() -> None:
    cache = make()
    head = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    cut = [{**head, "choices": [{"index": 0, "delta": {"content": "SEL"}, "finish_reason": None}]}]
    assert not await cache.store(cache.plan("chat", "t", BODY), entry_from_chunks("chat", cut, EntryMeta()))
    done = [*cut, {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]
    stored = entry_from_chunks("chat", done, EntryMeta(route="llm"))
    assert await cache.store(cache.plan("chat", "t", BODY), stored)
    hit = await cache.lookup(cache.plan("chat", "t", BODY))
    assert hit.entry is not None and hit.entry.chunks == done


async def test_nondeterministic_hit_requires_the_entry_domain_opted_in() -> None:
    backend = MemoryBackend()
    opted = ResponseCache(CacheConfig(nondeterministic_domains=["sql"]), backend)
    assert await opted.store(opted.plan("chat", "t", HOT, domain="sql"), entry(domain="sql"))
    assert (await opted.lookup(opted.plan("chat", "t", HOT, domain="sql"))).outcome == "hit"
    # The policy changes: sql no longer opts in, but a request reaches the lookup for another domain.
    later = ResponseCache(CacheConfig(nondeterministic_domains=["code"]), backend)
    assert (await later.lookup(later.plan("chat", "t", HOT, domain="code"))).outcome == "miss"


async def test_store_soon_and_drain() -> None:
    cache = make()
    plan = cache.plan("chat", "t", BODY)
    cache.store_soon(plan, entry())
    await cache.drain()
    assert (await cache.lookup(plan)).outcome == "hit"


class BrokenBackend(MemoryBackend):
    async def get(self, key: str) -> bytes | None:
        raise RuntimeError("bug")

    async def set(self, key: str, value: bytes, ttl_s: int) -> bool:
        raise RuntimeError("bug")


async def test_a_broken_backend_never_raises() -> None:
    cache = ResponseCache(CacheConfig(), BrokenBackend())
    plan = cache.plan("chat", "t", BODY)
    assert (await cache.lookup(plan)).outcome == "miss"
    assert await cache.store(plan, entry()) is False


async def test_redis_down_is_a_fast_bypass() -> None:
    cache = ResponseCache.from_config(CacheConfig(redis_url="redis://127.0.0.1:1/0"))
    assert isinstance(cache.backend, RedisBackend)
    plan = cache.plan("chat", "t", BODY)
    await cache.start()
    t0 = time.perf_counter()
    assert (await cache.lookup(plan)).outcome == "bypass"
    assert await cache.store(plan, entry()) is False
    assert (await cache.lookup(plan)).outcome == "bypass"
    assert time.perf_counter() - t0 < 0.5
    health = cache.health()
    assert health["ok"] is False and health["backend"] == "redis" and health["stats"]["bypasses"] == 2
    await cache.close()


async def test_redis_backed_round_trip_with_domain_ttl() -> None:
    prefix = f"slmgw-test-svc:{time.time_ns()}:"
    cache = ResponseCache.from_config(CacheConfig(redis_url=REDIS_URL, key_prefix=prefix,
                                                  domain_ttl_s={"sql": 42}, redis_op_timeout_ms=500))
    try:
        plan = cache.plan("chat", "acme", BODY, domain="sql")
        assert plan.key.startswith(prefix + "tenant:acme:chat:")
        assert (await cache.lookup(plan)).outcome == "miss"
        assert await cache.store(plan, entry())
        assert (await cache.lookup(plan)).outcome == "hit"
        assert 40 <= redis_sync.Redis.from_url(REDIS_URL).ttl(plan.key) <= 42
    finally:
        await cache.backend.delete_prefix(prefix)
        await cache.close()


def test_from_config_without_redis_is_memory() -> None:
    cache = ResponseCache.from_config(CacheConfig(memory_max_entries=5))
    assert isinstance(cache.backend, MemoryBackend) and cache.backend.max_entries == 5
    assert cache.health()["ok"] is True


async def test_metrics_collector_reports_store_state() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from gateway.cache.metrics import register

    registry = CollectorRegistry()
    cache = ResponseCache.from_config(CacheConfig(redis_url="redis://127.0.0.1:1/0"))
    register(cache, registry)
    await cache.start()
    await cache.lookup(cache.plan("chat", "t", BODY))
    text = generate_latest(registry).decode()
    assert 'slmgw_cache_store_up{backend="redis"} 0.0' in text
    assert 'slmgw_cache_store_errors_total{backend="redis"} 1.0' in text  # start failed; lookup skipped
    assert 'slmgw_cache_store_skipped_total{backend="redis"} 1.0' in text
    await cache.close()

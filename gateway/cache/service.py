"""The response cache as the pipeline sees it: plan a request, look it up, store its answer.

``plan`` is pure (no I/O): it decides from the config, the request body and headers whether the cache
may be read and written, and computes the key. ``lookup`` and ``store`` go to the backend and never
raise. The outcome reported to the client is ``hit`` (answered from the cache), ``miss`` (looked up,
not found) or ``bypass`` (not looked up: not cacheable, ``no-cache``, disabled, or the store is down).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from gateway.cache.assemble import assemble_chat, assemble_text
from gateway.cache.backend import CacheBackend, CacheStats
from gateway.cache.control import parse_control
from gateway.cache.entry import CacheEntry, EntryMeta, entry_tokens
from gateway.cache.keys import EndpointKind, cache_key, cache_scope, is_deterministic
from gateway.cache.memory import MemoryBackend
from gateway.config import CacheConfig

log = logging.getLogger("slmgw.cache")
Outcome = Literal["hit", "miss", "bypass"]
_INCOMPLETE = frozenset({None, "error", "abort"})


@dataclass(frozen=True, slots=True)
class CachePlan:
    """What the cache may do for one request."""

    kind: EndpointKind
    key: str
    read: bool
    write: bool
    deterministic: bool
    ttl_s: int | None = None
    """TTL the client asked for (already capped), else None for the domain's TTL."""
    reason: str = ""
    """Why reading or writing is off, for logs: disabled, no-cache, no-store, nondeterministic."""


@dataclass(frozen=True, slots=True)
class Lookup:
    outcome: Outcome
    entry: CacheEntry | None = None


BYPASS = Lookup("bypass")


class ResponseCache:
    def __init__(self, config: CacheConfig, backend: CacheBackend) -> None:
        self.config = config
        self.backend = backend
        self._opt_in = frozenset(config.nondeterministic_domains)
        self._pending: set[asyncio.Task[bool]] = set()

    @classmethod
    def from_config(cls, config: CacheConfig) -> ResponseCache:
        """Redis when ``redis_url`` is set, else the in-process LRU. Connects lazily: no I/O here."""
        backend: CacheBackend
        if config.redis_url:
            from gateway.cache.redis_backend import RedisBackend

            backend = RedisBackend(
                config.redis_url, op_timeout_s=config.redis_op_timeout_ms / 1000,
                connect_timeout_s=config.redis_connect_timeout_ms / 1000,
                failure_threshold=config.redis_failure_threshold,
                backoff_max_s=config.redis_backoff_max_s, log_interval_s=config.outage_log_interval_s)
        else:
            backend = MemoryBackend(config.memory_max_entries, config.memory_max_bytes)
        return cls(config, backend)

    @property
    def stats(self) -> CacheStats:
        return self.backend.stats

    def _opted_in(self, domain: str | None) -> bool:
        return "*" in self._opt_in or (domain is not None and domain in self._opt_in)

    def plan(self, kind: EndpointKind, tenant: str, body: Mapping[str, Any],
             headers: Mapping[str, str] | None = None, domain: str | None = None) -> CachePlan:
        """Decide reading and writing for a request; ``domain`` is the routing decision's (None for a
        general request), which decides the opt-in of non-deterministic requests."""
        cfg = self.config
        deterministic = is_deterministic(body)
        if not cfg.enabled:
            return CachePlan(kind, "", False, False, deterministic, reason="disabled")
        ctl = parse_control(body.get("cache"), headers)
        ttl = min(ctl.ttl_s, cfg.max_ttl_s) if ctl.ttl_s else None
        cacheable = deterministic or self._opted_in(domain)
        read = cacheable and not ctl.no_cache
        write = cacheable and not ctl.no_store
        reason = ("nondeterministic" if not cacheable else
                  ",".join(r for r, on in (("no-cache", ctl.no_cache), ("no-store", ctl.no_store)) if on))
        # The key (canonical JSON + sha256 of the whole request) is only worth computing if it is used.
        key = cache_key(cfg.key_prefix, cache_scope(cfg.namespaces, tenant), kind, body) if read or write else ""
        return CachePlan(kind, key, read, write, deterministic, ttl, reason)

    async def lookup(self, plan: CachePlan) -> Lookup:
        """The stored answer, or a miss/bypass. Never raises."""
        stats = self.backend.stats
        if not plan.read:
            stats.bypasses += 1
            return BYPASS
        skipped = stats.skipped + stats.errors
        try:
            data = await self.backend.get(plan.key)
            entry = CacheEntry.from_bytes(data) if data is not None else None
        except Exception:  # a backend bug must not fail the request
            log.exception("response cache: lookup failed")
            entry = None
        if entry is not None and entry.kind == plan.kind and (
                plan.deterministic or self._opted_in(entry.meta.domain)):
            stats.hits += 1
            return Lookup("hit", entry)
        if entry is None and stats.skipped + stats.errors != skipped:
            stats.bypasses += 1  # the store was down or failed: it was not really consulted
            return BYPASS
        stats.misses += 1
        return Lookup("miss")

    def ttl_for(self, plan: CachePlan, domain: str | None) -> int | None:
        """TTL to store this request's answer with, or None when it must not be stored."""
        if not plan.write or not (plan.deterministic or self._opted_in(domain)):
            return None
        if plan.ttl_s:
            return plan.ttl_s
        if domain is not None and domain in self.config.domain_ttl_s:
            return self.config.domain_ttl_s[domain]
        return self.config.default_ttl_s

    async def store(self, plan: CachePlan, entry: CacheEntry) -> bool:
        """Store a complete answer if the plan allows it; False when not stored. Never raises."""
        try:
            ttl = self.ttl_for(plan, entry.meta.domain)
            if ttl is None or not is_complete(entry):
                return False
            data = entry.to_bytes()
            if len(data) > self.config.max_entry_bytes:
                self.backend.stats.too_large += 1
                return False
            stored = await self.backend.set(plan.key, data, ttl)
        except Exception:
            log.exception("response cache: store failed")
            return False
        if stored:
            self.backend.stats.stores += 1
        return stored

    def recorder(self, plan: CachePlan, meta: EntryMeta) -> StreamRecorder | None:
        """A recorder for a stream whose answer may be stored, else None (nothing to collect)."""
        return StreamRecorder(self, plan, meta) if self.ttl_for(plan, meta.domain) is not None else None

    def store_soon(self, plan: CachePlan, entry: CacheEntry) -> None:
        """``store`` in the background, so the response does not wait for it."""
        if self.ttl_for(plan, entry.meta.domain) is None:
            return
        task = asyncio.get_running_loop().create_task(self.store(plan, entry))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Wait for background stores (tests, shutdown)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def start(self) -> None:
        """Connect the store (at application start); a store that is down is logged, not fatal."""
        try:
            await self.backend.start()
        except Exception:
            log.exception("response cache: start failed")

    def health(self) -> dict[str, Any]:
        return {"enabled": self.config.enabled, **self.backend.health(), "stats": self.stats.as_dict()}

    async def close(self) -> None:
        await self.drain()
        await self.backend.close()


class StreamRecorder:
    """Collects a stream's chunks as they pass to the client and stores the answer once it ended
    normally. ``add`` keeps a shallow copy, so the caller may strip fields from the chunk it sends."""

    __slots__ = ("_cache", "_chunks", "_left", "_meta", "_plan")

    def __init__(self, cache: ResponseCache, plan: CachePlan, meta: EntryMeta) -> None:
        self._cache, self._plan, self._meta = cache, plan, meta
        self._chunks: list[dict[str, Any]] = []
        self._left = cache.config.max_entry_bytes
        """Bytes of chunks still allowed; below zero the stream cannot be stored and nothing is kept."""

    def add(self, chunk: Mapping[str, Any], size: int | None = None) -> bool:
        """Keep a chunk (``size``: its JSON length, when the caller knows it). False once the stream has
        passed ``max_entry_bytes``: the chunks are let go at once, and the caller may stop calling."""
        if self._left < 0:
            return False
        self._left -= size if size is not None else len(orjson.dumps(chunk))
        if self._left < 0:
            self._chunks.clear()  # memory stays bounded by max_entry_bytes, however long the stream
            self._cache.backend.stats.too_large += 1
            return False
        self._chunks.append(dict(chunk))
        return True

    def finish(self) -> None:
        """The upstream stream ended without an error: store it (in the background)."""
        if self._left >= 0:
            self._cache.store_soon(self._plan, entry_from_chunks(self._plan.kind, self._chunks, self._meta))


def is_complete(entry: CacheEntry) -> bool:
    """Every choice finished normally (a stream cut short has no finish_reason)."""
    choices: list[dict[str, Any]] = entry.completion.get("choices") or []
    return bool(choices) and all(c.get("finish_reason") not in _INCOMPLETE for c in choices)


def entry_from_completion(kind: EndpointKind, completion: dict[str, Any], meta: EntryMeta) -> CacheEntry:
    return CacheEntry(kind=kind, completion=completion, meta=_with_tokens(meta, completion))


def entry_from_chunks(kind: EndpointKind, chunks: list[dict[str, Any]], meta: EntryMeta) -> CacheEntry:
    """An entry for a finished stream: the chunks as received, and the completion assembled from them."""
    completion = assemble_chat(chunks) if kind == "chat" else assemble_text(chunks)
    return CacheEntry(kind=kind, completion=completion, chunks=chunks, meta=_with_tokens(meta, completion))


def _with_tokens(meta: EntryMeta, completion: Mapping[str, Any]) -> EntryMeta:
    prompt, completion_tokens = entry_tokens(completion.get("usage"))
    return EntryMeta(route=meta.route, domain=meta.domain, model=meta.model, backend=meta.backend,
                     prompt_tokens=prompt or meta.prompt_tokens,
                     completion_tokens=completion_tokens or meta.completion_tokens)

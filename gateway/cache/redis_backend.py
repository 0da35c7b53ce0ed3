"""Redis store with a hard time budget per operation and a circuit breaker.

The cache sits on every request's path, so it must cost a few milliseconds at worst and never fail a
request. Every operation runs under ``asyncio.timeout(op_timeout_s)`` (pool wait, connect and
round trip together); redis-py's own retries are off. A connection failure, or ``failure_threshold``
timeouts in a row, marks Redis down: operations then return at once (miss / no-op) without touching
the network. After a back-off (doubling up to ``backoff_max_s``) a background probe (PING, generous
timeout, off the request path) checks it; success marks Redis up again. The outage is logged when it
starts, at most once per ``log_interval_s`` while it lasts, and when it ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeout

from gateway.cache.backend import CacheStats

log = logging.getLogger("slmgw.cache")
T = TypeVar("T")


class RedisBackend:
    name = "redis"

    def __init__(self, url: str, *, op_timeout_s: float = 0.005, connect_timeout_s: float = 0.05,
                 failure_threshold: int = 3, backoff_min_s: float = 0.5, backoff_max_s: float = 30.0,
                 log_interval_s: float = 60.0, max_connections: int = 64,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self.op_timeout_s = op_timeout_s
        self.failure_threshold = failure_threshold
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.log_interval_s = log_interval_s
        self.probe_timeout_s = max(0.25, connect_timeout_s + op_timeout_s)
        self.stats = CacheStats()
        self._clock = clock
        self._tasks: set[asyncio.Task[Any]] = set()
        # socket_timeout is only a backstop: the budget is enforced around the whole operation.
        self._client = aioredis.Redis.from_url(
            url, socket_timeout=max(1.0, op_timeout_s), socket_connect_timeout=connect_timeout_s,
            retry=Retry(NoBackoff(), 0), health_check_interval=0, max_connections=max_connections)
        self._up = True
        self._consecutive = 0
        self._backoff = backoff_min_s
        self._retry_at = 0.0
        self._probing = False
        self._down_since: float | None = None
        self._skipped_in_outage = 0
        self._last_log = 0.0
        self.last_error = ""

    # -- state machine -------------------------------------------------------------------------

    def _admit(self) -> bool:
        """May an operation touch Redis now? While down: no, and after the back-off a probe starts."""
        if self._up:
            return True
        self.stats.skipped += 1
        self._skipped_in_outage += 1
        if not self._probing and self._clock() >= self._retry_at:
            self._probing = True
            self._spawn(self._probe())
        else:
            self._remind()
        return False

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a late failure was already counted, or does not matter

    async def _probe(self) -> None:
        """Off the request path and with a generous timeout: drop the pooled connections from before the
        outage (dead), then PING. Success marks Redis up; failure doubles the back-off."""
        try:
            async with asyncio.timeout(self.probe_timeout_s):
                await self._client.connection_pool.disconnect(inuse_connections=False)
                await self._client.ping()
        except Exception as exc:
            self._failed(exc)
            return
        self._ok()

    def _remind(self) -> None:
        now = self._clock()
        if now - self._last_log >= self.log_interval_s:
            self._last_log = now
            log.warning("response cache: Redis %s still unavailable (%s); %d operations answered "
                        "without the cache so far", self._safe_url(), self.last_error,
                        self._skipped_in_outage)

    def _ok(self) -> None:
        self._consecutive = 0
        if not self._up:
            down_for = self._clock() - (self._down_since or self._clock())
            log.warning("response cache: Redis %s reachable again after %.1fs", self._safe_url(), down_for)
            self._up = True
            self._down_since = None
            self._skipped_in_outage = 0
            self._backoff = self.backoff_min_s
        self._probing = False

    def _failed(self, exc: BaseException) -> None:
        self.stats.errors += 1
        self._consecutive += 1
        self.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        hard = not isinstance(exc, TimeoutError | RedisTimeout)
        now = self._clock()
        if self._up and (hard or self._consecutive >= self.failure_threshold):
            self._up = False
            self._down_since = now
            self._backoff = self.backoff_min_s
            self._last_log = now
            log.warning("response cache: Redis %s unavailable (%s); answering without the cache, "
                        "retrying in %.1fs", self._safe_url(), self.last_error, self._backoff)
        elif not self._up:
            self._backoff = min(self._backoff * 2, self.backoff_max_s)
            self._remind()
        if not self._up:
            self._retry_at = now + self._backoff
        self._probing = False

    def _safe_url(self) -> str:
        # Never log a password that may sit in the URL.
        _, sep, tail = self.url.rpartition("@")
        return f"{self.url.split('://', 1)[0]}://***@{tail}" if sep else self.url

    async def _run(self, op: Callable[[], Coroutine[Any, Any, T]], default: T) -> T:
        if not self._admit():
            return default
        task = self._spawn(op())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.op_timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                result: T = await asyncio.shield(task)
        except TimeoutError as exc:
            # A timer that fires well past its deadline means this process was starved of CPU (the loop
            # was blocked or descheduled), not that Redis was slow: give the operation one more budget.
            if not task.done() and loop.time() - deadline > self.op_timeout_s / 2:
                await asyncio.wait({task}, timeout=self.op_timeout_s)
            if task.done() and not task.cancelled() and task.exception() is None:
                self._ok()
                late: T = task.result()
                return late
            # The operation is not cancelled: its reply still arrives and the connection goes back to
            # the pool intact. Cancelling mid-read would tear it down, and the next request would pay
            # for a new connection against the same few-millisecond budget.
            self._failed(exc)
            return default
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the cache must never raise into the request path
            self._failed(exc)
            return default
        self._ok()
        return result

    # -- the CacheBackend interface ------------------------------------------------------------

    async def start(self, timeout_s: float = 2.0) -> None:
        """Open a first connection with a generous timeout, so the first request does not pay for it
        (imports, connect, handshake) against a budget of a few milliseconds. Never raises."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._client.ping()
        except Exception as exc:
            self._failed(exc if not isinstance(exc, TimeoutError) else ConnectionError("no PING reply"))
            return
        self._ok()

    async def get(self, key: str) -> bytes | None:
        async def op() -> bytes | None:
            value = await self._client.get(key)
            return value if isinstance(value, bytes) else None
        return await self._run(op, None)

    async def set(self, key: str, value: bytes, ttl_s: int) -> bool:
        if ttl_s <= 0:
            return False

        async def op() -> bool:
            return bool(await self._client.set(key, value, ex=ttl_s))
        return await self._run(op, False)

    async def delete_prefix(self, prefix: str) -> int:
        """Not under the per-operation budget: an admin action, not the request path."""
        try:
            removed = 0
            async for batch in _batched(self._client.scan_iter(match=_glob_escape(prefix) + "*",
                                                               count=500), 500):
                removed += int(await self._client.delete(*batch))
            return removed
        except (RedisError, OSError) as exc:
            log.warning("response cache: deleting %r failed: %s", prefix, exc)
            return 0

    def health(self) -> dict[str, Any]:
        return {"backend": self.name, "ok": self._up, "state": "up" if self._up else "down",
                "down_for_s": None if self._down_since is None
                else round(self._clock() - self._down_since, 1),
                "last_error": self.last_error or None, "errors": self.stats.errors,
                "skipped": self.stats.skipped}

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        try:
            await self._client.aclose()
        except (RedisError, OSError):
            pass


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


async def _batched(it: Any, size: int) -> Any:
    batch: list[Any] = []
    async for item in it:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch

"""Rate limits, budgets and max_tokens caps, checked in the handler before a request is routed.

Rate limits are token buckets kept in Redis and updated by one Lua script (atomic, with Redis's own
clock), so every gateway replica draws from the same bucket: a key with ``rpm: 60`` gets 60 requests a
minute across all replicas, refilled continuously. Each key has a request bucket and a token bucket.
A request reserves ``prompt estimate + max_tokens`` tokens up front; when it finishes the reservation
is corrected to the actual usage (refunded or charged), so long answers cannot slip past the limit.

If Redis is unreachable or slow (``limits.redis_timeout_ms``), requests pass (fail open): an outage of
the limiter must not become an outage of the gateway. Each such pass is counted
(``slmgw_limits_fail_open_total``) and the outage is logged at most once per interval.

Budgets are USD per tenant (``limits.tenants.*.budget_usd``) and per key (``slmgw keys create
--budget-usd``), compared against the sum of ``cost_usd`` in the ledger since the start of the period.
The sum is cached for ``limits.budget_cache_s``, and each finished request's cost is added to it at
once in the process that served it; other replicas' spend arrives with the next read, so a budget can
be overrun by what other replicas spend in those few seconds. A ledger that cannot be read never counts
as zero spend: the last known sum plus this process's own charges stays in force, and a scope whose
spend was never read is refused with a retryable 503 ``budget_unavailable`` until the ledger answers.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from gateway.errors import GatewayError, InvalidRequest, RateLimited

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from sqlalchemy.ext.asyncio import AsyncEngine

    from gateway.auth import Caller
    from gateway.config import Policy, TenantLimits
    from gateway.costs import Cost
    from gateway.records import RequestRecord

log = logging.getLogger(__name__)

# Token buckets: hash {l: level, t: ms}. ARGV: rpm, tpm, tokens wanted (0 = unlimited bucket).
# Returns {allowed, request level, token level, retry-after ms}; levels are strings (Lua floats).
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function level(key, cap)
  if cap <= 0 then return 0 end
  local v = redis.call('HMGET', key, 'l', 't')
  local l, ts = tonumber(v[1]), tonumber(v[2])
  if l == nil or ts == nil then return cap end
  return math.min(cap, l + math.max(0, now - ts) * cap / 60000.0)
end
local function save(key, cap, l)
  if cap > 0 then
    redis.call('HSET', key, 'l', tostring(l), 't', tostring(now))
    redis.call('PEXPIRE', key, 120000)
  end
end
local rpm, tpm, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local rl, tl = level(KEYS[1], rpm), level(KEYS[2], tpm)
local ok, wait = 1, 0
if rpm > 0 and rl < 1 then ok = 0; wait = math.max(wait, (1 - rl) * 60000.0 / rpm) end
if tpm > 0 and tl < want then ok = 0; wait = math.max(wait, (want - tl) * 60000.0 / tpm) end
if ok == 1 then rl = rl - 1; tl = tl - want end
save(KEYS[1], rpm, rl)
save(KEYS[2], tpm, tl)
return {ok, tostring(rl), tostring(tl), math.ceil(wait)}
"""

# Correct a token reservation: ARGV tpm, delta (positive refunds, negative charges; may go below 0).
_ADJUST = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cap, delta = tonumber(ARGV[1]), tonumber(ARGV[2])
local v = redis.call('HMGET', KEYS[1], 'l', 't')
local l, ts = tonumber(v[1]), tonumber(v[2])
if l == nil or ts == nil then l = cap; ts = now end
l = math.min(cap, math.min(cap, l + math.max(0, now - ts) * cap / 60000.0) + delta)
redis.call('HSET', KEYS[1], 'l', tostring(l), 't', tostring(now))
redis.call('PEXPIRE', KEYS[1], 120000)
return tostring(l)
"""


def _duration(seconds: float) -> str:
    """OpenAI's reset format: ``1s``, ``6m0s``, ``120ms``."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    total = math.ceil(seconds)
    minutes, secs = divmod(total, 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def estimate_tokens(kind: str, body: dict[str, Any], completion: int) -> int:
    """Up-front token charge: about 4 characters per prompt token, plus the completion allowance."""
    source = body.get("messages") if kind == "chat" else body.get("prompt") if kind == "completion" \
        else body.get("input")
    try:
        chars = len(orjson.dumps(source))
    except (TypeError, orjson.JSONEncodeError):
        chars = 0
    n = body.get("n")
    choices = n if isinstance(n, int) and n > 0 else 1
    return max(1, chars // 4) + (0 if kind == "embedding" else completion * choices)


@dataclass(slots=True)
class Grant:
    """What ``admit`` let through: response headers and the reservation to settle."""

    headers: dict[str, str] = field(default_factory=dict)
    reserved_tokens: int = 0
    bucket: str | None = None
    tpm: int = 0


class RateLimiter:
    def __init__(self, redis: Redis, prefix: str, timeout_s: float, log_interval_s: float) -> None:
        self.redis = redis
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.log_interval_s = log_interval_s
        self._take = redis.register_script(_TAKE)
        self._adjust = redis.register_script(_ADJUST)
        self.fail_open = 0
        self.down_since: float | None = None
        self._last_log = 0.0
        self._retry_at = 0.0
        self._backoff = 0.5
        self.on_fail_open: Callable[[], None] | None = None

    def _failed(self, exc: BaseException) -> None:
        self.fail_open += 1
        if self.on_fail_open is not None:
            self.on_fail_open()
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
        # Skip Redis for a short, growing pause so a dead Redis does not add its timeout to every request.
        self._retry_at = now + self._backoff
        self._backoff = min(self._backoff * 2, 5.0)
        if now - self._last_log >= self.log_interval_s:
            self._last_log = now
            log.warning("rate limiter: Redis unavailable (%s: %s); requests pass unlimited (fail open)",
                        type(exc).__name__, exc)

    def _ok(self) -> None:
        if self.down_since is not None:
            log.info("rate limiter: Redis reachable again after %.1f s", time.monotonic() - self.down_since)
        self.down_since = None
        self._backoff = 0.5

    async def take(self, bucket: str, rpm: int, tpm: int, tokens: int) -> tuple[bool, float, float, float] | None:
        """Atomically take one request and ``tokens`` tokens; None when Redis could not be asked."""
        if time.monotonic() < self._retry_at:
            self.fail_open += 1
            if self.on_fail_open is not None:
                self.on_fail_open()
            return None
        try:
            res = await asyncio.wait_for(
                self._take(keys=[f"{self.prefix}{bucket}:r", f"{self.prefix}{bucket}:t"], args=[rpm, tpm, tokens]),
                self.timeout_s)
        except Exception as exc:
            self._failed(exc)
            return None
        self._ok()
        ok, rl, tl, wait_ms = res
        return bool(int(ok)), float(rl), float(tl), int(wait_ms) / 1000.0

    async def adjust(self, bucket: str, tpm: int, delta: int) -> None:
        if delta == 0 or time.monotonic() < self._retry_at:
            return
        try:
            await asyncio.wait_for(self._adjust(keys=[f"{self.prefix}{bucket}:t"], args=[tpm, delta]),
                                   self.timeout_s * 4)
        except Exception as exc:
            self._failed(exc)


_QUERY_TIMEOUT_S = 3.0


class BudgetUnavailable(GatewayError):
    status = 503
    type = "service_unavailable"
    code = "budget_unavailable"


class Budgets:
    """Spend per tenant / key: the ledger's sum, cached for ``budget_cache_s``, plus what this process
    has charged since that sum was read.

    A ledger that cannot be read (down, or slower than ``_QUERY_TIMEOUT_S``) never counts as zero spend:
    the last sum read stays in force and this process's own charges keep adding to it. A scope whose
    spend was never read is refused (503 ``budget_unavailable``, retryable) until the ledger answers.
    """

    def __init__(self, engine: AsyncEngine, period: str, cache_s: float) -> None:
        self.engine = engine
        self.period = period
        self.cache_s = cache_s
        self._cache: dict[tuple[str, str | None], tuple[float, float, datetime | None]] = {}
        """scope -> (ledger sum, monotonic time read, period start it was read for)"""
        self._local: dict[tuple[str, str | None], float] = {}
        """scope -> USD charged by this process since the cached sum's query started"""
        self._inflight: dict[tuple[str, str | None], asyncio.Task[float]] = {}
        self.errors = 0
        self.failing = False

    def since(self, now: datetime | None = None) -> datetime | None:
        now = now or datetime.now(UTC)
        if self.period == "day":
            return now.replace(hour=0, minute=0, second=0, microsecond=0)
        if self.period == "month":
            return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        return None

    async def _query(self, tenant: str, key_id: str | None, start: datetime | None) -> float:
        import sqlalchemy as sa

        from gateway.ledger.schema import requests

        q = sa.select(sa.func.coalesce(sa.func.sum(requests.c.cost_usd), 0.0)).where(requests.c.tenant == tenant)
        if start is not None:
            q = q.where(requests.c.ts >= start)
        if key_id is not None:
            q = q.where(requests.c.key_id == key_id)
        async with self.engine.connect() as conn:
            return float((await conn.execute(q)).scalar_one())

    def charge(self, tenant: str, key_id: str | None, usd: float) -> None:
        """Count a finished request's cost at once, before the ledger has written (and the next query
        has read) its row."""
        if usd <= 0:
            return
        for scope in ((tenant, None), (tenant, key_id)) if key_id is not None else ((tenant, None),):
            self._local[scope] = self._local.get(scope, 0.0) + usd

    async def spent(self, tenant: str, key_id: str | None = None) -> float:
        scope = (tenant, key_id)
        start = self.since()
        cached = self._cache.get(scope)
        if cached is not None and cached[2] != start:  # a new period began: the old sum no longer applies
            self._cache.pop(scope, None)
            self._local.pop(scope, None)
            cached = None
        now = time.monotonic()
        if cached is not None and now - cached[1] < self.cache_s:
            return cached[0] + self._local.get(scope, 0.0)
        local_at_start = self._local.get(scope, 0.0)
        task = self._inflight.get(scope)
        if task is None:  # one query per scope at a time, however many requests wait for it
            task = asyncio.create_task(asyncio.wait_for(self._query(tenant, key_id, start), _QUERY_TIMEOUT_S))
            self._inflight[scope] = task
            task.add_done_callback(lambda _t: self._inflight.pop(scope, None))
        try:
            value = await asyncio.shield(task)
        except Exception as exc:
            self.errors += 1
            if not self.failing:  # once per outage, not once per scope and cache period
                log.warning("budget check: ledger unreadable (%s); enforcing the last known spend plus this "
                            "process's charges", type(exc).__name__)
            self.failing = True
            if cached is None:
                raise BudgetUnavailable("The spend of this key's budget cannot be read right now; "
                                        "please retry shortly.") from None
            self._cache[scope] = (cached[0], now, start)  # don't retry on every request while it is down
            return cached[0] + self._local.get(scope, 0.0)
        if self.failing:
            log.info("budget check: ledger readable again")
            self.failing = False
        # Charges made while the query ran may or may not be in its sum: keep them (over- not under-count).
        self._local[scope] = max(0.0, self._local.get(scope, 0.0) - local_at_start)
        self._cache[scope] = (value, time.monotonic(), start)
        return value + self._local[scope]

    async def close(self) -> None:
        await self.engine.dispose()


class Limits:
    def __init__(self, policy: Policy, limiter: RateLimiter | None, budgets: Budgets | None) -> None:
        self.policy = policy
        self.cfg = policy.limits
        self.limiter = limiter
        self.budgets = budgets
        self._pending: set[asyncio.Task[None]] = set()

    @classmethod
    def from_policy(cls, policy: Policy) -> Limits:
        cfg = policy.limits
        limiter = None
        if cfg.redis_url:
            from redis.asyncio import Redis

            timeout = cfg.redis_timeout_ms / 1000
            redis = Redis.from_url(cfg.redis_url, socket_timeout=max(timeout, 0.05) * 4,
                                   socket_connect_timeout=max(timeout, 0.05) * 4, health_check_interval=0)
            limiter = RateLimiter(redis, cfg.key_prefix, timeout, cfg.fail_open_log_interval_s)
        budgets = None
        if cfg.default.budget_usd is not None or any(t.budget_usd is not None for t in cfg.tenants.values()) \
                or policy.auth.key_store.enabled:
            from gateway.ledger.store import create_engine, normalize_url

            engine = create_engine(normalize_url(policy.ledger.url, policy.base_dir), connect_timeout_s=2.0)
            budgets = Budgets(engine, cfg.budget_period, cfg.budget_cache_s)
        return cls(policy, limiter, budgets)

    async def start(self) -> None:
        """Open a Redis connection now (with a start-up-sized timeout), not on the first request."""
        if self.limiter is not None:
            try:
                await asyncio.wait_for(self.limiter.redis.ping(), 2.0)
            except Exception as exc:
                log.warning("rate limiter: Redis not reachable at start (%s); failing open until it is",
                            type(exc).__name__)

    # -- the check --------------------------------------------------------------------------------
    def cap_max_tokens(self, kind: str, body: dict[str, Any], limits: TenantLimits) -> int:
        """Apply the tenant's max_tokens cap (400 above it; set when absent). Returns the allowance."""
        if kind == "embedding":
            return 0
        asked: list[int] = [v for k in ("max_tokens", "max_completion_tokens") if isinstance(v := body.get(k), int)]
        cap = limits.max_tokens
        if cap is not None:
            for value in asked:
                if value > cap:
                    raise InvalidRequest(f"max_tokens is {value}; this key's limit is {cap}.", param="max_tokens")
            if not asked:
                body["max_completion_tokens" if kind == "chat" and "max_tokens" not in body else "max_tokens"] = cap
                return cap
        return max(asked) if asked else self.cfg.default_completion_tokens

    async def admit(self, caller: Caller, kind: str, body: dict[str, Any]) -> Grant:
        """Raise ``RateLimited`` (429) or ``InvalidRequest`` (400), or return the grant to settle later."""
        limits = self.cfg.for_tenant(caller.tenant)
        completion = self.cap_max_tokens(kind, body, limits)
        await self._check_budgets(caller, limits)
        rpm = caller.rpm or limits.rpm or 0
        tpm = caller.tpm or limits.tpm or 0
        grant = Grant()
        if self.limiter is None or not (rpm or tpm):
            return grant
        tokens = estimate_tokens(kind, body, completion) if tpm else 0
        if tpm and tokens > tpm:
            raise RateLimited(f"Request too large: about {tokens} tokens (prompt + max_tokens) against a limit "
                              f"of {tpm} tokens per minute. Lower max_tokens or shorten the prompt.",
                              code="request_too_large", headers={"x-should-retry": "false"})
        res = await self.limiter.take(caller.key_id, rpm, tpm, tokens)
        if res is None:
            return grant  # fail open
        ok, req_level, tok_level, wait_s = res
        headers: dict[str, str] = {}
        if rpm:
            headers["x-ratelimit-limit-requests"] = str(rpm)
            headers["x-ratelimit-remaining-requests"] = str(max(0, math.floor(req_level)))
            headers["x-ratelimit-reset-requests"] = _duration((rpm - req_level) * 60 / rpm)
        if tpm:
            headers["x-ratelimit-limit-tokens"] = str(tpm)
            headers["x-ratelimit-remaining-tokens"] = str(max(0, math.floor(tok_level)))
            headers["x-ratelimit-reset-tokens"] = _duration((tpm - tok_level) * 60 / tpm)
        if not ok:
            which = "requests" if rpm and req_level < 1 else "tokens"
            limit = rpm if which == "requests" else tpm
            raise RateLimited(f"Rate limit reached for {which} per minute (limit {limit}) on key {caller.key_id}. "
                              f"Please try again in {_duration(wait_s)}.",
                              headers={**headers, "retry-after": str(max(1, math.ceil(wait_s))),
                                       "retry-after-ms": str(max(1, math.ceil(wait_s * 1000)))})
        grant.headers = headers
        if tpm:
            grant.reserved_tokens, grant.bucket, grant.tpm = tokens, caller.key_id, tpm
        return grant

    async def _check_budgets(self, caller: Caller, limits: TenantLimits) -> None:
        if self.budgets is None:
            return
        checks: list[tuple[str, float, str | None]] = []
        if limits.budget_usd is not None:
            checks.append((f"tenant {caller.tenant!r}", limits.budget_usd, None))
        if caller.budget_usd is not None:
            checks.append((f"key {caller.key_id}", caller.budget_usd, caller.key_id))
        for who, budget, key_id in checks:
            spent = await self.budgets.spent(caller.tenant, key_id)
            if spent >= budget:
                period = {"day": "today", "month": "this month", "total": "in total"}[self.budgets.period]
                err = RateLimited(f"Budget exhausted: {who} has spent ${spent:.4f} {period} of its "
                                  f"${budget:.4f} budget.", code="insufficient_quota",
                                  headers={"x-should-retry": "false"})
                err.type = "insufficient_quota"
                raise err

    # -- after the response -----------------------------------------------------------------------
    def settle(self, grant: Grant, rec: RequestRecord, cost: Cost | None = None) -> None:
        """Charge the request's cost to its budgets and correct the token reservation to the actual
        usage (called when the request finishes)."""
        if self.budgets is not None and cost is not None:
            self.budgets.charge(rec.tenant, rec.key_id, cost.cost_usd)
        if self.limiter is None or grant.bucket is None:
            return
        actual = rec.prompt_tokens + rec.completion_tokens
        if actual == 0 and rec.status >= 400:
            actual = 0  # nothing was generated: refund the whole reservation
        delta = grant.reserved_tokens - actual
        if delta == 0:
            return
        try:
            task = asyncio.get_running_loop().create_task(self.limiter.adjust(grant.bucket, grant.tpm, delta))
        except RuntimeError:
            return
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def health(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": True}
        if self.limiter is not None:
            out.update(ok=self.limiter.down_since is None, redis="down" if self.limiter.down_since else "up",
                       fail_open=self.limiter.fail_open)
        if self.budgets is not None:
            out["budget_read_errors"] = self.budgets.errors
        return out

    async def close(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        if self.limiter is not None:
            await self.limiter.redis.aclose()
        if self.budgets is not None:
            await self.budgets.close()

"""Quality floors that act: when a domain's recent audits show, with confidence, that its SLM answers
worse than the floor allows (Wilson 95% upper bound of the non-inferior rate below ``min_non_inferior``),
the guardrail alerts, raises the domain's router threshold, or puts the domain in shadow (the LLM serves
it, the SLM keeps being judged in the background) until an operator resets it.

State is shared by every replica through Redis: a list of the last ``window`` verdicts per domain and
one JSON state per domain. Each process reads the states every ``refresh_s`` and applies them on the
request path from memory. Without Redis, or while it is down, each process keeps its own (logged once).
Every action is written to ``slmgw_guardrail_events`` with its evidence.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.audit.stats import Tally, tally
from gateway.ids import new_id

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from gateway.audit.metrics import AuditMetrics
    from gateway.audit.store import AuditStore
    from gateway.config import AuditConfig, Guardrail

log = logging.getLogger(__name__)


@dataclass(slots=True)
class GuardState:
    """What a guardrail currently does to its domain."""

    action: str | None = None
    """None (nothing), "alert", "raise_threshold" or "shadow"."""
    threshold_delta: float = 0.0
    """Added to the domain's router threshold (raise_threshold, cumulative until reset)."""
    since: float = 0.0
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes | None) -> GuardState:
        if not raw:
            return cls()
        data = json.loads(raw)
        return cls(data.get("action"), float(data.get("threshold_delta") or 0.0), float(data.get("since") or 0.0),
                   data.get("evidence") or {})


class Guardrails:
    def __init__(self, config: AuditConfig, thresholds: dict[str, float], store: AuditStore | None,
                 refresh_s: float = 2.0) -> None:
        self.config = config
        self.rules: dict[str, Guardrail] = dict(config.guardrails)
        self.thresholds = thresholds
        """Each guarded domain's base router threshold (raise_threshold adds to it)."""
        self.store = store
        self.refresh_s = refresh_s
        self._states: dict[str, GuardState] = {d: GuardState() for d in self.rules}
        self._windows: dict[str, deque[str]] = {d: deque(maxlen=r.window) for d, r in self.rules.items()}
        self._redis: Redis | None = None
        self._redis_down = False
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.trips = 0
        self.metrics: AuditMetrics | None = None
        self.on_change: Callable[[str, GuardState], None] | None = None
        """Called after an action or a reset (the audit process tells the serving process)."""

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        if self.config.redis_url and self.rules:
            from redis.asyncio import Redis

            self._redis = Redis.from_url(self.config.redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
            await self.refresh()
            self._task = asyncio.get_running_loop().create_task(self._refresh_loop(), name="guardrails")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._redis is not None:
            await self._redis.aclose()

    def _key(self, kind: str, domain: str) -> str:
        return f"{self.config.key_prefix}{kind}:{domain}"

    def _down(self, exc: BaseException) -> None:
        if not self._redis_down:
            log.warning("guardrails: Redis unavailable (%s); each process keeps its own windows and actions "
                        "until it is back", type(exc).__name__)
        self._redis_down = True

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            await self.refresh()

    async def refresh(self) -> None:
        """Read every guarded domain's shared state (so an action or reset on one replica reaches all)."""
        if self._redis is None:
            return
        domains = list(self.rules)
        try:
            raw = await self._redis.mget([self._key("state", d) for d in domains])
        except Exception as exc:
            self._down(exc)
            return
        if self._redis_down:
            log.info("guardrails: Redis available again")
            self._redis_down = False
        for domain, value in zip(domains, raw, strict=True):
            self._states[domain] = GuardState.from_json(value)
        self._export()

    def _export(self) -> None:
        """Each domain's current action as the gauge ``slmgw_guardrail_active{domain, action}``."""
        if self.metrics is None:
            return
        for domain, state in self._states.items():
            for action in ("alert", "raise_threshold", "shadow"):
                self.metrics.guardrail.labels(domain, action).set(1 if state.action == action else 0)

    # -- the request path ----------------------------------------------------------------------------
    def state(self, domain: str | None) -> GuardState | None:
        """The domain's guard state when it changes routing (shadow, raised threshold), else None."""
        if domain is None:
            return None
        found = self._states.get(domain)
        return found if found is not None and found.action in ("shadow", "raise_threshold") else None

    def states(self) -> dict[str, GuardState]:
        return dict(self._states)

    # -- verdicts ----------------------------------------------------------------------------------
    async def observe(self, domain: str, verdict: str) -> GuardState | None:
        """Add a verdict to the domain's window; act if the floor is missed with confidence. Returns the
        new state when an action fired."""
        rule = self.rules.get(domain)
        if rule is None:
            return None
        async with self._lock:
            window = await self._push(domain, verdict, rule.window)
            current = self._states.get(domain)
            if current is not None and current.action == rule.action and rule.action != "raise_threshold":
                return None  # already acting (alert, shadow): the window keeps gathering evidence for a reset
            counts = tally(window)
            if counts.judged < rule.min_samples:
                return None
            ci = counts.interval()
            assert ci is not None
            if ci[1] >= rule.min_non_inferior:
                return None
            return await self._trip(domain, rule, counts, ci)

    async def _push(self, domain: str, verdict: str, size: int) -> list[str]:
        if self._redis is not None:
            key = self._key("window", domain)
            try:
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.lpush(key, verdict)
                    pipe.ltrim(key, 0, size - 1)
                    pipe.lrange(key, 0, size - 1)
                    res = await pipe.execute()
                return [v.decode() if isinstance(v, bytes) else str(v) for v in res[2]]
            except Exception as exc:
                self._down(exc)
        window = self._windows.setdefault(domain, deque(maxlen=size))
        window.appendleft(verdict)
        return list(window)

    async def _trip(self, domain: str, rule: Guardrail, counts: Tally, ci: tuple[float, float]) -> GuardState:
        old = self._states.get(domain) or GuardState()
        delta = old.threshold_delta
        if rule.action == "raise_threshold":
            base = self.thresholds.get(domain, 0.5)
            delta = min(old.threshold_delta + rule.threshold_step, max(0.0, rule.max_threshold - base))
        evidence = {"window": counts.as_dict(), "floor": rule.min_non_inferior, "ci_high": round(ci[1], 6),
                    "action": rule.action, "threshold": round(self.thresholds.get(domain, 0.5) + delta, 6)}
        state = GuardState(rule.action, delta, time.time(), evidence)
        self._states[domain] = state
        self.trips += 1
        log.error("guardrail %s: non-inferior rate %.3f (95%% CI %.3f-%.3f over %d judged audits) is below the "
                  "floor %.2f; action: %s", domain, counts.non_inferior_rate or 0.0, ci[0], ci[1], counts.judged,
                  rule.min_non_inferior, rule.action)
        await self._save(domain, state, clear_window=True)
        self._event(domain, rule.action, "guardrail", evidence)
        self._export()
        if self.on_change is not None:
            self.on_change(domain, state)
        return state

    async def reset(self, domain: str, actor: str) -> GuardState:
        """Back to normal routing (an operator's call); the window starts afresh."""
        if domain not in self.rules:
            raise KeyError(domain)
        async with self._lock:
            old = self._states.get(domain) or GuardState()
            state = GuardState()
            self._states[domain] = state
            await self._save(domain, state, clear_window=True)
            self._event(domain, "reset", actor, {"previous": asdict(old)})
        self._export()
        if self.on_change is not None:
            self.on_change(domain, state)
        return state

    def apply(self, domain: str, state: GuardState) -> None:
        """Adopt a state decided elsewhere (the audit process, without Redis)."""
        if domain in self.rules:
            self._states[domain] = state
            self._export()

    async def _save(self, domain: str, state: GuardState, clear_window: bool) -> None:
        if clear_window:  # the next decision needs evidence gathered under the new state
            self._windows.get(domain, deque()).clear()
        if self._redis is None:
            return
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(self._key("state", domain), state.to_json())
                if clear_window:
                    pipe.delete(self._key("window", domain))
                await pipe.execute()
        except Exception as exc:
            self._down(exc)

    def _event(self, domain: str, action: str, actor: str, evidence: dict[str, Any]) -> None:
        if self.store is None:
            return
        from gateway.audit.tables import GUARDRAIL_EVENTS

        self.store.add(GUARDRAIL_EVENTS, {"id": new_id(), "ts": time.time(), "domain": domain, "action": action,
                                          "actor": actor[:128], "evidence": evidence})

    def health(self) -> dict[str, Any]:
        return {"ok": not self._redis_down, "trips": self.trips,
                "domains": {d: s.action for d, s in self._states.items()}}

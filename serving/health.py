"""Health of the vLLM replicas: polling, a circuit breaker per replica, least-outstanding selection.

A replica is one vLLM server (one URL in some backend's ``base_urls``); several backends (LoRA
adapters) usually share it, so its state is kept once per URL. The poller asks each replica's
``/health`` and ``/v1/models`` every ``health_interval_s``. A replica that fails a probe, refuses a
connection, or fails ``FAILURES_TO_OPEN`` requests in a row is taken out ("down": the breaker is open)
and probed again after 1 s, 2 s, 4 s, ... up to ``max_backoff_s``; a good probe lets requests through
again (half-open: one more failure takes it out for twice as long), a good request closes the breaker.
``/v1/models`` also tells which adapters a replica serves: a backend whose model is not listed there is
never sent to that replica, and is reported (at start-up in the log, and always by ``health()``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp

from gateway.config import Policy, SlmBackend

log = logging.getLogger("slmgw.serving")

FAILURES_TO_OPEN = 3
"""Consecutive failed requests (timeouts, 5xx) that take a replica out; a refused connection does at once."""
PROBE_TIMEOUT_S = 5.0

State = Literal["unknown", "up", "down"]


@dataclass(slots=True)
class Replica:
    url: str
    """OpenAI API root, e.g. http://vllm:8000/v1."""
    max_backoff_s: float = 30.0
    state: State = "unknown"
    outstanding: int = 0
    failures: int = 0
    """Consecutive failures (requests or probes) since the last success."""
    backoff_s: float = 0.0
    retry_at: float = 0.0
    """Monotonic time of the next probe while down."""
    models: frozenset[str] | None = None
    """Names /v1/models listed at the last good probe (None: never probed successfully)."""
    last_error: str | None = None
    last_probe: float = 0.0
    """Monotonic time of the last probe."""
    picked: int = 0
    half_open: bool = False

    @property
    def root(self) -> str:
        """Server root, where vLLM serves /health and /tokenize (the API root without /v1)."""
        return self.url[:-3] if self.url.endswith("/v1") else self.url

    def serves(self, model: str) -> bool:
        return self.models is None or model in self.models

    def mark_up(self, models: frozenset[str] | None = None) -> None:
        """A good probe. From down this is half-open: requests flow again, but the first failure takes
        the replica out at once, for twice as long; a successful request closes the breaker fully.
        While up, a good probe does not clear request failures: /health can pass while requests fail."""
        if self.state == "down":
            log.info("SLM replica %s is back (probe OK)", self.url)
            self.half_open, self.failures = True, 0
        self.state, self.last_error = "up", None
        if models is not None:
            self.models = models

    def request_ok(self) -> None:
        self.state, self.failures, self.half_open, self.backoff_s = "up", 0, False, 0.0

    def mark_down(self, reason: str) -> None:
        if self.state != "down":
            log.warning("SLM replica %s taken out: %s", self.url, reason)
        self.state = "down"
        self.last_error = reason
        self.backoff_s = min(self.max_backoff_s, max(1.0, self.backoff_s * 2))
        self.retry_at = time.monotonic() + self.backoff_s


class SlmHealth:
    """Replica states for every SLM backend of a policy, and the poller that keeps them current."""

    def __init__(self, policy: Policy, session: Callable[[], aiohttp.ClientSession]) -> None:
        self.policy = policy
        self._session = session
        self.replicas: dict[str, Replica] = {}
        self._by_backend: dict[str, list[Replica]] = {}
        for name, backend in policy.slm_backends.items():
            reps = []
            for url in backend.base_urls:
                rep = self.replicas.get(url)
                if rep is None:
                    rep = self.replicas[url] = Replica(url, max_backoff_s=backend.max_backoff_s)
                rep.max_backoff_s = min(rep.max_backoff_s, backend.max_backoff_s)
                reps.append(rep)
            self._by_backend[name] = reps
        self.interval_s = min((b.health_interval_s for b in policy.slm_backends.values()), default=5.0)
        self._task: asyncio.Task[None] | None = None
        self._ticket = itertools.count()
        self._probing: dict[str, asyncio.Task[None]] = {}

    # -- selection --------------------------------------------------------------------------------
    def replicas_of(self, backend: str) -> list[Replica]:
        return self._by_backend[backend]

    def pick(self, backend: str, exclude: set[str]) -> Replica | None:
        """The available replica of ``backend`` with the fewest requests in flight (ties: least recently
        picked), skipping ``exclude``d URLs, replicas that are down, and ones lacking the model."""
        model = self.policy.slm_backends[backend].model
        candidates = [r for r in self._by_backend[backend]
                      if r.url not in exclude and r.state != "down" and r.serves(model)]
        if not candidates:
            return None
        best = min(candidates, key=lambda r: (r.outstanding, r.picked))
        best.picked = next(self._ticket)
        return best

    def unavailable_reason(self, backend: str) -> str:
        """Why ``pick`` found nothing, e.g. ``slm_down:slm_unreachable`` or ``slm_model_missing``."""
        model = self.policy.slm_backends[backend].model
        reps = self._by_backend[backend]
        down = [r for r in reps if r.state == "down"]
        if down and len(down) == len(reps):
            return f"slm_down:{down[0].last_error or 'unknown'}"
        if any(r.state != "down" and not r.serves(model) for r in reps):
            return "slm_model_missing"
        return "slm_no_replica"

    # -- outcomes of requests -----------------------------------------------------------------------
    def record_success(self, rep: Replica) -> None:
        if rep.state != "down":
            rep.request_ok()

    def record_failure(self, rep: Replica, reason: str, model: str) -> None:
        """Feed a failed request into the breaker. 429 is load, not illness: it never opens it."""
        if reason == "slm_overloaded":
            return
        if reason == "slm_rejected_404":
            # vLLM answers 404 for a model it does not serve: stop sending this model there until a
            # probe says otherwise.
            if rep.models is not None:
                rep.models = rep.models - {model}
            else:
                rep.models = frozenset()
            return
        if reason.startswith("slm_rejected"):
            return  # the request was bad for this model (e.g. too long), the replica is fine
        rep.failures += 1
        if reason == "slm_unreachable" or rep.half_open or rep.failures >= FAILURES_TO_OPEN:
            rep.mark_down(reason)

    # -- polling ----------------------------------------------------------------------------------
    async def probe(self, rep: Replica) -> None:
        rep.last_probe = time.monotonic()
        timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S, connect=min(2.0, PROBE_TIMEOUT_S))
        headers = self._auth_headers(rep.url)
        try:
            session = self._session()
            async with session.get(rep.root + "/health", timeout=timeout, headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    rep.mark_down(f"health_http_{resp.status}")
                    return
            async with session.get(rep.url + "/models", timeout=timeout, headers=headers) as resp:
                data = await resp.json(content_type=None)
                if resp.status != 200:
                    rep.mark_down(f"models_http_{resp.status}")
                    return
            models = frozenset(str(m.get("id")) for m in data.get("data", []) if isinstance(m, dict))
        except TimeoutError:
            rep.mark_down("probe_timeout")
            return
        except (aiohttp.ClientError, ValueError, AttributeError) as exc:
            rep.mark_down("slm_unreachable" if isinstance(exc, aiohttp.ClientConnectionError)
                          else f"probe_error:{type(exc).__name__}")
            return
        rep.mark_up(models)

    def _auth_headers(self, url: str) -> dict[str, str]:
        # vLLM's --api-key also guards /v1/models; use the key of any backend on this replica.
        for name, reps in self._by_backend.items():
            key = self.policy.slm_backends[name].api_key
            if key and any(r.url == url for r in reps):
                return {"authorization": f"Bearer {key}"}
        return {}

    async def probe_all(self) -> None:
        await asyncio.gather(*(self.probe(r) for r in self.replicas.values()))

    async def start(self) -> list[str]:
        """Probe every replica once, log what is wrong, and start polling. Returns the problems."""
        if not self.replicas:
            return []
        await self.probe_all()
        problems = self.problems()
        for p in problems:
            log.error("SLM backend problem at start-up: %s", p)
        self._task = asyncio.create_task(self._poll(), name="slmgw-slm-health")
        return problems

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for task in list(self._probing.values()):
            task.cancel()
        self._probing.clear()

    async def _poll(self) -> None:
        tick = min(1.0, self.interval_s)
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            due = [r for r in self.replicas.values() if r.url not in self._probing and (
                (r.state == "down" and now >= r.retry_at)
                or (r.state != "down" and now - r.last_probe >= self.interval_s))]
            for rep in due:
                # Each probe runs on its own so one slow replica never delays the others' probes.
                task = asyncio.create_task(self.probe(rep))
                self._probing[rep.url] = task
                task.add_done_callback(self._probe_done(rep.url))

    def _probe_done(self, url: str) -> Callable[[asyncio.Task[None]], None]:
        def done(_task: asyncio.Task[None]) -> None:
            self._probing.pop(url, None)

        return done

    # -- reporting --------------------------------------------------------------------------------
    def problems(self) -> list[str]:
        """Backends that cannot be served as the policy says: model missing on an up replica, or no
        replica up (then whether the adapter exists cannot be checked)."""
        out = []
        for name, reps in self._by_backend.items():
            model = self.policy.slm_backends[name].model
            for rep in reps:
                if rep.state == "up" and rep.models is not None and model not in rep.models:
                    out.append(f"slm_backends.{name}: {rep.url} does not serve model {model!r} "
                               f"(it serves {sorted(rep.models)})")
            if reps and all(r.state == "down" for r in reps):
                out.append(f"slm_backends.{name}: no replica is up ({reps[0].last_error}); whether it "
                           f"serves {model!r} is unchecked")
        return out

    def backend_state(self, name: str) -> str:
        backend: SlmBackend = self.policy.slm_backends[name]
        reps = self._by_backend[name]
        good = [r for r in reps if r.state != "down" and r.serves(backend.model)]
        if any(r.state == "up" and r.models is not None and backend.model not in r.models for r in reps) \
                and not good:
            return "model_missing"
        if not good:
            return "down"
        return "up" if len(good) == len(reps) else "degraded"

    def health(self) -> dict[str, Any]:
        """For /health/ready: each backend's state and each replica's breaker."""
        now = time.monotonic()
        replicas = {
            r.url: {"state": r.state, "outstanding": r.outstanding, "failures": r.failures,
                    "last_error": r.last_error,
                    "retry_in_s": round(max(0.0, r.retry_at - now), 1) if r.state == "down" else None,
                    "models": sorted(r.models) if r.models is not None else None}
            for r in self.replicas.values()
        }
        backends = {
            name: {"model": self.policy.slm_backends[name].model, "state": self.backend_state(name),
                   "replicas": [r.url for r in reps]}
            for name, reps in self._by_backend.items()
        }
        states = {b["state"] for b in backends.values()}
        status = "ok" if states <= {"up"} else "degraded"
        return {"status": status, "backends": backends, "replicas": replicas, "problems": self.problems()}

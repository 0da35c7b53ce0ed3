"""The serving worker's side of audits: sample on the request path, hand sampled requests to the audit
process (``gateway.audit.worker``), and apply what it reports (verdict metrics, guardrail states,
counters). ``submit`` is a queue put: no model call, no database write, no litellm on this process's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import queue
import random
import threading
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.audit.guardrails import Guardrails
    from gateway.audit.metrics import AuditMetrics
    from gateway.audit.service import AuditJob
    from gateway.config import AuditConfig, Policy

log = logging.getLogger(__name__)


class AuditClient:
    def __init__(self, policy: Policy, config: AuditConfig, guardrails: Guardrails | None,
                 metrics: AuditMetrics | None, rng: random.Random | None = None) -> None:
        self.policy = policy
        self.config = config
        self.guardrails = guardrails
        self.metrics = metrics
        self.rng = rng or random.Random()
        ctx = multiprocessing.get_context("spawn")  # a clean interpreter: no inherited threads or sockets
        # Plain one-way pipes (no semaphores to leak); a local queue and a sender thread keep the request
        # path from ever blocking on a full pipe.
        self._jobs: queue.Queue[tuple[Any, ...]] = queue.Queue(maxsize=max(64, config.max_in_flight * 4))
        jobs_out, self._jobs_in = ctx.Pipe(duplex=False)
        self._events, events_in = ctx.Pipe(duplex=False)
        self._proc: Any = ctx.Process(
            target=_worker_main, name="slmgw-audit",
            args=(policy.model_dump(mode="json"), policy.base_dir, jobs_out, events_in,
                  logging.getLogger().getEffectiveLevel()), daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self.stats: dict[str, Any] = {"running": 0, "done": 0, "skipped": {"busy": 0, "budget": 0},
                                      "spent_today_usd": 0.0, "daily_budget_usd": config.daily_budget_usd}
        self.queue_full = 0

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self, ready_within_s: float = 60.0) -> None:
        self._loop = asyncio.get_running_loop()
        self._proc.start()
        threading.Thread(target=self._read_events, name="audit-events", daemon=True).start()
        threading.Thread(target=self._send_jobs, name="audit-jobs", daemon=True).start()
        if not await asyncio.to_thread(self._ready.wait, ready_within_s):
            log.warning("audits: the audit process is not ready after %.0fs; sampled requests queue up",
                        ready_within_s)

    async def close(self, within_s: float = 15.0) -> None:
        """Let running audits finish and their verdicts be written, then stop the audit process."""
        with contextlib.suppress(Exception):
            self._jobs.put(("stop",), timeout=1.0)
        await asyncio.to_thread(self._proc.join, within_s)
        if self._proc.is_alive():
            log.warning("audits: the audit process did not stop in %.0fs; killing it", within_s)
            self._proc.kill()
            await asyncio.to_thread(self._proc.join, 5.0)
        for conn in (self._jobs_in, self._events):
            with contextlib.suppress(Exception):
                conn.close()

    # -- the request path --------------------------------------------------------------------------
    def rate(self, domain: str) -> float:
        return self.config.domain_rates.get(domain, self.config.sample_rate)

    def sample(self, domain: str | None) -> bool:
        return domain is not None and self.rate(domain) > 0 and self.rng.random() < self.rate(domain)

    def submit(self, job: AuditJob) -> bool:
        """Queue a sampled request for the audit process; False (counted) when its queue is full."""
        try:
            self._jobs.put_nowait(("job", asdict(job)))
        except queue.Full:
            self.queue_full += 1
            if self.metrics is not None:
                self.metrics.skipped.labels("busy").inc()
            return False
        return True

    def reset(self, domain: str, actor: str) -> None:
        """Reset a guardrail (the audit process records it and, with Redis, tells every replica)."""
        self._jobs.put(("reset", domain, actor))
        if self.guardrails is not None:
            from gateway.audit.guardrails import GuardState

            self.guardrails.apply(domain, GuardState())

    # -- events from the audit process ---------------------------------------------------------------
    def _send_jobs(self) -> None:
        while True:
            message = self._jobs.get()
            try:
                self._jobs_in.send(message)
            except (OSError, ValueError):  # the audit process is gone
                log.warning("audits: the audit process is not running; sampled requests are not audited")
                return
            if message[0] == "stop":
                return

    def _read_events(self) -> None:
        while True:
            try:
                event = self._events.recv()
            except (EOFError, OSError):
                return
            if event[0] == "ready":
                self._ready.set()
                continue
            if self._loop is not None and not self._loop.is_closed():
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(self._apply, event)

    def _apply(self, event: tuple[Any, ...]) -> None:
        kind = event[0]
        if kind == "stats":
            self.stats = event[1]
        elif kind == "verdict" and self.metrics is not None:
            self.metrics.observe(event[1], event[2], event[3], event[4])
        elif kind == "skipped" and self.metrics is not None:
            self.metrics.skipped.labels(event[1]).inc()
        elif kind == "guard" and self.guardrails is not None:
            from gateway.audit.guardrails import GuardState

            data = event[2]
            self.guardrails.apply(event[1], GuardState(data.get("action"), float(data.get("threshold_delta") or 0),
                                                       float(data.get("since") or 0), data.get("evidence") or {}))

    def health(self) -> dict[str, Any]:
        skipped = dict(self.stats.get("skipped", {}))
        skipped["busy"] = skipped.get("busy", 0) + self.queue_full
        return {**self.stats, "skipped": skipped, "ok": bool(self._proc.is_alive()), "process": self._proc.pid}


def _worker_main(policy_data: dict[str, Any], base_dir: str, jobs: Any, events: Any, log_level: int) -> None:
    from gateway.audit.worker import main

    main(policy_data, base_dir, jobs, events, log_level)

"""Sampled audits of SLM answers, in the background.

For a sampled request the SLM answered (``mode="audit"``), the same request goes to the reference LLM,
and the judge compares the two answers in both orders (``gateway.audit.judge``). In router shadow mode,
or while a guardrail shadows a domain (``mode="shadow"``), the LLM served the request; a sampled one that
the router would have given an SLM is sent to that SLM and its answer judged against the served one.

Nothing here runs on the client's time: ``submit`` starts a task and returns. Audits beyond
``max_in_flight`` or the daily budget are skipped and counted; a failing or hanging reference or judge
ends in an ``error`` verdict after ``timeout_s``, never in a client error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from gateway.audit.judge import Judgement, Pick, combine, judge_request, parse_pick, rubric_for
from gateway.audit.tables import AUDITS
from gateway.audit.texts import answer_text, request_text
from gateway.cache.entry import entry_tokens
from gateway.ids import new_id

if TYPE_CHECKING:
    from gateway.audit.guardrails import Guardrails
    from gateway.audit.metrics import AuditMetrics
    from gateway.audit.store import AuditStore
    from gateway.config import AuditConfig, Policy
    from gateway.costs import CostModel
    from serving.dispatch import Dispatcher

log = logging.getLogger(__name__)


@dataclass(slots=True)
class AuditJob:
    """One sampled request and the answer it got."""

    request_id: str
    tenant: str
    domain: str
    kind: Literal["chat", "completion"]
    body: dict[str, Any]
    """The request as sent upstream (stream fields removed)."""
    mode: Literal["audit", "shadow"]
    slm_backend: str
    served_text: str
    """The answer the client got: the SLM's (audit) or the LLM's (shadow)."""
    served_cost_usd: float
    served_model: str


class Auditor:
    def __init__(self, policy: Policy, config: AuditConfig, dispatcher: Dispatcher, costs: CostModel,
                 store: AuditStore, guardrails: Guardrails | None = None, metrics: AuditMetrics | None = None,
                 rng: random.Random | None = None) -> None:
        self.policy = policy
        self.config = config
        self.dispatcher = dispatcher
        self.costs = costs
        self.store = store
        self.guardrails = guardrails
        self.metrics = metrics
        self.rng = rng or random.Random()
        self.reference = config.reference or policy.fallback.llm[0]
        self.judge = config.judge or self.reference
        self._tasks: set[asyncio.Task[Any]] = set()
        self._day = ""
        self._spent = 0.0
        self.skipped: dict[str, int] = {"busy": 0, "budget": 0}
        self.done = 0
        self.emit: Callable[[tuple[Any, ...]], None] | None = None
        """Where events go when the auditor runs in the audit process: ("verdict", domain, mode, verdict,
        cost), ("skipped", reason), ("stats", health)."""
        self._redis: Any = None
        if config.redis_url:
            from redis.asyncio import Redis

            self._redis = Redis.from_url(config.redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)

    # -- sampling (request path: cheap, never raises) -----------------------------------------------
    def rate(self, domain: str) -> float:
        return self.config.domain_rates.get(domain, self.config.sample_rate)

    def sample(self, domain: str | None) -> bool:
        return domain is not None and self.rate(domain) > 0 and self.rng.random() < self.rate(domain)

    def spent_today(self) -> float:
        today = datetime.now(UTC).strftime("%Y-%m-%d")
        if today != self._day:
            self._day, self._spent = today, 0.0
        return self._spent

    def submit(self, job: AuditJob) -> bool:
        """Start the audit in the background; False (and counted) when over budget or too busy."""
        reason = None
        if self.spent_today() >= self.config.daily_budget_usd:
            reason = "budget"
        elif len(self._tasks) >= self.config.max_in_flight:
            reason = "busy"
        if reason is not None:
            self.skipped[reason] += 1
            if self.metrics is not None:
                self.metrics.skipped.labels(reason).inc()
            self._emit(("skipped", reason))
            return False
        task = asyncio.get_running_loop().create_task(self._run(job), name=f"audit-{job.request_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._emit(None)
        return True

    def _emit(self, event: tuple[Any, ...] | None) -> None:
        if self.emit is None:
            return
        if event is not None:
            self.emit(event)
        self.emit(("stats", self.health()))

    async def drain(self) -> None:
        """Wait for running audits (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self, within_s: float = 5.0) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.drain(), within_s)
        for task in list(self._tasks):
            task.cancel()
        await self.close_redis()

    # -- one audit -----------------------------------------------------------------------------------
    async def _run(self, job: AuditJob) -> None:
        row: dict[str, Any] = {
            "id": new_id(), "request_id": job.request_id[:128], "ts": time.time(), "tenant": job.tenant[:128],
            "domain": job.domain, "mode": job.mode, "slm_backend": job.slm_backend,
            "slm_model": self.policy.slm_backends[job.slm_backend].model,
            "reference_model": job.served_model if job.mode == "shadow" else
            self.policy.llm_backends[self.reference].model,
            "judge_model": self.policy.llm_backends[self.judge].model,
            "verdict": "error", "order1": None, "order2": None, "disagree": False, "error": None,
            "slm_cost_usd": job.served_cost_usd if job.mode == "audit" else 0.0,
            "reference_cost_usd": job.served_cost_usd if job.mode == "shadow" else 0.0,
            "judge_cost_usd": 0.0, "prompt_text": None, "slm_answer": None, "reference_answer": None}
        extra_cost = 0.0
        try:
            async with asyncio.timeout(self.config.timeout_s):
                extra_cost = await self._judge(job, row)
        except TimeoutError:
            row["error"] = f"audit timed out after {self.config.timeout_s:g}s"
        except Exception as exc:  # an audit never fails anything but itself
            row["error"] = f"{type(exc).__name__}: {exc}"[:500]
        finally:
            self._account(extra_cost, row)

    async def _judge(self, job: AuditJob, row: dict[str, Any]) -> float:
        """Fill ``row`` with the other answer and the verdict; returns the extra USD spent."""
        question = request_text(job.kind, job.body)
        if job.mode == "audit":
            slm_text, extra = job.served_text, 0.0
            other = await self._call_llm(self.reference, job.kind, job.body)
            ref_text = answer_text(other)
            row["reference_cost_usd"] = extra = self._llm_cost(self.reference, other)
        else:
            from serving.dispatch import Target

            answer = await self.dispatcher.run(job.kind, job.body, [Target("slm", job.slm_backend)], False)
            assert answer.body is not None
            slm_text, ref_text = answer_text(answer.body), job.served_text
            pt, ct = entry_tokens(answer.body.get("usage"))
            row["slm_cost_usd"] = extra = self.costs.route_cost("slm", job.slm_backend, answer.model, pt, ct)
        if self.config.store_texts:  # the request as the ledger keeps prompts (chat messages as JSON)
            from gateway.pipeline import prompt_text

            row.update(prompt_text=prompt_text(job.kind, job.body), slm_answer=slm_text, reference_answer=ref_text)
        rubric = rubric_for(job.domain, self.config.rubrics)
        # Both orders at once: the SLM's answer as A, then as B.
        (p1, c1, e1), (p2, c2, e2) = await asyncio.gather(
            self._ask_judge(judge_request(question, slm_text, ref_text, rubric)),
            self._ask_judge(judge_request(question, ref_text, slm_text, rubric)))
        row["judge_cost_usd"] = c1 + c2
        judgement: Judgement = combine(p1, p2)
        row.update(verdict=judgement.verdict, order1=judgement.order1, order2=judgement.order2,
                   disagree=judgement.disagree)
        if judgement.verdict == "error":
            row["error"] = (e1 or e2 or "the judge gave no [[A]]/[[B]]/[[C]] verdict")[:500]
        return extra + c1 + c2

    async def _ask_judge(self, request: dict[str, Any]) -> tuple[Pick | None, float, str | None]:
        try:
            reply = await self._call_llm(self.judge, "chat", request)
        except Exception as exc:
            return None, 0.0, f"judge failed: {type(exc).__name__}: {exc}"[:500]
        return parse_pick(answer_text(reply)), self._llm_cost(self.judge, reply), None

    async def _call_llm(self, name: str, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        backend = self.policy.llm_backends[name]
        payload = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        llm = self.dispatcher.llm
        return await (llm.chat if kind == "chat" else llm.completion)(name, backend, payload)

    def _llm_cost(self, name: str, completion: dict[str, Any]) -> float:
        pt, ct = entry_tokens(completion.get("usage"))
        return self.costs.route_cost("llm", name, self.policy.llm_backends[name].model, pt, ct)

    def _account(self, extra_cost: float, row: dict[str, Any]) -> None:
        self.spent_today()
        self._spent += extra_cost
        self.done += 1
        if self._redis is not None and extra_cost > 0:
            shared = asyncio.get_running_loop().create_task(self._share_spend(self._day, extra_cost))
            self._tasks.add(shared)
            shared.add_done_callback(self._tasks.discard)
        self.store.add(AUDITS, row)
        if self.metrics is not None:
            self.metrics.observe(row["domain"], row["mode"], row["verdict"], extra_cost)
        self._emit(("verdict", row["domain"], row["mode"], row["verdict"], extra_cost))
        if row["verdict"] != "error":
            log.debug("audit %s %s: %s", row["request_id"], row["domain"], row["verdict"])
        else:
            log.warning("audit %s %s: error: %s", row["request_id"], row["domain"], row["error"])
        if self.guardrails is not None:
            task = asyncio.get_running_loop().create_task(self.guardrails.observe(row["domain"], row["verdict"]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _share_spend(self, day: str, usd: float) -> None:
        """Add to the day's spend shared by every replica, and adopt the shared total (so the budget is
        one budget, not one per process). A Redis error leaves this process's own count in force."""
        assert self._redis is not None
        key = f"{self.config.key_prefix}spend:{day}"
        try:
            total = float(await self._redis.incrbyfloat(key, usd))
            await self._redis.expire(key, 3 * 86400)
        except Exception as exc:
            log.warning("audits: shared daily spend unavailable (%s); counting this process's only",
                        type(exc).__name__)
            return
        if day == self._day:
            self._spent = max(self._spent, total)

    async def close_redis(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    def health(self) -> dict[str, Any]:
        running = sum(1 for t in self._tasks if (t.get_name() or "").startswith("audit-") and not t.done())
        return {"ok": True, "running": running, "done": self.done, "skipped": dict(self.skipped),
                "spent_today_usd": round(self.spent_today(), 6), "daily_budget_usd": self.config.daily_budget_usd}

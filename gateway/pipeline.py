"""The one path every request walks: resolve model -> route -> (cache) -> dispatch -> respond -> record.

HTTP stays in the handlers; this module turns a validated request body into a Starlette response and a
``RequestRecord``. Routing headers are fixed before the first byte goes out, which is why a stream's
first event is fetched (by the dispatcher) before the response starts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import orjson
from starlette.responses import Response

from gateway.asgi import EventStreamResponse
from gateway.audit import hooks as audit_hooks
from gateway.audit.texts import answer_text, stream_text
from gateway.cache import CacheEntry, EntryMeta, ResponseCache, StreamRecorder, entry_from_completion
from gateway.errors import GatewayError, ModelNotFound, NoBackendAvailable, UpstreamError
from gateway.records import RequestRecord
from gateway.services import Services
from router.base import Decision
from router.difficulty import hard_gate
from serving.dispatch import Answer, Kind, Target

if TYPE_CHECKING:
    from gateway.costs import Cost
    from gateway.ledger import Ledger

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RequestContext:
    request_id: str
    tenant: str
    headers: Mapping[str, str]
    t0: float = field(default_factory=time.perf_counter)
    ts: float = field(default_factory=time.time)
    key_id: str | None = None
    """Public id of the caller's key (ledger column key_id: per-key budgets are summed by it)."""
    on_finish: Callable[[RequestRecord, Cost | None], None] | None = None
    """Called with the finished record and its cost (limits charge budgets and settle the token
    reservation to the actual usage)."""


def _json(obj: Any) -> bytes:
    return orjson.dumps(obj)


class Pipeline:
    def __init__(self, services: Services) -> None:
        self.s = services
        policy = services.policy
        self._llm_names: dict[str, str] = {}
        for name, backend in policy.llm_backends.items():
            self._llm_names[name] = name
            self._llm_names.setdefault(backend.model, name)
            self._llm_names.setdefault(backend.model.split("/", 1)[-1], name)
        self._hard = hard_gate(policy)
        self._store_prompts = policy.ledger.store_prompts

    # -- routing ------------------------------------------------------------------------------------
    def resolve(self, kind: Kind, body: dict[str, Any]) -> tuple[Decision, list[Target]]:
        """Turn the requested model into a decision and the ordered targets to try."""
        model = body["model"]
        disp = self.s.dispatcher
        if model == "auto":
            if kind == "embedding":
                return self._embedding_targets()
            decision = self.s.router.decide(body)
            if self._hard is not None:  # QUALITY: too hard for the domain's SLM -> LLM (docs/quality.md)
                decision = self._hard.apply(decision, body)
            if self.s.policy.router.shadow:
                # Shadow mode: the LLM answers everything; the ledger keeps where the router would go.
                return decision, disp.plan(decision.domain, False)
            return decision, disp.plan(decision.domain, decision.target == "slm")
        if self.s.policy.domain(model) is not None:
            decision = Decision("slm", model, 1.0, f"requested model {model}")
            return decision, disp.plan(model, True)
        if model in self._llm_names:
            name = self._llm_names[model]
            return Decision("llm", None, 1.0, f"requested model {model}"), disp.plan(None, False, llm=name)
        raise ModelNotFound(f"The model `{model}` does not exist. Use 'auto' or one listed by GET /v1/models.",
                            param="model")

    def _embedding_targets(self) -> tuple[Decision, list[Target]]:
        cfg = self.s.policy.embeddings
        if cfg is None:
            raise ModelNotFound("No embeddings backend is configured (policy key 'embeddings').",
                                param="model")
        route: Literal["slm", "llm"] = "slm" if cfg.backend in self.s.policy.slm_backends else "llm"
        return Decision(route, None, 1.0, "embeddings backend"), [Target(route, cfg.backend)]

    # -- the request path ---------------------------------------------------------------------------
    async def handle(self, ctx: RequestContext, kind: Kind, body: dict[str, Any]) -> Response:
        stream = bool(body.get("stream")) and kind != "embedding"
        rec = RequestRecord(request_id=ctx.request_id, ts=ctx.ts, tenant=ctx.tenant, endpoint=kind,
                            requested_model=str(body.get("model")), stream=stream)
        rec.key_id = ctx.key_id
        rec.policy_version = self.s.version
        privacy = self.s.extras.get("privacy")
        try:
            decision, targets = self.resolve(kind, body)
            guard_shadow = False
            if self.s.guardrails is not None and rec.requested_model == "auto" and kind != "embedding":
                decision, targets, guard_shadow = audit_hooks.guard(self.s, decision, targets)  # AUDIT
            # CACHE: keyed on the request as the client sent it; its `cache` field never goes upstream.
            cache: ResponseCache | None = self.s.extras.get("cache")
            plan = cache.plan(kind, ctx.tenant, body, ctx.headers, decision.domain) \
                if cache is not None and kind != "embedding" else None
            body.pop("cache", None)
            if privacy is not None:  # sensitive data: keep it in-house or mask it (gateway.privacy)
                decision, targets, body = privacy.apply(body, decision, targets, rec)
            if self._store_prompts and kind != "embedding":  # opt-in (ledger.store_prompts); masked if so
                rec.prompt_text = prompt_text(kind, body)
            rec.domain, rec.confidence, rec.reason = decision.domain, decision.confidence, decision.reason
            if (self.s.policy.router.shadow or guard_shadow) and rec.requested_model == "auto" \
                    and kind != "embedding":
                rec.would_route = decision.target
            if plan is not None and cache is not None:
                found = await cache.lookup(plan)
                rec.cache = found.outcome
                if found.entry is not None:
                    return self._cached(ctx, rec, decision, body, found.entry, stream)
            answer = await self.s.dispatcher.run(kind, body, targets, stream)
        except GatewayError as exc:
            if privacy is not None and isinstance(exc, NoBackendAvailable):
                privacy.explain_failure(exc, rec)
            exc.headers.setdefault("x-slmgw-cache", rec.cache)
            self._finish_error(rec, ctx, exc)
            raise
        rec.route, rec.backend, rec.model, rec.escalation = answer.route, answer.backend, answer.model, \
            answer.escalation
        rec.extra.update(answer.extra)  # QUALITY: answer confidence, a discarded SLM answer
        headers = self._headers(ctx, rec, decision, answer)
        audit = audit_hooks.audit_mode(self.s, kind, rec, answer) if self.s.auditor is not None else None
        if answer.chunks is not None:
            keep = cache.recorder(plan, _entry_meta(answer, decision)) \
                if cache is not None and plan is not None else None
            sse = self._sse(ctx, rec, body, answer, keep, (kind, audit) if audit is not None else None)
            return EventStreamResponse(sse, media_type="text/event-stream",
                                       headers={**headers, "cache-control": "no-cache"})
        assert answer.body is not None
        usage = answer.body.get("usage") or {}
        rec.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        rec.completion_tokens = int(usage.get("completion_tokens") or 0)
        if cache is not None and plan is not None and plan.write:  # CACHE: stored in the background
            cache.store_soon(plan, entry_from_completion(plan.kind, answer.body, _entry_meta(answer, decision)))
        content = answer.raw if answer.raw is not None else _json(answer.body)
        cost = self._finish(rec, ctx)
        if cost is not None:
            headers["x-slmgw-cost-usd"] = f"{cost.cost_usd:.8f}"
        if audit is not None:  # AUDIT: in the background, after the answer is complete
            audit_hooks.submit(self.s, audit, kind, rec, body, answer, answer_text(answer.body), cost)
        return Response(content, media_type="application/json", headers=headers)

    def _headers(self, ctx: RequestContext, rec: RequestRecord, decision: Decision,
                 answer: Answer) -> dict[str, str]:
        reason = decision.reason
        if answer.escalation:
            reason = f"escalated {answer.escalation}; {reason}"
        overhead = (time.perf_counter() - ctx.t0) * 1000 - answer.upstream_ms
        return {
            "x-request-id": ctx.request_id,
            "x-slmgw-route": answer.route,
            "x-slmgw-model": answer.model,
            "x-slmgw-domain": decision.domain or "",
            "x-slmgw-confidence": f"{decision.confidence:.3f}",
            "x-slmgw-reason": _header_safe(reason),
            "x-slmgw-overhead-ms": f"{max(overhead, 0.0):.2f}",
            "x-slmgw-cache": rec.cache,
            "x-slmgw-policy-version": self.s.version,
        }

    async def _sse(self, ctx: RequestContext, rec: RequestRecord, body: dict[str, Any],
                   answer: Answer, keep: StreamRecorder | None = None,
                   audit: tuple[Kind, audit_hooks.Mode] | None = None) -> AsyncIterator[bytes]:
        assert answer.chunks is not None
        opts = body.get("stream_options")
        wants_usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
        first = True
        heard: list[dict[str, Any]] | None = [] if audit is not None else None  # AUDIT: the streamed text
        ended = False
        try:
            async for batch in answer.chunks:
                if first:
                    rec.ttft_ms = (time.perf_counter() - ctx.t0) * 1000
                    first = False
                out: list[bytes] = []  # the events that arrived together leave in one write
                for event in batch:
                    if heard is not None:
                        heard.append(event.data())
                    raw = event.raw
                    if raw is not None and b'"usage"' not in raw:  # nothing to read or edit: as received
                        if keep is not None and not keep.add(event.data(), len(raw)):  # CACHE: as sent
                            keep = None  # over max_entry_bytes: this stream will not be stored
                        out.append(b"data: " + raw + b"\n\n")
                        continue
                    chunk = event.data()
                    usage = chunk.get("usage")
                    if usage:
                        rec.prompt_tokens = int(usage.get("prompt_tokens") or 0)
                        rec.completion_tokens = int(usage.get("completion_tokens") or 0)
                    if keep is not None and not keep.add(chunk):  # CACHE: as sent (usage included)
                        keep = None
                    if not wants_usage:
                        if "usage" in chunk:
                            if not chunk.get("choices"):
                                continue  # the usage-only chunk the gateway asked for on its own account
                            del chunk["usage"]
                    out.append(b"data: " + _json(chunk) + b"\n\n")
                if out:
                    yield b"".join(out)
            if keep is not None:
                keep.finish()  # CACHE: only a stream that ended without an error is stored
            ended = True
            yield b"data: [DONE]\n\n"
        except GatewayError as exc:
            # Bytes already went out, so the status can't change: end with an OpenAI-style error event.
            if isinstance(exc, UpstreamError):
                rec.extra["error_detail"] = exc.message[:500]
            rec.status, rec.error_code = exc.status, exc.code
            yield b"data: " + _json(exc.body()) + b"\n\n"
        except BaseException:
            rec.status, rec.error_code = 499, "client_disconnected"
            raise
        finally:
            cost = self._finish(rec, ctx)
            if audit is not None and heard is not None and ended:  # AUDIT: a stream that ended normally
                audit_hooks.submit(self.s, audit[1], audit[0], rec, body, answer, stream_text(heard), cost)

    def _cached(self, ctx: RequestContext, rec: RequestRecord, decision: Decision, body: dict[str, Any],
                entry: CacheEntry, stream: bool) -> Response:
        """Answer from the cache: route `cache`, the stored answer's model and tokens (for the ledger)."""
        meta = entry.meta
        rec.route, rec.model, rec.backend = "cache", meta.model, meta.backend
        rec.prompt_tokens, rec.completion_tokens = meta.prompt_tokens, meta.completion_tokens
        headers = {
            "x-request-id": ctx.request_id,
            "x-slmgw-route": "cache",
            "x-slmgw-model": meta.model or "",
            "x-slmgw-domain": decision.domain or "",
            "x-slmgw-confidence": f"{decision.confidence:.3f}",
            "x-slmgw-reason": _header_safe(f"cache hit (answered by {meta.route or '?'}); {decision.reason}"),
            "x-slmgw-cache": "hit",
        }
        if stream:
            opts = body.get("stream_options")
            wants_usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
            content, media = b"".join(entry.sse(wants_usage)), "text/event-stream"
            headers["cache-control"] = "no-cache"
            rec.ttft_ms = (time.perf_counter() - ctx.t0) * 1000
        else:
            content, media = entry.body(), "application/json"
        headers["x-slmgw-overhead-ms"] = f"{(time.perf_counter() - ctx.t0) * 1000:.2f}"
        cost = self._finish(rec, ctx)
        if cost is not None:
            headers["x-slmgw-cost-usd"] = f"{cost.cost_usd:.8f}"
        return Response(content, media_type=media, headers=headers)

    def _finish(self, rec: RequestRecord, ctx: RequestContext) -> Cost | None:
        rec.latency_ms = (time.perf_counter() - ctx.t0) * 1000
        ledger: Ledger | None = self.s.extras.get("ledger")
        cost = ledger.record(rec) if ledger is not None else None  # sync, no I/O, never raises
        if ctx.on_finish is not None:
            ctx.on_finish(rec, cost)
        return cost

    def record_rejection(self, request_id: str, tenant: str | None, kind: Kind, model: Any,
                         exc: GatewayError) -> None:
        """Ledger row for a request refused before routing (auth, validation, limits): route "none"."""
        rec = RequestRecord(request_id=request_id, ts=time.time(), tenant=tenant or "unknown", endpoint=kind,
                            requested_model=str(model)[:256] if model is not None else "",
                            status=exc.status, error_code=exc.code, reason="rejected",
                            policy_version=self.s.version)
        ledger: Ledger | None = self.s.extras.get("ledger")
        if ledger is not None:
            ledger.record(rec)

    def _finish_error(self, rec: RequestRecord, ctx: RequestContext, exc: GatewayError) -> None:
        rec.status, rec.error_code = exc.status, exc.code
        detail = getattr(exc, "detail", None) or (exc.message if isinstance(exc, UpstreamError) else None)
        if detail:  # upstream addresses and text: for the logs and the ledger, not for the client
            rec.extra["error_detail"] = detail[:500]
            log.warning("request %s failed: %s (%s)", rec.request_id, exc.message, detail[:500])
        self._finish(rec, ctx)


def _entry_meta(answer: Answer, decision: Decision) -> EntryMeta:
    return EntryMeta(route=answer.route, domain=decision.domain, model=answer.model, backend=answer.backend)


def prompt_text(kind: str, body: Mapping[str, Any]) -> str:
    """What the ledger keeps of a request when prompts are stored: a chat's messages as JSON (so
    ``slmgw policy simulate`` can replay them through a router), a completion's prompt as is."""
    if kind == "chat":
        return orjson.dumps(body.get("messages")).decode()
    prompt = body.get("prompt")
    return prompt if isinstance(prompt, str) else orjson.dumps(prompt).decode()


def _header_safe(text: str) -> str:
    return text.encode("ascii", "replace").decode("ascii").replace("\n", " ")[:300]

"""Send a request to the targets a routing decision implies, escalating along the way.

A plan is an ordered list of targets: the domain's SLM first (if the decision says so), then the
policy's fallback LLMs. A target that fails with an ``UpstreamError`` before anything reached the
client hands over to the next; a ``ClientError`` (the request itself is bad) stops at once. For a
stream, the first event is fetched before the stream is handed back, so an SLM that accepts the
connection but fails on the first token still escalates.

Before an SLM is tried at all, requests it cannot serve escalate with a reason: a feature its backend
does not list in ``supports`` (``unsupported:tools``), a prompt plus ``max_tokens`` over its
``context_length`` (``context_length:N+M>C``), or no healthy replica (``slm_down:...``). Replicas are
chosen by ``SlmHealth`` (least outstanding requests, circuit breaker); a failed replica hands over to the
next one, then to the LLMs. Every reason met on the way is kept, in order, in ``Answer.escalation``.

An SLM answer of a domain with a confidence floor is judged on its own logprobs (``serving.confidence``,
streams through ``serving.holdback``): too unsure, it is discarded (``LowConfidence``: the replica stays
healthy, no other replica is tried) and the request goes on to the LLMs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from gateway.config import Policy
from gateway.errors import GatewayError, NoBackendAvailable, UpstreamClientError, UpstreamError
from serving import confidence, holdback
from serving.escalation import output_tokens, prompt_bounds, unsupported_feature
from serving.health import Replica, SlmHealth
from serving.llm import LlmClient
from serving.params import FieldRules, for_slm
from serving.slm import SlmClient

Kind = Literal["chat", "completion", "embedding"]
_PATHS: dict[str, str] = {"chat": "/chat/completions", "completion": "/completions",
                          "embedding": "/embeddings"}
_SAME_ON_EVERY_REPLICA = ("slm_rejected_400", "slm_rejected_413", "slm_rejected_422")
"""vLLM's verdicts on the request itself (e.g. too long): another replica of the same model agrees."""


class Escalation(UpstreamError):
    """The SLM is not even tried: the request needs something it lacks."""


@dataclass(frozen=True, slots=True)
class Target:
    route: Literal["slm", "llm"]
    backend: str
    domain: str | None = None
    """The domain an SLM target serves (its answer checks apply)."""


@dataclass(slots=True)
class Event:
    """One stream event: the upstream's own JSON bytes (``raw``, passed on unchanged when nothing in
    them needs editing) and/or the parsed object (``obj``, made on first use)."""

    raw: bytes | None = None
    obj: dict[str, Any] | None = None

    def data(self) -> dict[str, Any]:
        if self.obj is None:
            self.obj = _parse_event(self.raw or b"")
        return self.obj


@dataclass(slots=True)
class Answer:
    """What a backend returned. Exactly one of ``body`` (non-stream) and ``chunks`` (stream) is set;
    ``chunks`` yields batches of events that arrived together."""

    route: Literal["slm", "llm"]
    backend: str
    model: str
    escalation: str | None = None
    body: dict[str, Any] | None = None
    raw: bytes | None = None
    """The upstream's own bytes for ``body`` when they can be passed on unchanged."""
    chunks: AsyncIterator[list[Event]] | None = None
    upstream_ms: float = 0.0
    extra: dict[str, str] = field(default_factory=dict)
    """For the ledger's ``extra``: answer confidence, a discarded SLM answer (serving.confidence)."""


class Dispatcher:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.fields = FieldRules(policy.server.unknown_fields, frozenset(policy.server.extra_fields))
        self.slm = SlmClient()
        self.llm = LlmClient(self.fields)
        self.health = SlmHealth(policy, lambda: self.slm.session)
        self.checks = confidence.checks_from(policy)

    async def start(self) -> list[str]:
        """Probe the SLM replicas once and start polling them; returns the problems found (each one
        also logged), e.g. an adapter the policy names that vLLM does not serve."""
        return await self.health.start()

    async def close(self) -> None:
        await self.health.close()
        await self.slm.close()

    def plan(self, domain: str | None, to_slm: bool, llm: str | None = None) -> list[Target]:
        """Targets in order: the domain's SLM if ``to_slm``, then the named LLM or the fallback chain."""
        targets: list[Target] = []
        if to_slm and domain is not None:
            dom = self.policy.domain(domain)
            if dom is not None:
                targets.append(Target("slm", dom.backend, dom.name))
        if llm is not None:
            targets.append(Target("llm", llm))
        else:
            targets.extend(Target("llm", name) for name in self.policy.fallback.llm)
        return targets

    async def run(self, kind: Kind, body: dict[str, Any], targets: list[Target], stream: bool) -> Answer:
        import time

        reasons: list[str] = []
        extra: dict[str, str] = {}
        last: GatewayError | None = None
        for target in targets:
            t0 = time.perf_counter()
            try:
                if target.route == "slm":
                    answer = await self._slm(kind, body, target.backend, stream, target.domain)
                else:
                    answer = await self._llm(kind, body, target.backend, stream)
            except UpstreamClientError:
                raise
            except UpstreamError as exc:
                last = exc
                reasons.append(exc.reason)
                if isinstance(exc, confidence.LowConfidence):
                    extra.update(confidence.discarded(exc))
                continue
            answer.escalation = ",".join(reasons) or None
            answer.extra.update(extra)
            answer.upstream_ms = (time.perf_counter() - t0) * 1000
            return answer
        names = ", ".join(f"{t.route}:{t.backend}" for t in targets)
        why = ", ".join(reasons) or "no backend configured"
        raise NoBackendAvailable(f"Every backend failed ({names}): {why}.",
                                 detail=last.message if last else "no backend configured")

    async def _slm(self, kind: Kind, body: dict[str, Any], name: str, stream: bool,
                   domain: str | None = None) -> Answer:
        backend = self.policy.slm_backends[name]
        if kind != "embedding":
            feature = unsupported_feature(body, backend.supports)
            if feature:
                raise Escalation(f"SLM {name!r} does not support {feature}", backend=name,
                                 reason=f"unsupported:{feature}")
            await self._check_context(kind, body, name)
        payload = {**for_slm(kind, body, self.fields), "model": backend.model}
        if stream:
            payload["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        check = self.checks.get(domain or "") if confidence.checkable(kind, body) else None
        if check is not None and stream and check.stream_tokens is None:
            check = None
        asked = confidence.ask(kind, payload) if check is not None else None
        data = orjson.dumps(payload)
        tried: set[str] = set()
        reasons: list[str] = []
        last: UpstreamError | None = None
        while (rep := self.health.pick(name, tried)) is not None:
            tried.add(rep.url)
            rep.outstanding += 1
            handed_over = False
            try:
                if not stream:
                    raw = await self.slm.post(backend, rep.url, _PATHS[kind], data)
                    try:
                        obj = orjson.loads(raw)
                    except orjson.JSONDecodeError:
                        raise UpstreamError("SLM returned invalid JSON", reason="slm_bad_response") from None
                    self.health.record_success(rep)
                    if check is not None and asked is not None:  # may raise LowConfidence: escalate
                        extra = confidence.judge(kind, obj, check, asked, name)
                        return Answer("slm", name, backend.model, body=obj, extra=extra)
                    return Answer("slm", name, backend.model, body=obj, raw=raw)
                events = await self.slm.stream(backend, rep.url, _PATHS[kind], data)
                if check is not None and asked is not None and check.stream_tokens is not None:
                    try:  # may raise LowConfidence before anything went out: escalate
                        chunks = await holdback.hold(kind, _parse_events(events), check.stream_tokens, check,
                                                     asked, name)
                    except confidence.LowConfidence:
                        await events.aclose()  # type: ignore[attr-defined]  # an async generator
                        raise
                else:
                    chunks = await _prefetch(_parse_events(events))
                self.health.record_success(rep)
                handed_over = True
                return Answer("slm", name, backend.model, chunks=_release_at_end(chunks, rep))
            except confidence.LowConfidence:
                raise  # the replica is fine; the answer is not
            except UpstreamError as exc:
                self.health.record_failure(rep, exc.reason, backend.model)
                last = exc
                reasons.append(exc.reason)
                if exc.reason in _SAME_ON_EVERY_REPLICA:
                    break
            finally:
                if not handed_over:
                    rep.outstanding -= 1
        if last is None:
            reason = self.health.unavailable_reason(name)
            raise UpstreamError(f"SLM {name!r} has no healthy replica ({reason})", backend=name,
                                reason=reason)
        raise UpstreamError(last.message, backend=name, reason="+".join(reasons))

    async def _check_context(self, kind: Kind, body: dict[str, Any], name: str) -> None:
        """Escalate when prompt + max_tokens cannot fit the SLM's window. Cheap bounds decide most
        requests; only an ambiguous one costs a call to vLLM's /tokenize."""
        backend = self.policy.slm_backends[name]
        window = backend.context_length
        out = output_tokens(body)
        lower, upper = prompt_bounds(kind, body)
        if upper + out <= window:
            return
        count: int | None = lower
        if lower + out <= window:
            count = None
            reps = [r for r in self.health.replicas_of(name) if r.state != "down"]
            if reps:
                if kind == "chat":
                    probe = {"model": backend.model, "messages": body.get("messages"),
                             "add_generation_prompt": True}
                else:
                    probe = {"model": backend.model, "prompt": body.get("prompt")}
                count = await self.slm.tokenize(backend, reps[0].root, probe)
            if count is None:
                count = upper  # cannot count: assume the worst
            if count + out <= window:
                return
        raise Escalation(f"prompt ({count} tokens) + max_tokens ({out}) exceed the SLM's context window "
                         f"({window})", backend=name, reason=f"context_length:{count}+{out}>{window}")

    async def _llm(self, kind: Kind, body: dict[str, Any], name: str, stream: bool) -> Answer:
        backend = self.policy.llm_backends[name]
        if kind == "embedding":
            return Answer("llm", name, backend.model, body=await self.llm.embedding(name, backend, body))
        if stream:
            opts = {**(body.get("stream_options") or {}), "include_usage": True}
            payload = {**body, "stream_options": opts}
            chunks = await self.llm.stream(name, backend, payload, chat=kind == "chat")
            return Answer("llm", name, backend.model, chunks=await _prefetch(_one_by_one(chunks)))
        call = self.llm.chat if kind == "chat" else self.llm.completion
        return Answer("llm", name, backend.model, body=await call(name, backend, body))


def _parse_event(payload: bytes) -> dict[str, Any]:
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise UpstreamError("SLM sent an unreadable stream event", reason="slm_bad_response") from None
    if not isinstance(obj, dict):
        raise UpstreamError("SLM sent a stream event that is not an object", reason="slm_bad_response")
    if "error" in obj and "choices" not in obj:
        err = obj["error"]
        message = err.get("message") if isinstance(err, dict) else str(err)
        raise UpstreamError(f"SLM stream error: {message}", reason="slm_stream_error")
    return obj


async def _parse_events(batches: AsyncIterator[list[bytes]]) -> AsyncIterator[list[Event]]:
    """Events of an SLM stream. The first batch is parsed now (a bad start can still escalate), and any
    event that mentions an error; the rest stay bytes until someone needs them as objects."""
    first = True
    async for batch in batches:
        if first:
            yield [Event(payload, _parse_event(payload)) for payload in batch]
            first = False
            continue
        yield [Event(payload, _parse_event(payload) if b'"error"' in payload else None) for payload in batch]


async def _one_by_one(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[list[Event]]:
    async for chunk in chunks:
        yield [Event(obj=chunk)]


async def _prefetch(batches: AsyncIterator[list[Event]]) -> AsyncIterator[list[Event]]:
    """Pull the first batch now (so its failure can still escalate) and return an equivalent stream."""
    try:
        first = await batches.__anext__()
    except StopAsyncIteration:
        raise UpstreamError("upstream stream ended before its first event", reason="empty_stream") from None

    async def rest() -> AsyncIterator[list[Event]]:
        yield first
        async for batch in batches:
            yield batch

    return rest()


async def _release_at_end(chunks: AsyncIterator[list[Event]], rep: Replica) -> AsyncIterator[list[Event]]:
    """Keep the replica's outstanding count up while the stream is being read."""
    try:
        async for chunk in chunks:
            yield chunk
    finally:
        rep.outstanding -= 1

"""Send a request to the targets a routing decision implies, escalating along the way.

A plan is an ordered list of targets: the domain's SLM first (if the decision says so), then the
policy's fallback LLMs. A target that fails with an ``UpstreamError`` before anything reached the
client hands over to the next; a ``ClientError`` (the request itself is bad) stops at once. For a
stream, the first event is fetched before the stream is handed back, so an SLM that accepts the
connection but fails on the first token still escalates.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from gateway.config import Policy
from gateway.errors import GatewayError, NoBackendAvailable, UpstreamClientError, UpstreamError
from serving.llm import LlmClient
from serving.slm import SlmClient

Kind = Literal["chat", "completion", "embedding"]
_PATHS: dict[str, str] = {"chat": "/chat/completions", "completion": "/completions", "embedding": "/embeddings"}


@dataclass(frozen=True, slots=True)
class Target:
    route: Literal["slm", "llm"]
    backend: str


@dataclass(slots=True)
class Answer:
    """What a backend returned. Exactly one of ``body`` (non-stream) and ``chunks`` (stream) is set."""

    route: Literal["slm", "llm"]
    backend: str
    model: str
    escalation: str | None = None
    body: dict[str, Any] | None = None
    raw: bytes | None = None
    """The upstream's own bytes for ``body`` when they can be passed on unchanged."""
    chunks: AsyncIterator[dict[str, Any]] | None = None
    upstream_ms: float = 0.0


class Dispatcher:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.slm = SlmClient()
        self.llm = LlmClient()

    async def close(self) -> None:
        await self.slm.close()

    def plan(self, domain: str | None, to_slm: bool, llm: str | None = None) -> list[Target]:
        """Targets in order: the domain's SLM if ``to_slm``, then the named LLM or the fallback chain."""
        targets: list[Target] = []
        if to_slm and domain is not None:
            dom = self.policy.domain(domain)
            if dom is not None:
                targets.append(Target("slm", dom.backend))
        if llm is not None:
            targets.append(Target("llm", llm))
        else:
            targets.extend(Target("llm", name) for name in self.policy.fallback.llm)
        return targets

    async def run(self, kind: Kind, body: dict[str, Any], targets: list[Target], stream: bool) -> Answer:
        import time

        escalation: str | None = None
        last: GatewayError | None = None
        for target in targets:
            t0 = time.perf_counter()
            try:
                if target.route == "slm":
                    answer = await self._slm(kind, body, target.backend, stream)
                else:
                    answer = await self._llm(kind, body, target.backend, stream)
            except UpstreamClientError:
                raise
            except UpstreamError as exc:
                last = exc
                escalation = escalation or exc.reason
                continue
            answer.escalation = escalation
            answer.upstream_ms = (time.perf_counter() - t0) * 1000
            return answer
        names = ", ".join(f"{t.route}:{t.backend}" for t in targets)
        detail = last.message if last else "no backend configured"
        raise NoBackendAvailable(f"every backend failed ({names}); last error: {detail}")

    async def _slm(self, kind: Kind, body: dict[str, Any], name: str, stream: bool) -> Answer:
        backend = self.policy.slm_backends[name]
        payload = {**body, "model": backend.model}
        if stream:
            payload["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        data = orjson.dumps(payload)
        last: UpstreamError | None = None
        for base_url in backend.base_urls:
            try:
                if not stream:
                    raw = await self.slm.post(backend, base_url, _PATHS[kind], data)
                    try:
                        obj = orjson.loads(raw)
                    except orjson.JSONDecodeError:
                        raise UpstreamError("SLM returned invalid JSON", reason="slm_bad_response") from None
                    return Answer("slm", name, backend.model, body=obj, raw=raw)
                opened = await self.slm.stream(backend, base_url, _PATHS[kind], data)
                chunks = _parse_events(opened.events)
                return Answer("slm", name, backend.model, chunks=await _prefetch(chunks))
            except UpstreamError as exc:
                last = exc
        assert last is not None
        raise last

    async def _llm(self, kind: Kind, body: dict[str, Any], name: str, stream: bool) -> Answer:
        backend = self.policy.llm_backends[name]
        if kind == "embedding":
            return Answer("llm", name, backend.model, body=await self.llm.embedding(name, backend, body))
        if stream:
            payload = {**body, "stream_options": {**(body.get("stream_options") or {}), "include_usage": True}}
            chunks = await self.llm.stream(name, backend, payload, chat=kind == "chat")
            return Answer("llm", name, backend.model, chunks=await _prefetch(chunks))
        call = self.llm.chat if kind == "chat" else self.llm.completion
        return Answer("llm", name, backend.model, body=await call(name, backend, body))


async def _parse_events(events: AsyncIterator[bytes]) -> AsyncIterator[dict[str, Any]]:
    async for payload in events:
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise UpstreamError("SLM sent an unreadable stream event", reason="slm_bad_response") from None
        if isinstance(obj, dict) and "error" in obj and "choices" not in obj:
            err = obj["error"]
            message = err.get("message") if isinstance(err, dict) else str(err)
            raise UpstreamError(f"SLM stream error: {message}", reason="slm_stream_error")
        yield obj


async def _prefetch(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    """Pull the first chunk now (so its failure can still escalate) and return an equivalent stream."""
    try:
        first = await chunks.__anext__()
    except StopAsyncIteration:
        raise UpstreamError("upstream stream ended before its first event", reason="empty_stream") from None

    async def rest() -> AsyncIterator[dict[str, Any]]:
        yield first
        async for chunk in chunks:
            yield chunk

    return rest()

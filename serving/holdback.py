"""Stream hold-back: judge the first N tokens of a streamed SLM answer before the client sees any.

With ``domains[].stream_holdback_tokens: N`` (and a confidence floor), the SLM stream is asked for
logprobs and read until N tokens (of the first choice) have arrived or it ends. Their confidence is
judged like a whole answer's (``serving.confidence``): below the floor the stream is closed and the
request escalates before a byte went out; otherwise the held events are released, then the rest, each
with logprobs the client did not ask for removed. The cost: time to first token grows by the time the
SLM takes for N tokens.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from gateway.errors import UpstreamError
from serving.confidence import Asked, Check, Confidence, LowConfidence, measure, restore, verdict


class _Event(Protocol):
    raw: bytes | None
    obj: dict[str, Any] | None

    def data(self) -> dict[str, Any]: ...


def _merge(kind: str, held: list[list[_Event]]) -> dict[str, Any]:
    """The held chunks' logprobs as one answer body (choices by index), for ``measure``."""
    merged: dict[int, list[Any]] = {}
    for batch in held:
        for event in batch:
            for choice in event.data().get("choices") or ():
                lp = choice.get("logprobs") if isinstance(choice, dict) else None
                if not isinstance(lp, dict):
                    continue
                parts = merged.setdefault(int(choice.get("index") or 0), [])
                parts.append(lp)
    choices = []
    for index, parts in sorted(merged.items()):
        if kind == "chat":
            content = [item for lp in parts for item in lp.get("content") or ()]
            choices.append({"index": index, "logprobs": {"content": content}})
        else:
            choices.append({"index": index, "logprobs": {
                "token_logprobs": [v for lp in parts for v in lp.get("token_logprobs") or ()],
                "top_logprobs": [v for lp in parts for v in lp.get("top_logprobs") or ()]}})
    return {"choices": choices}


def _first_choice_tokens(kind: str, event: _Event) -> int:
    n = 0
    for choice in event.data().get("choices") or ():
        if isinstance(choice, dict) and int(choice.get("index") or 0) == 0:
            lp = choice.get("logprobs")
            if isinstance(lp, dict):
                n += len(lp.get("content") or ()) if kind == "chat" else len(lp.get("token_logprobs") or ())
    return n


def _release(kind: str, batch: list[_Event], asked: Asked) -> list[_Event]:
    if asked.logprobs and asked.top >= 2:
        return batch
    for event in batch:
        obj = event.data()
        if any(isinstance(c, dict) and "logprobs" in c for c in obj.get("choices") or ()):
            restore(kind, obj, asked)
            event.raw = None  # edited: the pipeline serialises the object
    return batch


async def hold(kind: str, batches: AsyncIterator[list[Any]], tokens: int, check: Check, asked: Asked,
               backend: str) -> AsyncIterator[list[Any]]:
    """Read until ``tokens`` tokens are held, judge them (raise ``LowConfidence``), else return the
    equivalent stream with logprobs restored to what the client asked for."""
    held: list[list[Any]] = []
    seen = 0
    async for batch in batches:
        held.append(batch)
        seen += sum(_first_choice_tokens(kind, e) for e in batch)
        if seen >= tokens:
            break
    if not held:
        raise UpstreamError("upstream stream ended before its first event", reason="empty_stream")
    conf: Confidence | None = measure(kind, _merge(kind, held))
    reason = verdict(check, conf)
    if reason is not None and conf is not None:
        raise LowConfidence(f"SLM stream below the confidence floor after {seen} tokens ({reason})",
                            backend=backend, reason=reason, usage={"completion_tokens": seen}, confidence=conf)

    async def rest() -> AsyncIterator[list[Any]]:
        for batch in held:
            yield _release(kind, batch, asked)
        async for batch in batches:
            yield _release(kind, batch, asked)

    return rest()

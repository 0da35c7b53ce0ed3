"""Stream hold-back (serving.holdback) on chunks shaped like vLLM's chat stream events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.errors import UpstreamError
from serving.confidence import Asked, Check, LowConfidence
from serving.dispatch import Event
from serving.holdback import hold


def chunk(token: str, lp: float, alt: float) -> dict[str, Any]:
    tops = [{"token": token, "logprob": lp}, {"token": "?", "logprob": alt}]
    return {"object": "chat.completion.chunk", "choices": [{
        "index": 0, "delta": {"content": token}, "finish_reason": None,
        "logprobs": {"content": [{"token": token, "logprob": lp, "bytes": None, "top_logprobs": tops}]}}]}


class Source:
    def __init__(self, chunks: list[dict[str, Any]]) -> None:
        self.chunks, self.read = chunks, 0

    async def batches(self) -> AsyncIterator[list[Event]]:
        for c in self.chunks:
            self.read += 1
            yield [Event(json.dumps(c).encode(), c)]


async def _collect(stream: AsyncIterator[list[Event]]) -> list[Event]:
    return [e async for batch in stream for e in batch]


def test_confident_stream_is_released_whole_without_logprobs() -> None:
    src = Source([chunk("SELECT", -0.2, -3.0), chunk(" *", -0.4, -2.0), chunk(" FROM", -0.1, -4.0)])

    async def run() -> list[Event]:
        return await _collect(await hold("chat", src.batches(), 2, Check("sql", -1.0, None, 2), Asked(False, 0), "b"))

    events = asyncio.run(run())
    assert [e.data()["choices"][0]["delta"]["content"] for e in events] == ["SELECT", " *", " FROM"]
    assert all(e.data()["choices"][0]["logprobs"] is None and e.raw is None for e in events)


def test_unsure_stream_escalates_after_the_held_tokens_only() -> None:
    src = Source([chunk("x", -3.0, -3.1), chunk("y", -2.5, -2.6), chunk("z", -0.1, -5.0), chunk("w", -0.1, -5.0)])

    async def run() -> None:
        await hold("chat", src.batches(), 2, Check("sql", -1.0, None, 2), Asked(False, 0), "b")

    with pytest.raises(LowConfidence) as info:
        asyncio.run(run())
    assert info.value.reason == "low_answer_confidence sql=-2.75<-1.00"
    assert info.value.usage == {"completion_tokens": 2}
    assert src.read == 2  # nothing beyond the held tokens was read


def test_client_logprobs_are_kept_and_empty_streams_fail() -> None:
    src = Source([chunk("a", -0.2, -3.0)])

    async def run() -> list[Event]:
        return await _collect(await hold("chat", src.batches(), 4, Check("sql", -1.0, None, 4), Asked(True, 2), "b"))

    [event] = asyncio.run(run())
    assert event.raw is not None and len(event.data()["choices"][0]["logprobs"]["content"][0]["top_logprobs"]) == 2

    async def empty() -> None:
        await hold("chat", Source([]).batches(), 4, Check("sql", -1.0, None, 4), Asked(False, 0), "b")

    with pytest.raises(UpstreamError, match="ended before its first event"):
        asyncio.run(empty())


def test_completion_streams_are_judged_on_their_token_logprobs() -> None:
    def piece(tok: str, lp: float) -> dict[str, Any]:
        return {"object": "text_completion", "choices": [{"index": 0, "text": tok, "finish_reason": None, "logprobs": {
            "tokens": [tok], "token_logprobs": [lp], "top_logprobs": [{tok: lp, "?": lp - 0.05}], "text_offset": [0]}}]}

    async def run(chunks: list[dict[str, Any]]) -> list[Event]:
        stream = await hold("completion", Source(chunks).batches(), 2, Check("code", -1.0, None, 2),
                            Asked(True, 0), "b")
        return await _collect(stream)

    with pytest.raises(LowConfidence, match=r"low_answer_confidence code=-2\.00<-1\.00"):
        asyncio.run(run([piece("a", -2.5), piece("b", -1.5), piece("c", -0.1)]))
    events = asyncio.run(run([piece("a", -0.5), piece("b", -0.3), piece("c", -0.1)]))
    assert [e.data()["choices"][0]["text"] for e in events] == ["a", "b", "c"]
    # logprobs: 0 -> only the sampled token's entry is left, as vLLM would send it
    assert [e.data()["choices"][0]["logprobs"]["top_logprobs"] for e in events] == [
        [{"a": -0.5}], [{"b": -0.3}], [{"c": -0.1}]]

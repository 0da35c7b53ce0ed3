"""Assembling completions from stream chunks and synthesising chunks back; entry encoding and SSE."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.cache.assemble import (
    assemble_chat,
    assemble_text,
    synthesise_chat_chunks,
    synthesise_text_chunks,
)
from gateway.cache.entry import CacheEntry, EntryMeta

HEAD = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000, "model": "m",
        "system_fingerprint": "fp"}
USAGE = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}


def chunk(delta: dict[str, Any], finish: str | None = None, index: int = 0, **extra: Any) -> dict[str, Any]:
    return {**HEAD, "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}],
            **extra}


def content_stream() -> list[dict[str, Any]]:
    return [chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}), chunk({"content": "lo"}),
            chunk({}, "stop"), {**HEAD, "choices": [], "usage": USAGE}]


def test_assemble_content_finish_and_usage() -> None:
    out = assemble_chat(content_stream())
    assert out == {"id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": "m",
                   "system_fingerprint": "fp",
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"},
                                "logprobs": None, "finish_reason": "stop"}],
                   "usage": USAGE}


def test_assemble_tool_call_deltas() -> None:
    chunks = [
        chunk({"role": "assistant", "content": None, "tool_calls": [
            {"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                               "function": {"name": "get_time", "arguments": "{}"}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
        chunk({}, "tool_calls"),
    ]
    msg = assemble_chat(chunks)["choices"][0]
    assert msg["finish_reason"] == "tool_calls"
    assert msg["message"] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
    ]}
    assert assemble_chat(chunks)["usage"] is None


def test_assemble_several_choices_logprobs_and_reasoning() -> None:
    lp = lambda tok: {"content": [{"token": tok, "logprob": -0.1, "bytes": None, "top_logprobs": []}]}  # noqa: E731
    chunks = [
        {**HEAD, "choices": [{"index": 1, "delta": {"role": "assistant", "content": "B"}, "logprobs": lp("B"),
                              "finish_reason": None}]},
        {**HEAD, "choices": [{"index": 0, "delta": {"role": "assistant", "reasoning_content": "think"},
                              "logprobs": None, "finish_reason": None}]},
        {**HEAD, "choices": [{"index": 0, "delta": {"content": "A"}, "logprobs": lp("A"), "finish_reason": "stop"},
                             {"index": 1, "delta": {"content": "b"}, "logprobs": lp("b"),
                              "finish_reason": "length"}]},
    ]
    out = assemble_chat(chunks)
    assert [c["index"] for c in out["choices"]] == [0, 1]
    assert out["choices"][0]["message"] == {"role": "assistant", "content": "A", "reasoning_content": "think"}
    assert out["choices"][1]["message"]["content"] == "Bb"
    assert [t["token"] for t in out["choices"][1]["logprobs"]["content"]] == ["B", "b"]
    assert [c["finish_reason"] for c in out["choices"]] == ["stop", "length"]


def test_assemble_text_completion() -> None:
    head = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m"}
    chunks = [
        {**head, "choices": [{"index": 0, "text": "SELECT", "logprobs": {"tokens": ["SELECT"],
                              "token_logprobs": [-0.5]}, "finish_reason": None}]},
        {**head, "choices": [{"index": 0, "text": " 1", "logprobs": {"tokens": [" 1"], "token_logprobs": [-0.2]},
                              "finish_reason": "stop"}]},
        {**head, "choices": [], "usage": USAGE},
    ]
    out = assemble_text(chunks)
    assert out["object"] == "text_completion" and out["usage"] == USAGE
    assert out["choices"] == [{"index": 0, "text": "SELECT 1", "finish_reason": "stop",
                               "logprobs": {"tokens": ["SELECT", " 1"], "token_logprobs": [-0.5, -0.2]}}]


def test_synthesised_chat_chunks_assemble_back() -> None:
    completion = assemble_chat(content_stream())
    chunks = synthesise_chat_chunks(completion)
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == USAGE
    assert assemble_chat(chunks) == completion


def test_synthesised_tool_call_chunks_carry_indexes() -> None:
    completion = assemble_chat([chunk({"role": "assistant", "tool_calls": [
        {"index": 0, "id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}),
        chunk({}, "tool_calls")])
    chunks = synthesise_chat_chunks(completion)
    assert chunks[0]["choices"][0]["delta"]["tool_calls"][0]["index"] == 0
    assert assemble_chat(chunks) == completion


def test_synthesised_text_chunks_assemble_back() -> None:
    completion = {"id": "cmpl-9", "object": "text_completion", "created": 2, "model": "m",
                  "choices": [{"index": 0, "text": "x y", "logprobs": None, "finish_reason": "length"}],
                  "usage": USAGE}
    chunks = synthesise_text_chunks(completion)
    assert len(chunks) == 3 and chunks[-1]["usage"] == USAGE
    assert assemble_text(chunks) == completion


# -- entries ---------------------------------------------------------------------------------------

def test_entry_round_trip_and_sse_replays_original_chunks() -> None:
    chunks = content_stream()
    entry = CacheEntry(kind="chat", completion=assemble_chat(chunks), chunks=chunks,
                       meta=EntryMeta(route="slm", domain="sql", model="m", backend="b", prompt_tokens=5))
    back = CacheEntry.from_bytes(entry.to_bytes())
    assert back == entry
    events = list(back.sse())  # type: ignore[union-attr]
    assert events[-1] == b"data: [DONE]\n\n"
    assert [orjson.loads(e.removeprefix(b"data: ")) for e in events[:-1]] == chunks
    assert orjson.loads(back.body()) == entry.completion  # type: ignore[union-attr]


def test_entry_sse_without_usage_drops_usage_chunk_and_fields() -> None:
    chunks = [{**c, "usage": None} for c in content_stream()[:-1]] + [content_stream()[-1]]
    entry = CacheEntry(kind="chat", completion=assemble_chat(chunks), chunks=chunks)
    replay = entry.stream_chunks(include_usage=False)
    assert len(replay) == len(chunks) - 1 and all("usage" not in c for c in replay)
    assert entry.stream_chunks(include_usage=True) == chunks


def test_entry_from_non_stream_answer_synthesises_stream() -> None:
    completion = assemble_chat(content_stream())
    entry = CacheEntry(kind="chat", completion=completion)
    assert assemble_chat(entry.stream_chunks()) == completion


def test_entry_rejects_foreign_bytes() -> None:
    assert CacheEntry.from_bytes(b"not json") is None
    assert CacheEntry.from_bytes(b'{"v": 999}') is None
    assert CacheEntry.from_bytes(b"[]") is None

"""Pure conversions between a streamed answer (chunk objects) and a whole one (a completion object).

``assemble_*`` turns the chunks of a stream into the completion a ``stream: false`` request would
have received; ``synthesise_*`` goes the other way for a stream hit on an answer stored from a
non-stream response. Both work on plain JSON objects (dicts), never on HTTP.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

_HEAD_FIELDS = ("id", "created", "model", "system_fingerprint", "service_tier")


def _head(chunks: list[Mapping[str, Any]], obj: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in _HEAD_FIELDS:
        for chunk in chunks:
            if chunk.get(field) is not None:
                out[field] = chunk[field]
                break
    out["object"] = obj
    return out


def _usage(chunks: list[Mapping[str, Any]]) -> dict[str, Any] | None:
    for chunk in reversed(chunks):
        if chunk.get("usage"):
            return dict(chunk["usage"])
    return None


def _merge_logprobs(acc: dict[str, Any] | None, new: Any) -> dict[str, Any] | None:
    """Extend each list in a logprobs object (chat: content/refusal; text: tokens, offsets, ...)."""
    if not isinstance(new, Mapping):
        return acc
    acc = {} if acc is None else acc
    for key, value in new.items():
        if isinstance(value, list):
            acc.setdefault(key, [])
            if isinstance(acc[key], list):
                acc[key].extend(value)
        elif value is not None or key not in acc:
            acc[key] = value
    return acc


class _ChatChoice:
    __slots__ = ("extra", "finish_reason", "logprobs", "role", "strings", "tool_calls")

    def __init__(self) -> None:
        self.role = "assistant"
        self.strings: dict[str, list[str]] = {}
        self.extra: dict[str, Any] = {}
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.logprobs: dict[str, Any] | None = None

    def add(self, choice: Mapping[str, Any]) -> None:
        delta = choice.get("delta") or {}
        for key, value in delta.items():
            if key == "role":
                if value:
                    self.role = value
            elif key == "tool_calls":
                for tc in value or ():
                    self._tool_call(tc)
            elif isinstance(value, str):
                self.strings.setdefault(key, []).append(value)
            elif value is not None:
                self.extra[key] = value
        if choice.get("finish_reason") is not None:
            self.finish_reason = choice["finish_reason"]
        self.logprobs = _merge_logprobs(self.logprobs, choice.get("logprobs"))

    def _tool_call(self, tc: Mapping[str, Any]) -> None:
        slot = self.tool_calls.setdefault(int(tc.get("index", len(self.tool_calls))),
                                          {"id": None, "type": "function",
                                           "function": {"name": "", "arguments": ""}})
        if tc.get("id") and not slot["id"]:
            slot["id"] = tc["id"]
        if tc.get("type"):
            slot["type"] = tc["type"]
        fn = tc.get("function") or {}
        for part in ("name", "arguments"):
            if fn.get(part):
                slot["function"][part] += fn[part]

    def message(self) -> dict[str, Any]:
        msg: dict[str, Any] = {"role": self.role}
        content = "".join(self.strings.get("content", []))
        msg["content"] = None if not content and (self.tool_calls or "content" not in self.strings) \
            else content
        for key, parts in self.strings.items():
            if key != "content":
                msg[key] = "".join(parts)
        msg.update(self.extra)
        if self.tool_calls:
            msg["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        return msg


def assemble_chat(chunks: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The ``chat.completion`` object equivalent to a stream of ``chat.completion.chunk`` objects."""
    items = list(chunks)
    choices: dict[int, _ChatChoice] = {}
    for chunk in items:
        for choice in chunk.get("choices") or ():
            choices.setdefault(int(choice.get("index", 0)), _ChatChoice()).add(choice)
    out = _head(items, "chat.completion")
    out["choices"] = [{"index": i, "message": c.message(), "logprobs": c.logprobs,
                       "finish_reason": c.finish_reason} for i, c in sorted(choices.items())]
    out["usage"] = _usage(items)
    return out


def assemble_text(chunks: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The ``text_completion`` object equivalent to a stream of text-completion chunks."""
    items = list(chunks)
    texts: dict[int, list[str]] = {}
    finish: dict[int, str | None] = {}
    logprobs: dict[int, dict[str, Any] | None] = {}
    for chunk in items:
        for choice in chunk.get("choices") or ():
            i = int(choice.get("index", 0))
            texts.setdefault(i, []).append(choice.get("text") or "")
            if choice.get("finish_reason") is not None or i not in finish:
                finish[i] = choice.get("finish_reason")
            logprobs[i] = _merge_logprobs(logprobs.get(i), choice.get("logprobs"))
    out = _head(items, "text_completion")
    out["choices"] = [{"index": i, "text": "".join(texts[i]), "logprobs": logprobs.get(i),
                       "finish_reason": finish.get(i)} for i in sorted(texts)]
    out["usage"] = _usage(items)
    return out


def _chunk_head(completion: Mapping[str, Any], obj: str) -> dict[str, Any]:
    head = {k: completion[k] for k in _HEAD_FIELDS if completion.get(k) is not None}
    head["object"] = obj
    return head


def synthesise_chat_chunks(completion: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Chunks a stream would have carried for a stored ``chat.completion``: per choice one chunk with
    the whole message, then one with the finish reason; then a usage chunk (``choices: []``)."""
    head = _chunk_head(completion, "chat.completion.chunk")
    out: list[dict[str, Any]] = []
    choices = completion.get("choices") or []
    for choice in choices:
        delta = {k: v for k, v in (choice.get("message") or {}).items() if v is not None}
        if "tool_calls" in delta:
            delta["tool_calls"] = [{"index": i, **tc} for i, tc in enumerate(delta["tool_calls"])]
        out.append({**head, "choices": [{"index": choice.get("index", 0), "delta": delta,
                                         "logprobs": choice.get("logprobs"), "finish_reason": None}]})
    for choice in choices:
        out.append({**head, "choices": [{"index": choice.get("index", 0), "delta": {},
                                         "logprobs": None, "finish_reason": choice.get("finish_reason")}]})
    if completion.get("usage"):
        out.append({**head, "choices": [], "usage": completion["usage"]})
    return out


def synthesise_text_chunks(completion: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Chunks of a text-completion stream for a stored ``text_completion``, usage chunk last."""
    head = _chunk_head(completion, "text_completion")
    out: list[dict[str, Any]] = []
    choices = completion.get("choices") or []
    for choice in choices:
        out.append({**head, "choices": [{"index": choice.get("index", 0), "text": choice.get("text", ""),
                                         "logprobs": choice.get("logprobs"), "finish_reason": None}]})
    for choice in choices:
        out.append({**head, "choices": [{"index": choice.get("index", 0), "text": "", "logprobs": None,
                                         "finish_reason": choice.get("finish_reason")}]})
    if completion.get("usage"):
        out.append({**head, "choices": [], "usage": completion["usage"]})
    return out


def is_usage_chunk(chunk: Mapping[str, Any]) -> bool:
    """The final chunk ``stream_options.include_usage`` asks for: no choices, a usage object."""
    return not chunk.get("choices") and bool(chunk.get("usage"))

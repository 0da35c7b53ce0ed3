"""The texts a judge reads: the request as one block, and an answer's text."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

_MAX_CHARS = 24_000
"""A judge prompt holds the request and two answers; longer texts are cut (the cut is marked)."""


def _content(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(str(p.get("text", "")) for p in value if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _cut(text: str) -> str:
    return text if len(text) <= _MAX_CHARS else text[:_MAX_CHARS] + "\n[... cut ...]"


def request_text(kind: str, body: Mapping[str, Any]) -> str:
    """A chat request as ``role: content`` lines (the whole conversation), a completion's prompt as is."""
    if kind == "chat":
        lines = [f"{m.get('role')}: {_content(m.get('content'))}" for m in body.get("messages") or []
                 if isinstance(m, dict)]
        return _cut("\n\n".join(lines))
    prompt = body.get("prompt")
    return _cut(prompt if isinstance(prompt, str) else str(prompt))


def answer_text(completion: Mapping[str, Any]) -> str:
    """The first choice's text (message content, tool calls named, or a completion's text)."""
    choices = completion.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        return ""
    choice = choices[0]
    if "text" in choice:
        return _cut(str(choice.get("text") or ""))
    message = choice.get("message") or {}
    text = _content(message.get("content"))
    calls = message.get("tool_calls") or []
    if calls:
        text += "\n" + "\n".join(f"[tool call {c.get('function', {}).get('name')}: "
                                 f"{c.get('function', {}).get('arguments')}]" for c in calls if isinstance(c, dict))
    return _cut(text.strip())


def stream_text(chunks: Iterable[Mapping[str, Any]]) -> str:
    """The first choice's text put together from stream chunks."""
    parts: list[str] = []
    for chunk in chunks:
        for choice in chunk.get("choices") or []:
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                delta = choice.get("delta")
                if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                    parts.append(delta["content"])
                elif isinstance(choice.get("text"), str):
                    parts.append(choice["text"])
    return _cut("".join(parts))


"""What the router reads of a request.

Rule: the latest user turn decides; earlier user turns are appended after it (newest first) until the
text reaches ``max_chars``, so a follow-up such as "now group it by month" keeps the vocabulary of the
question it follows. The system prompt is added last, if room is left, since it often names the app's
domain. Only text parts count: images, audio and tool-call-only turns contribute nothing. The result
is capped at ``max_chars`` so an enormous prompt cannot make the decision slow.

``routing_parts`` gives the same pieces with weights (latest turn 1.0, earlier user turns 0.5, system
0.3), so a classifier can let the latest turn dominate: a user who changes the subject is routed by
the new subject, while a short follow-up borrows its domain from the context.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

LATEST_WEIGHT = 1.0
CONTEXT_WEIGHT = 0.5
SYSTEM_WEIGHT = 0.3


def content_text(content: Any) -> str:
    """Text of one message's ``content`` (a string, or a list of typed parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return "\n".join(parts)
    return ""


def _weighted_pieces(request: Mapping[str, Any]) -> list[tuple[str, float]]:
    if "messages" in request:
        messages = request.get("messages")
        if not isinstance(messages, list):
            return []
        user_turns: list[str] = []
        system: list[str] = []
        for msg in messages:
            if not isinstance(msg, Mapping):
                continue
            text = content_text(msg.get("content")).strip()
            if not text:
                continue
            role = msg.get("role")
            if role == "user":
                user_turns.append(text)
            elif role in ("system", "developer"):
                system.append(text)
        out = [(t, LATEST_WEIGHT if i == 0 else CONTEXT_WEIGHT) for i, t in enumerate(reversed(user_turns))]
        return out + [(t, SYSTEM_WEIGHT) for t in system]
    prompt = request.get("prompt")
    if isinstance(prompt, list):
        return [(p, LATEST_WEIGHT) for p in prompt if isinstance(p, str)][:1]
    return [(prompt, LATEST_WEIGHT)] if isinstance(prompt, str) else []


def routing_parts(request: Mapping[str, Any], max_chars: int = 4000) -> list[tuple[str, float]]:
    """The weighted pieces a classifier reads (latest user turn first), capped at ``max_chars`` in all."""
    out: list[tuple[str, float]] = []
    used = 0
    for piece, weight in _weighted_pieces(request):
        if used >= max_chars:
            break
        piece = piece[: max_chars - used]
        out.append((piece, weight))
        used += len(piece) + 1
    return out


def routing_text(request: Mapping[str, Any], max_chars: int = 4000) -> str:
    """The text a router classifies for a chat (``messages``) or completion (``prompt``) request."""
    return "\n".join(p for p, _ in routing_parts(request, max_chars))


@dataclass(slots=True)
class RequestShape:
    """What a router checks before classifying: size, non-text content, tool use."""

    total_chars: int = 0
    """Characters of text in the whole request (every message), uncapped."""
    non_text: set[str] = field(default_factory=set)
    """Types of non-text content parts seen (image_url, input_audio, file, ...)."""
    tool_turn: bool = False
    """The last message is a tool result or an assistant tool call: the user's text is not the turn."""
    tools_requested: bool = False
    """The request offers tools or functions to call."""
    max_tokens: int = 0
    """Completion tokens the client asked for (max_tokens / max_completion_tokens)."""


def request_shape(request: Mapping[str, Any]) -> RequestShape:
    shape = RequestShape()
    for key in ("max_tokens", "max_completion_tokens"):
        val = request.get(key)
        if isinstance(val, int) and not isinstance(val, bool) and val > 0:
            shape.max_tokens = max(shape.max_tokens, val)
    shape.tools_requested = bool(request.get("tools") or request.get("functions"))
    messages = request.get("messages")
    if isinstance(messages, list):
        for msg in messages:
            if not isinstance(msg, Mapping):
                continue
            content = msg.get("content")
            if isinstance(content, str):
                shape.total_chars += len(content)
            elif isinstance(content, list):
                for part in content:
                    if isinstance(part, str):
                        shape.total_chars += len(part)
                    elif isinstance(part, Mapping):
                        kind = part.get("type")
                        if kind == "text":
                            text = part.get("text")
                            shape.total_chars += len(text) if isinstance(text, str) else 0
                        else:
                            shape.non_text.add(str(kind))
        last = next((m for m in reversed(messages) if isinstance(m, Mapping)), None)
        if last is not None and (last.get("role") in ("tool", "function")
                                 or (last.get("role") == "assistant"
                                     and (last.get("tool_calls") or last.get("function_call")))):
            shape.tool_turn = True
    else:
        prompt = request.get("prompt")
        if isinstance(prompt, str):
            shape.total_chars = len(prompt)
        elif isinstance(prompt, list):
            shape.total_chars = sum(len(p) if isinstance(p, str) else 1 for p in prompt)
    return shape

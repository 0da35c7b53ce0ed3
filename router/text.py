"""What the router reads of a request.

Rule: the latest user turn decides; earlier user turns are appended after it (newest first) until the
text reaches ``max_chars``, so a follow-up such as "now group it by month" keeps the vocabulary of the
question it follows. The system prompt is added last, if room is left, since it often names the app's
domain. Only text parts count: images, audio and tool-call-only turns contribute nothing. The result
is capped at ``max_chars`` so an enormous prompt cannot make the decision slow.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


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


def routing_text(request: Mapping[str, Any], max_chars: int = 4000) -> str:
    """The text a router classifies for a chat (``messages``) or completion (``prompt``) request."""
    if "messages" in request:
        messages = request.get("messages")
        if not isinstance(messages, list):
            return ""
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
        pieces = list(reversed(user_turns)) + system
    else:
        prompt = request.get("prompt")
        if isinstance(prompt, list):
            pieces = [p for p in prompt if isinstance(p, str)][:1]
        else:
            pieces = [prompt] if isinstance(prompt, str) else []
    out: list[str] = []
    used = 0
    for piece in pieces:
        if used >= max_chars:
            break
        piece = piece[: max_chars - used]
        out.append(piece)
        used += len(piece) + 1
    return "\n".join(out)

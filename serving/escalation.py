"""Escalation rules that need no network: features an SLM lacks, and the size of a request.

``unsupported_feature`` names the first feature a request needs that the backend's ``supports`` does
not list. ``prompt_bounds`` brackets the prompt's token count without a tokenizer: byte-level BPE and
SentencePiece with byte fallback never make more tokens than UTF-8 bytes (plus the chat template's own
tokens, allowed for generously), and no common vocabulary averages more than ~12 bytes per token. Only a
request between the bounds needs vLLM's ``/tokenize``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

Kind = Literal["chat", "completion", "embedding"]

TEMPLATE_TOKENS = 64
"""Tokens a chat template may add on its own (system preamble, BOS, generation prompt)."""
PER_MESSAGE_TOKENS = 16
"""Tokens a chat template may add around each message (role markers, separators)."""
MAX_BYTES_PER_TOKEN = 12


def unsupported_feature(body: dict[str, Any], supports: Iterable[str]) -> str | None:
    have = set(supports)
    if "tools" not in have and (body.get("tools") or body.get("functions")):
        return "tools"
    if "json_schema" not in have:
        fmt = body.get("response_format")
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            return "json_schema"
    if "images" not in have and _has_image(body.get("messages")):
        return "images"
    return None


def _has_image(messages: Any) -> bool:
    if not isinstance(messages, list):
        return False
    for msg in messages:
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") in ("image_url", "input_image", "image"):
                    return True
    return False


def _text_bytes(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    if isinstance(value, list):
        return sum(_text_bytes(v) for v in value)
    if isinstance(value, dict):
        # Message content parts ({"type": "text", "text": ...}) and tool calls: count their strings.
        return sum(_text_bytes(v) for k, v in value.items() if k not in ("type", "role"))
    return 0


def prompt_bounds(kind: Kind, body: dict[str, Any]) -> tuple[int, int]:
    """(lower, upper) bounds of the prompt's token count."""
    if kind == "chat":
        messages = body.get("messages") or []
        n = _text_bytes(messages)
        upper = n + TEMPLATE_TOKENS + PER_MESSAGE_TOKENS * len(messages)
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
            return len(prompt), len(prompt)  # already token ids
        n = _text_bytes(prompt)
        upper = n + 2
    return n // MAX_BYTES_PER_TOKEN, upper


def output_tokens(body: dict[str, Any]) -> int:
    """Tokens the request asks to generate (at least 1: a prompt must leave room for one)."""
    value = body.get("max_completion_tokens") or body.get("max_tokens")
    return value if isinstance(value, int) and value > 0 else 1

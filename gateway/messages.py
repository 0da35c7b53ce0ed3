"""Chat messages checked as OpenAI checks them, so a malformed conversation is the client's 400 (with the
field's path in ``param``, e.g. ``messages[0].content``) instead of an upstream's error that would look
like a backend failure and escalate."""

from __future__ import annotations

from typing import Any

from gateway.errors import InvalidRequest

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_NEEDS_CONTENT = ("system", "developer", "user", "tool", "function")


def path(*loc: str | int) -> str:
    """``("messages", 0, "content")`` -> ``messages[0].content`` (OpenAI's way of naming a field)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _bad(message: str, *loc: str | int) -> InvalidRequest:
    where = path(*loc)
    return InvalidRequest(f"Invalid value for '{where}': {message}", param=where)


def check_messages(messages: Any) -> None:
    """Raise ``InvalidRequest`` for the first message OpenAI would refuse."""
    if not isinstance(messages, list):
        raise _bad("expected an array of messages.", "messages")
    if not messages:
        raise _bad("expected at least one message.", "messages")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise _bad("each message must be an object.", "messages", i)
        role = msg.get("role")
        if "role" not in msg or role is None:
            raise _bad("a message needs a 'role'.", "messages", i, "role")
        if role not in ROLES:
            raise _bad(f"unknown role {str(role)[:40]!r}; expected one of {', '.join(ROLES)}.",
                       "messages", i, "role")
        content = msg.get("content")
        if content is not None and not isinstance(content, str | list):
            raise _bad("expected a string or an array of content parts.", "messages", i, "content")
        if role in _NEEDS_CONTENT and content is None:
            raise _bad(f"a {role} message needs 'content' (a string or an array of content parts), "
                       "and it may not be null.", "messages", i, "content")
        if role == "tool":
            call_id = msg.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise _bad("a tool message needs 'tool_call_id' (the id of the tool call it answers).",
                           "messages", i, "tool_call_id")
        if role == "function" and not isinstance(msg.get("name"), str):
            raise _bad("a function message needs 'name'.", "messages", i, "name")
        if role == "assistant":
            calls = msg.get("tool_calls")
            if calls is not None and not isinstance(calls, list):
                raise _bad("expected an array of tool calls.", "messages", i, "tool_calls")
            if content is None and not calls and msg.get("function_call") is None:
                raise _bad("an assistant message needs 'content' or 'tool_calls'.", "messages", i, "content")
        name = msg.get("name")
        if name is not None and not isinstance(name, str):
            raise _bad("expected a string.", "messages", i, "name")

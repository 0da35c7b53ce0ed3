"""Chat messages are validated as OpenAI validates them (issue 13): 400 with the field's path in
``param``, through the real openai SDK; valid shapes (tool calls, tool results) still pass."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from serving.standin import StandinServer

CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
BAD: list[tuple[list[Any], str]] = [
    ([{"role": "user"}], "messages[0].content"),
    ([{"role": "user", "content": None}], "messages[0].content"),
    ([{"role": "system", "content": "s"}, {"role": "system"}], "messages[1].content"),
    ([{"role": "developer", "content": None}], "messages[0].content"),
    ([{"role": "user", "content": 5}], "messages[0].content"),
    ([{"role": "user", "content": "q"}, {"role": "tool", "content": "42"}], "messages[1].tool_call_id"),
    ([{"role": "user", "content": "q"}, {"role": "tool", "content": "42", "tool_call_id": None}],
     "messages[1].tool_call_id"),
    ([{"role": "user", "content": "q"}, {"role": "tool", "tool_call_id": "call_1"}], "messages[1].content"),
    ([{"role": "user", "content": "q"}, {"role": "assistant"}], "messages[1].content"),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "content": None, "tool_calls": []}],
     "messages[1].content"),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": "x"}], "messages[1].tool_calls"),
    ([{"role": "wizard", "content": "q"}], "messages[0].role"),
    ([{"content": "q"}], "messages[0].role"),
    ([{"role": None, "content": "q"}], "messages[0].role"),
    ([{"role": "user", "content": "q", "name": 3}], "messages[0].name"),
    (["just a string"], "messages[0]"),
    ([], "messages"),
]


@pytest.mark.parametrize(("messages", "param"), BAD, ids=[p + str(i) for i, (_, p) in enumerate(BAD)])
def test_malformed_messages_are_400_with_the_field_path(client: Any, messages: list[Any], param: str,
                                                        llm_upstream: StandinServer,
                                                        slm_upstream: StandinServer) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="auto", messages=messages)
    body = info.value.body
    assert isinstance(body, dict) and body["param"] == param, body
    assert body["type"] == "invalid_request_error" and param in body["message"]
    assert not llm_upstream.state.requests and not slm_upstream.state.requests  # nothing went upstream


def test_valid_tool_conversation_passes(client: Any, llm_upstream: StandinServer) -> None:
    messages = [{"role": "user", "content": "weather?"},
                {"role": "assistant", "content": None, "tool_calls": [CALL]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                {"role": "assistant", "content": [{"type": "text", "text": "It is sunny."}]},
                {"role": "user", "content": [{"type": "text", "text": "thanks"}]}]
    reply = client.chat.completions.create(model="llm", messages=messages)
    assert reply.choices[0].message.content
    assert llm_upstream.state.requests[-1]["messages"][1]["tool_calls"][0]["id"] == "call_1"

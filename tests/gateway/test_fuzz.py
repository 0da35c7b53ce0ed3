"""Fuzzing the HTTP API: schemathesis against the app's own /openapi.json, and hypothesis-generated chat
payloads (valid, nearly valid and junk). The upstreams are healthy stand-ins, so any 5xx is a gateway
bug: the check is zero server errors. Bounded: a few hundred requests, well under a minute."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.background import BackgroundGateway
from gateway.config import parse_policy
from serving.standin import StandinServer
from tests.conftest import API_KEY, policy_dict

AUTH = {"authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def fuzz_gateway(slm_upstream: StandinServer, llm_upstream: StandinServer,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundGateway]:
    tmp = tmp_path_factory.mktemp("fuzz")
    doc = policy_dict(slm_upstream.base_url, llm_upstream.base_url,
                      ledger={"url": f"sqlite+aiosqlite:///{tmp / 'l.sqlite'}"},
                      limits={"tenants": {"tenant-a": {"max_tokens": 2000}}},
                      privacy={"action": "mask"})
    with BackgroundGateway(parse_policy(doc, base_dir=str(tmp))) as gw:
        yield gw


def test_openapi_schema_fuzz(fuzz_gateway: BackgroundGateway) -> None:
    # Driven through hypothesis directly (schemathesis's pytest plugin does not load under this pytest).
    api = schemathesis.openapi.from_url(f"{fuzz_gateway.url}/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    paths = {op.path for op in operations}
    assert {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models"} <= paths
    seen: set[str] = set()

    @given(case=st.one_of(*[op.as_strategy() for op in operations]))
    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case: Any) -> None:
        seen.add(case.path)
        response = case.call(headers=AUTH, timeout=30)
        assert response.status_code < 500, (case.method, case.path, case.body, response.text[:500])

    run()
    assert {"/v1/chat/completions", "/v1/completions", "/v1/embeddings"} <= seen


# -- hypothesis: chat payloads ---------------------------------------------------------------------------
_text = st.text(max_size=200) | st.sampled_from(["select * from t join u", "fix this python bug",
                                                  "my card 4111 1111 1111 1111", "mail a@b.io", ""])
_junk = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) \
    | st.text(max_size=20) | st.lists(st.integers(), max_size=3) \
    | st.dictionaries(st.text(max_size=5), st.integers(), max_size=3)
_part = st.fixed_dictionaries({"type": st.just("text"), "text": _text}) \
    | st.dictionaries(st.sampled_from(["type", "text", "image_url", "x"]), _junk, max_size=3)
_content = _text | st.lists(_part, max_size=3) | _junk
_role = st.sampled_from(["system", "developer", "user", "assistant", "tool"]) | st.text(max_size=8) | _junk
_call = st.fixed_dictionaries({"id": st.text(max_size=6), "type": st.just("function"),
                               "function": st.fixed_dictionaries({"name": st.just("f"), "arguments": st.just("{}")})})
# Any field may be missing, null or of the wrong type: OpenAI refuses such messages with a 400, so must we.
_message = st.fixed_dictionaries({}, optional={
    "role": _role, "content": _content | st.none(), "name": st.text(max_size=10) | _junk,
    "tool_calls": st.lists(_call, max_size=2) | _junk, "tool_call_id": st.text(max_size=8) | _junk})


def _openai_refuses(messages: Any) -> bool:
    """The rules OpenAI applies to messages, written out independently of the gateway's code."""
    if not isinstance(messages, list) or not messages:
        return True
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ("system", "developer", "user", "assistant", "tool"):
            return True
        content, role = m.get("content"), m["role"]
        if content is not None and not isinstance(content, str | list):
            return True
        if role in ("system", "developer", "user", "tool") and content is None:
            return True
        if role == "tool" and not (isinstance(m.get("tool_call_id"), str) and m["tool_call_id"]):
            return True
        if role == "assistant" and content is None and not m.get("tool_calls"):
            return True
    return False
_body = st.fixed_dictionaries(
    {"model": st.sampled_from(["auto", "sql", "code", "llm", "gpt-4o-mini", "nope"]) | _junk,
     "messages": st.lists(_message, min_size=0, max_size=4) | _junk},
    optional={"stream": st.booleans() | _junk, "max_tokens": st.integers(-5, 5000) | _junk,
              "max_completion_tokens": st.integers(1, 100), "temperature": st.floats(-1, 3) | _junk,
              "n": st.integers(-1, 3), "stop": _junk, "tools": st.lists(st.dictionaries(st.text(max_size=4), _junk)),
              "response_format": _junk, "stream_options": _junk, "seed": _junk, "user": _junk,
              "cache": _junk, "extra_field": _junk})


@given(body=_body)
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_hypothesis_chat_payloads(fuzz_gateway: BackgroundGateway, body: dict[str, Any]) -> None:
    with httpx.Client(timeout=30) as http:
        resp = http.post(f"{fuzz_gateway.base_url}/chat/completions", json=body, headers=AUTH)
        status = resp.status_code
        text = resp.read().decode("utf-8", "replace")
    assert status < 500, (body, text[:500])
    if _openai_refuses(body.get("messages")):
        assert status == 400, (body, text[:500])
        assert str(resp.json()["error"]["param"]).startswith("messages"), text[:500]
    if status >= 400:
        assert set(resp.json()["error"]) == {"message", "type", "param", "code"}
    elif body.get("stream") is True:
        assert text.rstrip().endswith("data: [DONE]") and '"error"' not in text, text[-300:]

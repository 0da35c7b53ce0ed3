"""The gateway as a drop-in for the real openai SDK: sync and async, streaming and not."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from gateway.background import BackgroundGateway
from serving.standin import StandinServer
from tests.conftest import ADMIN_KEY, API_KEY

SQL = [{"role": "user", "content": "Write a SQL query joining the orders table with customers."}]
GENERAL = [{"role": "user", "content": "Suggest a name for a golden retriever puppy."}]


def test_chat_in_domain_goes_to_its_slm(client: Any, slm_upstream: StandinServer) -> None:
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=SQL)
    completion = raw.parse()
    assert completion.choices[0].message.content.startswith("[stand-in sql]")
    assert raw.headers["x-slmgw-route"] == "slm"
    assert raw.headers["x-slmgw-model"] == "sql"
    assert raw.headers["x-slmgw-domain"] == "sql"
    assert float(raw.headers["x-slmgw-confidence"]) >= 0.6
    assert raw.headers["x-slmgw-reason"].startswith("keywords sql=")
    assert raw.headers["x-request-id"]
    assert float(raw.headers["x-slmgw-overhead-ms"]) >= 0
    assert completion.usage.completion_tokens > 0
    assert slm_upstream.state.requests[-1]["model"] == "sql"


def test_general_request_goes_to_llm_through_litellm(client: Any, llm_upstream: StandinServer) -> None:
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=GENERAL)
    assert raw.headers["x-slmgw-route"] == "llm"
    assert raw.headers["x-slmgw-model"] == "openai/gpt-4o-mini"
    assert raw.parse().choices[0].message.content.startswith("[stand-in gpt-4o-mini]")
    assert llm_upstream.state.requests[-1]["messages"] == GENERAL


def test_vllm_sampling_fields_reach_the_slm_and_unknown_fields_do_not_reach_the_llm(
        client: Any, slm_upstream: StandinServer, llm_upstream: StandinServer) -> None:
    # What reaches which backend is the trust boundary's business (test_trust_boundary.py has the attacks).
    client.chat.completions.create(model="auto", messages=SQL, extra_body={"top_k": 7, "guided_choice": ["a"]})
    assert slm_upstream.state.requests[-1]["top_k"] == 7
    assert slm_upstream.state.requests[-1]["guided_choice"] == ["a"]
    client.chat.completions.create(model="auto", messages=GENERAL, extra_body={"top_k": 3}, seed=4)
    assert llm_upstream.state.requests[-1]["seed"] == 4
    assert "top_k" not in llm_upstream.state.requests[-1]  # default policy: unknown_fields drop


def test_named_models(client: Any) -> None:
    raw = client.chat.completions.with_raw_response.create(model="code", messages=GENERAL)
    assert (raw.headers["x-slmgw-route"], raw.headers["x-slmgw-model"]) == ("slm", "code")
    raw = client.chat.completions.with_raw_response.create(model="llm", messages=SQL)
    assert raw.headers["x-slmgw-route"] == "llm"
    # the litellm model string and its bare name also name the LLM backend
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=SQL)
    assert raw.headers["x-slmgw-route"] == "llm"


async def test_async_streaming_with_usage(aclient: Any) -> None:
    stream = await aclient.chat.completions.create(model="auto", messages=SQL, stream=True,
                                                   stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("[stand-in sql]")
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])


def test_streaming_without_usage_has_no_usage_chunk(client: Any) -> None:
    chunks = list(client.chat.completions.create(model="auto", messages=GENERAL, stream=True))
    assert chunks and all(c.choices for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks).startswith("[stand-in gpt-4o-mini]")


def test_stream_wire_format_ends_with_done(gateway: BackgroundGateway) -> None:
    with httpx.stream("POST", f"{gateway.base_url}/chat/completions", headers={"authorization": f"Bearer {API_KEY}"},
                      json={"model": "auto", "messages": SQL, "stream": True}) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["x-slmgw-route"] == "slm"
        lines = [line for line in resp.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"


async def test_async_completions_and_llm_stream(aclient: Any) -> None:
    raw = await aclient.completions.with_raw_response.create(model="auto", prompt="SELECT from which table? sql")
    assert raw.headers["x-slmgw-route"] == "slm"
    assert raw.parse().choices[0].text.startswith("[stand-in sql]")
    stream = await aclient.completions.create(model="auto", prompt="Tell me a joke", stream=True)
    text = "".join([c.choices[0].text or "" async for c in stream if c.choices])
    assert text.startswith("[stand-in gpt-4o-mini]")


def test_embeddings_go_to_the_configured_backend(client: Any, llm_upstream: StandinServer) -> None:
    result = client.embeddings.create(model="auto", input=["hello", "world"])
    assert len(result.data) == 2 and len(result.data[0].embedding) == 8
    assert llm_upstream.state.requests[-1]["input"] == ["hello", "world"]


def test_models_list(client: Any) -> None:
    ids = [m.id for m in client.models.list().data]
    assert ids == ["auto", "sql", "code", "support", "math", "llm"]


def test_models_retrieve(client: Any) -> None:
    import openai

    assert client.models.retrieve("sql").id == "sql"
    assert client.models.retrieve("auto").owned_by == "slm-gateway"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-9")


def test_tools_and_json_schema_requests_escalate_to_the_llm(client: Any) -> None:
    tools = [{"type": "function", "function": {"name": "run_sql", "parameters": {"type": "object"}}}]
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=SQL, tools=tools)
    assert raw.headers["x-slmgw-route"] == "llm"
    assert "unsupported:tools" in raw.headers["x-slmgw-reason"]
    schema = {"type": "json_schema", "json_schema": {"name": "q", "schema": {"type": "object"}}}
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=SQL, response_format=schema)
    assert raw.headers["x-slmgw-route"] == "llm"
    assert "unsupported:json_schema" in raw.headers["x-slmgw-reason"]


def test_routes_without_v1_prefix(gateway: BackgroundGateway) -> None:
    from openai import OpenAI

    bare = OpenAI(base_url=gateway.url, api_key=API_KEY, max_retries=0)
    raw = bare.chat.completions.with_raw_response.create(model="auto", messages=SQL)
    assert raw.headers["x-slmgw-route"] == "slm"
    assert next(m.id for m in bare.models.list().data) == "auto"


def test_slm_failure_escalates_to_llm(client: Any, slm_upstream: StandinServer) -> None:
    slm_upstream.state.fail_status = 503
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=SQL)
    assert raw.headers["x-slmgw-route"] == "llm"
    assert raw.headers["x-slmgw-domain"] == "sql"
    assert raw.headers["x-slmgw-reason"].startswith("escalated slm_http_503")
    assert raw.parse().choices[0].message.content.startswith("[stand-in gpt-4o-mini]")


def test_slm_stream_failure_escalates_before_first_byte(client: Any, slm_upstream: StandinServer) -> None:
    slm_upstream.state.fail_status = 500
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=SQL, stream=True)
    assert raw.headers["x-slmgw-route"] == "llm"
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert text.startswith("[stand-in gpt-4o-mini]")


def test_readiness_reports_a_dead_slm_as_degraded_but_stays_ready(make_policy: Any, start_gateway: Any) -> None:
    from gateway.background import free_port

    dead = f"http://127.0.0.1:{free_port()}/v1"
    gw = start_gateway(make_policy(slm_backends={n: {"base_url": dead, "model": n}
                                                 for n in ("sql", "code", "support", "math")}))
    resp = httpx.get(gw.url + "/health/ready", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert resp.status_code == 200
    assert resp.json()["status"] == "degraded" and resp.json()["degraded"] == ["slm"]


def test_slm_unreachable_escalates(make_policy: Any, start_gateway: Any) -> None:
    from openai import OpenAI

    from gateway.background import free_port

    dead = f"http://127.0.0.1:{free_port()}/v1"
    policy = make_policy(slm_backends={n: {"base_url": dead, "model": n} for n in ("sql", "code", "support", "math")})
    gw = start_gateway(policy)
    raw = OpenAI(base_url=gw.base_url, api_key=API_KEY, max_retries=0).chat.completions.with_raw_response.create(
        model="auto", messages=SQL)
    assert raw.headers["x-slmgw-route"] == "llm"
    assert "slm_unreachable" in raw.headers["x-slmgw-reason"]


@pytest.mark.parametrize("path", ["/health/live", "/health/ready"])
def test_health(gateway: BackgroundGateway, path: str) -> None:
    resp = httpx.get(gateway.url + path)
    assert resp.status_code == 200 and resp.json()["status"] == "ok"


def test_internals_need_the_admin_key(make_policy: Any, start_gateway: Any) -> None:
    from openai import OpenAI

    from gateway.background import free_port

    port = free_port()
    dead = f"http://127.0.0.1:{port}/v1"
    gw = start_gateway(make_policy(
        slm_backends={n: {"base_url": dead, "model": n} for n in ("sql", "code", "support", "math")},
        llm_backends={"llm": {"model": "openai/gpt-4o-mini", "api_base": f"http://127.0.0.1:{port}/v1",
                              "api_key": "upstream-key", "timeout_s": 5, "max_retries": 0}}))
    public = httpx.get(gw.url + "/health/ready", headers={"authorization": f"Bearer {API_KEY}"})
    assert public.status_code == 200 and public.json() == {"status": "degraded"}
    assert str(port) not in public.text
    full = httpx.get(gw.url + "/health/ready", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert dead in full.text and full.json()["degraded"] == ["slm"]
    # Every backend down: the 503 names the routes and reasons, never an address or an upstream's text.
    client = OpenAI(base_url=gw.base_url, api_key=API_KEY, max_retries=0)
    for stream in (False, True):
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(model="auto", messages=SQL, stream=stream)
        assert info.value.status_code == 503
        message = info.value.body["message"] if isinstance(info.value.body, dict) else str(info.value.body)
        assert "slm:sql" in message and "llm:llm" in message, message
        assert str(port) not in message and "127.0.0.1" not in message and "Connection" not in message

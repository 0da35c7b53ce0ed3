"""The trust boundary (issue 13): nothing in a client's body can change where the gateway connects, which
credentials it sends, or make litellm answer from a mock.

Real litellm, real loopback servers: ``llm_upstream`` is the configured provider (its key is
``PROVIDER_KEY``), ``attacker`` stands in for any other host. Every attack is sent through the openai SDK
(``extra_body``) on each endpoint, streamed and not, with the policy's ``unknown_fields`` at ``drop`` and
at ``pass``; each asserts that the attacker saw nothing, that the provider saw only its own key and none
of the injected headers, and that the answer did not come from a mock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from gateway.background import BackgroundGateway
from gateway.config import parse_policy
from serving.params import FieldRules, for_llm, for_slm
from serving.standin import StandinServer
from tests.conftest import API_KEY, policy_dict

PROVIDER_KEY = "sk-PROVIDER-SECRET-0123456789"
MOCK = "MOCKED-ANSWER-FROM-LITELLM"


@pytest.fixture(scope="module")
def attacker() -> Iterator[StandinServer]:
    server = StandinServer(models=["*"], reply="attacker's answer").start()
    yield server
    server.stop()


def _attacks(evil: str) -> dict[str, dict[str, Any]]:
    """Body fields litellm (or a LiteLLM proxy, or vLLM) would read as settings. ``evil`` is the attacker's
    API root."""
    entry = {"model": "openai/gpt-4o-mini", "api_base": evil, "api_key": "x"}
    return {
        "fallbacks": {"fallbacks": [{"logit_bias": None, "api_base": evil}], "logit_bias": {"bogus": 1}},
        "fallbacks_models": {"fallbacks": ["openai/gpt-4o", entry], "context_window_fallback_dict":
                             {"openai/gpt-4o-mini": "openai/attacker"}},
        "api_base": {"api_base": evil},
        "base_url": {"base_url": evil},
        "model_list": {"model_list": [{"model_name": "gpt-4o-mini", "litellm_params": entry}]},
        "mock_response": {"mock_response": MOCK},
        "mock_other": {"mock_tool_calls": [{"id": "x"}], "mock_timeout": True, "mock_testing_fallbacks": True},
        "custom_llm_provider": {"custom_llm_provider": "azure", "api_version": "2024-01-01"},
        "deployment": {"deployment_id": "evil", "azure_ad_token": "t", "azure": True},
        "headers": {"headers": {"x-evil": "1", "authorization": "Bearer client"}},
        "extra_headers": {"extra_headers": {"x-evil": "1", "authorization": "Bearer client"}},
        "api_key": {"api_key": "sk-client-chosen"},
        "other_credentials": {"aws_access_key_id": "A", "aws_secret_access_key": "B", "aws_region_name": "x",
                              "vertex_credentials": "{}", "vertex_project": "p", "anthropic_api_key": "k"},
        "litellm_params": {"litellm_params": {"api_base": evil}, "litellm_metadata": {"a": 1},
                           "proxy_server_request": {"url": evil}},
        "nested_extra": {"extra_body": {"api_base": evil}, "extra_query": {"api-version": "x"}},
        "retries_timeouts": {"num_retries": 50, "max_retries": 50, "timeout": 0.0001, "stream_timeout": 0.0001},
        "transport": {"ssl_verify": False, "client": "x", "shared_session": "x", "organization": "evil-org"},
        "logging": {"success_callback": ["webhook"], "callbacks": ["x"], "langfuse_host": evil,
                    "langfuse_secret_key": "s", "user_api_key": "k"},
        "vllm_server_side": {"chat_template": "{{ 7*7 }}", "logits_processors": ["os.system"],
                             "vllm_xargs": {"a": 1}, "kv_transfer_params": {"a": 1}},
    }


@pytest.fixture(scope="module", params=["drop", "pass"])
def boundary(request: pytest.FixtureRequest, slm_upstream: StandinServer, llm_upstream: StandinServer,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BackgroundGateway, str]]:
    tmp: Path = tmp_path_factory.mktemp(f"boundary-{request.param}")
    doc = policy_dict(slm_upstream.base_url, llm_upstream.base_url,
                      ledger={"url": f"sqlite:///{tmp / 'l.sqlite'}"})
    doc["llm_backends"]["llm"]["api_key"] = PROVIDER_KEY
    doc["server"] = {"unknown_fields": request.param}
    with BackgroundGateway(parse_policy(doc, base_dir=str(tmp))) as gw:
        yield gw, request.param


def _client(gw: BackgroundGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=API_KEY, max_retries=0, timeout=30)


def _call(client: openai.OpenAI, endpoint: str, body: dict[str, Any]) -> str:
    """Send one request; returns the answer's text, or the error's message."""
    try:
        if endpoint == "chat":
            r = client.chat.completions.create(model="llm", messages=[{"role": "user", "content": "hi"}],
                                               extra_body=body)
            return r.choices[0].message.content or ""
        if endpoint == "chat_stream":
            parts = client.chat.completions.create(model="llm", messages=[{"role": "user", "content": "hi"}],
                                                   stream=True, extra_body=body)
            return "".join((c.choices[0].delta.content or "") for c in parts if c.choices)
        if endpoint == "completion":
            return client.completions.create(model="llm", prompt="hi", extra_body=body).choices[0].text
        emb = client.embeddings.create(model="auto", input="hi", extra_body=body)
        return str(len(emb.data))
    except openai.APIError as exc:
        return f"error: {exc}"


@pytest.mark.parametrize("endpoint", ["chat", "chat_stream", "completion", "embedding"])
def test_no_client_field_redirects_the_provider_or_its_key(boundary: tuple[BackgroundGateway, str],
                                                           endpoint: str, llm_upstream: StandinServer,
                                                           attacker: StandinServer) -> None:
    gw, mode = boundary
    client = _client(gw)
    for name, body in _attacks(attacker.base_url).items():
        attacker.state.hits.clear()
        llm_upstream.state.hits.clear()
        llm_upstream.state.requests.clear()
        # As in the report: the provider refuses the request, which is when litellm follows fallbacks.
        llm_upstream.state.fail_status = 400 if name == "fallbacks" else None
        answer = _call(client, endpoint, body)
        where = f"{mode}/{endpoint}/{name}: {answer[:200]}"
        assert attacker.state.hits == [], where
        assert MOCK not in answer and "attacker" not in answer, where
        assert llm_upstream.state.hits, f"the configured provider was never called: {where}"
        for hit in llm_upstream.state.hits:
            assert hit["headers"].get("authorization") == f"Bearer {PROVIDER_KEY}", where
            assert "x-evil" not in hit["headers"], where
        for sent in llm_upstream.state.requests:  # nor does any setting travel in the provider's body
            leaked = set(sent) & {"api_base", "base_url", "fallbacks", "model_list", "mock_response",
                                  "custom_llm_provider", "api_key", "headers", "extra_headers",
                                  "aws_secret_access_key", "chat_template", "logits_processors", "extra_body"}
            assert not leaked, (where, leaked)
        if name != "fallbacks" and not answer.startswith("error"):
            assert endpoint == "embedding" or answer.startswith("[stand-in gpt-4o-mini]"), where
    llm_upstream.state.fail_status = None


def test_unknown_fields_follow_the_policy(boundary: tuple[BackgroundGateway, str], llm_upstream: StandinServer,
                                          slm_upstream: StandinServer) -> None:
    gw, mode = boundary
    client = _client(gw)
    client.chat.completions.create(model="llm", messages=[{"role": "user", "content": "hi"}],
                                   extra_body={"top_k": 3, "some_new_param": {"a": 1}}, temperature=0.5)
    sent = llm_upstream.state.requests[-1]
    assert sent["temperature"] == 0.5  # OpenAI parameters always pass
    if mode == "pass":  # through litellm's extra_body into the provider's JSON body
        assert sent["top_k"] == 3 and sent["some_new_param"] == {"a": 1}
    else:
        assert "top_k" not in sent and "some_new_param" not in sent
    # vLLM's own sampling parameters reach an SLM in both modes; its server-side hooks never do.
    client.chat.completions.create(model="sql", messages=[{"role": "user", "content": "rows per day"}],
                                   extra_body={"top_k": 7, "guided_choice": ["a"], "chat_template": "{{x}}",
                                               "logits_processors": ["os.system"], "api_base": "http://x"})
    got = slm_upstream.state.requests[-1]
    assert got["top_k"] == 7 and got["guided_choice"] == ["a"] and got["model"] == "sql"
    assert not {"chat_template", "logits_processors", "api_base"} & set(got)
    assert ("some_new_param" in str(got)) is False


def test_allowlists_split_fields_by_endpoint() -> None:
    body = {"messages": [], "temperature": 0, "metadata": {"a": "b"}, "top_k": 2, "api_base": "x",
            "fallbacks": [], "prompt_cache_key": "k", "mock_response": "m", "my_field": 1}
    kwargs, extra = for_llm("chat", body, FieldRules())
    assert set(kwargs) == {"messages", "temperature", "prompt_cache_key"}
    assert extra == {"metadata": {"a": "b"}}  # an OpenAI field litellm would read as its own: body only
    kwargs, extra = for_llm("chat", body, FieldRules("pass"))
    assert extra == {"metadata": {"a": "b"}, "top_k": 2, "my_field": 1}
    kwargs, extra = for_llm("chat", body, FieldRules("drop", frozenset({"my_field"})))
    assert extra == {"metadata": {"a": "b"}, "my_field": 1}
    kwargs, _ = for_llm("embedding", {"input": "x", "dimensions": 8, "temperature": 1}, FieldRules())
    assert kwargs == {"input": "x", "dimensions": 8}
    kwargs, _ = for_llm("completion", {"prompt": "x", "suffix": "y", "messages": []}, FieldRules())
    assert kwargs == {"prompt": "x", "suffix": "y"}
    assert for_slm("chat", body, FieldRules("pass")) == {k: body[k] for k in
                                                           ("messages", "temperature", "metadata", "top_k",
                                                            "prompt_cache_key", "my_field")}


def test_policy_cannot_allow_a_setting(slm_upstream: StandinServer, llm_upstream: StandinServer) -> None:
    from gateway.config import PolicyError

    doc = policy_dict(slm_upstream.base_url, llm_upstream.base_url)
    doc["server"] = {"extra_fields": ["top_k", "api_base", "vertex_credentials"]}
    with pytest.raises(PolicyError) as err:
        parse_policy(doc)
    assert "server.extra_fields" in str(err.value) and "api_base" in str(err.value)
    assert "vertex_credentials" in str(err.value) and "top_k," not in str(err.value)

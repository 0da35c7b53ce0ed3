"""The gateway against a real vLLM on the CPU (tiny random Llama + four LoRA adapters).

vLLM is started once per test session by ``serving.vllm_dev`` (fixture ``vllm`` in conftest.py), which
reuses the vLLM venv and the model when present (prepare them with ``slmgw serving dev-vllm
--prepare-only``). The hosted LLM is a
loopback OpenAI-compatible stand-in reached through litellm. The last test kills vLLM mid-run and
checks that requests escalate to the LLM without a client error, then return to the SLM once a
restarted vLLM is healthy again.

If vLLM cannot be installed here the tests are skipped with a loud reason, unless
``SLMGW_REQUIRE_VLLM=1`` (CI), where that is a failure.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.background import BackgroundGateway
from gateway.config import Policy, parse_policy
from serving.standin import StandinServer
from serving.vllm_dev import DEFAULT_ADAPTERS
from tests.integration.conftest import Vllm

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(600)]

SQL = [{"role": "user", "content": "Write a SQL query that joins the orders table with customers."}]
CODE = [{"role": "user", "content": "Fix the bug in this python function: def f(x): return x +"}]
ADMIN_KEY = "sk-vllm-test-admin"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
KEYWORDS = {"sql": ["sql", "query", "table", "join"], "code": ["python", "function", "bug"],
            "support": ["refund", "account"], "math": ["solve", "equation"]}


@pytest.fixture(scope="module")
def llm_standin() -> Iterator[StandinServer]:
    server = StandinServer(models=["gpt-4o-mini"]).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(vllm: Vllm, llm_standin: StandinServer, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[BackgroundGateway]:
    tmp: Path = tmp_path_factory.mktemp("gw")
    policy: Policy = parse_policy({
        "slm_backends": {n: {"base_url": vllm.base_url, "model": n, "context_length": 2048, "timeout_s": 60,
                             "connect_timeout_s": 1, "health_interval_s": 1, "max_backoff_s": 2}
                         for n in DEFAULT_ADAPTERS},
        "llm_backends": {"llm": {"model": "openai/gpt-4o-mini", "api_base": llm_standin.base_url,
                                 "api_key": "sk-standin-key", "timeout_s": 30}},
        "domains": [{"name": n, "backend": n, "keywords": KEYWORDS[n]} for n in DEFAULT_ADAPTERS],
        "router": {"kind": "keyword", "threshold": 0.5},
        "fallback": {"llm": "llm"},
        "cache": {"enabled": False},
        "ledger": {"url": f"sqlite+aiosqlite:///{tmp / 'ledger.sqlite'}"},
        "auth": {"admin_keys": [ADMIN_KEY]},
    }, base_dir=str(tmp))
    with BackgroundGateway(policy) as gw:
        yield gw


@pytest.fixture(scope="module")
def client(gateway: BackgroundGateway) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0, timeout=120)


def ask(client: Any, messages: list[dict[str, str]], stream: bool,
        extra: dict[str, Any] | None = None) -> tuple[dict[str, str], str, set[str], int]:
    """Send one chat request; return (headers, text, model names the body carried, completion tokens)."""
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=messages, max_tokens=6, temperature=0, stream=stream, extra_body=extra,
        **({"stream_options": {"include_usage": True}} if stream else {}))
    headers = {k.lower(): v for k, v in raw.headers.items()}
    if not stream:
        completion = raw.parse()
        return (headers, completion.choices[0].message.content or "", {completion.model},
                completion.usage.completion_tokens)
    text, models, tokens = "", set(), 0
    for chunk in raw.parse():
        models.add(chunk.model)
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage:
            tokens = chunk.usage.completion_tokens
    return headers, text, models, tokens


def test_vllm_serves_every_adapter(vllm: Vllm, gateway: BackgroundGateway) -> None:
    ids = {m["id"] for m in httpx.get(f"{vllm.base_url}/models").json()["data"]}
    assert set(DEFAULT_ADAPTERS) <= ids
    listed = {m["id"]: m for m in httpx.get(f"{gateway.base_url}/models").json()["data"]}
    assert all(listed[n]["served_model"] == n for n in DEFAULT_ADAPTERS)
    ready = httpx.get(f"{gateway.url}/health/ready", headers=ADMIN).json()["components"]["slm"]
    assert ready["status"] == "ok", ready
    assert ready["problems"] == []


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize(("messages", "adapter"), [(SQL, "sql"), (CODE, "code")], ids=["sql", "code"])
def test_domain_goes_to_its_adapter(client: Any, messages: list[dict[str, str]], adapter: str,
                                    stream: bool) -> None:
    # Random weights may pick end-of-sequence at once; vLLM's ignore_eos makes the 6 tokens come.
    headers, _, models, tokens = ask(client, messages, stream, {"ignore_eos": True})
    assert headers["x-slmgw-route"] == "slm", headers
    assert headers["x-slmgw-domain"] == adapter
    assert headers["x-slmgw-model"] == adapter
    assert models == {adapter}  # vLLM itself names the LoRA adapter that answered
    assert "escalated" not in headers["x-slmgw-reason"]
    assert tokens == 6  # random weights: the text may be special tokens only, but 6 were generated


def test_killed_vllm_escalates_then_recovers(vllm: Vllm, gateway: BackgroundGateway, client: Any) -> None:
    assert vllm.server is not None
    vllm.server.kill()
    assert not vllm.server.alive()
    # No client error: each request, streamed or not, is answered by the LLM stand-in instead.
    for stream in (False, True, False):
        headers, text, _, _ = ask(client, SQL, stream)
        assert headers["x-slmgw-route"] == "llm", headers
        assert headers["x-slmgw-domain"] == "sql"
        assert headers["x-slmgw-reason"].startswith("escalated slm_"), headers["x-slmgw-reason"]
        assert text.startswith("[stand-in gpt-4o-mini]")
    ready = httpx.get(f"{gateway.url}/health/ready", headers=ADMIN).json()["components"]["slm"]
    assert ready["backends"]["sql"]["state"] == "down"

    vllm.start()  # same port; the gateway's breaker probes it again within max_backoff_s
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready = httpx.get(f"{gateway.url}/health/ready", headers=ADMIN).json()["components"]["slm"]
        if ready["backends"]["sql"]["state"] == "up":
            break
        time.sleep(0.5)
    assert ready["backends"]["sql"]["state"] == "up", ready
    for stream in (False, True):
        headers, _, models, _ = ask(client, SQL, stream)
        assert headers["x-slmgw-route"] == "slm", headers
        assert models == {"sql"}

"""Shared fixtures: loopback stand-in upstreams, a policy pointing at them, and a running gateway.

The upstreams are real HTTP servers on 127.0.0.1 that speak the OpenAI API (``serving.standin``); the
LLM path goes through litellm to one of them. Nothing here mocks the gateway itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from gateway.background import BackgroundGateway
from gateway.config import Policy, parse_policy
from serving.standin import StandinServer

API_KEY = "sk-test-tenant-a"
API_KEY_B = "sk-test-tenant-b"
ADMIN_KEY = "sk-test-admin"
DOMAINS = ["sql", "code", "support", "math"]


@pytest.fixture(scope="session")
def slm_upstream() -> Iterator[StandinServer]:
    server = StandinServer(models=[*DOMAINS, "embed-small"]).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def llm_upstream() -> Iterator[StandinServer]:
    server = StandinServer(models=["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]).start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _reset_upstreams(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    for name in ("slm_upstream", "llm_upstream"):
        if name in request.fixturenames:
            state = request.getfixturevalue(name).state
            state.fail_status = None
            state.delay_s = 0.0
            state.reply_fn = None
            state.requests.clear()
            state.hits.clear()


def policy_dict(slm_url: str, llm_url: str, **overrides: Any) -> dict[str, Any]:
    """A policy like deploy/examples/policy.yaml, pointed at the loopback stand-ins."""
    slm = {name: {"base_url": slm_url, "model": name, "context_length": 4096, "timeout_s": 10,
                  "connect_timeout_s": 1} for name in DOMAINS}
    doc: dict[str, Any] = {
        "auth": {"api_keys": [{"key": API_KEY, "tenant": "tenant-a"}, {"key": API_KEY_B, "tenant": "tenant-b"}],
                 "admin_keys": [ADMIN_KEY]},
        "slm_backends": slm,
        "llm_backends": {"llm": {"model": "openai/gpt-4o-mini", "api_base": llm_url, "api_key": "upstream-key",
                                 "timeout_s": 10}},
        "domains": [
            {"name": "sql", "backend": "sql", "keywords": ["sql", "query", "table", "join"]},
            {"name": "code", "backend": "code", "keywords": ["python", "function", "bug", "traceback"]},
            {"name": "support", "backend": "support", "keywords": ["refund", "card", "account", "order"]},
            {"name": "math", "backend": "math", "keywords": ["solve", "equation", "percent"]},
        ],
        "router": {"kind": "keyword", "threshold": 0.6},
        "fallback": {"llm": ["llm"]},
        "embeddings": {"backend": "llm"},
        "cache": {"enabled": False},
    }
    for key, value in overrides.items():
        doc[key] = value
    return doc


@pytest.fixture
def make_policy(slm_upstream: StandinServer, llm_upstream: StandinServer,
                tmp_path: Path) -> Callable[..., Policy]:
    def make(**overrides: Any) -> Policy:
        doc = policy_dict(slm_upstream.base_url, llm_upstream.base_url, **overrides)
        doc.setdefault("ledger", {"url": f"sqlite+aiosqlite:///{tmp_path / 'ledger.sqlite'}"})
        return parse_policy(doc, base_dir=str(tmp_path))

    return make


@pytest.fixture
def gateway(make_policy: Callable[..., Policy]) -> Iterator[BackgroundGateway]:
    with BackgroundGateway(make_policy()) as gw:
        yield gw


@pytest.fixture
def start_gateway() -> Iterator[Callable[[Policy], BackgroundGateway]]:
    started: list[BackgroundGateway] = []

    def start(policy: Policy) -> BackgroundGateway:
        gw = BackgroundGateway(policy).start()
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()


@pytest.fixture
def client(gateway: BackgroundGateway) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=gateway.base_url, api_key=API_KEY, max_retries=0, timeout=30)


@pytest.fixture
def aclient(gateway: BackgroundGateway) -> Any:
    from openai import AsyncOpenAI

    return AsyncOpenAI(base_url=gateway.base_url, api_key=API_KEY, max_retries=0, timeout=30)

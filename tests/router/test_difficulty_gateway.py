"""The difficulty gate through a running gateway: hard requests of a domain go to the LLM with a reason."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from openai import OpenAI

from gateway.background import BackgroundGateway
from gateway.config import Policy, PolicyError, parse_policy
from gateway.preflight import preflight
from router.difficulty import DifficultyError, hard_gate
from router.difficulty_train import train
from tests.conftest import API_KEY, policy_dict
from tests.router.test_difficulty import synthetic


def _domains(hard: float | None) -> list[dict[str, object]]:
    math: dict[str, object] = {"name": "math", "backend": "math", "keywords": ["number"]}
    if hard is not None:
        math["hard_threshold"] = hard
    return [{"name": "sql", "backend": "sql", "keywords": ["sql"]}, math]


def test_hard_requests_escalate(make_policy: Callable[..., Policy], start_gateway: Callable[..., BackgroundGateway],
                                tmp_path: Path) -> None:
    train(synthetic(400, 21)).save(tmp_path / "difficulty.npz")
    policy = make_policy(domains=_domains(0.5),
                         router={"kind": "keyword", "threshold": 0.6, "difficulty_model_path": "difficulty.npz"})
    gw = start_gateway(policy)
    client = OpenAI(base_url=gw.base_url, api_key=API_KEY, max_retries=0, timeout=30)

    def ask(text: str) -> tuple[str, str]:
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": text}])
        raw.parse()
        return raw.headers["x-slmgw-route"], raw.headers["x-slmgw-reason"]

    route, reason = ask("please explain eigenvalue number 7?")
    assert route == "llm"
    assert reason.startswith("hard math p=") and ">=0.50; keywords" in reason
    route, reason = ask("tell me about breakfast number 3?")
    assert route == "slm", reason


def test_policy_needs_the_model(slm_upstream: object, tmp_path: Path) -> None:
    doc = policy_dict("http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1", domains=_domains(0.7))
    with pytest.raises(PolicyError, match=r"domains.1.hard_threshold: needs router.difficulty_model_path"):
        parse_policy(doc, base_dir=str(tmp_path))
    doc["router"] = {"kind": "keyword", "difficulty_model_path": "missing.npz"}
    policy = parse_policy(doc, base_dir=str(tmp_path))
    with pytest.raises(DifficultyError, match=r"missing\.npz: no such file"):
        hard_gate(policy)
    assert [p for p in preflight(policy) if p.startswith("router.difficulty_model_path: ")] == [
        f"router.difficulty_model_path: difficulty model {tmp_path / 'missing.npz'}: no such file"]

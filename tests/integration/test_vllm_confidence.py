"""Answer-level escalation against a real vLLM on the CPU (tiny random Llama + LoRA adapters).

The tiny model's answers are noise, but its logprobs are real: the test first asks vLLM directly for
the confidence of a greedy answer, then sets one domain's floor just above it (that answer must be
discarded and escalated, its cost kept in the ledger) and another's well below it (served, and the
client gets exactly what vLLM returns without the gateway's logprob request).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.background import BackgroundGateway
from gateway.config import parse_policy
from gateway.costs import load_model_cost_map, lookup_price
from gateway.ledger.schema import TABLE
from serving.confidence import measure
from serving.standin import StandinServer
from tests.integration.conftest import Vllm

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(600)]

MESSAGES = [{"role": "user", "content": "Write a SQL query that joins the orders table with customers."}]
PROMPT = "SELECT name FROM users WHERE"
HELD = 4  # stream_holdback_tokens
SLM_USD_PER_1M = 1000.0  # large, so the discarded answer's cost is visible next to the LLM's


def _direct(vllm: Vllm, path: str, body: dict[str, Any]) -> dict[str, Any]:
    resp = httpx.post(f"{vllm.base_url}{path}", json=body, timeout=120)
    resp.raise_for_status()
    out: dict[str, Any] = resp.json()
    return out


@pytest.fixture(scope="module")
def measured(vllm: Vllm) -> dict[str, float]:
    chat = _direct(vllm, "/chat/completions", {"model": "sql", "messages": MESSAGES, "max_tokens": 8,
                                               "temperature": 0, "logprobs": True, "top_logprobs": 2})
    conf = measure("chat", chat)
    assert conf is not None and conf.tokens > 0
    first = chat["choices"][0]["logprobs"]["content"][:HELD]
    return {"sql": conf.mean_logprob, "sql_held": sum(t["logprob"] for t in first) / len(first)}


@pytest.fixture(scope="module")
def setup(vllm: Vllm, measured: dict[str, float], tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[BackgroundGateway, Path]]:
    tmp = tmp_path_factory.mktemp("conf")
    llm = StandinServer(models=["gpt-4o-mini"]).start()
    backends = {n: {"base_url": vllm.base_url, "model": n, "context_length": 2048, "timeout_s": 60,
                    "connect_timeout_s": 1, "cost": {"usd_per_1m_tokens": SLM_USD_PER_1M}} for n in ("sql", "code")}
    policy = parse_policy({
        "slm_backends": backends,
        "llm_backends": {"llm": {"model": "openai/gpt-4o-mini", "api_base": llm.base_url, "api_key": "k",
                                 "timeout_s": 30}},
        "domains": [{"name": "sql", "backend": "sql", "min_answer_confidence": _floor(measured),
                     "stream_holdback_tokens": HELD},
                    {"name": "code", "backend": "code", "min_answer_confidence": -50.0,
                     "stream_holdback_tokens": HELD}],
        "fallback": {"llm": "llm"},
        "cache": {"enabled": False},
        "ledger": {"url": f"sqlite+aiosqlite:///{tmp / 'ledger.sqlite'}", "flush_interval_s": 0.2},
    }, base_dir=str(tmp))
    with BackgroundGateway(policy) as gw:
        yield gw, tmp / "ledger.sqlite"
    llm.stop()


def _floor(measured: dict[str, float]) -> float:
    """Just above both the whole answer's and the held tokens' confidence: both must escalate."""
    return min(max(measured["sql"], measured["sql_held"]) + 0.5, 0.0)


def _stream(url: str, body: dict[str, Any]) -> tuple[httpx.Headers, list[dict[str, Any]]]:
    with httpx.stream("POST", url, json={**body, "stream": True}, timeout=120) as resp:
        assert resp.status_code == 200
        events = [json.loads(line[6:]) for line in resp.iter_lines()
                  if line.startswith("data: ") and line != "data: [DONE]"]
        return resp.headers, events


def _ledger_row(path: Path, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if path.exists():
            con = sqlite3.connect(path)
            con.row_factory = sqlite3.Row
            try:
                row = con.execute(f"SELECT * FROM {TABLE} WHERE request_id = ?", (request_id,)).fetchone()
            except sqlite3.OperationalError:
                row = None
            finally:
                con.close()
            if row is not None:
                return dict(row)
        time.sleep(0.2)
    raise AssertionError(f"no ledger row for {request_id}")


def test_low_confidence_answer_escalates_and_is_paid_for(setup: tuple[BackgroundGateway, Path],
                                                         measured: dict[str, float]) -> None:
    gw, ledger = setup
    resp = httpx.post(f"{gw.base_url}/chat/completions", timeout=120, json={
        "model": "sql", "messages": MESSAGES, "max_tokens": 8, "temperature": 0})
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-slmgw-route"] == "llm"
    floor = _floor(measured)
    assert f"escalated low_answer_confidence sql={measured['sql']:.2f}<{floor:.2f}" in resp.headers["x-slmgw-reason"]
    row = _ledger_row(ledger, resp.headers["x-request-id"])
    extra = json.loads(row["extra"])
    assert extra["slm_discarded_backend"] == "sql"
    assert float(extra["answer_logprob"]) == pytest.approx(measured["sql"], abs=1e-3)  # what vLLM said
    tokens = int(extra["slm_discarded_tokens"])
    assert tokens > 8  # the prompt and the 8 generated tokens
    assert row["escalation"].startswith("low_answer_confidence sql=")
    slm_cost = tokens * SLM_USD_PER_1M / 1e6
    price = lookup_price("openai/gpt-4o-mini", load_model_cost_map())
    assert price is not None
    llm_cost = price.cost(row["prompt_tokens"], row["completion_tokens"])
    assert row["cost_usd"] == pytest.approx(slm_cost + llm_cost, rel=1e-6)  # both answers were paid for
    assert float(resp.headers["x-slmgw-cost-usd"]) == pytest.approx(row["cost_usd"], rel=1e-6)


def test_confident_answer_is_served_unchanged(vllm: Vllm, setup: tuple[BackgroundGateway, Path]) -> None:
    gw, ledger = setup
    body = {"model": "code", "messages": MESSAGES, "max_tokens": 8, "temperature": 0}
    resp = httpx.post(f"{gw.base_url}/chat/completions", json=body, timeout=120)
    assert resp.status_code == 200 and resp.headers["x-slmgw-route"] == "slm", resp.text
    direct = _direct(vllm, "/chat/completions", body)
    got = resp.json()
    assert got["choices"][0]["message"]["content"] == direct["choices"][0]["message"]["content"]
    assert got["choices"][0]["logprobs"] is None and direct["choices"][0]["logprobs"] is None
    extra = json.loads(_ledger_row(ledger, resp.headers["x-request-id"])["extra"])
    assert float(extra["answer_logprob"]) < 0 and "slm_discarded_backend" not in extra

    # A client that asks for one alternative gets one, with vLLM's own numbers.
    asked = {**body, "logprobs": True, "top_logprobs": 1}
    got = httpx.post(f"{gw.base_url}/chat/completions", json=asked, timeout=120).json()
    direct = _direct(vllm, "/chat/completions", asked)
    ours, theirs = got["choices"][0]["logprobs"]["content"], direct["choices"][0]["logprobs"]["content"]
    assert [len(t["top_logprobs"]) for t in ours] == [1] * len(ours)
    assert [(t["token"], round(t["logprob"], 4)) for t in ours] == [(t["token"], round(t["logprob"], 4))
                                                                     for t in theirs]


def test_completions_are_checked_and_restored(vllm: Vllm, setup: tuple[BackgroundGateway, Path]) -> None:
    gw, _ = setup
    body = {"model": "code", "prompt": PROMPT, "max_tokens": 6, "temperature": 0}
    resp = httpx.post(f"{gw.base_url}/completions", json=body, timeout=120)
    assert resp.status_code == 200 and resp.headers["x-slmgw-route"] == "slm", resp.text
    direct = _direct(vllm, "/completions", body)
    assert resp.json()["choices"][0]["text"] == direct["choices"][0]["text"]
    assert resp.json()["choices"][0]["logprobs"] is None
    asked = {**body, "logprobs": 1}
    got = httpx.post(f"{gw.base_url}/completions", json=asked, timeout=120).json()["choices"][0]["logprobs"]
    want = _direct(vllm, "/completions", asked)["choices"][0]["logprobs"]
    assert got["tokens"] == want["tokens"]
    assert [sorted(d) for d in got["top_logprobs"]] == [sorted(d) for d in want["top_logprobs"]]


def test_streams_are_held_back_and_judged(vllm: Vllm, setup: tuple[BackgroundGateway, Path],
                                          measured: dict[str, float]) -> None:
    gw, _ = setup
    body = {"messages": MESSAGES, "max_tokens": 8, "temperature": 0}
    headers, events = _stream(f"{gw.base_url}/chat/completions", {**body, "model": "sql"})
    assert headers["x-slmgw-route"] == "llm"
    assert f"low_answer_confidence sql={measured['sql_held']:.2f}<{_floor(measured):.2f}" in headers["x-slmgw-reason"]
    assert events and all("error" not in e for e in events)

    headers, events = _stream(f"{gw.base_url}/chat/completions", {**body, "model": "code"})
    assert headers["x-slmgw-route"] == "slm"
    text = "".join(c["delta"].get("content") or "" for e in events for c in e.get("choices") or ())
    direct = _direct(vllm, "/chat/completions", {**body, "model": "code"})
    assert text == direct["choices"][0]["message"]["content"]
    assert all(c.get("logprobs") is None for e in events for c in e.get("choices") or ())
